//! Consuming a durable pull consumer into lanes: messages are fetched in batches and handed to
//! one of N lanes by a key (the cart), so one cart's messages are handled one at a time and in
//! order while different carts run in parallel. Lane queues are bounded (backpressure reaches
//! the fetch loop), and a message is acked, nak'ed or terminated only after it was handled.
//! Draining stops fetching and lets the lanes finish what they hold.

use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use shared::nats::Durable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;
use crate::state::Status;

/// What to do with a handled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Redeliver after this delay.
    Nak(Duration),
    /// Never redeliver (it was dead-lettered).
    Term,
}

impl Disposition {
    /// A redelivery delay growing with the delivery count (0.5 s, 1 s, 2 s … up to 30 s).
    pub fn nak(delivered: i64) -> Self {
        let exp = delivered.clamp(1, 7) as u32 - 1;
        Disposition::Nak(Duration::from_millis(500 * (1 << exp)).min(Duration::from_secs(30)))
    }
}

/// How long one fetch waits for messages.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// What a stopped runner hands back unhandled is redelivered after this: by then its last
/// fetch has ended, so it goes to whichever runner fetches next, not back into that fetch.
pub(crate) const HAND_BACK: Disposition = Disposition::Nak(FETCH_EXPIRES);

/// The configuration of a runner's durable `durable` over `filters`. The server redelivers
/// without limit; the handlers count deliveries and give up on a message (dead-letter it, fail
/// its checkout) when it fails on its `settings.max_deliver`th. A server-side limit would
/// strand a message handed back ([`HAND_BACK`]: the lease was lost, the runner drained) or
/// left unacked by a crash on its last delivery: never delivered again, never dead-lettered.
pub(crate) fn durable_config(
    durable: &str,
    filters: &[String],
    settings: &shared::nats::settings::ConsumerSettings,
) -> async_nats::jetstream::consumer::pull::Config {
    async_nats::jetstream::consumer::pull::Config {
        max_deliver: -1,
        ..shared::nats::durable_pull_config(durable, filters, settings)
    }
}

/// Consecutive failed fetches after which the consumer is re-created.
const RECREATE_AFTER: u32 = 3;
/// How often the consumer's ack floor is read, to resume after it if the consumer is deleted
/// (what was handled since is handled again: handlers are idempotent).
const FLOOR_EVERY: Duration = Duration::from_secs(1);

pub trait Handler: Send + Sync + 'static {
    /// Cheap filter run in the fetch loop; unwanted messages are acked at once.
    fn wants(&self, _msg: &Message) -> bool {
        true
    }
    /// Messages with equal keys are handled in order, one at a time.
    fn lane_key<'a>(&self, msg: &'a Message) -> &'a str;
    fn handle<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Disposition>;
    /// `msg` could not be handled (its handler panicked, a bug): redeliver it while it has
    /// deliveries left, else give up on it the way this handler gives up on a message it
    /// cannot handle.
    fn retry_or_give_up<'a>(
        &'a self,
        msg: &'a Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Disposition>;
}

/// What the lanes of every consumer share: their sizing, the runner's status, and its stop
/// signals (`stop_fetching`: drain; `lost`: the lease is lost; `abort`: crash-like).
pub struct Lanes {
    /// Messages one lane queues.
    pub depth: usize,
    /// Messages one fetch asks for.
    pub batch: usize,
    pub status: Arc<Status>,
    pub stop_fetching: CancellationToken,
    /// Another runner may be fetching now: what the lanes still queue goes back unhandled.
    pub lost: CancellationToken,
    /// The lease by this runner's own clock: outside it, nothing is started either (a runner
    /// that wakes from a freeze may run its lanes before its lease task has noticed).
    pub lease: crate::lease::Validity,
    pub abort: CancellationToken,
    pub tracker: TaskTracker,
}

impl Lanes {
    /// Run `handler` over `consumer` (the current form of `durable`) in `lanes` lanes until
    /// `stop_fetching` or `abort`. A message whose handler panics is retried or given up on
    /// by the handler ([`Handler::retry_or_give_up`]).
    pub fn spawn(
        &self,
        name: &'static str,
        consumer: PullConsumer,
        durable: Durable,
        handler: Arc<dyn Handler>,
        lanes: usize,
    ) {
        let mut senders = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, mut rx) = mpsc::channel::<Message>(self.depth);
            senders.push(tx);
            let (handler, status, abort, lost, lease) = (
                handler.clone(),
                self.status.clone(),
                self.abort.clone(),
                self.lost.clone(),
                self.lease.clone(),
            );
            self.tracker.spawn(async move {
                loop {
                    let msg = tokio::select! {
                        () = abort.cancelled() => break,
                        msg = rx.recv() => match msg { Some(m) => m, None => break },
                    };
                    if lost.is_cancelled() || !lease.holds() {
                        settle(name, &msg, HAND_BACK).await;
                        status.end();
                        continue;
                    }
                    let disposition = tokio::select! {
                        () = abort.cancelled() => break,
                        d = handle_caught(name, handler.as_ref(), &msg) => d,
                    };
                    settle(name, &msg, disposition).await;
                    status.end();
                }
            });
        }
        // `abort` (the end of a drain, or a crash) ends the loop at once, also in a request it
        // waits on (a fetch, the consumer's info, its re-creation), which would wait seconds
        // for an unreachable server. What it fetched and did not hand to a lane is
        // redelivered after the ack wait.
        let fetching = fetch_loop(
            name,
            consumer,
            durable,
            handler,
            senders,
            self.batch,
            self.status.clone(),
            self.stop_fetching.clone(),
            self.lease.clone(),
        );
        self.tracker
            .spawn(self.abort.clone().run_until_cancelled_owned(fetching));
    }
}

/// Handles `msg`; a handler that panics (a bug) gets its message redelivered later, like one
/// that failed (and dead-lettered on its last delivery), and the lane goes on with the next.
async fn handle_caught(name: &'static str, handler: &dyn Handler, msg: &Message) -> Disposition {
    match AssertUnwindSafe(handler.handle(msg)).catch_unwind().await {
        Ok(d) => d,
        Err(_) => {
            let delivered = msg.info().map_or(1, |i| i.delivered);
            tracing::error!(consumer = name, subject = %msg.subject, delivered, "the handler panicked");
            metrics::counter!(m::HANDLER_PANICS, "consumer" => name).increment(1);
            let reason = "the handler panicked (a bug); see the runner log";
            handler.retry_or_give_up(msg, reason).await
        }
    }
}

/// Waits `backoff` (doubled for next time, up to 5 s); false if `stop` came first.
async fn pause(stop: &CancellationToken, backoff: &mut Duration) -> bool {
    let waited = tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(*backoff) => true,
    };
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
    waited
}

#[allow(clippy::too_many_arguments)]
async fn fetch_loop(
    name: &'static str,
    mut consumer: PullConsumer,
    durable: Durable,
    handler: Arc<dyn Handler>,
    senders: Vec<mpsc::Sender<Message>>,
    batch: usize,
    status: Arc<Status>,
    stop: CancellationToken,
    lease: crate::lease::Validity,
) {
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    // Everything up to it is acknowledged: where a re-created consumer resumes.
    let mut floor = consumer.cached_info().ack_floor.stream_sequence;
    let mut floor_read = Instant::now();
    while !stop.is_cancelled() {
        if failures >= RECREATE_AFTER {
            match durable.recreate(floor).await {
                Ok(c) => {
                    tracing::warn!(
                        consumer = name,
                        resume_after = floor,
                        "re-created the consumer after repeated fetch failures"
                    );
                    consumer = c;
                    failures = 0;
                }
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "cannot re-create the consumer");
                    if !pause(&stop, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            }
        } else if floor_read.elapsed() >= FLOOR_EVERY {
            floor_read = Instant::now();
            if let Ok(info) = consumer.info().await {
                floor = floor.max(info.ack_floor.stream_sequence);
                status.set_ack_floor(name, floor);
            }
        }
        let fetched = consumer
            .fetch()
            .max_messages(batch)
            .expires(FETCH_EXPIRES)
            .messages()
            .await;
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                tracing::warn!(consumer = name, error = %e, "fetch failed; retrying");
                if !pause(&stop, &mut backoff).await {
                    return;
                }
                continue;
            }
        };
        let mut failed = false;
        while let Some(next) = messages.next().await {
            let msg = match next {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "message error");
                    failed = true;
                    break;
                }
            };
            if !handler.wants(&msg) {
                settle(name, &msg, Disposition::Ack).await;
                continue;
            }
            if stop.is_cancelled() || !lease.holds() {
                // Stopped (a drain, or the lease lost, noticed or not yet) while this batch
                // came in: handed back unhandled, for whichever runner fetches next.
                settle(name, &msg, HAND_BACK).await;
                continue;
            }
            let lane = (shared::placement::fnv1a64(handler.lane_key(&msg).as_bytes())
                % senders.len() as u64) as usize;
            status.begin();
            if senders[lane].send(msg).await.is_err() {
                // Lanes end only on abort, which also ends this loop.
                status.end();
                return;
            }
        }
        if failed {
            failures += 1;
            if !pause(&stop, &mut backoff).await {
                return;
            }
        } else {
            failures = 0;
            backoff = Duration::from_millis(100);
        }
    }
}

async fn settle(name: &str, msg: &Message, disposition: Disposition) {
    let result = match disposition {
        Disposition::Ack => msg.ack().await,
        Disposition::Nak(delay) => msg.ack_with(AckKind::Nak(Some(delay))).await,
        Disposition::Term => msg.ack_with(AckKind::Term).await,
    };
    if let Err(e) = result {
        // The server redelivers after ack_wait; handling is idempotent.
        tracing::warn!(consumer = name, error = %e, "could not settle a message");
    }
}
