//! Shared set-up for the projection's integration tests: a real nats-server (through the
//! harness), projections started in-process on free ports, an event generator that publishes
//! like the aggregate does, and the expected views as a plain fold of the same events.

#![allow(dead_code)]

pub mod expect;
pub mod generator;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use projection::{CommitAction, Config, Hooks, Running};
use proto::projection::v1 as pb;
use proto::projection::v1::query_service_client::QueryServiceClient;
use shared::nats::NatsResourceSettings;
use shared::subjects::CART_EVENTS_STREAM;
use shared::test_support::{NatsServer, wait_until};
use tonic::transport::Channel;

pub use expect::{assert_views, expected};
#[allow(unused_imports)]
pub use expect::{expected_states, read_states};
pub use generator::{Generator, SimCart};

/// Deadline of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Env {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub dir: tempfile::TempDir,
}

pub async fn env() -> Option<Env> {
    let nats = shared::nats_or_skip!()?;
    let client = nats.client().await;
    let js = nats.jetstream().await;
    shared::nats::ensure_all(&js, &NatsResourceSettings::default())
        .await
        .expect("ensure streams");
    Some(Env {
        nats,
        client,
        js,
        dir: tempfile::tempdir().unwrap(),
    })
}

/// [`env`] with the first `n` messages of `Generator::new(seed, tenants, carts_per_tenant)`
/// published; returns the generator to publish more and to compute the expected views.
pub async fn env_published(
    seed: u64,
    tenants: &[&str],
    carts_per_tenant: usize,
    n: usize,
) -> Option<(Env, Generator)> {
    let env = env().await?;
    let mut generator = Generator::new(seed, tenants, carts_per_tenant);
    generator.publish(&env.js, n).await;
    Some((env, generator))
}

impl Env {
    /// A projection config for tests: free ports, a database in the test's temp dir, short
    /// ack wait and nak delay so redelivery tests finish quickly, and one batch size whether
    /// the projection keeps up or catches up (the catch-up test sets its own).
    pub fn config(&self, view: &str) -> Config {
        let mut nats = Config::default().nats;
        nats.url = self.nats.url().to_owned();
        nats.name = format!("projection-{view}");
        Config {
            view: view.to_owned(),
            db_path: self.db_path(view).display().to_string(),
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            batch_size: 64,
            catch_up_batch_size: 64,
            fetch_wait_ms: 200,
            ack_wait_ms: 1_000,
            max_deliver: 3,
            nak_delay_ms: 100,
            admin_token: "test-token".into(),
            nats,
            ..Config::default()
        }
    }

    pub fn db_path(&self, view: &str) -> PathBuf {
        self.dir.path().join(format!("{view}.db"))
    }

    pub async fn start(&self, config: Config, hooks: Hooks) -> Running {
        projection::start_with_hooks(config, hooks)
            .await
            .expect("start projection")
    }

    pub async fn stream_last(&self) -> u64 {
        shared::test_support::stream_state(&self.js, CART_EVENTS_STREAM)
            .await
            .last_sequence
    }

    /// The last stream sequence the durable consumer of `view` has had acknowledged (all
    /// before it too).
    pub async fn ack_floor(&self, view: &str) -> u64 {
        let durable = shared::subjects::projection_durable(view).unwrap();
        shared::test_support::consumer_info(&self.js, CART_EVENTS_STREAM, &durable)
            .await
            .ack_floor
            .stream_sequence
    }

    /// [`Env::start`], returning once the projection has applied everything in the stream.
    pub async fn start_caught_up(&self, config: Config, hooks: Hooks) -> Running {
        self.start_caught_up_within(config, hooks, WAIT).await
    }

    /// Runs view `main` until it has applied everything in the stream, stops it gracefully
    /// and returns its checkpoint.
    pub async fn run_to_checkpoint(&self) -> u64 {
        let running = self
            .start_caught_up(self.config("main"), Hooks::default())
            .await;
        let checkpoint = running.checkpoint();
        running.stop().await.unwrap();
        checkpoint
    }

    /// Rebuilds `config`'s database from the stream with no service running (the CLI's
    /// `projection rebuild`), `batch_size` messages per transaction, keeping `states`.
    pub async fn rebuild_offline(
        &self,
        config: &Config,
        batch_size: usize,
        states: projection::write::writer::StateSettings,
    ) -> projection::RebuildReport {
        let rebuild = projection::ops::rebuild::Rebuild {
            events: self.js.get_stream(CART_EVENTS_STREAM).await.unwrap(),
            path: config.db_path(),
            view: config.view.clone(),
            consumer: config.durable(),
            batch_size,
            states,
            read_timeout: Duration::from_secs(5),
            hooks: Hooks::default(),
        };
        let shared = Arc::new(projection::status::ProjectionStatus::new(&config.view));
        rebuild.offline(&shared).await.expect("offline rebuild")
    }

    /// Deletes `CART_EVENTS` and creates it again, empty (as a service's start would).
    pub async fn create_stream_again(&self) {
        shared::test_support::create_cart_events_again(&self.js, &self.config("main").streams)
            .await;
    }

    /// [`Env::start_caught_up`], waiting `within` at most.
    pub async fn start_caught_up_within(
        &self,
        config: Config,
        hooks: Hooks,
        within: Duration,
    ) -> Running {
        let running = self.start(config, hooks).await;
        self.caught_up_within(&running, within).await;
        running
    }

    /// Waits until `running` has applied everything in the stream, asserts its views are the
    /// fold of every message published to `carts`, then stops it.
    pub async fn fold_and_stop(&self, running: Running, carts: &[SimCart]) {
        self.caught_up(&running).await;
        assert_fold_and_stop(running, carts).await;
    }

    /// Waits until the projection has applied everything in the stream.
    pub async fn caught_up(&self, running: &Running) {
        self.caught_up_within(running, WAIT).await;
    }

    /// Waits `within` at most until the projection has applied everything in the stream.
    pub async fn caught_up_within(&self, running: &Running, within: Duration) {
        let last = self.stream_last().await;
        wait_until(|| async { running.checkpoint() >= last }, within)
            .await
            .unwrap_or_else(|e| panic!("projection at {} of {last}: {e}", running.checkpoint()));
    }
}

/// Asserts the views of `running` are the fold of every message published to `carts`, then
/// stops it.
pub async fn assert_fold_and_stop(running: Running, carts: &[SimCart]) {
    assert_views(&running.db_path, &expected(carts));
    running.stop().await.unwrap();
}

pub async fn query(running: &Running) -> QueryServiceClient<Channel> {
    QueryServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connect to QueryService")
}

/// The dead letters of `tenant` (every tenant's when empty) the projection lists.
pub async fn dead_letters(
    q: &mut QueryServiceClient<Channel>,
    tenant: &str,
) -> Vec<pb::DeadLetter> {
    let req = pb::ListDeadLettersRequest {
        tenant: tenant.into(),
        limit: 0,
    };
    q.list_dead_letters(req)
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

/// Replays dead letter `id` (the call must succeed; the outcome says whether it applied).
pub async fn replay(q: &mut QueryServiceClient<Channel>, id: u64) -> pb::ReplayDeadLetterResponse {
    let req = pb::ReplayDeadLetterRequest { id };
    q.replay_dead_letter(req).await.unwrap().into_inner()
}

/// The projection's `Status`.
pub async fn status(q: &mut QueryServiceClient<Channel>) -> pb::StatusResponse {
    q.status(pb::StatusRequest {}).await.unwrap().into_inner()
}

/// The projection's view of cart `cart_id` of `tenant`.
pub async fn get_cart(
    q: &mut QueryServiceClient<Channel>,
    tenant: &str,
    cart_id: &str,
) -> pb::CartRecord {
    let req = pb::GetCartRequest {
        tenant: tenant.into(),
        cart_id: cart_id.into(),
    };
    q.get_cart(req).await.unwrap().into_inner()
}

/// The text of a projection's `/metrics`.
pub async fn metrics(running: &Running) -> String {
    let url = format!("http://{}/metrics", running.http_addr);
    shared::test_support::http::text(&reqwest::Client::new(), &url).await
}

/// Asserts that one scrape of `running`'s /metrics has every one of `names`.
pub async fn assert_metrics(running: &Running, names: &[&str]) {
    shared::test_support::assert_contains_all(&metrics(running).await, names, "/metrics");
}

/// A hook failing the apply of the message at stream sequence `seq` with `why` while the
/// returned flag holds (a bug in this build, fixed later).
pub fn fail_apply_at(seq: u64, why: &str) -> (Hooks, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(true));
    let (f, why) = (failing.clone(), why.to_owned());
    let hooks = Hooks {
        fail_apply: Some(Arc::new(move |_msg, at| {
            (f.load(Ordering::SeqCst) && at == seq).then(|| why.clone())
        })),
        ..Hooks::default()
    };
    (hooks, failing)
}

/// Adding one of `sku` (Swedish prices).
pub fn add(sku: &str) -> cart_domain::Command {
    shared::test_support::add_item(sku, 1)
}

/// A read-only connection to a projection's database (to compare rows exactly).
pub fn open_db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open projection database")
}

/// A hook that holds every sync of commits to disk until the test decides (`true`: the syncs
/// succeed from then on; `false`: they fail).
pub fn hold_sync() -> (Hooks, mpsc::Sender<bool>) {
    let (decide, decision) = mpsc::channel::<bool>();
    let decision = Mutex::new(decision);
    let verdict = std::sync::OnceLock::new();
    let hooks = Hooks {
        before_sync: Some(Arc::new(move || {
            let ok = *verdict
                .get_or_init(|| decision.lock().unwrap().recv_timeout(WAIT).unwrap_or(true));
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::other("injected sync failure"))
            }
        })),
        ..Hooks::default()
    };
    (hooks, decide)
}

/// A hook that lets `n - 1` batches commit, then signals and blocks the `n`-th until released,
/// and then does `action`.
pub fn hold_commit(n: u32, action: CommitAction) -> (Hooks, mpsc::Receiver<u64>, mpsc::Sender<()>) {
    let (reached_tx, reached) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let reached_tx = Mutex::new(reached_tx);
    let release_rx = Mutex::new(release_rx);
    let calls = AtomicU32::new(0);
    let hooks = Hooks {
        before_commit: Some(Arc::new(move |last_seq| {
            if calls.fetch_add(1, Ordering::SeqCst) + 1 != n {
                return CommitAction::Commit;
            }
            let _ = reached_tx.lock().unwrap().send(last_seq);
            let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
            action
        })),
        ..Hooks::default()
    };
    (hooks, reached, release)
}

/// `(name, sql)` of the secondary indexes of the views in the database at `path`.
pub fn view_indexes(path: &std::path::Path) -> Vec<(String, String)> {
    projection::store::db::view_indexes(&open_db(path)).unwrap()
}
