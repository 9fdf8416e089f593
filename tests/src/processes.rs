//! The workspace's service binaries as child processes, for tests that need each service in
//! its own process (its own TLS set-up, its own telemetry and `service.name`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The workspace's binary `name`, next to the running test's directory
/// (`target/<profile>/deps/..`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins; \
         scripts/test does)",
        path.display()
    );
    path
}

/// Service binary `service` with an empty environment but `PATH` and `HOME`: the caller adds
/// the service's settings.
pub fn service_command(service: &str) -> Command {
    let mut command = Command::new(bin(service));
    command
        .env_clear()
        .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"));
    command
}

/// Child processes killed (and reaped) when dropped, and by the kernel when the test process
/// dies without dropping them ([`shared::test_support::spawn_tied`]).
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Children {
    /// Starts `command` as `service`, without input, its output (both streams) written to
    /// `<logs>/<service>.log`.
    pub fn spawn(&mut self, service: &str, logs: &Path, mut command: Command) {
        let log = std::fs::File::create(logs.join(format!("{service}.log"))).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = shared::test_support::spawn_tied(command)
            .unwrap_or_else(|e| panic!("start {service}: {e}"));
        self.0.push(child);
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
