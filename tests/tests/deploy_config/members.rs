//! Three members of the shipped NATS cluster config on loopback, each started when a test says
//! so: the config and the member's ports, name and store come from the environment, as in
//! Kubernetes and `scripts/dev --cluster`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shared::test_support::{Accounts, wait_until};
use tests::processes::Children;

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
    /// Three members of `conf` (none started), with nine distinct free ports: all bound at
    /// once, then released for the servers.
    pub fn new(bin: PathBuf, conf: PathBuf, dir: &Path, route_host: &'static str) -> Self {
        let held: Vec<TcpListener> = (0..9)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let free: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let ports = free
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

    /// Waits until every member is healthy: `/healthz` is 200 only once JetStream has a meta
    /// leader, which takes the routes.
    pub async fn wait_formed(&self) {
        for i in 0..self.ports.len() {
            self.wait_for(i, "/healthz").await;
        }
    }
}
