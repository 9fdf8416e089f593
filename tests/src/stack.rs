//! The platform started in one process for end-to-end tests and the benchmark: a nats-server
//! (spawned through the harness, or an external URL), the streams and buckets, the seeded
//! catalog, and aggregate nodes on free ports.

use std::time::Duration;

use anyhow::Context as _;
use shared::nats::NatsResourceSettings;
use shared::test_support::NatsServer;

/// The catalog every test and benchmark uses (the same file `scripts/dev` seeds).
pub const CATALOG_JSON: &str = include_str!("../../deploy/catalog.json");

/// What `aggregate seed-catalog` does: the streams and buckets of `streams` ensured on `js`,
/// and [`CATALOG_JSON`] written to the catalog bucket.
pub async fn seed_catalog(
    js: &async_nats::jetstream::Context,
    streams: &NatsResourceSettings,
) -> anyhow::Result<shared::nats::Resources> {
    let seeded = shared::nats::ensure_all(js, streams).await?;
    let seed = aggregate::seed::parse(CATALOG_JSON).map_err(anyhow::Error::msg)?;
    aggregate::seed::write(&seeded.catalog, &seed)
        .await
        .map_err(|e| anyhow::anyhow!("seed catalog: {e}"))?;
    Ok(seeded)
}

pub struct Stack {
    /// `None` when running against an external server.
    pub server: Option<NatsServer>,
    pub nats_url: String,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub resources: shared::nats::Resources,
    pub streams: NatsResourceSettings,
}

impl Stack {
    /// A fresh server through the harness with the shipped accounts
    /// (`deploy/nats/accounts.conf`): every service connects as its own NATS user, so every
    /// end-to-end test also proves the users may do what the services need. The stack's own
    /// client is `admin`; the catalog is seeded as `seed`. With `CART_TEST_NATS_URL` the
    /// external server is used as it is (anonymous). `None` after a loud skip when there is no
    /// server and `CART_REQUIRE_NATS` is not set.
    pub async fn start(streams: NatsResourceSettings) -> Option<Self> {
        let external = std::env::var("CART_TEST_NATS_URL").is_ok_and(|u| !u.trim().is_empty());
        let server = if external {
            NatsServer::start().await?
        } else {
            NatsServer::start_with_accounts().await?
        };
        let url = server.url().to_owned();
        Some(
            Self::connect(Some(server), &url, streams)
                .await
                .expect("prepare NATS"),
        )
    }

    /// Use the server at `url` (the benchmark's `--nats-url`), or spawn one, fsyncing every
    /// write before acknowledging it (`sync_always`, like production) or lazily.
    pub async fn for_bench(
        url: Option<&str>,
        streams: NatsResourceSettings,
        sync_always: bool,
    ) -> anyhow::Result<Self> {
        match url {
            Some(url) => Self::connect(None, url, streams).await,
            None => {
                let server = NatsServer::start_for_bench(sync_always)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("cannot start nats-server (run scripts/install-nats)")?;
                let url = server.url().to_owned();
                Self::connect(Some(server), &url, streams).await
            }
        }
    }

    async fn connect(
        server: Option<NatsServer>,
        url: &str,
        streams: NatsResourceSettings,
    ) -> anyhow::Result<Self> {
        let as_user = |user: &str| match &server {
            Some(s) if s.accounts().is_some() => s.service_config(user),
            _ => shared::nats::NatsConfig {
                url: url.to_owned(),
                name: format!("cart-tests-{user}"),
                ..Default::default()
            },
        };
        // With the seed job's user; boxed, so the start-up future that tests poll on their
        // own thread's stack stays small.
        let seeder = as_user("seed");
        let seed_js = shared::nats::jetstream(shared::nats::connect(&seeder).await?, &seeder);
        Box::pin(seed_catalog(&seed_js, &streams)).await?;
        let config = as_user("admin");
        let client = shared::nats::connect(&config).await?;
        let js = shared::nats::jetstream(client.clone(), &config);
        let resources = shared::nats::ensure_all(&js, &streams).await?;
        Ok(Self {
            server,
            nats_url: url.to_owned(),
            client,
            js,
            resources,
            streams,
        })
    }

    /// How the service connecting as `user` reaches this server: with that user's password
    /// when the server has accounts, anonymously otherwise (the benchmark's servers).
    pub fn nats(&self, user: &str) -> shared::nats::NatsConfig {
        match &self.server {
            Some(s) if s.accounts().is_some() => s.service_config(user),
            _ => shared::nats::NatsConfig {
                url: self.nats_url.clone(),
                name: user.to_owned(),
                ..Default::default()
            },
        }
    }

    /// An aggregate config pointing at this server, listening on free ports.
    pub fn aggregate_config(&self, node_id: &str) -> aggregate::Config {
        let mut nats = self.nats("aggregate");
        nats.name = node_id.to_owned();
        aggregate::Config {
            node_id: node_id.to_owned(),
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            heartbeat_ms: 200,
            nats,
            streams: self.streams.clone(),
            ..aggregate::Config::default()
        }
    }

    pub async fn aggregate(&self, node_id: &str) -> anyhow::Result<aggregate::Running> {
        aggregate::start(self.aggregate_config(node_id)).await
    }

    /// A gateway config pointing at this server, listening on a free port, without rate
    /// limits (load tests and e2e tests drive it hard from one address).
    pub fn gateway_config(&self) -> gateway::Config {
        let mut c = gateway::Config {
            http_addr: "127.0.0.1:0".into(),
            client_rate_per_sec: 0,
            cart_rate_per_sec: 0,
            placement_resync_ms: 200,
            streams: self.streams.clone(),
            ..gateway::Config::default()
        };
        c.nats = self.nats("gateway");
        c
    }

    /// A projection config pointing at this server, its database in `dir`, listening on free
    /// ports.
    pub fn projection_config(&self, dir: &std::path::Path) -> projection::Config {
        projection::Config {
            db_path: dir.join("projection.db").display().to_string(),
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            nats: self.nats("projection"),
            streams: self.streams.clone(),
            ..projection::Config::default()
        }
    }

    /// A runner config pointing at this server (aggregates found through placement), calling
    /// the (mock) payment provider at `provider` with short back-offs, listening on free ports.
    pub fn runner_config(&self, provider: &str) -> runner::Config {
        let mut c = runner::Config {
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            streams: self.streams.clone(),
            nats: self.nats("runner"),
            ..runner::Config::default()
        };
        c.provider.base_url = provider.to_owned();
        c.provider.backoff_min_ms = 10;
        c.provider.backoff_max_ms = 50;
        c
    }

    /// A gateway with neither runner nor projection, once `GET probe` (a cart read, such as
    /// `/v1/carts/probe`) answers 200; returns it and its base URL.
    pub async fn cart_gateway(&self, probe: &str) -> (gateway::Running, String) {
        let gw = gateway::start(gateway::Config {
            runner_addr: String::new(),
            projection_addr: String::new(),
            ..self.gateway_config()
        })
        .await
        .unwrap();
        let base = format!("http://{}", gw.http_addr);
        wait_for_status(&format!("{base}{probe}"), 200, "gateway serves carts").await;
        (gw, base)
    }
}

pub use crate::requests::{call, ok, text};

/// Waits until `GET url` answers `status`; panics with `what` when it never does.
pub async fn wait_for_status(url: &str, status: u16, what: &str) {
    let http = reqwest::Client::new();
    shared::test_support::http::wait_for_status(&http, url, status, WAIT, what).await;
}

/// Stream settings for tests: a short node TTL so failover finishes quickly.
pub fn test_streams() -> NatsResourceSettings {
    NatsResourceSettings {
        node_ttl_secs: 2,
        ..NatsResourceSettings::default()
    }
}

pub const WAIT: Duration = Duration::from_secs(20);
