//! `grpc` mode: CartService `Execute(AddItem)` on distinct carts through the same
//! placement-aware client the gateway uses.

use std::time::Duration;

use cart_client::CartClient;
use cart_domain::ids::{CommandId, TenantId};
use proto::cart::v1 as pb;
use shared::headers::RequestContext;

use super::raw::TENANT;
use super::{Measured, Worker, drive};

/// SKUs a worker cycles through (a new line first, then quantity changes).
const SKUS: [&str; 4] = [
    "TEST-SKU-123",
    "TEST-SKU-456",
    "TEST-SKU-AAA",
    "BOOK-NOVEL-01",
];
/// Adds per cart before a worker moves to a fresh cart (quantities stay below the limit).
const PER_CART: u64 = 400;

struct GrpcWorker {
    client: CartClient,
    ctx: RequestContext,
    prefix: String,
    n: u64,
}

impl Worker for GrpcWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        let cart = format!("{}-{}", self.prefix, self.n / PER_CART);
        let sku = SKUS[(self.n % SKUS.len() as u64) as usize];
        self.n += 1;
        let req = pb::ExecuteRequest {
            tenant: TENANT.into(),
            cart_id: cart,
            command_id: CommandId::new().to_string(),
            expected_version: None,
            command: proto::convert::command_bytes(&cart_domain::Command::AddItem(
                cart_domain::AddItem {
                    sku: sku.into(),
                    quantity: 1,
                    country: "se".into(),
                    store_id: None,
                },
            )),
            request_fingerprint: String::new(),
            render: pb::Render::Snapshot.into(),
        };
        self.client
            .execute(&self.ctx, req)
            .await
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

pub async fn subject(
    client: &CartClient,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let run = super::run_id();
    let tenant = TenantId::parse(TENANT).unwrap();
    let workers = (0..concurrency)
        .map(|i| GrpcWorker {
            client: client.clone(),
            ctx: RequestContext::new(tenant.clone()),
            prefix: format!("grpc-{run}-{i}"),
            n: 0,
        })
        .collect();
    drive(workers, warmup, duration).await
}
