//! Placement with several nodes against a real nats-server: shard movement on join, a node
//! killed with SIGKILL, and drain under load.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cart_client::PlacementView;
use cart_client::{CartClient, ClientConfig};
use cart_domain::ids::CommandId;
use common::*;
use proto::cart::v1 as pb;
use shared::headers::RequestContext;
use shared::placement::rendezvous_owner;
use shared::test_support::wait_until;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SHARDS: u32 = 64;

/// The test's view of the placement, as a client has it, kept up to date until `stop`.
struct Watch {
    view: PlacementView,
    stop: CancellationToken,
    _tracker: TaskTracker,
}

impl Watch {
    async fn start(env: &Env) -> Watch {
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let nodes = env.js.get_key_value("CART_NODES").await.unwrap();
        let placement = env.js.get_key_value("CART_PLACEMENT").await.unwrap();
        let view = PlacementView::start(
            env.js.client(),
            nodes,
            placement,
            SHARDS,
            "SHARDS",
            Duration::from_millis(200),
            &tracker,
            stop.clone(),
        )
        .await
        .unwrap();
        Watch {
            view,
            stop,
            _tracker: tracker,
        }
    }

    /// Waits until every shard is owned as rendezvous hashing picks among `nodes`, and only
    /// they are live.
    async fn converges(&self, nodes: &[&str], what: &str) {
        wait_until(|| async { converged(&self.view, nodes) }, WAIT)
            .await
            .expect(what);
    }
}

/// True when every shard is owned by the node rendezvous hashing picks among `nodes`.
fn converged(view: &PlacementView, nodes: &[&str]) -> bool {
    let live: Vec<String> = view.nodes().into_iter().map(|(id, _)| id).collect();
    if live.len() != nodes.len() || !nodes.iter().all(|n| live.iter().any(|l| l == n)) {
        return false;
    }
    (0..SHARDS).all(|s| {
        view.owner(s).map(|o| o.node)
            == rendezvous_owner(s, nodes.iter().copied()).map(str::to_owned)
    })
}

fn owners(view: &PlacementView) -> Vec<String> {
    (0..SHARDS)
        .map(|s| view.owner(s).map(|o| o.node).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn adding_a_fourth_node_moves_about_a_quarter_of_the_shards() {
    let Some(env) = env().await else { return };
    let watch = Watch::start(&env).await;
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(env.node(id, true).await);
    }
    watch
        .converges(&["n1", "n2", "n3"], "three nodes converge")
        .await;
    let before = owners(&watch.view);

    nodes.push(env.node("n4", true).await);
    watch
        .converges(&["n1", "n2", "n3", "n4"], "four nodes converge")
        .await;
    let after = owners(&watch.view);
    let moved: Vec<usize> = (0..SHARDS as usize)
        .filter(|&s| before[s] != after[s])
        .collect();
    assert!(
        moved.iter().all(|&s| after[s] == "n4"),
        "only shards that must move (to the new node) moved"
    );
    let share = moved.len() as f64 / f64::from(SHARDS);
    assert!(
        (0.12..=0.40).contains(&share),
        "{} of {SHARDS} shards moved ({share:.2}); expected about a quarter",
        moved.len()
    );
    for n in nodes {
        n.drain().await.unwrap();
    }
    watch.stop.cancel();
}

/// Sends adds to many carts through the placement-aware client until told to stop, counting
/// acknowledged adds per cart and failures.
struct Load {
    acked: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    attempted: Arc<std::sync::Mutex<HashMap<String, u32>>>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(client: CartClient, carts: usize, workers: usize) -> Self {
        let acked = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let attempted = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let failures = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let (client, acked, attempted, failures, stop) = (
                client.clone(),
                acked.clone(),
                attempted.clone(),
                failures.clone(),
                stop.clone(),
            );
            tasks.spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::SeqCst) {
                    let cart = format!("load-{}", i % carts);
                    i += workers;
                    *attempted.lock().unwrap().entry(cart.clone()).or_insert(0) += 1;
                    let req = pb::ExecuteRequest {
                        tenant: TENANT.into(),
                        cart_id: cart.clone(),
                        command_id: CommandId::new().to_string(),
                        expected_version: None,
                        command: proto::convert::command_bytes(&add("TEST-SKU-456", 1)),
                        request_fingerprint: String::new(),
                        render: pb::Render::Snapshot.into(),
                    };
                    match client.execute(&RequestContext::new(tenant()), req).await {
                        Ok(_) => *acked.lock().unwrap().entry(cart).or_insert(0) += 1,
                        Err(e) => {
                            eprintln!("command failed: {e}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
        Self {
            acked,
            attempted,
            failures,
            stop,
            tasks,
        }
    }

    fn acked_total(&self) -> u32 {
        self.acked.lock().unwrap().values().sum()
    }

    /// Waits until `n` adds in all are acknowledged.
    async fn until_acked(&self, n: u32, what: &str) {
        wait_until(|| async { self.acked_total() >= n }, WAIT)
            .await
            .expect(what);
    }

    async fn finish(mut self) -> (HashMap<String, u32>, HashMap<String, u32>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        while self.tasks.join_next().await.is_some() {}
        let acked = self.acked.lock().unwrap().clone();
        let attempted = self.attempted.lock().unwrap().clone();
        (acked, attempted, self.failures.load(Ordering::SeqCst))
    }
}

fn client(view: PlacementView) -> CartClient {
    CartClient::new(
        ClientConfig {
            shard_count: SHARDS,
            timeout: Duration::from_secs(3),
            attempts: 4,
            ..ClientConfig::default()
        },
        Some(view),
        Vec::new(),
    )
}

#[tokio::test]
async fn drain_under_load_fails_no_command() {
    let Some(env) = env().await else { return };
    let watch = Watch::start(&env).await;
    let a = env.node("a", true).await;
    let b = env.node("b", true).await;
    watch.converges(&["a", "b"], "a and b own shards").await;

    let load = Load::start(client(watch.view.clone()), 40, 16);
    load.until_acked(200, "the load runs").await;
    a.drain().await.expect("a drains");
    let after_drain = load.acked_total();
    load.until_acked(after_drain + 200, "commands keep succeeding")
        .await;
    let (acked, attempted, failures) = load.finish().await;
    assert_eq!(failures, 0, "no command failed during the drain");
    watch
        .converges(&["b"], "b owns every shard and a has left")
        .await;
    for (cart, n) in &acked {
        assert_eq!(attempted[cart], *n);
        let replay = env.replay(cart).await;
        assert_eq!(quantity_of(&replay, "TEST-SKU-456"), *n, "{cart}");
    }
    b.drain().await.unwrap();
    watch.stop.cancel();
}

struct Process_(Child);

impl Drop for Process_ {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_killed_node_loses_no_acknowledged_command_and_its_shards_move() {
    let Some(env) = env().await else { return };
    let watch = Watch::start(&env).await;

    // Node "victim" is a real process, so it can be killed with SIGKILL. It binds a free port
    // itself and advertises what it bound (a port picked here first could be taken by another
    // test before the victim binds it).
    let child = Process::new(env!("CARGO_BIN_EXE_aggregate"))
        .env("NATS_URL", env.nats.url())
        .env("AGGREGATE_NODE_ID", "victim")
        .env("AGGREGATE_GRPC_ADDR", "127.0.0.1:0")
        .env("AGGREGATE_HTTP_ADDR", "127.0.0.1:0")
        .env("AGGREGATE_SHARD_COUNT", SHARDS.to_string())
        .env("AGGREGATE_HEARTBEAT_MS", "200")
        .env(
            "STREAMS_NODE_TTL_SECS",
            env.streams.node_ttl_secs.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the aggregate binary");
    let mut victim = Process_(child);
    let survivor = env.node("survivor", true).await;
    watch
        .converges(&["survivor", "victim"], "both nodes own shards")
        .await;

    let load = Load::start(client(watch.view.clone()), 40, 16);
    load.until_acked(300, "the load runs").await;
    victim.0.kill().expect("SIGKILL the victim");
    let _ = victim.0.wait();
    watch
        .converges(
            &["survivor"],
            "the victim's shards move to the survivor after the TTL",
        )
        .await;
    let after = load.acked_total();
    load.until_acked(after + 200, "commands keep succeeding")
        .await;
    let (acked, attempted, failures) = load.finish().await;
    // Calls that hit the dying node fail over (commands carry ids, so repeating is safe).
    assert_eq!(failures, 0, "no command failed while the victim died");
    for (cart, n) in &acked {
        let replay = env.replay(cart).await;
        let q = quantity_of(&replay, "TEST-SKU-456");
        assert!(q >= *n, "{cart}: {n} acknowledged adds, only {q} stored");
        assert!(q <= attempted[cart], "{cart}: more stored than attempted");
    }
    survivor.drain().await.unwrap();
    watch.stop.cancel();
}
