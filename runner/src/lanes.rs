//! Consuming a durable pull consumer into lanes: messages are fetched in batches and handed to
//! one of N lanes by a key (the cart), so one cart's messages are handled one at a time and in
//! order while different carts run in parallel. Lane queues are bounded (backpressure reaches
//! the fetch loop), and a message is acked, nak'ed or terminated only after it was handled.
//! Draining stops fetching and lets the lanes finish what they hold.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

/// Re-creates the durable consumer (it was deleted, or its stream was re-created).
pub type Recreate = Arc<dyn Fn() -> BoxFuture<'static, Result<PullConsumer, String>> + Send + Sync>;

/// Consecutive failed fetches after which the consumer is re-created.
const RECREATE_AFTER: u32 = 3;

pub trait Handler: Send + Sync + 'static {
    /// Cheap filter run in the fetch loop; unwanted messages are acked at once.
    fn wants(&self, _msg: &Message) -> bool {
        true
    }
    /// Messages with equal keys are handled in order, one at a time.
    fn lane_key<'a>(&self, msg: &'a Message) -> &'a str;
    fn handle<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Disposition>;
}

/// Run `handler` over `consumer` until `stop_fetching` (drain) or `abort` (crash-like).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    name: &'static str,
    consumer: PullConsumer,
    recreate: Recreate,
    handler: Arc<dyn Handler>,
    lanes: usize,
    depth: usize,
    batch: usize,
    status: Arc<Status>,
    stop_fetching: CancellationToken,
    abort: CancellationToken,
    tracker: &TaskTracker,
) {
    let mut senders = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (tx, mut rx) = mpsc::channel::<Message>(depth);
        senders.push(tx);
        let (handler, status, abort) = (handler.clone(), status.clone(), abort.clone());
        tracker.spawn(async move {
            let guard = LaneGuard {
                name,
                status: status.clone(),
                ended: false,
            };
            loop {
                let msg = tokio::select! {
                    () = abort.cancelled() => break,
                    msg = rx.recv() => match msg { Some(m) => m, None => break },
                };
                let disposition = tokio::select! {
                    () = abort.cancelled() => break,
                    d = handler.handle(&msg) => d,
                };
                settle(name, &msg, disposition).await;
                status.end();
            }
            guard.ended();
        });
    }
    tracker.spawn(fetch_loop(
        name,
        consumer,
        recreate,
        handler,
        senders,
        batch,
        status,
        stop_fetching,
        abort,
    ));
}

#[allow(clippy::too_many_arguments)]
async fn fetch_loop(
    name: &'static str,
    mut consumer: PullConsumer,
    recreate: Recreate,
    handler: Arc<dyn Handler>,
    senders: Vec<mpsc::Sender<Message>>,
    batch: usize,
    status: Arc<Status>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    while !stop.is_cancelled() && !abort.is_cancelled() {
        if failures >= RECREATE_AFTER {
            match recreate().await {
                Ok(c) => {
                    tracing::warn!(
                        consumer = name,
                        "re-created the consumer after repeated fetch failures"
                    );
                    consumer = c;
                }
                Err(e) => {
                    tracing::warn!(consumer = name, error = %e, "cannot re-create the consumer")
                }
            }
            failures = 0;
        }
        let fetched = consumer
            .fetch()
            .max_messages(batch)
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                failures += 1;
                tracing::warn!(consumer = name, error = %e, "fetch failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        while let Some(next) = tokio::select! {
            () = abort.cancelled() => return,
            m = messages.next() => m,
        } {
            let msg = match next {
                Ok(m) => {
                    failures = 0;
                    backoff = Duration::from_millis(100);
                    m
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(consumer = name, error = %e, "message error");
                    break;
                }
            };
            if !handler.wants(&msg) {
                settle(name, &msg, Disposition::Ack).await;
                continue;
            }
            let lane = (shared::placement::fnv1a64(handler.lane_key(&msg).as_bytes())
                % senders.len() as u64) as usize;
            status.begin();
            if senders[lane].send(msg).await.is_err() {
                // The lane's task is gone (it panicked): nothing handles its carts any more.
                status.end();
                tracing::error!(
                    consumer = name,
                    lane,
                    "a lane stopped; no longer fetching (restart the runner)"
                );
                status.lane_lost(name);
                return;
            }
        }
    }
}

/// Notices a lane task that ends other than by drain or abort — a panic while handling a
/// message — and reports it: an error log and a failing `lanes` readiness check, since the
/// consumer's remaining messages for that lane would otherwise wait silently.
struct LaneGuard {
    name: &'static str,
    status: Arc<Status>,
    ended: bool,
}

impl LaneGuard {
    /// The lane ended as asked.
    fn ended(mut self) {
        self.ended = true;
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if !self.ended {
            tracing::error!(
                consumer = self.name,
                "a lane task ended unexpectedly (panicked while handling a message)"
            );
            self.status.lane_lost(self.name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lane_that_panics_is_reported_and_one_that_ends_as_asked_is_not() {
        let status = Arc::new(Status::default());
        let guard = LaneGuard {
            name: "runner-checkout",
            status: status.clone(),
            ended: false,
        };
        tokio::spawn(async move { guard.ended() }).await.unwrap();
        assert_eq!(status.lost_lane(), None);

        let guard = LaneGuard {
            name: "runner-checkout",
            status: status.clone(),
            ended: false,
        };
        let lane = tokio::spawn(async move {
            let _guard = guard;
            panic!("a bug while handling a message");
        });
        assert!(lane.await.unwrap_err().is_panic());
        assert_eq!(status.lost_lane().as_deref(), Some("runner-checkout"));
    }
}
