//! Three members of the shipped NATS cluster config on loopback, each started when a test says
//! so: the config and the member's ports, name and store come from the environment, as in
//! Kubernetes and `scripts/dev --cluster`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shared::test_support::{Accounts, wait_until};
use tests::processes::{Children, free_ports};

/// How long a member may take to find the others and elect a meta leader.
pub const FORMED: Duration = Duration::from_secs(60);

/// A member's three ports.
pub struct Ports {
    pub client: u16,
    pub monitor: u16,
    pub route: u16,
}

pub struct Members {
    pub ports: Vec<Ports>,
    pub accounts: Accounts,
    bin: PathBuf,
    conf: PathBuf,
    /// Stores and logs.
    dir: PathBuf,
    /// Dialled in the route URLs (`localhost` where certificates must match it).
    route_host: &'static str,
    running: Children,
}

impl Members {
    /// Three members of `conf` (none started), on nine free ports below Linux's ephemeral
    /// range (32768+): the kernel never hands those out as the source port of an outgoing
    /// connection, which a member dialling the others before they listen would otherwise do
    /// with one of their ports (seen: "bind: address already in use" for a route port).
    pub fn new(bin: PathBuf, conf: PathBuf, dir: &Path, route_host: &'static str) -> Self {
        let ports = free_ports(9)
            .chunks(3)
            .map(|p| Ports {
                client: p[0],
                monitor: p[1],
                route: p[2],
            })
            .collect();
        Self {
            ports,
            accounts: Accounts::generate(),
            bin,
            conf,
            dir: dir.to_owned(),
            route_host,
            running: Children::default(),
        }
    }

    /// Starts member `i` (`nats-<i>`), its store under the test's directory.
    pub fn start(&mut self, i: usize) {
        let p = &self.ports[i];
        let store = self.dir.join(format!("nats-{i}"));
        std::fs::create_dir_all(&store).unwrap();
        let mut command = Command::new(&self.bin);
        command
            .arg("--config")
            .arg(&self.conf)
            .env("NATS_SERVER_NAME", format!("nats-{i}"))
            .env("NATS_LISTEN", format!("127.0.0.1:{}", p.client))
            .env("NATS_HTTP", format!("127.0.0.1:{}", p.monitor))
            .env("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{}", p.route))
            .env("NATS_STORE_DIR", &store)
            .env("NATS_PID_FILE", store.join("nats.pid"))
            .envs(self.accounts.server_env());
        for (j, q) in self.ports.iter().enumerate() {
            command.env(
                format!("NATS_ROUTE_{}", j + 1),
                format!("nats-route://{}:{}", self.route_host, q.route),
            );
        }
        self.running.spawn(&format!("nats-{i}"), &self.dir, command);
    }

    /// Waits until member `i`'s monitoring answers `path` with a success (bounded by
    /// [`FORMED`]); panics naming the logs otherwise.
    pub async fn wait_for(&self, i: usize, path: &str) {
        let url = format!("http://127.0.0.1:{}{path}", self.ports[i].monitor);
        shared::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        wait_until(
            || async {
                http.get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
            FORMED,
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}; logs in {}", self.dir.display()));
    }

    /// Waits until member `i` accepts client connections (bounded by [`FORMED`]). Its
    /// monitoring answers first: nats-server opens the client port last, after JetStream, and
    /// a client that connected as soon as `/varz` answered was refused now and then on a busy
    /// machine.
    pub async fn wait_accepting(&self, i: usize) {
        let addr = ("127.0.0.1", self.ports[i].client);
        wait_until(
            || async { tokio::net::TcpStream::connect(addr).await.is_ok() },
            FORMED,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "client port {}: {e}; logs in {}",
                addr.1,
                self.dir.display()
            )
        });
    }

    /// Waits until every member is healthy (`/healthz` is 200 only once JetStream has a meta
    /// leader, which takes the routes) and takes client connections.
    pub async fn wait_formed(&self) {
        for i in 0..self.ports.len() {
            self.wait_for(i, "/healthz").await;
            self.wait_accepting(i).await;
        }
    }
}
