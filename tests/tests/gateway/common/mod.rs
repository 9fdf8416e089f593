//! The real stack for the gateway's integration tests: a fresh nats-server (harness), the
//! seeded catalog, one aggregate node with placement, and the gateway, all in-process on free
//! ports. Without a nats-server the tests skip loudly (fail with `CART_REQUIRE_NATS=1`).

#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;
use shared::nats::{NatsResourceSettings, StoredEvent};
use shared::test_support::{NatsServer, wait_until};
use shared::{CartId, TenantId};

pub const WAIT: Duration = Duration::from_secs(20);
pub const SHARDS: u32 = 16;

pub struct Stack {
    pub base: String,
    pub gateway: gateway::Running,
    pub aggregate: aggregate::Running,
    pub nats: NatsServer,
}

/// A gateway state that reaches no aggregate (its one address refuses connections): for
/// tests of what the gateway answers by itself.
pub fn offline_state(cfg: gateway::Config) -> gateway::AppState {
    gateway::AppState::new(
        cfg,
        cart_client::CartClient::new(
            cart_client::ClientConfig::default(),
            None,
            vec!["127.0.0.1:1".into()],
        ),
        shared::ops::Readiness::new(),
        shared::telemetry::prometheus(),
        Default::default(),
    )
    .expect("a valid gateway config")
}

/// Stream settings of every service in these stacks (short node TTL).
pub fn streams() -> NatsResourceSettings {
    NatsResourceSettings {
        node_ttl_secs: 2,
        ..NatsResourceSettings::default()
    }
}

/// A gateway config for `nats` (rate limits off: the tests that need them turn them on).
pub fn gateway_config(nats: &NatsServer) -> gateway::Config {
    let mut cfg = gateway::Config {
        http_addr: "127.0.0.1:0".into(),
        shard_count: SHARDS,
        placement_resync_ms: 200,
        client_rate_per_sec: 0,
        cart_rate_per_sec: 0,
        // No runner in these stacks: checkout routes must refuse clearly.
        runner_addr: String::new(),
        streams: streams(),
        ..gateway::Config::default()
    };
    cfg.nats.url = nats.url().to_owned();
    cfg
}

pub async fn stack() -> Option<Stack> {
    stack_with(|_| {}).await
}

/// NATS, catalog, one aggregate node and a gateway configured by `tune`; returns once the
/// gateway is ready and serves carts.
pub async fn stack_with(tune: impl FnOnce(&mut gateway::Config)) -> Option<Stack> {
    let (nats, aggregate) = nats_and_aggregate().await?;
    let mut cfg = gateway_config(&nats);
    tune(&mut cfg);
    let gateway = gateway::start(cfg).await.expect("start gateway");
    let stack = Stack {
        base: format!("http://{}", gateway.http_addr),
        gateway,
        aggregate,
        nats,
    };
    let probes = [
        format!("http://{}/ready", stack.aggregate.http_addr),
        stack.url("/ready"),
    ];
    wait_ready(&probes, Some(stack.url("/cart/byid/probe"))).await;
    Some(stack)
}

/// A fresh nats-server with the streams and the seeded catalog, and one aggregate node (`n1`)
/// on it; `None` when there is no nats-server (the test skips).
pub async fn nats_and_aggregate() -> Option<(NatsServer, aggregate::Running)> {
    let nats = shared::nats_or_skip!()?;
    let js = nats.jetstream().await;
    tests::stack::seed_catalog(&js, &streams())
        .await
        .expect("seed catalog");

    let mut agg = aggregate::Config::default();
    agg.nats.url = nats.url().to_owned();
    let aggregate = aggregate::start(aggregate::Config {
        node_id: "n1".into(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        shard_count: SHARDS,
        heartbeat_ms: 200,
        streams: streams(),
        ..agg
    })
    .await
    .expect("start aggregate");
    Some((nats, aggregate))
}

/// Every URL of `ready` answers 2xx, and `probe` (a cart read) gets an answer that is not an
/// upstream failure (with API keys configured it is a 401, which is fine here).
pub async fn wait_ready(ready: &[String], probe: Option<String>) {
    let http = reqwest::Client::new();
    wait_until(
        || {
            let (http, ready, probe) = (http.clone(), ready.to_vec(), probe.clone());
            async move {
                for url in ready {
                    let ok = http.get(url).send().await;
                    if !ok.is_ok_and(|r| r.status().is_success()) {
                        return false;
                    }
                }
                match probe {
                    Some(url) => http
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| !r.status().is_server_error()),
                    None => true,
                }
            }
        },
        WAIT,
    )
    .await
    .expect("gateway ready and serving carts");
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Another gateway on the same NATS and aggregate, configured by `tune`; returns it and its
    /// base URL once it is ready.
    pub async fn another_gateway(
        &self,
        tune: impl FnOnce(&mut gateway::Config),
    ) -> (gateway::Running, String) {
        let mut cfg = gateway_config(&self.nats);
        tune(&mut cfg);
        let gw = gateway::start(cfg).await.expect("start gateway");
        let base = format!("http://{}", gw.http_addr);
        wait_ready(&[format!("{base}/ready")], None).await;
        (gw, base)
    }

    /// Every event message of a cart, straight from the stream.
    pub async fn events(&self, tenant: &str, cart: &str) -> Vec<StoredEvent> {
        let (tenant, cart) = (
            TenantId::parse(tenant).unwrap(),
            CartId::parse(cart).unwrap(),
        );
        shared::test_support::cart_messages(&self.nats.client().await, &tenant, &cart).await
    }
}

/// A client with a cookie jar, like a browser.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

#[allow(unused_imports)] // each test binary uses some of them
pub use shared::test_support::http::{call, json, ok, text};

/// Waits until `GET url` answers `status`; panics with `what` when it never does.
pub async fn wait_for_status(http: &reqwest::Client, url: &str, status: u16, what: &str) {
    shared::test_support::http::wait_for_status(http, url, status, WAIT, what).await;
}

/// A `/v1` `AddItem` command (any quantity, to test the refusals too).
pub fn add(sku: &str, quantity: i64) -> Value {
    serde_json::json!({"type": "AddItem", "sku": sku, "quantity": quantity})
}

/// The storefront body adding one `TEST-SKU-123`.
pub fn add_one() -> Value {
    serde_json::json!({"sku": "TEST-SKU-123", "quantity": 1})
}

/// Asserts an error reply: status, stable code, a message containing `needle`, nothing else.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str, needle: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "status for {body}");
    assert_eq!(body["code"], code, "code in {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "an error is exactly {{error, code}}: {body}"
    );
}

/// `(sku, qty)` of every line of a cart view.
pub fn lines(cart: &Value) -> Vec<(String, u64)> {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap().to_owned(),
                i["qty"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Line id of `sku` in a cart view.
pub fn line_id(cart: &Value, sku: &str) -> u64 {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == sku)
        .unwrap_or_else(|| panic!("{sku} not in {cart}"))["id"]
        .as_u64()
        .unwrap()
}
