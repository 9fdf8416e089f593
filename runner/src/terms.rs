//! The runner process: one term after another. A runner that loses its lease drains and starts
//! again in the same process as a standby; the ops endpoint (`/health`, `/ready`, `/metrics`)
//! and the embedded mock provider live as long as the process, so probes, scrapes and the
//! shopper's checkout page are answered between terms too, also while a term cannot start
//! (NATS unreachable): `/health` says the process is alive, `/ready` says why it is not ready.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use shared::ops::Readiness;
use tokio_util::sync::CancellationToken;

use crate::{CHECKS, Config, Hooks, Running, serve_embedded_mock, start_term};

/// What `/ready` says of every check while a term starts.
const STARTING: &str = "starting";
/// How much longer than its drain timeout a term may take to stop. Beyond it `run` fails (the
/// process exits and is restarted): with the ops endpoint kept across terms, a term that never
/// stops would otherwise leave a live process that does nothing.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The process's ops endpoint: its address and the readiness it reports, which each term
/// takes over ([`Ops::restart`]).
pub(crate) struct Ops {
    pub(crate) addr: SocketAddr,
    readiness: Readiness,
    /// Why the last start failed (`None` once one succeeded): `/ready` keeps saying it while
    /// the next one is tried.
    last_failure: Mutex<Option<String>>,
}

impl Ops {
    /// Serves `/health`, `/ready` and `/metrics` on `addr` until `stop`; not ready until a
    /// term sets its checks.
    async fn serve(addr: &str, stop: CancellationToken) -> anyhow::Result<Self> {
        let (listener, addr) = shared::serve::bind(addr).await?;
        // The series a scrape expects from the first answer on, before any term has started
        // (after the recorder is there to take them).
        let prometheus = shared::telemetry::prometheus();
        crate::metrics::describe();
        let readiness = Readiness::new();
        readiness.register(CHECKS);
        let router = shared::ops::router(readiness.clone(), prometheus);
        tokio::spawn(shared::serve::http(listener, router, stop));
        Ok(Self {
            addr,
            readiness,
            last_failure: Mutex::new(None),
        })
    }

    /// The readiness for a new term: every check of the last one failed (naming the last
    /// start's failure, if any) until the new term sets it, its vetoes gone.
    pub(crate) fn restart(&self) -> Readiness {
        let reason = match &*self.last_failure.lock().unwrap() {
            Some(failure) => format!("{STARTING} again; the last try failed: {failure}"),
            None => STARTING.to_owned(),
        };
        self.readiness.restart(&reason);
        self.readiness.clone()
    }

    /// A start failed: `/ready` says why until one succeeds.
    fn failed(&self, error: &str) {
        *self.last_failure.lock().unwrap() = Some(error.to_owned());
        self.readiness.set_failed(
            shared::serve::NATS_CHECK,
            format!("could not start again: {error}"),
        );
    }
}

/// Run until `shutdown`, then drain. A runner that loses its lease drains and starts again
/// in this process, as a standby: a fresh start (new connections, consumers, lanes and holder
/// name) without an exit, so an orchestrator's restart back-off never delays the next term.
/// Only the first start's error ends it (a configuration error should fail fast); a later one
/// is tried again, every 250 ms doubling up to 10 s, until it succeeds or `shutdown`. A term
/// that has not stopped [`STOP_GRACE`] after its drain timeout ends it with an error.
pub async fn run(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let drain_timeout = Duration::from_millis(config.consumer.ack_wait_ms);
    // The embedded mock and the ops endpoint live as long as the process: a term after a lost
    // lease finds the orders the last one made (the shopper's checkout goes on), and probes
    // are answered while it starts.
    let process = CancellationToken::new();
    let _stop_process = process.clone().drop_guard();
    if config.provider.base_url.is_empty() {
        config.provider.base_url = serve_embedded_mock(&config, process.clone()).await?.0;
    }
    let ops = Ops::serve(&config.http_addr, process.clone()).await?;
    let mut running = start_term(config.clone(), Hooks::default(), Some(&ops)).await?;
    loop {
        let lost = tokio::select! {
            () = shutdown.cancelled() => false,
            () = running.lease_lost() => true,
        };
        // A reload through the admin API lasts into the next term.
        config.provider = running.provider_settings();
        tokio::time::timeout(drain_timeout + STOP_GRACE, running.drain(drain_timeout))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the runner's term did not stop within {:?} of its drain",
                    drain_timeout + STOP_GRACE
                )
            })?;
        if !lost || shutdown.is_cancelled() {
            return Ok(());
        }
        tracing::warn!("the runner lost its lease: starting again as a standby");
        running = match start_again(&config, &ops, &shutdown).await {
            Some(next) => next,
            None => return Ok(()),
        };
    }
}

/// [`start_term`] until it succeeds, 250 ms apart doubling to 10 s (`None`: `shutdown` came
/// first); `/ready` names the last failure meanwhile. A start cut short by `shutdown` stops
/// what it had spawned (its drop guard); one that succeeded just as `shutdown` came is drained
/// at once.
async fn start_again(config: &Config, ops: &Ops, shutdown: &CancellationToken) -> Option<Running> {
    use backon::{ExponentialBuilder, Retryable as _};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(10))
        .without_max_times();
    let started = (|| start_term(config.clone(), Hooks::default(), Some(ops)))
        .retry(backoff)
        .when(|_| !shutdown.is_cancelled())
        .notify(|error, wait| {
            let error = format!("{error:#}");
            ops.failed(&error);
            tracing::warn!(%error, retry_in = ?wait, "could not start the runner again");
        });
    let running = tokio::select! {
        () = shutdown.cancelled() => return None,
        started = started => started.ok()?,
    };
    *ops.last_failure.lock().unwrap() = None;
    if shutdown.is_cancelled() {
        running.drain(Duration::ZERO).await;
        return None;
    }
    Some(running)
}
