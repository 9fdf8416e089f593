//! `grpc` mode: CartService `Execute(AddItem)` on distinct carts through the same
//! placement-aware client the gateway uses.

use std::time::Duration;

use cart_client::CartClient;
use cart_domain::ids::{CommandId, TenantId};
use proto::cart::v1 as pb;
use shared::headers::RequestContext;

use super::raw::TENANT;
use super::{Adds, Measured, Worker, drive};

struct GrpcWorker {
    client: CartClient,
    ctx: RequestContext,
    adds: Adds,
}

impl Worker for GrpcWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        let (cart, sku) = self.adds.next_add();
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
            adds: Adds::new(format!("grpc-{run}-{i}")),
        })
        .collect();
    drive(workers, warmup, duration).await
}
