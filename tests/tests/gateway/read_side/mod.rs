//! The read side's stack for the gateway's integration tests: a nats-server (harness), the
//! seeded catalog, one aggregate node, a projection and a gateway pointed at it, in-process on
//! free ports. The read model catches up asynchronously, so helpers wait for conditions (never a
//! fixed sleep).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use cart_client::{CartClient, ClientConfig};
use cart_domain::Command;
use proto::cart::v1 as cart_pb;
use serde_json::{Value, json};
use shared::headers::{RequestContext, TENANT_ID};
use shared::test_support::wait_until;
use shared::{CartId, CommandId, TenantId};

use crate::common::{self, WAIT, call, ok};

/// `GATEWAY_ADMIN_TOKEN` of the stack's gateway.
pub const ADMIN: &str = "admin-secret";

/// NATS, catalog, aggregate, projection and a gateway pointed at the projection.
pub struct Stack {
    pub base: String,
    pub http: reqwest::Client,
    pub gateway: gateway::Running,
    pub projection: projection::Running,
    pub aggregate: aggregate::Running,
    pub nats: common::Nats,
    _dir: tempfile::TempDir,
}

/// A projection that gives up on a poison message quickly: two deliveries, short waits.
fn projection_config(nats: &common::Nats, dir: &std::path::Path) -> projection::Config {
    projection::Config {
        batch_size: 64,
        fetch_wait_ms: 100,
        ack_wait_ms: 500,
        max_deliver: 2,
        nak_delay_ms: 50,
        ..nats.projection_config(dir)
    }
}

pub async fn stack() -> Option<Stack> {
    let (nats, aggregate) = common::nats_and_aggregate().await?;
    let dir = tempfile::tempdir().unwrap();
    let projection = projection::start(projection_config(&nats, dir.path()))
        .await
        .expect("start projection");

    let mut cfg = common::gateway_config(&nats);
    cfg.projection_addr = projection.grpc_addr.to_string();
    cfg.admin_token = ADMIN.into();
    let gateway = gateway::start(cfg).await.expect("start gateway");
    let stack = Stack {
        base: format!("http://{}", gateway.http_addr),
        http: reqwest::Client::new(),
        gateway,
        projection,
        aggregate,
        nats,
        _dir: dir,
    };
    let ready = [
        format!("http://{}/ready", stack.aggregate.http_addr),
        format!("http://{}/ready", stack.projection.http_addr),
        stack.url("/ready"),
    ];
    common::wait_ready(&ready, None).await;
    Some(stack)
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` as `tenant` (through `x-tenant-id`).
    pub async fn get(&self, tenant: &str, path: &str) -> (u16, Value) {
        call(self.http.get(self.url(path)).header(TENANT_ID, tenant)).await
    }

    /// Runs commands on a cart through the gateway's `/v1` API; returns the cart.
    pub async fn commands(&self, tenant: &str, cart: &str, body: Value) -> Value {
        let reply = ok(self
            .http
            .post(self.url(&format!("/v1/carts/{cart}/commands")))
            .header(TENANT_ID, tenant)
            .json(&body))
        .await;
        reply["result"].clone()
    }

    /// Polls `GET path` as `tenant` until `done` holds for the 200 body; returns that body.
    pub async fn until(&self, tenant: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let last = Arc::new(Mutex::new(Value::Null));
        let ok = wait_until(
            || {
                let last = last.clone();
                let done = &done;
                async move {
                    let (status, body) = self.get(tenant, path).await;
                    let met = status == 200 && done(&body);
                    *last.lock().unwrap() = json!({"status": status, "body": body});
                    met
                }
            },
            WAIT,
        )
        .await;
        let last = last.lock().unwrap().clone();
        ok.unwrap_or_else(|e| panic!("GET {path} as {tenant}: {e}; last answer {last}"));
        last["body"].clone()
    }

    /// Every page of a listing (`path` ends with its query, `page_token` is appended).
    pub async fn all_pages(&self, tenant: &str, path: &str, key: &str) -> (Vec<Value>, usize) {
        let (mut rows, mut pages, mut token) = (Vec::new(), 0, None::<String>);
        for _ in 0..1_000 {
            let url = match &token {
                Some(t) => format!("{path}&page_token={t}"),
                None => path.to_owned(),
            };
            let (status, page) = self.get(tenant, &url).await;
            assert_eq!(status, 200, "{url}: {page}");
            pages += 1;
            rows.extend(page[key].as_array().unwrap().iter().cloned());
            match page["nextPageToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return (rows, pages),
            }
        }
        panic!("{path}: pagination does not end");
    }

    /// The runner's part of a checkout, sent straight to the aggregate: the provider order
    /// exists, then the shopper paid.
    pub async fn place_order(&self, tenant: &str, cart: &str, attempt: &str, order: &str) {
        let client = CartClient::new(
            ClientConfig::default(),
            None,
            vec![self.aggregate.grpc_addr.to_string()],
        );
        let tenant = TenantId::parse(tenant).unwrap();
        let cart = CartId::parse(cart).unwrap();
        let ctx = RequestContext::new(tenant.clone());
        let record = Command::RecordProviderOrder {
            attempt_id: attempt.into(),
            provider_order_id: order.into(),
            status: "checkout_incomplete".into(),
        };
        let req = cart_pb::ExecuteRequest::new(&tenant, &cart, CommandId::new(), None, &record);
        let reply = client.execute(&ctx, req).await.expect("runner command");
        let (_, state) = proto::convert::state_from_snapshot(reply.cart.unwrap()).unwrap();
        // The provider charged exactly what the attempt holds.
        let checkout = state.cart.checkout.expect("a checkout attempt");
        let confirm = Command::ConfirmOrder {
            provider_order_id: order.into(),
            order_reference: format!("ref-{order}"),
            paid: checkout.paid_in_full(),
        };
        let req = cart_pb::ExecuteRequest::new(&tenant, &cart, CommandId::new(), None, &confirm);
        client.execute(&ctx, req).await.expect("runner command");
    }
}

pub use crate::common::add;

pub fn ids(rows: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

impl Stack {
    /// Another gateway on the stack's NATS and projection (no admin token), configured by
    /// `tune`; returns it and its base URL.
    pub async fn another(
        &self,
        tune: impl FnOnce(&mut gateway::Config),
    ) -> (gateway::Running, String) {
        let mut cfg = common::gateway_config(&self.nats);
        cfg.projection_addr = self.projection.grpc_addr.to_string();
        tune(&mut cfg);
        let gw = gateway::start(cfg).await.expect("start gateway");
        let base = format!("http://{}", gw.http_addr);
        (gw, base)
    }

    /// An admin call with the stack's admin token.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let req = self.http.request(method, self.url(path)).bearer_auth(ADMIN);
        call(req).await
    }
}
