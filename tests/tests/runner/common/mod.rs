//! Set-up for runner tests: NATS from the shared test kit (`tests::stack`: every service as
//! its own NATS user), one aggregate node, a mock provider that outlives runner restarts, and
//! runners started in-process.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use cart_client::{CartClient, ClientConfig};
use cart_domain::ids::{CommandId, TenantId};
use cart_domain::{CartState, Command};
use proto::cart::v1 as pb;
use runner::provider::mock::MockProvider;
use shared::headers::RequestContext;
use shared::test_support::wait_until;
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "shop";
pub const WAIT: Duration = Duration::from_secs(30);
/// How long a test's runner may take to drain when the test is done with it.
pub const DRAIN: Duration = Duration::from_secs(5);

pub struct Env {
    pub nats: tests::stack::Stack,
    pub js: async_nats::jetstream::Context,
    pub aggregate: aggregate::Running,
    pub carts: CartClient,
    pub mock: MockProvider,
    pub mock_addr: SocketAddr,
    _mock_stop: tokio_util::sync::DropGuard,
}

/// [`env`] and a runner with no hooks on it.
pub async fn env_and_runner() -> Option<(Env, runner::Running)> {
    let env = env().await?;
    let runner = env.runner(runner::Hooks::default()).await;
    Some((env, runner))
}

pub async fn env() -> Option<Env> {
    let nats = tests::stack::Stack::start(tests::stack::test_streams()).await?;
    let js = nats.js.clone();
    let aggregate = aggregate::start(aggregate::Config {
        placement: false,
        ..nats.aggregate_config("agg")
    })
    .await
    .unwrap();
    let carts = CartClient::new(
        ClientConfig::default(),
        None,
        vec![aggregate.grpc_addr.to_string()],
    );
    let mock = MockProvider::new("merchant", "secret");
    let stop = CancellationToken::new();
    let (mock_addr, _) = mock.serve("127.0.0.1:0", stop.clone()).await.unwrap();
    Some(Env {
        nats,
        js,
        aggregate,
        carts,
        mock,
        mock_addr,
        _mock_stop: stop.drop_guard(),
    })
}

impl Env {
    pub fn runner_config(&self) -> runner::Config {
        let mut c = runner::Config {
            aggregate_addrs: self.aggregate.grpc_addr.to_string(),
            ..self
                .nats
                .runner_config(&format!("http://{}", self.mock_addr))
        };
        c.provider.timeout_ms = 1_000;
        c.consumer.ack_wait_ms = 1_000;
        c.consumer.max_deliver = 20;
        c
    }

    pub async fn runner(&self, hooks: runner::Hooks) -> runner::Running {
        runner::start(self.runner_config(), hooks).await.unwrap()
    }

    /// [`Env::runner_config`] with a short lease TTL, for tests that crash a runner and wait
    /// for the next one to take over (it waits out the crashed one's lease). Only those: a
    /// short TTL is lost to a stall of a second or two on a loaded machine.
    pub fn quick_takeover_config(&self) -> runner::Config {
        runner::Config {
            lease_ttl_secs: 3,
            ..self.runner_config()
        }
    }

    /// A runner from [`Env::quick_takeover_config`].
    pub async fn quick_takeover_runner(&self, hooks: runner::Hooks) -> runner::Running {
        runner::start(self.quick_takeover_config(), hooks)
            .await
            .unwrap()
    }

    /// A runner started with `config` (from [`Env::runner_config`], changed) and no hooks.
    pub async fn runner_with(&self, config: runner::Config) -> runner::Running {
        runner::start(config, runner::Hooks::default())
            .await
            .unwrap()
    }

    pub async fn exec(&self, cart: &str, cmd: Command) -> Result<CartState, shared::ApiError> {
        let req = pb::ExecuteRequest {
            tenant: TENANT.into(),
            cart_id: cart.into(),
            command_id: CommandId::new().to_string(),
            expected_version: None,
            command: proto::convert::command_bytes(&cmd),
            request_fingerprint: String::new(),
            render: pb::Render::Snapshot.into(),
        };
        let reply = self.carts.execute(&ctx(), req).await?;
        Ok(proto::convert::state_from_snapshot(reply.cart.unwrap())
            .unwrap()
            .1)
    }

    pub async fn cart(&self, cart: &str) -> CartState {
        let req = pb::GetCartRequest {
            tenant: TENANT.into(),
            cart_id: cart.into(),
            min_version: None,
            render: pb::Render::Snapshot.into(),
        };
        let snap = self.carts.get_cart(&ctx(), req).await.unwrap();
        proto::convert::state_from_snapshot(snap).unwrap().1
    }

    /// Wait until the cart satisfies `f` (the runner feeds results back asynchronously).
    pub async fn wait_cart(
        &self,
        cart: &str,
        what: &str,
        f: impl Fn(&CartState) -> bool,
    ) -> CartState {
        if let Err(e) = wait_until(|| async { f(&self.cart(cart).await) }, WAIT).await {
            let now = self.cart(cart).await;
            panic!(
                "{cart}: {what}: {e}; checkout {:?}, payment status {:?}",
                now.cart.checkout, now.cart.payment_status
            );
        }
        self.cart(cart).await
    }

    /// A cart with items, then `StartCheckout(attempt)`.
    pub async fn checkout(&self, cart: &str, attempt: &str) {
        self.exec(cart, add("TEST-SKU-123", 2)).await.unwrap();
        self.exec(cart, start(attempt)).await.unwrap();
    }

    /// Checks `cart` out as `attempt` and waits until its provider order is recorded.
    pub async fn checked_out(&self, cart: &str, attempt: &str) -> CartState {
        self.checkout(cart, attempt).await;
        self.wait_cart(cart, "order recorded", order_created(attempt))
            .await
    }

    /// [`Env::checked_out`], returning the id of the recorded provider order.
    pub async fn checked_out_order(&self, cart: &str, attempt: &str) -> String {
        let state = self.checked_out(cart, attempt).await;
        state.cart.provider_order_id.unwrap()
    }

    /// Starts checkout `attempt` of `cart` and waits until its provider order is recorded
    /// (`what` names the step when it never is).
    pub async fn checkout_again(&self, cart: &str, attempt: &str, what: &str) -> CartState {
        self.exec(cart, start(attempt)).await.unwrap();
        self.wait_cart(cart, what, order_created(attempt)).await
    }

    /// Publishes `payload` as JSON to `subject` with `tenant`'s request headers (as the
    /// services publish) and waits for the stream's ack.
    pub async fn publish_json(
        &self,
        subject: String,
        tenant: TenantId,
        payload: &impl serde::Serialize,
    ) {
        let mut h = async_nats::HeaderMap::new();
        RequestContext::new(tenant).to_nats_headers(&mut h);
        let body = serde_json::to_vec(payload).unwrap();
        self.js
            .publish_with_headers(subject, h, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    pub async fn messages_of(&self, subject: &str, stream: &str) -> usize {
        shared::test_support::subject_messages(&self.nats.client, stream, subject)
            .await
            .len()
    }
}

impl Env {
    /// Messages `consumer` dead-lettered so far (on `dlq.<consumer>.>`).
    pub async fn dead_letters(&self, consumer: &str) -> usize {
        let filter = shared::subjects::dead_letters_of(consumer).unwrap();
        let stream = shared::subjects::DEAD_LETTERS_STREAM;
        let subjects = shared::test_support::subject_counts(&self.js, stream, &filter).await;
        subjects.iter().map(|(_, n)| n).sum()
    }

    /// Wait until `durable` on `stream` has nothing left to deliver or to be acked.
    pub async fn wait_settled(&self, stream: &str, durable: &str) {
        shared::test_support::wait_consumer_settled(&self.js, stream, durable, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

pub fn ctx() -> RequestContext {
    RequestContext::new(TenantId::parse(TENANT).unwrap())
}

pub use shared::test_support::add_item as add;

pub fn start(attempt: &str) -> Command {
    Command::StartCheckout {
        attempt_id: attempt.into(),
        country: None,
    }
}

/// A client of the runner's admin service.
pub async fn admin_client(
    runner: &runner::Running,
) -> proto::runner::admin::v1::runner_admin_client::RunnerAdminClient<tonic::transport::Channel> {
    let url = format!("http://{}", runner.grpc_addr);
    proto::runner::admin::v1::runner_admin_client::RunnerAdminClient::connect(url)
        .await
        .unwrap()
}

/// Waits until `runner` has handled `n` workflow messages (`what` says which).
pub async fn until_completed(runner: &runner::Running, n: u64, what: &str) {
    wait_until(|| async { runner.status.completed_count() >= n }, WAIT)
        .await
        .expect(what);
}

/// Hooks that run `hook` (given the attempt id) right after every provider call.
pub fn after_provider_call(
    hook: impl Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static,
) -> runner::Hooks {
    runner::Hooks {
        after_provider_call: Some(std::sync::Arc::new(hook)),
        ..Default::default()
    }
}

/// The cart's checkout failed.
pub fn checkout_failed(s: &CartState) -> bool {
    matches!(&s.cart.checkout, Some(c) if matches!(c.status, cart_domain::CheckoutStatus::Failed { .. }))
}

pub fn order_created(attempt: &str) -> impl Fn(&CartState) -> bool + '_ {
    move |s| {
        matches!(&s.cart.checkout, Some(c) if c.attempt_id == attempt
            && c.status == cart_domain::CheckoutStatus::OrderCreated)
    }
}
