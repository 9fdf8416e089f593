//! Real processes of the platform, started from the built binaries, with their logs in files:
//! started, killed with SIGKILL, stopped with SIGTERM, paused with SIGSTOP and resumed, and
//! measured (resident memory).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How to start one process (kept so it can be started again with the same settings).
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// `GET` this URL answers 2xx once the process is ready.
    pub ready_url: Option<String>,
}

pub struct Proc {
    pub spec: Spec,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(spec: Spec, logs: &std::path::Path) -> Self {
        let log = logs.join(format!("{}.log", spec.name));
        Self {
            spec,
            log,
            child: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("log file {}", self.log.display()))?;
        let mut command = Command::new(&self.spec.bin);
        command
            .args(&self.spec.args)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(&self.spec.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Killed with the chaos run, however it ends.
        let child = shared::test_support::spawn_tied(command)
            .with_context(|| format!("start {} ({})", self.spec.name, self.spec.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// True while the process runs (reaps it when it has exited).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid of a child this process owns.
            unsafe {
                libc_kill(pid as i32, signal);
            }
        }
    }

    /// SIGKILL, like a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for a graceful exit (then SIGKILL). True when it
    /// exited by itself.
    pub async fn stop(&mut self, timeout: Duration) -> bool {
        if !self.running() {
            return true;
        }
        self.signal(SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill9();
        false
    }

    /// SIGSTOP: the process is frozen (a long GC pause, a VM migration), its sockets open.
    pub fn pause(&self) {
        self.signal(SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(SIGCONT);
    }

    /// Resident memory in bytes (`VmRSS`), when running.
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    }

    /// Starts the process (when it is not running) and waits until it is ready.
    pub async fn start_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.start()?;
        self.wait_ready(http, timeout).await
    }

    /// Waits until the ready URL answers 2xx (or the process exits, or `timeout`).
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let Some(url) = self.spec.ready_url.clone() else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            if !self.running() {
                bail!(
                    "{} exited before it was ready; see {}",
                    self.spec.name,
                    self.log.display()
                );
            }
            if answers(http, &url, Duration::from_secs(2)).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready at {url} within {timeout:?}; see {}",
                    self.spec.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Whether a GET of `url` answers 2xx within `timeout`.
pub async fn answers(http: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    http.get(url)
        .timeout(timeout)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

const SIGTERM: i32 = 15;
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
