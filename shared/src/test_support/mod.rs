//! A real `nats-server` for tests, usable from every crate (feature `test-support`).
//!
//! Each [`NatsServer`] is a fresh server with JetStream on a free port, a temporary store and
//! `sync_interval: always` (like production), killed on drop. Tests get one with
//! `let Some(nats) = nats_or_skip!() else { return };`: without a server binary the test
//! prints a loud skip notice and passes, unless `CART_REQUIRE_NATS=1` (set by `scripts/test`
//! and CI), where a missing server fails the test.
//!
//! Binary lookup: `NATS_SERVER_BIN`, then `<workspace>/.tools/nats/bin/nats-server` (installed
//! by `scripts/install-nats`), then `PATH`; versions below 2.12 are refused. With
//! `CART_TEST_NATS_URL` set, tests use that server instead (shared by all tests; they cannot
//! kill or restart it, and resources with fixed names are shared too).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

mod accounts;
mod binary;
mod commands;
pub mod config_check;
pub mod http;
mod inspect;
mod pki;
mod tied;
mod wait;

pub use accounts::{ACCOUNTS_CONF, Accounts, users_of};
pub use binary::{MIN_SERVER_VERSION, find_server_binary, server_binary_or_skip};
use binary::{own_server_binary, unavailable};
pub use commands::add_item;
pub use inspect::{
    Captured, assert_contains_all, cart_messages, stream_state, subject_counts, subject_messages,
};
pub use pki::{CertFiles, ServerTls, TestPki};
pub use tied::spawn_tied;

pub use wait::{consumer_info, pull_one, wait_consumer_settled, wait_until};

const START_DEADLINE: Duration = Duration::from_secs(20);

/// Deletes `CART_EVENTS` and creates it again, empty, as the next service start would
/// ([`crate::nats::ensure_all`]): its sequences start again at 1.
pub async fn create_cart_events_again(
    js: &jetstream::Context,
    settings: &crate::nats::NatsResourceSettings,
) {
    js.delete_stream(crate::subjects::CART_EVENTS_STREAM)
        .await
        .expect("delete CART_EVENTS");
    crate::nats::ensure_all(js, settings)
        .await
        .expect("create CART_EVENTS again");
}

/// A running test server (spawned, or external via `CART_TEST_NATS_URL`).
pub struct NatsServer {
    url: String,
    spawned: Option<Spawned>,
    tls: Option<ServerTls>,
    accounts: Option<Accounts>,
}

struct Spawned {
    bin: PathBuf,
    /// Holds the config, store and log; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// Configuration added to the generated one (a `tls` block, the accounts' include).
    extra_config: String,
    /// The server's environment (the users' passwords).
    env: Vec<(String, String)>,
    /// `sync_interval: always` (fsync before every acknowledgement), as production runs.
    sync_always: bool,
}

impl NatsServer {
    /// Starts a fresh server, or returns `None` after a loud notice when none is available
    /// (panics instead when `CART_REQUIRE_NATS=1`).
    pub async fn start() -> Option<NatsServer> {
        if let Ok(url) = std::env::var("CART_TEST_NATS_URL")
            && !url.trim().is_empty()
        {
            let mut server = NatsServer {
                url: url.trim().to_owned(),
                spawned: None,
                tls: None,
                accounts: None,
            };
            if let Err(e) = server.wait_ready().await {
                unavailable(&format!("CART_TEST_NATS_URL={url} is not usable: {e}"));
                return None;
            }
            return Some(server);
        }
        let bin = server_binary_or_skip()?;
        match Self::spawn(bin, None, None, true).await {
            Ok(server) => Some(server),
            Err(e) => panic!("nats-server was found but failed to start: {e}"),
        }
    }

    /// Starts a fresh server (no accounts, no TLS), with `sync_interval: always` or, with
    /// `sync_always = false`, the server's default lazy fsync: what `cart-bench --nats-sync`
    /// chooses. An error (not a skip) without a server binary.
    pub async fn start_for_bench(sync_always: bool) -> Result<NatsServer, String> {
        let bin = find_server_binary()?;
        Self::spawn(bin, None, None, sync_always).await
    }

    /// Starts a fresh server with the shipped accounts and per-service users
    /// (`deploy/nats/accounts.conf`, random passwords): a client needs a user, and each user
    /// may do what the file allows. The harness's own clients connect as `admin`. `None`
    /// (after a notice) without a server binary or with an external `CART_TEST_NATS_URL`.
    pub async fn start_with_accounts() -> Option<NatsServer> {
        let bin = own_server_binary("a permissions test")?;
        match Self::spawn(bin, None, Some(Accounts::generate()), true).await {
            Ok(server) => Some(server),
            Err(e) => panic!("nats-server was found but failed to start with accounts: {e}"),
        }
    }

    /// Starts a fresh server that only speaks TLS (`tls://` URL). `None` (after a notice) when
    /// no server binary is available, or with an external `CART_TEST_NATS_URL`, whose TLS
    /// settings a test cannot choose.
    pub async fn start_tls(tls: ServerTls) -> Option<NatsServer> {
        let bin = own_server_binary("a TLS test")?;
        match Self::spawn(bin, Some(tls), None, true).await {
            Ok(server) => Some(server),
            Err(e) => panic!("nats-server was found but failed to start with TLS: {e}"),
        }
    }

    async fn spawn(
        bin: PathBuf,
        tls: Option<ServerTls>,
        accounts: Option<Accounts>,
        sync_always: bool,
    ) -> Result<NatsServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("cart-nats-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let mut extra_config = tls.as_ref().map_or_else(String::new, |t| {
            format!(
                "http: \"127.0.0.1:-1\"\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {}\n  timeout: 2\n}}\n",
                t.server.cert.display().to_string(),
                t.server.key.display().to_string(),
                t.ca.display().to_string(),
                t.verify_clients,
            )
        });
        if accounts.is_some() {
            // An include is relative to the including file: the shipped text sits beside it.
            std::fs::write(dir.path().join("accounts.conf"), ACCOUNTS_CONF)
                .map_err(|e| format!("write accounts.conf: {e}"))?;
            extra_config.push_str("include \"accounts.conf\"\n");
        }
        let mut spawned = Spawned {
            bin,
            dir,
            port: 0,
            child: None,
            extra_config,
            env: accounts
                .as_ref()
                .map(Accounts::server_env)
                .unwrap_or_default(),
            sync_always,
        };
        spawned.launch()?;
        spawned.port = spawned.read_port().await?;
        let scheme = if tls.is_some() { "tls" } else { "nats" };
        let mut server = NatsServer {
            url: format!("{scheme}://127.0.0.1:{}", spawned.port),
            spawned: Some(spawned),
            tls,
            accounts,
        };
        server.wait_ready().await.map_err(|e| server.with_log(e))?;
        Ok(server)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The monitoring endpoint (`/connz`, `/jsz`, ...) of a server started with
    /// [`Self::start_tls`] (others have none).
    pub fn monitoring_url(&self) -> Option<String> {
        self.tls.as_ref()?;
        let spawned = self.spawned.as_ref()?;
        let ports = std::fs::read_dir(spawned.dir.path())
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))?;
        let text = std::fs::read_to_string(ports.path()).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["monitoring"]
            .as_array()?
            .first()?
            .as_str()
            .map(str::to_owned)
    }

    /// Every line of the server's log that reports a permissions violation (a client of a
    /// server with accounts tried what its user may not).
    pub fn permission_violations(&self) -> Vec<String> {
        let Some(spawned) = &self.spawned else {
            return Vec::new();
        };
        std::fs::read_to_string(spawned.dir.path().join("nats.log"))
            .unwrap_or_default()
            .lines()
            // "Publish Violation - Subject ...", "Subscription Violation - Subject ...".
            .filter(|l| l.contains(" Violation - "))
            .map(str::to_owned)
            .collect()
    }

    /// The accounts this server was started with ([`Self::start_with_accounts`]).
    pub fn accounts(&self) -> Option<&Accounts> {
        self.accounts.as_ref()
    }

    /// A service's connection settings for this server: as `user` (with its password and
    /// inbox prefix, like a deployment sets `NATS_USER` / `NATS_PASSWORD_FILE`).
    pub fn service_config(&self, user: &str) -> crate::nats::NatsConfig {
        let accounts = self
            .accounts
            .as_ref()
            .expect("service_config needs a server started with start_with_accounts");
        crate::nats::NatsConfig {
            url: self.url.clone(),
            name: user.to_owned(),
            user: user.to_owned(),
            password: accounts.password(user).into(),
            ..Default::default()
        }
    }

    /// Connect options as `user` (see [`Self::service_config`]).
    pub fn options_as(&self, user: &str) -> async_nats::ConnectOptions {
        let accounts = self
            .accounts
            .as_ref()
            .expect("options_as needs a server started with start_with_accounts");
        self.tls_options()
            .user_and_password(user.to_owned(), accounts.password(user).to_owned())
            .custom_inbox_prefix(crate::nats::inbox_prefix(user))
    }

    /// Connect options for this server: its CA and client certificate when it speaks TLS,
    /// the `admin` user when it has accounts.
    pub fn connect_options(&self) -> async_nats::ConnectOptions {
        match &self.accounts {
            Some(_) => self.options_as("admin"),
            None => self.tls_options(),
        }
    }

    fn tls_options(&self) -> async_nats::ConnectOptions {
        crate::tls::install_crypto_provider();
        let mut options = async_nats::ConnectOptions::new();
        if let Some(tls) = &self.tls {
            options = options
                .require_tls(true)
                .add_root_certificates(tls.ca.clone());
            if let Some(client) = &tls.client {
                options = options.add_client_certificate(client.cert.clone(), client.key.clone());
            }
        }
        options
    }

    /// A connected client (panics on failure: this is test code).
    pub async fn client(&self) -> async_nats::Client {
        self.connect_options()
            .name("cart-test")
            .connection_timeout(Duration::from_secs(5))
            .connect(self.url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to test nats at {}: {e}", self.url))
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }

    /// True when this server can be killed and restarted (spawned, not external).
    pub fn can_restart(&self) -> bool {
        self.spawned.is_some()
    }

    /// Kills the server abruptly (SIGKILL), like a crash. Its port and store are kept.
    pub fn kill(&mut self) {
        let spawned = self
            .spawned
            .as_mut()
            .expect("cannot kill an external server (CART_TEST_NATS_URL)");
        spawned.stop();
    }

    /// Starts the server again on the same port with the same store, and waits until it
    /// serves JetStream: recovery tests see exactly what survived the crash.
    pub async fn restart(&mut self) {
        let spawned = self
            .spawned
            .as_mut()
            .expect("cannot restart an external server (CART_TEST_NATS_URL)");
        spawned.stop();
        spawned
            .launch()
            .unwrap_or_else(|e| panic!("restart nats-server: {e}"));
        if let Err(e) = self.wait_ready().await {
            panic!("{}", self.with_log(format!("restarted nats-server: {e}")));
        }
    }

    /// Whether this (spawned) server fsyncs every write before acknowledging it.
    pub fn sync_always(&self) -> bool {
        self.spawned.as_ref().is_some_and(|s| s.sync_always)
    }

    /// Restarts the server (same port and store) with another fsync policy: a benchmark loads
    /// data through a lazily fsyncing server, then measures with `sync_interval: always`.
    pub async fn restart_with_sync(&mut self, sync_always: bool) {
        self.spawned
            .as_mut()
            .expect("cannot restart an external server (CART_TEST_NATS_URL)")
            .sync_always = sync_always;
        self.restart().await;
    }

    /// Waits until a client can connect and JetStream answers.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = self.url.clone();
        let mut last = String::new();
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(s) = &mut self.spawned
                && let Some(code) = s.exited()
            {
                return Err(format!("nats-server exited with {code}"));
            }
            let options = self.connect_options();
            let attempt = async {
                let client = options
                    .connection_timeout(Duration::from_millis(500))
                    .connect(url.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                jetstream::new(client)
                    .query_account()
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = "timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "not ready within {START_DEADLINE:?} at {url}: {last}"
        ))
    }

    fn with_log(&self, msg: String) -> String {
        match &self.spawned {
            Some(s) => format!("{msg}\n--- nats-server log ---\n{}", s.log_tail()),
            None => msg,
        }
    }
}

impl Spawned {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn launch(&mut self) -> Result<(), String> {
        // -1 lets the server pick a free port (no bind race); restarts reuse the one it chose.
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\nserver_name: cart_test\n\
             jetstream {{\n  store_dir: {store:?}\n{sync}}}\n{extra}",
            store = self.store().display().to_string(),
            sync = if self.sync_always {
                "  sync_interval: always\n"
            } else {
                ""
            },
            extra = self.extra_config,
        );
        let config_path = self.dir.path().join("nats.conf");
        std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut command = Command::new(&self.bin);
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--ports_file_dir")
            .arg(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child =
            spawn_tied(command).map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Reads the port the server chose from its ports file (`<exe>_<pid>.ports`).
    async fn read_port(&mut self) -> Result<u16, String> {
        let pid = self.child.as_ref().map(Child::id).unwrap_or_default();
        let suffix = format!("_{pid}.ports");
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if let Some(code) = self.exited() {
                return Err(format!(
                    "nats-server exited with {code}:\n{}",
                    self.log_tail()
                ));
            }
            let found = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
            if let Some(port) = found.and_then(|e| parse_ports_file(&e.path())) {
                return Ok(port);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(format!(
            "no ports file within {START_DEADLINE:?}:\n{}",
            self.log_tail()
        ))
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown state: {e}")),
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse_ports_file(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v["nats"].as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// `let Some(nats) = nats_or_skip!() else { return };` — a fresh server or a loud skip.
#[macro_export]
macro_rules! nats_or_skip {
    () => {
        $crate::test_support::NatsServer::start().await
    };
}
