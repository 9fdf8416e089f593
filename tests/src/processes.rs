//! The workspace's service binaries as child processes, for tests that need each service in
//! its own process (its own TLS set-up, its own telemetry and `service.name`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
pub struct Children(Vec<Running>);

struct Running {
    service: String,
    log: PathBuf,
    child: Child,
}

impl Children {
    /// Starts `command` as `service`, without input, its output (both streams) written to
    /// `<logs>/<service>.log`.
    pub fn spawn(&mut self, service: &str, logs: &Path, mut command: Command) {
        let path = logs.join(format!("{service}.log"));
        let log = std::fs::File::create(&path).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = shared::test_support::spawn_tied(command)
            .unwrap_or_else(|e| panic!("start {service}: {e}"));
        self.0.push(Running {
            service: service.to_owned(),
            log: path,
            child,
        });
    }

    /// Every child that has exited, with its status and whole log; empty while all run.
    pub fn exited(&mut self) -> String {
        let mut report = String::new();
        for running in &mut self.0 {
            if let Ok(Some(status)) = running.child.try_wait() {
                let log = std::fs::read_to_string(&running.log).unwrap_or_default();
                report.push_str(&format!(
                    "\n{} exited with {status}:\n{log}",
                    running.service
                ));
            }
        }
        report
    }

    /// The fields of the first line `service` logs (in JSON, `LOG_FORMAT=json`) whose message
    /// is `message`, as soon as it is there. Panics with the service's log when it exits first
    /// or has not logged it `within`.
    pub async fn logged(
        &mut self,
        service: &str,
        message: &str,
        within: Duration,
    ) -> serde_json::Value {
        let running = self
            .0
            .iter_mut()
            .find(|r| r.service == service)
            .unwrap_or_else(|| panic!("{service} was not started"));
        let mut found = None;
        let logged = shared::test_support::wait_until(
            || {
                let log = std::fs::read_to_string(&running.log).unwrap_or_default();
                found = log
                    .lines()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .find(|line| line["fields"]["message"] == message);
                if found.is_none()
                    && let Ok(Some(status)) = running.child.try_wait()
                {
                    panic!("{service} exited with {status} before logging {message:?}:\n{log}");
                }
                std::future::ready(found.is_some())
            },
            within,
        )
        .await;
        if let Err(e) = logged {
            let log = std::fs::read_to_string(&running.log).unwrap_or_default();
            panic!("{service} did not log {message:?}: {e}\n{log}");
        }
        found.expect("logged")["fields"].clone()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for running in &mut self.0 {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// `n` consecutive loopback ports, all free now (bound at once, then released for child
/// processes to take), from 20000 to 32767: below the kernel's ephemeral range (32768 and up
/// by default), which `bind` to port 0 and every outgoing connection draw from, so no other
/// test's listener or connection takes them in the meantime. The start is drawn at random, so
/// tests running at the same time rarely try the same block.
pub fn free_ports(n: u16) -> Vec<u16> {
    for _ in 0..100 {
        let start = fastrand::u16(20_000..32_768 - n);
        let held: Vec<_> = (start..start + n)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return (start..start + n).collect();
        }
    }
    panic!("no block of {n} free ports below 32768 in 100 tries");
}
