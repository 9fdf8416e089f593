//! The whole platform in one process for end-to-end tests: a nats-server, one aggregate node,
//! the gateway, the runner and the mock payment provider, whose push and validation
//! callbacks reach the gateway over HTTP exactly as the real provider's would.

use runner::provider::mock::MockProvider;
use serde_json::Value;
use shared::test_support::wait_until;
use tokio_util::sync::CancellationToken;

use crate::forward::Forward;
use crate::stack::{Stack, WAIT, call, test_streams, wait_for_status};

/// The gateway's admin token in [`platform`].
pub const ADMIN_TOKEN: &str = "e2e-admin-token";
/// The validation key the gateway and the runner share in [`platform`].
pub const VALIDATION_KEY: &str = "e2e-validation-key";

pub struct Platform {
    pub stack: Stack,
    _aggregate: aggregate::Running,
    _gateway: gateway::Running,
    _runner: runner::Running,
    pub mock: MockProvider,
    pub base: String,
    _mock_stop: tokio_util::sync::DropGuard,
    _to_runner: Forward,
}

/// NATS, one aggregate node, the gateway (admin token [`ADMIN_TOKEN`], no projection), the
/// runner (validation key [`VALIDATION_KEY`], both) and the mock provider it calls, all in-process on free ports; `None` when there is
/// no nats-server (the test skips).
pub async fn platform() -> Option<Platform> {
    platform_with(|_| {}).await
}

/// [`platform`] with the gateway's configuration changed by `gateway`.
pub async fn platform_with(gateway: impl FnOnce(&mut gateway::Config)) -> Option<Platform> {
    let stack = Stack::start(test_streams()).await?;
    let aggregate = stack.aggregate("n1").await.unwrap();
    let mock = MockProvider::new("merchant", "secret");
    let stop = CancellationToken::new();
    let (mock_addr, _) = mock.serve("127.0.0.1:0", stop.clone()).await.unwrap();
    // The gateway dials the runner through a forwarder, so both can start on port 0.
    let to_runner = Forward::start().await.unwrap();

    let mut gw = gateway::Config {
        runner_addr: to_runner.addr.to_string(),
        projection_addr: String::new(),
        admin_token: ADMIN_TOKEN.into(),
        validation_key: VALIDATION_KEY.into(),
        ..stack.gateway_config()
    };
    gateway(&mut gw);
    let gateway = gateway::start(gw).await.unwrap();
    let base = format!("http://{}", gateway.http_addr);

    let mut rc = stack.runner_config(&format!("http://{mock_addr}"));
    rc.consumer.ack_wait_ms = 2_000;
    rc.merchant.push =
        format!("{base}/cart/push?tenant={{tenant}}&klarna_order_id={{checkout.order.id}}");
    rc.merchant.validation =
        format!("{base}/cart/validation?tenant={{tenant}}&klarna_order_id={{checkout.order.id}}");
    rc.merchant.validation_key = VALIDATION_KEY.into();
    let runner = runner::start(rc, runner::Hooks::default()).await.unwrap();
    to_runner.to(runner.grpc_addr);

    wait_for_status(&format!("{base}/ready"), 200, "gateway ready").await;
    Some(Platform {
        stack,
        _aggregate: aggregate,
        _gateway: gateway,
        _runner: runner,
        mock,
        base,
        _mock_stop: stop.drop_guard(),
        _to_runner: to_runner,
    })
}

impl Platform {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A shopper: a client with a cookie jar ([`crate::requests::browser`]).
    pub fn shopper(&self) -> reqwest::Client {
        crate::requests::browser()
    }

    /// The shopper's cart (`GET /cart` with its cookie), whatever the status.
    pub async fn cart(&self, shopper: &reqwest::Client) -> Value {
        call(shopper.get(self.url("/cart"))).await.1
    }

    /// Waits until the shopper's cart satisfies `done`; panics with `what` when it never does.
    pub async fn until_cart(
        &self,
        shopper: &reqwest::Client,
        done: impl Fn(&Value) -> bool,
        what: &str,
    ) {
        wait_until(|| async { done(&self.cart(shopper).await) }, WAIT)
            .await
            .expect(what);
    }

    /// The shopper pays provider order `order_id` (the provider answers its push with a 200);
    /// waits until the shopper's cart names the placed order.
    pub async fn pay_and_wait_placed(&self, shopper: &reqwest::Client, order_id: &str, what: &str) {
        assert_eq!(self.mock.complete(order_id).await.unwrap(), 200);
        self.until_cart(shopper, |c| c["orderReference"].is_string(), what)
            .await;
    }

    /// Waits until the provider has the acknowledgement of order `order_id`.
    pub async fn until_acknowledged(&self, order_id: &str) {
        let acknowledged =
            || async { self.mock.stats().acknowledged.iter().any(|o| o == order_id) };
        wait_until(acknowledged, WAIT)
            .await
            .expect("acknowledged with the provider");
    }

    /// Wait until the runner handled every push recorded so far.
    pub async fn settled(&self) {
        shared::test_support::wait_consumer_settled(
            &self.stack.js,
            shared::subjects::WORKFLOW_COMMANDS_STREAM,
            shared::subjects::RUNNER_PUSH_DURABLE,
            WAIT,
        )
        .await
        .expect("the runner handled every push");
    }

    /// How many `OrderPlaced` messages the cart's stream holds.
    pub async fn orders_placed(&self, cart_id: &str) -> usize {
        self.events_of_type(cart_id, "OrderPlaced").await
    }

    /// How many of the cart's messages hold an event of `event_type`.
    pub async fn events_of_type(&self, cart_id: &str, event_type: &str) -> usize {
        let (tenant, cart) = (
            shared::TenantId::default_tenant(),
            shared::CartId::parse(cart_id).unwrap(),
        );
        shared::test_support::cart_messages(&self.stack.client, &tenant, &cart)
            .await
            .iter()
            .filter(|m| {
                m.headers
                    .get(shared::headers::CART_EVENT_TYPES)
                    .is_some_and(|v| v.as_str().split(',').any(|t| t == event_type))
            })
            .count()
    }
}
