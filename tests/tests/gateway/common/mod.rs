//! The real stack for the gateway's integration tests: a fresh nats-server (harness), the
//! seeded catalog, one aggregate node with placement, and the gateway, all in-process on free
//! ports. Without a nats-server the tests skip loudly (fail with `CART_REQUIRE_NATS=1`).

#![allow(dead_code)]

use std::time::Duration;

use shared::nats::StoredEvent;
use shared::test_support::wait_until;
use shared::{CartId, TenantId};

pub const WAIT: Duration = Duration::from_secs(20);
/// Shards of the aggregate and the gateway in these stacks (fewer than the default: faster
/// placement).
pub const SHARDS: u32 = 16;

pub use tests::stack::Stack as Nats;

/// NATS (the shared test kit: every service as its own NATS user), one aggregate node and a
/// gateway, in-process on free ports.
pub struct Stack {
    pub base: String,
    pub gateway: gateway::Running,
    pub aggregate: aggregate::Running,
    pub nats: Nats,
}

/// A gateway state that reaches no aggregate (its one address refuses connections): for
/// tests of what the gateway answers by itself.
pub fn offline_state(cfg: gateway::Config) -> gateway::AppState {
    gateway::AppState::new(
        cfg,
        cart_client::CartClient::new(
            cart_client::ClientConfig::default(),
            None,
            vec![REFUSED.into()],
        ),
        shared::ops::Readiness::new(),
        shared::telemetry::prometheus(),
        Default::default(),
    )
    .expect("a valid gateway config")
}

/// An address that refuses connections (nothing listens on port 1).
const REFUSED: &str = "127.0.0.1:1";

/// A gateway config for `nats` (rate limits off: the tests that need them turn them on), with
/// no runner (checkout routes must refuse clearly) and a projection that refuses connections.
pub fn gateway_config(nats: &Nats) -> gateway::Config {
    gateway::Config {
        shard_count: SHARDS,
        runner_addr: String::new(),
        projection_addr: REFUSED.into(),
        ..nats.gateway_config()
    }
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
pub async fn nats_and_aggregate() -> Option<(Nats, aggregate::Running)> {
    let nats = Nats::start(tests::stack::test_streams()).await?;
    let aggregate = aggregate::start(aggregate::Config {
        shard_count: SHARDS,
        ..nats.aggregate_config("n1")
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
        shared::test_support::cart_messages(&self.nats.client, &tenant, &cart).await
    }
}

#[allow(unused_imports)] // each test binary uses some of them
pub use tests::requests::{
    add, add_one, assert_error, browser, call, json, line_id, lines, ok, text,
};

/// Waits until `GET url` answers `status`; panics with `what` when it never does.
pub async fn wait_for_status(http: &reqwest::Client, url: &str, status: u16, what: &str) {
    shared::test_support::http::wait_for_status(http, url, status, WAIT, what).await;
}

/// `req` through `app` (the gateway's router, no port): the status and the JSON body.
pub async fn oneshot_json(
    app: &axum::Router,
    req: http::Request<axum::body::Body>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

/// The admin token of the tests that set one (`Config::admin_token`).
pub const ADMIN_TOKEN: &str = "admin-secret";

/// `method path` through `app` with [`ADMIN_TOKEN`] and nothing else (no API key, no tenant).
pub async fn admin_json(app: &axum::Router, method: &str, path: &str) -> (u16, serde_json::Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    oneshot_json(app, req).await
}

/// A stand-in service (`router`: in-process gRPC servers built by the test) on a free loopback
/// port until the guard is dropped: its address.
pub async fn serve_grpc(
    router: tonic::transport::server::Router,
) -> (String, tokio_util::sync::DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(
        router.serve_with_incoming_shutdown(shared::serve::grpc_incoming(listener), async move {
            stopped.cancelled().await
        }),
    );
    (addr, stop.drop_guard())
}

/// The answer to an admin call naming a service address the gateway does not have (`asked`):
/// 400, listing the configured addresses (`configured` among them) and not what was asked.
pub fn assert_unknown_address(got: &(u16, serde_json::Value), configured: &str, asked: &str) {
    let (status, body) = got;
    assert_eq!(
        (*status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(configured) && !message.contains(asked),
        "names the configured addresses, not what was asked: {message}"
    );
}
