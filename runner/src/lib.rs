//! The runner: checkout side effects with outbox semantics.
//!
//! It consumes `CART_EVENTS` (durable `runner-checkout`, skipping everything but
//! `CheckoutStarted` by the `cart-event-types` header, or by the payload when a message has no
//! such header) and provider pushes recorded in
//! `WORKFLOW_COMMANDS` (durable `runner-push`), talks to the payment provider (Klarna Checkout
//! v3 shape; an embedded mock when no provider URL is configured) and feeds results back to
//! carts through the aggregate. See [`checkout`] for the guarantees.

pub mod admin;
pub mod checkout;
pub mod config;
pub mod hooks;
pub mod lanes;
pub mod lease;
pub mod metrics;
pub mod provider;
pub mod push;
pub mod reconcile;
pub mod records;
pub mod state;
mod terms;

use shared::config::ServiceConfig as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use proto::runner::admin::v1::checkout_query_server::CheckoutQueryServer;
use proto::runner::admin::v1::runner_admin_server::RunnerAdminServer;
use shared::nats::Durable;
use shared::ops::Readiness;
use shared::subjects::{
    CART_EVENTS_ALL, RUNNER_CHECKOUT_DURABLE, RUNNER_PUSH_DURABLE, WorkflowStream,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use hooks::Hooks;
pub use terms::run;

use crate::provider::mock::MockProvider;
use crate::provider::{ProviderClient, ProviderConfig};
use crate::records::Records;
use crate::state::{ProviderHandle, Status};

/// Readiness check: the durable consumers exist.
const CONSUMERS_CHECK: &str = "consumers";
/// Readiness check: this runner holds the lease (a standby is not ready).
const LEASE_CHECK: &str = "lease";
/// Every readiness check of a term.
const CHECKS: &[&str] = &[shared::serve::NATS_CHECK, CONSUMERS_CHECK, LEASE_CHECK];

pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub status: Arc<Status>,
    stop_fetching: CancellationToken,
    abort: CancellationToken,
    stop: CancellationToken,
    /// Cancelled when the lease was lost (the runner stopped fetching).
    lost: CancellationToken,
    /// Cancelled by [`Running::abort`] alone: the lease is left to expire, as after a crash.
    crashed: CancellationToken,
    tracker: TaskTracker,
    provider: ProviderHandle,
    lease: lease::Validity,
    /// The purchases the carts approved, as the checkout lane saw them (when the reconciler
    /// reads their orders again).
    pub approvals: reconcile::Approvals,
}

impl Running {
    /// Resolves when this runner lost the lease ([`lease`]): it fetches nothing more and
    /// should be drained and restarted.
    pub async fn lease_lost(&self) {
        self.lost.cancelled().await;
    }

    /// Whether the lease is surely this runner's now, by its own clock (tests).
    pub fn holds_lease_now(&self) -> bool {
        self.lease.holds()
    }

    /// The provider settings in use now (the admin API's reload replaces them).
    pub fn provider_settings(&self) -> ProviderConfig {
        self.provider.current().config().clone()
    }

    /// Stop taking new work, finish in-flight effects (up to `timeout`), stop.
    pub async fn drain(self, timeout: Duration) {
        self.status.set_draining();
        self.stop_fetching.cancel();
        if !self.status.wait_idle(timeout).await {
            tracing::warn!(
                in_flight = self.status.in_flight(),
                "stopping with effects in flight"
            );
        }
        self.stop.cancel();
        self.abort.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Stop like a crash: in-flight effects are abandoned unacknowledged (redelivered later).
    pub async fn abort(self) {
        self.crashed.cancel();
        self.abort.cancel();
        self.stop_fetching.cancel();
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Start with the given test hooks (production passes `Hooks::default()`), serving its own
/// ops endpoint.
pub async fn start(config: Config, hooks: Hooks) -> anyhow::Result<Running> {
    start_term(config, hooks, None).await
}

/// Start one term: with `ops`, the process's ops endpoint reports this term's readiness
/// (nothing is bound for it); without, the term serves its own on `RUNNER_HTTP_ADDR`.
async fn start_term(
    config: Config,
    hooks: Hooks,
    ops: Option<&terms::Ops>,
) -> anyhow::Result<Running> {
    config.check().map_err(Config::invalid)?;
    metrics::describe();
    let readiness = match ops {
        Some(ops) => ops.restart(),
        None => Readiness::new(),
    };
    readiness.register(CHECKS);

    let nats = shared::nats::connect_and_ensure(&config.nats, &config.streams).await?;
    readiness.set_ok(shared::serve::NATS_CHECK);

    let stop_fetching = CancellationToken::new();
    let abort = CancellationToken::new();
    let stop = CancellationToken::new();
    // A start that fails part-way stops what it had spawned (the placement view, the mock):
    // `run` may try again in the same process.
    let stop_on_error = stop.clone().drop_guard();
    let tracker = TaskTracker::new();

    // The provider: configured, or the embedded mock.
    let mut provider_cfg = config.provider.clone();
    if provider_cfg.base_url.is_empty() {
        let (url, serving) = serve_embedded_mock(&config, stop.clone()).await?;
        tracker.spawn(async move {
            let _ = serving.await;
        });
        provider_cfg.base_url = url;
    }
    let provider =
        ProviderHandle::new(ProviderClient::new(provider_cfg).map_err(|e| anyhow::anyhow!("{e}"))?);

    let view = cart_client::PlacementView::start(
        nats.client.clone(),
        nats.resources.cart_nodes.clone(),
        nats.resources.cart_placement.clone(),
        config.shard_count,
        &shared::config::env_var(Config::ENV_PREFIX, "shard_count"),
        Duration::from_secs(2),
        &tracker,
        stop.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("placement view: {e}"))?;
    let carts = cart_client::CartClient::new(
        cart_client::ClientConfig {
            shard_count: config.shard_count,
            timeout: Duration::from_millis(config.aggregate_timeout_ms),
            tls: config.grpc_tls.clone(),
            ..Default::default()
        },
        Some(view),
        config.aggregate_addrs(),
    );

    let settings = config.consumer_settings();
    let checkout_durable = Durable {
        stream: nats.resources.cart_events.clone(),
        config: lanes::durable_config(
            RUNNER_CHECKOUT_DURABLE,
            &[CART_EVENTS_ALL.to_owned()],
            &settings,
        ),
    };
    let checkout_consumer = checkout_durable
        .ensure()
        .await
        .context("runner-checkout consumer")?;
    let push_filter = shared::subjects::workflow_kind_filter(
        WorkflowStream::Commands,
        shared::workflow::PUSH_KIND,
    )?;
    let push_durable = Durable {
        stream: nats.resources.workflow_commands.clone(),
        config: lanes::durable_config(RUNNER_PUSH_DURABLE, &[push_filter], &settings),
    };
    let push_consumer = push_durable
        .ensure()
        .await
        .context("runner-push consumer")?;
    readiness.set_ok(CONSUMERS_CHECK);
    let lease_store = shared::nats::ensure_kv(
        &nats.js,
        &shared::nats::policies::runner_lease(&config.streams, config.lease_ttl()),
    )
    .await
    .context("RUNNER_LEASE bucket")?;
    let lease = lease::Lease::new(lease_store, lease::holder_name(), config.lease_ttl())
        .with_refresh_hook(hooks.before_lease_refresh.clone());
    // The lease by this runner's clock: the lanes, the checkout effect and `/ready` ask it.
    let validity = lease.validity();

    let status = Arc::new(Status::default());
    let records = Records::new(
        nats.js.clone(),
        settings.max_deliver,
        config.nats.request_timeout(),
    );
    let reload_override = hooks.reload.clone();
    let approvals = reconcile::Approvals::default();
    let checkout = Arc::new(checkout::Checkout {
        records: records.clone(),
        provider: provider.clone(),
        carts: carts.clone(),
        merchant: config.merchant.clone(),
        status: status.clone(),
        lease: validity.clone(),
        hooks,
        approvals: approvals.clone(),
    });
    let push = Arc::new(push::Push {
        records: records.clone(),
        provider: provider.clone(),
        carts,
        status: status.clone(),
        mismatch_action: config.mismatch_action,
    });
    let reconciler = (config.reconcile_interval_secs > 0).then(|| reconcile::Reconciler {
        records: records.clone(),
        interval: Duration::from_secs(config.reconcile_interval_secs),
        after: Duration::from_secs(config.reconcile_after_secs),
        max_age: Duration::from_secs(config.reconcile_max_age_secs),
        approvals: approvals.clone(),
    });
    let (lost, crashed) = (CancellationToken::new(), CancellationToken::new());
    // Not ready the moment the lease runs out by this runner's clock, even before its lease
    // task has run (a runner waking from a freeze).
    readiness.veto(LEASE_CHECK, {
        let (status, validity) = (status.clone(), validity.clone());
        move || {
            if status.is_active() && !validity.holds() {
                Err("the lease ran out by this runner's clock".into())
            } else {
                Ok(())
            }
        }
    });
    let lanes = lanes::Lanes {
        depth: config.lane_depth,
        batch: config.fetch_batch,
        status: status.clone(),
        stop_fetching: stop_fetching.clone(),
        lost: lost.clone(),
        lease: validity.clone(),
        abort: abort.clone(),
        tracker: tracker.clone(),
    };
    let (checkout_lanes, push_lanes) = (config.lanes, config.lanes.div_ceil(4));
    let consumer_for_admin = checkout_consumer.clone();
    // Fetching starts once the lease is held.
    let start_fetching = {
        let (tracker, stop_fetching) = (tracker.clone(), stop_fetching.clone());
        move || {
            if let Some(reconciler) = reconciler {
                tracker.spawn(reconciler.run(stop_fetching));
            }
            lanes.spawn(
                RUNNER_CHECKOUT_DURABLE,
                checkout_consumer,
                checkout_durable,
                checkout,
                checkout_lanes,
            );
            lanes.spawn(
                RUNNER_PUSH_DURABLE,
                push_consumer,
                push_durable,
                push,
                push_lanes,
            );
        }
    };

    let reload: admin::ReloadSource = reload_override.unwrap_or_else(|| {
        Arc::new(|| {
            Config::load()
                .map(|c| c.provider)
                .map_err(|e| e.to_string())
                .and_then(|p: ProviderConfig| {
                    if p.base_url.is_empty() {
                        Err(
                            "PROVIDER_BASE_URL is empty; the embedded mock cannot be reloaded"
                                .into(),
                        )
                    } else {
                        Ok(p)
                    }
                })
        })
    });
    let admin = admin::Admin {
        status: status.clone(),
        provider: provider.clone(),
        reload,
        stop_fetching: stop_fetching.clone(),
        checkout_consumer: consumer_for_admin,
        lease: validity.clone(),
    };
    let provider_for_next_term = provider.clone();
    let query = admin::Query { records, provider };
    let (grpc_listener, grpc_addr) = shared::serve::bind(&config.grpc_addr).await?;
    let grpc = config
        .grpc_tls
        .server_builder()
        .map_err(anyhow::Error::msg)?
        .add_service(RunnerAdminServer::new(admin))
        .add_service(CheckoutQueryServer::new(query));
    tracker.spawn(shared::serve::grpc(grpc, grpc_listener, stop.clone()));

    let http_addr = match ops {
        Some(ops) => ops.addr,
        None => {
            let (listener, addr) = shared::serve::bind(&config.http_addr).await?;
            let router = shared::ops::router(readiness.clone(), shared::telemetry::prometheus());
            tracker.spawn(shared::serve::http(listener, router, stop.clone()));
            addr
        }
    };
    let ready_status = status.clone();
    tracker.spawn(shared::serve::watch_readiness(
        readiness.clone(),
        nats.client,
        stop.clone(),
        move |r| {
            r.set_draining(ready_status.is_draining());
        },
    ));
    // Last, once nothing can fail: a runner that did not start takes no lease.
    tracker.spawn(
        Leased {
            lease,
            status: status.clone(),
            readiness,
            stop_fetching: stop_fetching.clone(),
            stop: stop.clone(),
            crashed: crashed.clone(),
            lost: lost.clone(),
        }
        .run(start_fetching),
    );
    tracing::info!(%grpc_addr, %http_addr, "runner started");
    stop_on_error.disarm();
    Ok(Running {
        grpc_addr,
        http_addr,
        status,
        stop_fetching,
        abort,
        stop,
        lost,
        crashed,
        tracker,
        provider: provider_for_next_term,
        lease: validity,
        approvals,
    })
}

/// The lease's part of a running runner: take it, start fetching, keep it; when it is lost,
/// stop fetching and say so.
struct Leased {
    lease: lease::Lease,
    status: Arc<Status>,
    readiness: Readiness,
    stop_fetching: CancellationToken,
    stop: CancellationToken,
    crashed: CancellationToken,
    lost: CancellationToken,
}

impl Leased {
    async fn run(self, start_fetching: impl FnOnce()) {
        self.readiness.set_failed(
            LEASE_CHECK,
            "standing by: taking the lease (held by another runner until it gives it back or its entry expires)",
        );
        // The lease gauge exists from start-up (a standby reads 0). A term starts with nothing
        // in flight: the gauge is the process's, and an earlier term may have been cut short.
        self.status.set_active(false);
        ::metrics::gauge!(metrics::IN_FLIGHT).set(0.0);
        // A drain before the lease was taken leaves nothing to start.
        let Some(taken) = self.lease.take(&self.stop_fetching).await else {
            return;
        };
        tracing::info!(holder = %self.lease.holder(), "holding the runner lease: fetching effects");
        self.status.set_active(true);
        self.readiness.set_ok(LEASE_CHECK);
        start_fetching();
        // Drained (SIGTERM, or the admin API's Drain): the lease goes back once nothing is in
        // flight, so a standby takes over. `stop` (the end of a drain, or a crash) ends it too.
        let give_back = self.stop.child_token();
        let drained = async {
            self.stop_fetching.cancelled().await;
            while !self.status.wait_idle(Duration::from_secs(60)).await {}
            give_back.cancel();
            std::future::pending::<()>().await;
        };
        let ended = tokio::select! {
            ended = self.lease.hold(taken, &give_back, &self.crashed) => ended,
            () = drained => unreachable!("never ends"),
        };
        // Not ready first, then not active: while active, a lapsed lease fails `/ready` by the
        // veto, and in between (a probe answered as a frozen runner wakes) it must not pass.
        match &ended {
            lease::Ended::Released => self
                .readiness
                .set_failed(LEASE_CHECK, "drained: the lease was given back"),
            lease::Ended::Lost(reason) => self
                .readiness
                .set_failed(LEASE_CHECK, format!("lease lost: {reason}")),
            lease::Ended::Abandoned => {}
        }
        self.status.set_active(false);
        if let lease::Ended::Lost(reason) = ended {
            // Another runner may start fetching soon: what the lanes still queue goes back.
            self.lost.cancel();
            self.stop_fetching.cancel();
            ::metrics::counter!(metrics::LEASE_LOST).increment(1);
            tracing::error!(%reason, "lost the runner lease: no more fetching");
            self.lease.forget().await;
        }
    }
}

/// The embedded mock provider (no `PROVIDER_BASE_URL`), serving until `stop`: its URL and
/// task.
pub(crate) async fn serve_embedded_mock(
    config: &Config,
    stop: CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let p = &config.provider;
    let mock = MockProvider::new(&p.username, p.password.expose());
    let (addr, serving) = mock
        .serve(&config.mock_provider_addr, stop)
        .await
        .with_context(|| format!("mock provider on {}", config.mock_provider_addr))?;
    tracing::info!(%addr, "no PROVIDER_BASE_URL: using the embedded mock provider");
    // Listening on all interfaces (compose publishes it): call it over loopback.
    let local = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    Ok((format!("http://{local}"), serving))
}
