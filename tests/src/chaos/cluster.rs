//! The production topology on loopback, as real processes: three clustered nats-servers
//! (JetStream, `sync_interval: always`) behind fault proxies, streams and buckets at three
//! replicas, three aggregate nodes with placement, the projection, the runner, a standalone
//! mock payment provider (so it survives runner kills) and two gateways.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub use super::layout::Layout;
use super::process::{Proc, Spec};
use super::proxy::FaultProxy;
use shared::test_support::Accounts;

/// The validation key the runners and gateways share.
const VALIDATION_KEY: &str = "chaos-validation-key";

/// Node TTL of the chaos cluster: a dead or paused aggregate's shards move after it.
pub const NODE_TTL_SECS: u64 = 3;
const READY: Duration = Duration::from_secs(60);

pub struct Cluster {
    pub layout: Layout,
    pub dir: PathBuf,
    pub nats: Vec<Proc>,
    pub proxies: Vec<FaultProxy>,
    pub aggregates: Vec<Proc>,
    pub projection: Proc,
    pub runner: Proc,
    /// A second runner, started by the scenarios that want one (not by `ensure_running`): it
    /// stands by, not ready, until it holds the lease. Its ready URL is `/health`.
    pub standby_runner: Proc,
    pub mock: Proc,
    pub gateways: Vec<Proc>,
    /// A direct connection to the servers (not through the proxies), for the checks.
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub http: reqwest::Client,
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn env(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

impl Cluster {
    /// Starts everything under `dir` (emptied first), with the services' binaries from
    /// `bins` and the repository at `root`; returns once every process is ready.
    pub async fn start(
        root: &Path,
        bins: &Path,
        dir: &Path,
        layout: Layout,
    ) -> anyhow::Result<Self> {
        for port in layout.all() {
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!("port {port} is taken; pass --base-port to use another range");
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let nats_bin = shared::test_support::find_server_binary().map_err(anyhow::Error::msg)?;
        // The shipped accounts (deploy/nats/accounts.conf, which member.conf includes): every
        // process connects as its own user, like a deployment; the passwords are made here.
        let accounts = Accounts::generate();
        let credentials = dir.join("credentials");
        std::fs::create_dir_all(&credentials)?;
        for user in accounts.users() {
            std::fs::write(
                credentials.join(format!("{user}.password")),
                accounts.password(user),
            )?;
        }

        let mut nats = Vec::new();
        for i in 0..3 {
            let mut p = Proc::new(
                Spec {
                    name: format!("nats-{i}"),
                    bin: nats_bin.clone(),
                    args: vec![
                        "--config".into(),
                        root.join("deploy/nats/cluster.conf").display().to_string(),
                    ],
                    env: nats_member(&layout, i, dir, &accounts),
                    ready_url: Some(format!(
                        "http://127.0.0.1:{}/healthz",
                        layout.nats_monitor(i)
                    )),
                },
                &logs,
            );
            p.start()?;
            nats.push(p);
        }
        for p in &mut nats {
            p.wait_ready(&http, READY).await?;
        }
        let mut proxies = Vec::new();
        for i in 0..3 {
            let listen: SocketAddr = local(layout.proxy(i)).parse()?;
            let target: SocketAddr = local(layout.nats_client(i)).parse()?;
            proxies.push(FaultProxy::start(listen, target).await?);
        }
        let direct = (0..3)
            .map(|i| format!("nats://127.0.0.1:{}", layout.nats_client(i)))
            .collect::<Vec<_>>()
            .join(",");
        let config = shared::nats::NatsConfig {
            url: direct,
            name: "chaos-checker".into(),
            user: "admin".into(),
            password: accounts.password("admin").into(),
            ..Default::default()
        };
        let client = shared::nats::connect(&config)
            .await
            .context("connect to the cluster")?;
        let js = shared::nats::jetstream(client.clone(), &config);

        // The services go through the proxies.
        let nats_url = (0..3)
            .map(|i| format!("nats://127.0.0.1:{}", layout.proxy(i)))
            .collect::<Vec<_>>()
            .join(",");
        let common = vec![
            ("NATS_URL", nats_url),
            ("STREAMS_REPLICAS", "3".to_owned()),
            ("STREAMS_NODE_TTL_SECS", NODE_TTL_SECS.to_string()),
            (
                "RUST_LOG",
                "info,async_nats=warn,h2=warn,tower=warn,hyper=warn".to_owned(),
            ),
        ];
        // The environment of a process that connects to NATS as `user`.
        let with = |user: &str, extra: &[(&str, String)]| {
            let mut e = env(&common);
            e.insert("NATS_USER".into(), user.to_owned());
            e.insert(
                "NATS_PASSWORD_FILE".into(),
                credentials
                    .join(format!("{user}.password"))
                    .display()
                    .to_string(),
            );
            e.extend(env(extra));
            e
        };
        let bin = |name: &str| bins.join(name);
        // A service run by its own binary as its own NATS user, ready when `ready_url` answers.
        let service = |name: String, user: &str, extra: &[(&str, String)], ready_url: String| {
            Proc::new(
                Spec {
                    name,
                    bin: bin(user),
                    args: vec![],
                    env: with(user, extra),
                    ready_url: Some(ready_url),
                },
                &logs,
            )
        };

        // The streams and buckets, then the catalog; retried while JetStream elects its leaders.
        seed(
            &bin("aggregate"),
            &root.join("deploy/catalog.json"),
            &with("seed", &[]),
            &logs,
        )
        .await?;

        let mut aggregates = Vec::new();
        for i in 0..3 {
            aggregates.push(service(
                format!("aggregate-{i}"),
                "aggregate",
                &[
                    ("AGGREGATE_NODE_ID", format!("agg-{i}")),
                    ("AGGREGATE_GRPC_ADDR", local(layout.aggregate_grpc(i))),
                    ("AGGREGATE_HTTP_ADDR", local(layout.aggregate_http(i))),
                    ("AGGREGATE_HEARTBEAT_MS", "500".to_owned()),
                    ("NATS_NAME", format!("agg-{i}")),
                ],
                format!("http://127.0.0.1:{}/ready", layout.aggregate_http(i)),
            ));
        }
        let aggregate_addrs = (0..3)
            .map(|i| local(layout.aggregate_grpc(i)))
            .collect::<Vec<_>>()
            .join(",");
        let projection = service(
            "projection".into(),
            "projection",
            &[
                ("PROJECTION_GRPC_ADDR", local(layout.projection_grpc())),
                ("PROJECTION_HTTP_ADDR", local(layout.projection_http())),
                (
                    "PROJECTION_DB_PATH",
                    dir.join("projection.db").display().to_string(),
                ),
            ],
            format!("http://127.0.0.1:{}/health", layout.projection_http()),
        );
        let mock = Proc::new(
            Spec {
                name: "mock-provider".into(),
                bin: bin("runner"),
                args: vec![
                    "mock-provider".into(),
                    "--addr".into(),
                    local(layout.mock()),
                ],
                env: env(&common),
                ready_url: Some(format!("http://127.0.0.1:{}/__mock/stats", layout.mock())),
            },
            &logs,
        );
        let gateway0 = format!("http://127.0.0.1:{}", layout.gateway(0));
        let runner = service(
            "runner".into(),
            "runner",
            &[
                ("RUNNER_GRPC_ADDR", local(layout.runner_grpc())),
                ("RUNNER_HTTP_ADDR", local(layout.runner_http())),
                ("RUNNER_AGGREGATE_ADDRS", aggregate_addrs.clone()),
                ("RUNNER_RECONCILE_INTERVAL_SECS", "2".to_owned()),
                ("RUNNER_RECONCILE_AFTER_SECS", "2".to_owned()),
                (
                    "PROVIDER_BASE_URL",
                    format!("http://127.0.0.1:{}", layout.mock()),
                ),
                // Production defaults are 5 s x 4 tries per delivery: shorter here, so a
                // provider that keeps timing out fails its checkout within the scenario.
                ("PROVIDER_TIMEOUT_MS", "1000".to_owned()),
                ("PROVIDER_ATTEMPTS", "2".to_owned()),
                ("PROVIDER_BACKOFF_MIN_MS", "50".to_owned()),
                ("PROVIDER_BACKOFF_MAX_MS", "200".to_owned()),
                ("CONSUMER_ACK_WAIT_MS", "4000".to_owned()),
                ("CONSUMER_MAX_DELIVER", "5".to_owned()),
                (
                    "MERCHANT_PUSH",
                    format!(
                        "{gateway0}/cart/push?tenant={{tenant}}&klarna_order_id={{checkout.order.id}}"
                    ),
                ),
                (
                    "MERCHANT_VALIDATION",
                    format!(
                        "{gateway0}/cart/validation?tenant={{tenant}}&klarna_order_id={{checkout.order.id}}"
                    ),
                ),
                ("MERCHANT_VALIDATION_KEY", VALIDATION_KEY.to_owned()),
            ],
            format!("http://127.0.0.1:{}/ready", layout.runner_http()),
        );
        let mut standby = runner.spec.clone();
        standby.name = "runner-standby".into();
        standby.env.extend(env(&[
            ("RUNNER_GRPC_ADDR", local(layout.standby_runner_grpc())),
            ("RUNNER_HTTP_ADDR", local(layout.standby_runner_http())),
        ]));
        standby.ready_url = Some(format!(
            "http://127.0.0.1:{}/health",
            layout.standby_runner_http()
        ));
        let standby_runner = Proc::new(standby, &logs);
        let mut gateways = Vec::new();
        for i in 0..2 {
            gateways.push(service(
                format!("gateway-{i}"),
                "gateway",
                &[
                    ("GATEWAY_HTTP_ADDR", local(layout.gateway(i))),
                    ("GATEWAY_AGGREGATE_ADDRS", aggregate_addrs.clone()),
                    ("GATEWAY_PROJECTION_ADDR", local(layout.projection_grpc())),
                    (
                        "GATEWAY_RUNNER_ADDR",
                        format!(
                            "{},{}",
                            local(layout.runner_grpc()),
                            local(layout.standby_runner_grpc())
                        ),
                    ),
                    ("GATEWAY_CLIENT_RATE_PER_SEC", "0".to_owned()),
                    ("GATEWAY_CART_RATE_PER_SEC", "0".to_owned()),
                    ("GATEWAY_UPSTREAM_TIMEOUT_MS", "2000".to_owned()),
                    ("GATEWAY_CHECKOUT_WAIT_MS", "3000".to_owned()),
                    ("GATEWAY_ADMIN_TOKEN", "chaos".to_owned()),
                    ("GATEWAY_VALIDATION_KEY", VALIDATION_KEY.to_owned()),
                ],
                format!("http://127.0.0.1:{}/ready", layout.gateway(i)),
            ));
        }
        let mut cluster = Self {
            layout,
            dir: dir.to_owned(),
            nats,
            proxies,
            aggregates,
            projection,
            runner,
            standby_runner,
            mock,
            gateways,
            client,
            js,
            http,
        };
        for p in cluster.services_mut() {
            p.start()?;
        }
        cluster.ensure_running().await?;
        Ok(cluster)
    }

    /// Every process but the NATS servers, in start order.
    pub fn services_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.aggregates
            .iter_mut()
            .chain([&mut self.projection, &mut self.mock, &mut self.runner])
            .chain(self.gateways.iter_mut())
    }

    /// Starts whatever is not running and waits until everything is ready.
    pub async fn ensure_running(&mut self) -> anyhow::Result<()> {
        let http = self.http.clone();
        for p in &mut self.nats {
            p.start()?;
        }
        for p in &mut self.nats {
            p.wait_ready(&http, READY).await?;
        }
        for p in self.services_mut() {
            p.start()?;
        }
        for p in self.services_mut() {
            p.wait_ready(&http, READY).await?;
        }
        Ok(())
    }

    pub fn gateway_urls(&self) -> Vec<String> {
        (0..self.gateways.len())
            .map(|i| format!("http://127.0.0.1:{}", self.layout.gateway(i)))
            .collect()
    }

    pub fn mock_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.layout.mock())
    }

    /// The index of the NATS server leading `stream` (a KV bucket's stream is `KV_<bucket>`).
    pub async fn leader_of(&self, stream: &str) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leader = match self.js.get_stream(stream).await {
                Ok(mut s) => s
                    .info()
                    .await
                    .ok()
                    .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone())),
                Err(_) => None,
            };
            if let Some(i) = leader
                .as_deref()
                .and_then(|l| l.strip_prefix("chaos-n"))
                .and_then(|n| n.parse::<usize>().ok())
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no leader for {stream}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Process id and resident memory of every running process, by name.
    pub fn rss(&self) -> BTreeMap<String, (u32, u64)> {
        self.nats
            .iter()
            .chain(&self.aggregates)
            .chain([&self.projection, &self.mock, &self.runner])
            .chain(&self.gateways)
            .filter_map(|p| Some((p.name().to_owned(), (p.pid()?, p.rss()?))))
            .collect()
    }
}

/// What differs per member of `deploy/nats/cluster.conf` (`member.conf` and `routes.conf`
/// with plaintext routes; Kubernetes runs them with TLS routes), for member `i` on loopback.
fn nats_member(l: &Layout, i: usize, dir: &Path, accounts: &Accounts) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([
        ("NATS_SERVER_NAME".to_owned(), format!("chaos-n{i}")),
        ("NATS_LISTEN".to_owned(), local(l.nats_client(i))),
        ("NATS_HTTP".to_owned(), local(l.nats_monitor(i))),
        ("NATS_CLUSTER_LISTEN".to_owned(), local(l.nats_route(i))),
        (
            "NATS_STORE_DIR".to_owned(),
            dir.join(format!("nats-{i}")).display().to_string(),
        ),
        (
            "NATS_PID_FILE".to_owned(),
            dir.join(format!("nats-{i}.pid")).display().to_string(),
        ),
    ]);
    for j in 0..3 {
        env.insert(
            format!("NATS_ROUTE_{}", j + 1),
            format!("nats-route://127.0.0.1:{}", l.nats_route(j)),
        );
    }
    env.extend(accounts.server_env());
    env
}

async fn seed(
    aggregate: &Path,
    catalog: &Path,
    env: &BTreeMap<String, String>,
    logs: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY;
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join("seed.log"))?;
        let status = tokio::process::Command::new(aggregate)
            .args(["seed-catalog", "--file"])
            .arg(catalog)
            .env_clear()
            .envs(env)
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await?;
        if status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "seeding the catalog failed; see {}",
                logs.join("seed.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
