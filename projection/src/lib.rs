//! The projection service: a durable pull consumer on `CART_EVENTS` that keeps SQLite views
//! (carts, lines, orders, SKU demand, abandoned carts) and serves them over gRPC
//! (`projection.v1.QueryService`).
//!
//! [`start`] brings a node up (tests use it on port 0) and returns a [`Running`] handle;
//! [`run`] is what `main` calls: start, then stop gracefully on shutdown.
//!
//! Module map, in the order a message travels:
//! - [`consume`]: the way in: the durable consumer (fetch → apply → ack, poison handling),
//!   stream order, `DEAD_LETTERS`, start-up recovery.
//! - [`write`](mod@write): the one SQLite writer thread and what its transactions do: a
//!   batch's messages → cart states in memory → view rows; states written behind, commits
//!   synced.
//! - [`store`]: the file itself: schema and migrations, the `poison` table, the state format.
//! - [`read`]: the way out: `QueryService` over a pool of read connections.
//! - [`ops`]: readiness, the admin path, rebuilding the views from the stream.
//!
//! Beside them: [`config`], [`status`] (what the tasks tell each other about the node),
//! [`metrics`] and [`error`].

pub mod config;
pub mod consume;
pub mod error;
pub mod metrics;
pub mod ops;
pub mod read;
pub mod status;
pub mod store;
pub mod write;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use proto::projection::v1::query_service_server::QueryServiceServer;
use shared::config::ServiceConfig as _;
use shared::nats::durable_pull_config;
use shared::ops::Readiness;
use shared::subjects::CART_EVENTS_ALL;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;
pub use error::ProjectionError;
pub use ops::rebuild::RebuildReport;
pub use write::fault_injection::{CommitAction, Hooks};

use crate::consume::consumer::Consumer;
use crate::consume::dead_letter_stream::DeadLetters;
use crate::consume::delivery::LoopSettings;
use crate::consume::order_guard::OrderGuard;
use crate::consume::{recovery, same_stream};
use crate::ops::admin;
use crate::ops::readiness::{CHECKS, Monitor};
use crate::ops::rebuild::{Live, Rebuild};
use crate::read::grpc;
use crate::read::pool::Readers;
use crate::status::ProjectionStatus;
use crate::write::writer::Writer;

/// A running projection node.
pub struct Running {
    pub grpc_addr: SocketAddr,
    /// Cancelled when the node cannot go on: its database writer stopped, or `CART_EVENTS` was
    /// created again under it ([`Running::failure`] says which).
    pub failed: CancellationToken,
    pub http_addr: SocketAddr,
    pub db_path: PathBuf,
    rebuild: Rebuild,
    live: Live,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    consumer: JoinHandle<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// The last stream sequence applied (committed: the views show it).
    pub fn checkpoint(&self) -> u64 {
        self.live.writer.checkpoint()
    }

    /// The last stream sequence applied and on disk (its messages may be acknowledged).
    pub fn durable_checkpoint(&self) -> u64 {
        self.live.writer.durable_checkpoint()
    }

    /// Whether the views' secondary indexes are dropped (catching up from far behind, see
    /// `Config::drop_indexes_behind`).
    pub fn indexes_dropped(&self) -> bool {
        self.live.writer.indexes_dropped()
    }

    /// Why the node stopped on its own ([`Running::failed`]): the consumer's last error.
    pub fn failure(&self) -> String {
        self.live
            .shared
            .consumer_error()
            .unwrap_or_else(|| "its database writer stopped".into())
    }

    /// Rebuild from sequence 1 into a fresh database and swap it in (the admin path).
    pub async fn rebuild(&self) -> Result<RebuildReport, ProjectionError> {
        self.rebuild.online(&self.live).await
    }

    /// Stop gracefully: the batch in progress is finished, servers close, the writer stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let served = self.server.await;
        let _ = self.consumer.await;
        self.tracker.close();
        self.tracker.wait().await;
        drop(self.rebuild);
        drop(self.live);
        let thread = self.writer_thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("joining the writer thread")?
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        tracing::info!("projection stopped");
        served
            .context("gRPC server task panicked")?
            .context("gRPC server failed")
    }

    /// Stop like a crash: tasks are dropped mid-flight, nothing is acknowledged or flushed.
    pub async fn abort(self) {
        self.consumer.abort();
        self.server.abort();
        self.shutdown.cancel();
        self.tracker.close();
        let _ = self.consumer.await;
        let _ = self.server.await;
    }
}

/// Start with no fault-injection hooks.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_with_hooks(config, Hooks::default()).await
}

/// Start a node: connect, ensure the NATS resources and the durable consumer, open the
/// database, serve gRPC and HTTP, run the consumer loop.
pub async fn start_with_hooks(config: Config, hooks: Hooks) -> anyhow::Result<Running> {
    config.check().map_err(Config::invalid)?;
    metrics::describe();
    let readiness = Readiness::new();
    readiness.register(CHECKS);
    let durable = config.durable();
    let db_path = config.db_path();

    let nats = shared::nats::connect_and_ensure(&config.nats, &config.streams).await?;
    let events = nats.resources.cart_events.clone();

    let (writer, writer_thread) = {
        let (path, hooks, view) = (db_path.clone(), hooks.clone(), config.view.clone());
        let states = config.state_settings();
        tokio::task::spawn_blocking(move || Writer::spawn(&path, hooks, &view, states))
            .await
            .context("opening the database")?
            .with_context(|| format!("database {}", db_path.display()))?
    };
    let request_timeout = config.nats.request_timeout();
    let stream = status::stream_info(&events, request_timeout)
        .await
        .context("CART_EVENTS info")?
        .state;
    same_stream::refuse_another(&events, &stream, &writer, request_timeout).await?;
    recovery::recover(&events, &stream, &writer, config.replay_timeout())
        .await
        .context("recovering the cart states the last run did not write")?;
    let behind = stream.last_sequence.saturating_sub(writer.checkpoint());
    if config.drop_indexes_behind > 0 && behind >= config.drop_indexes_behind {
        writer
            .drop_indexes(behind)
            .await
            .context("dropping the secondary indexes to catch up")?;
    }
    let durable_consumer = shared::nats::Durable {
        stream: events.clone(),
        config: durable_pull_config(
            &durable,
            &[CART_EVENTS_ALL.to_owned()],
            &config.consumer_settings(),
        ),
    };
    // A missing durable (first start, or deleted) starts after what the database holds.
    let pull = durable_consumer
        .recreate(writer.durable_checkpoint())
        .await
        .with_context(|| format!("durable consumer {durable}"))?;
    let readers = Readers::new(&db_path, config.read_connections);
    let shared = Arc::new(ProjectionStatus::new(&config.view));
    // Known before the monitor's first look: the consumer judges "caught up" by it.
    shared.set_stream_last(stream.last_sequence);
    let gate = Arc::new(Mutex::new(()));
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    let stall_per_delivery = config.ack_wait() + config.nak_delay() + config.fetch_wait();
    let stall_deliveries = u32::try_from(config.max_deliver).unwrap_or(u32::MAX);
    let loop_ = Consumer {
        consumer: pull,
        durable: durable_consumer,
        dead_letters: DeadLetters::new(nats.js.clone(), &durable, request_timeout),
        writer: writer.clone(),
        gate: gate.clone(),
        shared: shared.clone(),
        settings: LoopSettings {
            batch_size: config.batch_size,
            catch_up_batch_size: config.catch_up_batch_size,
            fetch_wait: config.fetch_wait(),
            nak_delay: config.nak_delay(),
            hold_delay: config.ack_wait().max(config.nak_delay()),
            max_deliver: config.max_deliver,
            request_timeout,
        },
        order: OrderGuard::new(
            events.clone(),
            request_timeout,
            stall_per_delivery.saturating_mul(stall_deliveries.saturating_add(1)),
        ),
        parked: Vec::new(),
        retrying: None,
        tracker: tracker.clone(),
    };
    let fatal = CancellationToken::new();
    let consumer = tracker.spawn(loop_.run(shutdown.clone(), fatal.clone()));
    tracker.spawn(
        Monitor {
            shared: shared.clone(),
            client: nats.client,
            events: events.clone(),
            writer: writer.clone(),
            readiness: readiness.clone(),
            max_lag: config.ready_max_lag,
            consumer_stall: config.fetch_wait() + config.ack_wait() + request_timeout,
            request_timeout,
        }
        .run(shutdown.clone()),
    );

    // The platform's JetStream gauges (streams' fill, consumers' backlog): read here, once for
    // every service, with the projection user's read-only stream and consumer info.
    if let Some(every) = config.jetstream_stats_interval() {
        let stats = shared::nats::JetStreamStats::new(nats.js.clone());
        tracker.spawn(stats.run(every, shutdown.clone()));
    }

    let live = Live {
        writer: writer.clone(),
        readers: readers.clone(),
        gate,
        shared: shared.clone(),
    };
    let rebuild = Rebuild {
        events: events.clone(),
        path: db_path.clone(),
        view: config.view.clone(),
        consumer: durable.clone(),
        batch_size: config.catch_up_batch_size,
        states: config.state_settings(),
        read_timeout: config.replay_timeout(),
        hooks,
    };

    let (grpc_listener, grpc_addr) = shared::serve::bind(&config.grpc_addr).await?;
    let query = grpc::QueryGrpc {
        readers,
        writer,
        events,
        shared,
        abandoned_after: config.abandoned_after(),
        request_timeout,
    };
    let grpc = config
        .grpc_tls
        .server_builder()
        .map_err(anyhow::Error::msg)?
        .add_service(QueryServiceServer::new(query));
    let server = tokio::spawn(shared::serve::grpc(grpc, grpc_listener, shutdown.clone()));

    let (http_listener, http_addr) = shared::serve::bind(&config.http_addr).await?;
    let app = shared::ops::router(readiness, shared::telemetry::prometheus()).merge(admin::router(
        admin::AdminState {
            token: config.admin_token.clone(),
            rebuild: rebuild.clone(),
            live: live.clone(),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        },
    ));
    tracker.spawn(shared::serve::http(http_listener, app, shutdown.clone()));

    tracing::info!(view = %config.view, durable, db = %db_path.display(), %grpc_addr, %http_addr, checkpoint = live.writer.checkpoint(), "projection started");
    Ok(Running {
        failed: fatal,
        grpc_addr,
        http_addr,
        db_path,
        rebuild,
        live,
        shutdown,
        tracker,
        consumer,
        server,
        writer_thread,
    })
}

/// Run until `shutdown` (SIGTERM), then stop gracefully. Returns an error if the node fails
/// on its own (see [`Running::failed`]), so the process exits and is restarted.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config).await?;
    let failed = running.failed.clone();
    tokio::select! {
        () = shutdown.cancelled() => running.stop().await,
        () = failed.cancelled() => {
            let why = running.failure();
            running.abort().await;
            Err(anyhow::anyhow!("the projection cannot go on: {why}"))
        }
    }
}
