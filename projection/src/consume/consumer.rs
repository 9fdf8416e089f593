//! The live consumer loop: fetch a batch from the durable consumer, apply it in one transaction
//! (through the [`Writer`]), and only then acknowledge. Redelivered messages at or below the
//! checkpoint are acknowledged and skipped, so a crash between commit and ack is harmless. (A
//! fetched message, fetching and acknowledging are [`super::delivery`]'s.)
//!
//! Poison handling keeps stream order: a message that fails is rolled back alone, what came
//! before it is committed, and it is nak'd (with a delay) together with the unapplied rest of
//! the batch. On its last allowed delivery it is published to `DEAD_LETTERS`, recorded in the
//! poison table, the checkpoint moves past it and it is terminated; the loop goes on.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, consumer::PullConsumer};
use shared::headers::RequestContext;
use shared::nats::Durable;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consume::dead_letter_stream::DeadLetters;
use crate::consume::delivery::{LoopSettings, Received, ack_all, ack_one, fetch};
use crate::consume::order_guard::{OrderGuard, Split};
use crate::consume::same_stream;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::status::ProjectionStatus;
use crate::store::poison_table::PoisonRecord;
use crate::write::writer::{OnFailure, Writer};

/// Consecutive failed batches after which the durable consumer is re-created.
const RECREATE_AFTER: u32 = 5;
/// Parked messages kept, in batches (beyond it the stall repair reads them back).
const MAX_PARKED_BATCHES: usize = 4;
/// Reads of the stream that fill gaps in one batch, at most.
const MAX_GAP_READS: u32 = 4;

pub struct Consumer {
    pub consumer: PullConsumer,
    /// The durable consumer, to re-create it if it disappears.
    pub durable: Durable,
    pub dead_letters: DeadLetters,
    pub writer: Writer,
    /// Held while a batch is fetched and applied; a rebuild takes it to pause the loop.
    pub gate: Arc<Mutex<()>>,
    pub shared: Arc<ProjectionStatus>,
    pub settings: LoopSettings,
    pub order: OrderGuard,
    /// Held-back messages on their last delivery: the server will not send them again, so
    /// they wait here until the messages before them are applied.
    pub parked: Vec<Received>,
    /// Owns the background acknowledgements (a graceful stop waits for them).
    pub tracker: TaskTracker,
    /// The message that failed to apply and was nak'd for another attempt: a gap at it is
    /// waited for (its deliveries count towards dead-lettering). Any other gap is read back
    /// from the stream at once.
    pub retrying: Option<u64>,
}

impl Consumer {
    /// Runs until `shutdown`; a batch in progress is finished (applied and acknowledged) first.
    /// Cancels `fatal` and returns if the writer has stopped, or if `CART_EVENTS` turns out to
    /// be another stream (see [`same_stream`]): the process should restart.
    ///
    /// While a full batch is applied (catching up), the next one is already fetched, at the
    /// catch-up size (`max_ack_pending` is two such batches), so the writer does not wait for
    /// the network and commits larger transactions until it has caught up.
    pub async fn run(mut self, shutdown: CancellationToken, fatal: CancellationToken) {
        let mut failures = 0u32;
        // The next batch, fetched while the previous one was applied.
        let mut ahead: Option<Vec<Received>> = None;
        loop {
            if self.writer.sync_failed() {
                tracing::error!("commits can no longer be synced to disk; the consumer stops");
                self.shared
                    .set_consumer_error("commits can no longer be synced to disk".into());
                fatal.cancel();
                return self.give_back(ahead).await;
            }
            let gate = self.gate.clone();
            let held = tokio::select! {
                g = gate.lock() => g,
                () = shutdown.cancelled() => return self.give_back(ahead).await,
            };
            let fetched = match ahead.take() {
                Some(batch) => Ok(batch),
                None => tokio::select! {
                    r = fetch(
                        &self.consumer,
                        self.settings.batch_size,
                        self.settings.fetch_wait,
                        self.settings.request_timeout,
                    ) => r,
                    () = shutdown.cancelled() => return,
                },
            };
            let fetched = match fetched {
                // Caught up after dropping the indexes to catch up: queries get them back
                // before the node can be ready.
                Ok(batch) if self.writer.indexes_dropped() && self.caught_up(batch.len()) => {
                    match self.writer.restore_indexes().await {
                        Ok(_) => Ok(batch),
                        Err(e) => {
                            self.give_back(Some(batch)).await;
                            Err(e)
                        }
                    }
                }
                other => other,
            };
            let result = match fetched {
                Ok(batch) if batch.len() >= self.settings.batch_size => {
                    self.shared.fetched_ok();
                    // Not cut short by a shutdown (a backlog returns a batch at once): a
                    // fetch dropped halfway would leave its messages out until the ack wait.
                    let consumer = self.consumer.clone();
                    let next = fetch(
                        &consumer,
                        self.settings.catch_up_batch_size,
                        self.settings.fetch_wait,
                        self.settings.request_timeout,
                    );
                    let (result, next) = tokio::join!(self.process(batch), next);
                    ahead = next.ok();
                    result
                }
                Ok(batch) => {
                    self.shared.fetched_ok();
                    self.process(batch).await
                }
                Err(e) => Err(e),
            };
            drop(held);
            let Err(e) = result else {
                failures = 0;
                continue;
            };
            self.shared.set_consumer_error(e.to_string());
            // The writer stopped, or CART_EVENTS is another stream now (rebuild the projection).
            if matches!(
                e,
                ProjectionError::WriterStopped | ProjectionError::Rebuild(_)
            ) {
                tracing::error!(error = %e, "the consumer stops");
                fatal.cancel();
                return self.give_back(ahead).await;
            }
            failures += 1;
            metrics::counter!(m::BATCH_ERRORS, m::VIEW => self.shared.view.clone()).increment(1);
            tracing::warn!(error = %e, failures, "projection batch failed; retrying");
            if failures.is_multiple_of(RECREATE_AFTER)
                && let Err(e) = self.recreate().await
            {
                tracing::error!(error = %e, "the consumer stops");
                self.shared.set_consumer_error(e.to_string());
                fatal.cancel();
                return self.give_back(ahead).await;
            }
            // Back off (bounded) without holding the gate, then try again.
            let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return self.give_back(ahead).await,
            }
        }
    }

    /// Whether the projection has caught up, given a fetch of `fetched` messages: the fetch
    /// came back short, or less than one catch-up batch is left (steady traffic can keep every
    /// fetch full).
    fn caught_up(&self, fetched: usize) -> bool {
        let behind = self
            .shared
            .stream_last()
            .saturating_sub(self.writer.checkpoint());
        fetched < self.settings.batch_size || behind < self.settings.catch_up_batch_size as u64
    }

    /// Naks a fetched batch that will not be applied (the loop stops), so the server
    /// redelivers it at once instead of after the ack wait.
    async fn give_back(&self, batch: Option<Vec<Received>>) {
        for msg in batch.into_iter().flatten().filter_map(|d| d.msg) {
            let nak = msg.ack_with(AckKind::Nak(None));
            if !matches!(
                tokio::time::timeout(self.settings.request_timeout, nak).await,
                Ok(Ok(()))
            ) {
                // Redelivered after the ack wait instead.
                break;
            }
        }
    }

    /// [`same_stream::still_ours`], asked before any read of `CART_EVENTS` by sequence: the
    /// durable consumer may not have noticed yet that its stream was created again.
    async fn stream_still_ours(&self) -> Result<bool, ProjectionError> {
        let timeout = self.settings.request_timeout;
        same_stream::still_ours(&self.durable.stream, &self.writer, timeout).await
    }

    /// Creates (or re-validates) the durable consumer, e.g. after it was deleted: a new one
    /// starts after the durable checkpoint. A durable consumer also disappears with its stream:
    /// if `CART_EVENTS` was deleted and created again, the checkpoint numbers another stream's
    /// messages, and this returns the error that stops the projection (rebuild it) instead.
    async fn recreate(&mut self) -> Result<(), ProjectionError> {
        if !self.stream_still_ours().await? {
            return Ok(());
        }
        let ensure = self
            .durable
            .recreate_on_same_stream(self.writer.durable_checkpoint());
        match tokio::time::timeout(self.settings.request_timeout, ensure).await {
            Ok(Ok(consumer)) => {
                tracing::info!("durable consumer re-created or validated");
                self.consumer = consumer;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot re-create the durable consumer"),
            Err(_) => tracing::warn!("re-creating the durable consumer timed out"),
        }
        Ok(())
    }

    async fn process(&mut self, batch: Vec<Received>) -> Result<(), ProjectionError> {
        if !batch.is_empty() {
            metrics::histogram!(m::BATCH_MESSAGES, m::VIEW => self.shared.view.clone())
                .record(batch.len() as f64);
        }
        let mut deliveries = std::mem::take(&mut self.parked);
        deliveries.extend(batch);
        if deliveries.is_empty() {
            // Idle: cart states changed a while ago are written now, not with the next message.
            self.writer.flush_states(false).await?;
            // Nothing deliverable although the stream is ahead: something is outstanding.
            let checkpoint = self.writer.checkpoint();
            if self.shared.stream_last() > checkpoint {
                let next = checkpoint + 1;
                if self.retrying != Some(next) {
                    let read = self.read_gap(next, u64::MAX).await?;
                    if !read.is_empty() {
                        return self.apply(read).await;
                    }
                }
                self.order.expect(next);
            } else {
                self.order.clear();
            }
            return self.repair_stall().await;
        }
        // Stream order; of two deliveries of one message keep the newest.
        deliveries.sort_by_key(|d| (d.inc.sequence, std::cmp::Reverse(d.inc.delivered)));
        deliveries.dedup_by_key(|d| d.inc.sequence);

        // Already applied (redelivered after a crash between commit and ack): ack once the
        // commit that applied them is on disk, skip.
        let checkpoint = self.writer.checkpoint();
        let mut ready =
            deliveries.split_off(deliveries.partition_point(|d| d.inc.sequence <= checkpoint));
        if !deliveries.is_empty() {
            metrics::counter!(m::MESSAGES_SKIPPED, m::VIEW => self.shared.view.clone())
                .increment(deliveries.len() as u64);
            self.ack_when_durable(deliveries, self.writer.last_commit());
        }

        let split = match self.split_filling_gaps(checkpoint, &mut ready).await {
            Ok(split) => split,
            Err(e) => {
                self.defer(ready, self.settings.nak_delay).await;
                return Err(e);
            }
        };
        let held = ready.split_off(split.ready);
        if !held.is_empty() {
            metrics::counter!(m::ORDER_WAITS, m::VIEW => self.shared.view.clone()).increment(1);
            tracing::debug!(missing = ?split.missing, held = held.len(), "holding messages until an earlier one is applied");
            self.defer(held, self.settings.hold_delay).await;
        }
        self.apply(ready).await?;
        if split.missing.is_some() {
            self.repair_stall().await?;
        }
        Ok(())
    }

    /// Splits `ready` (ascending, above `checkpoint`) at its first gap. A gap that is not the
    /// message this process is retrying was delivered to an earlier run that stopped before
    /// acknowledging it (or to a fetch of ours that was lost): the server would send it again
    /// only after the ack wait, with everything behind it held back as long, so it is read
    /// from the stream now. Its redelivery later is at or below the checkpoint and skipped.
    async fn split_filling_gaps(
        &mut self,
        checkpoint: u64,
        ready: &mut Vec<Received>,
    ) -> Result<Split, ProjectionError> {
        let mut rounds = 0;
        loop {
            let sequences: Vec<u64> = ready.iter().map(|d| d.inc.sequence).collect();
            let split = self.order.split(checkpoint, &sequences).await?;
            let Some(missing) = split.missing else {
                return Ok(split);
            };
            rounds += 1;
            if self.retrying == Some(missing) || rounds > MAX_GAP_READS {
                return Ok(split);
            }
            let read = self
                .read_gap(missing, ready[split.ready].inc.sequence)
                .await?;
            if read.is_empty() {
                // The replica that answered lags: wait for the server as before.
                return Ok(split);
            }
            ready.extend(read);
            ready.sort_by_key(|d| d.inc.sequence);
        }
    }

    /// The stored messages from `from` on, before `until` (one catch-up batch at most), as
    /// deliveries on their last attempt.
    async fn read_gap(&self, from: u64, until: u64) -> Result<Vec<Received>, ProjectionError> {
        if !self.stream_still_ours().await? {
            return Ok(Vec::new());
        }
        let read = self
            .order
            .read_back(
                from,
                until,
                self.settings.catch_up_batch_size,
                self.settings.max_deliver,
            )
            .await?;
        if !read.is_empty() {
            metrics::counter!(m::GAPS_READ_BACK, m::VIEW => self.shared.view.clone())
                .increment(read.len() as u64);
            tracing::info!(
                from,
                messages = read.len(),
                "messages outstanding with an earlier run read back from the stream"
            );
        }
        Ok(read
            .into_iter()
            .map(|inc| Received { msg: None, inc })
            .collect())
    }

    /// Applies `rest` in order, handling one failing message per round.
    async fn apply(&mut self, mut rest: Vec<Received>) -> Result<(), ProjectionError> {
        // One span per message, made once: each ends when its message is handled.
        let mut spans: Vec<tracing::Span> = rest.iter().map(Received::span).collect();
        while !rest.is_empty() {
            // The writer needs no headers (they are kept here for dead letters).
            let batch = rest.iter().map(|d| d.inc.without_headers()).collect();
            let outcome = match self.writer.apply(batch, OnFailure::Stop).await {
                Ok(o) => o,
                Err(e) => {
                    self.defer(rest, self.settings.nak_delay).await;
                    return Err(e);
                }
            };
            // Committed: acknowledge in the background once the commit is on disk, so the
            // next batch reaches the writer without waiting for the disk or the acks.
            let handled: Vec<Received> = rest.drain(..outcome.handled).collect();
            spans.drain(..outcome.handled);
            self.ack_when_durable(handled, outcome.commit);
            let Some(failure) = outcome.failure else {
                break;
            };
            let failed = rest.remove(0);
            if failed.inc.delivered >= self.settings.max_deliver {
                self.dead_letter(&failed, &failure.reason).await?;
                spans.remove(0);
                continue;
            }
            tracing::warn!(
                sequence = failed.inc.sequence,
                subject = %failed.inc.subject,
                delivered = failed.inc.delivered,
                max_deliver = self.settings.max_deliver,
                reason = %failure.reason,
                "message cannot be applied; retrying it later"
            );
            self.retrying = Some(failed.inc.sequence);
            rest.insert(0, failed);
            self.defer(rest, self.settings.nak_delay).await;
            break;
        }
        Ok(())
    }

    /// Gives up on `d`: publish to `DEAD_LETTERS`, record it, move the checkpoint, terminate.
    async fn dead_letter(&mut self, d: &Received, reason: &str) -> Result<(), ProjectionError> {
        // Retried inside; failing that, the message is recorded locally only.
        let published = self.dead_letters.publish(&d.inc, reason).await;
        if let Err(e) = &published {
            tracing::warn!(error = %e, "the dead letter was not published; recording it locally only");
        }
        let record = PoisonRecord::new(
            self.dead_letters.consumer(),
            &d.inc.subject,
            d.inc.sequence,
            reason,
            d.inc.delivered,
            published.is_ok(),
        );
        let id = self.writer.dead_letter(record).await?;
        self.ack(d, AckKind::Term).await;
        self.order.clear();
        metrics::counter!(m::DEAD_LETTERS, m::VIEW => self.shared.view.clone()).increment(1);
        let ctx = d
            .inc
            .headers
            .as_ref()
            .and_then(|h| RequestContext::from_nats_headers(h).ok());
        tracing::error!(
            id,
            correlation_id = ctx.as_ref().map(|c| c.correlation_id.to_string()),
            trace_id = ctx.as_ref().and_then(|c| c.trace.trace_id()),
            sequence = d.inc.sequence,
            subject = %d.inc.subject,
            deliveries = d.inc.delivered,
            %reason,
            dead_letter = ?published.as_ref().ok(),
            "gave up on a message: dead-lettered and skipped"
        );
        Ok(())
    }

    /// Messages the server no longer redelivers are read back and handled here: the stored
    /// messages from the missing sequence up to the first parked one (one batch at most; the
    /// parked ones follow in the next round, after the order check).
    async fn repair_stall(&mut self) -> Result<(), ProjectionError> {
        let Some(missing) = self.order.stalled() else {
            return Ok(());
        };
        if !self.stream_still_ours().await? {
            return Ok(());
        }
        let until = self.parked.first().map_or(u64::MAX, |d| d.inc.sequence);
        let read = self
            .order
            .read_back(
                missing,
                until,
                self.settings.batch_size,
                self.settings.max_deliver,
            )
            .await?;
        tracing::warn!(
            from = missing,
            messages = read.len(),
            "messages were not redelivered in time; read them back from the stream"
        );
        self.order.clear();
        let batch = read
            .into_iter()
            .map(|inc| Received { msg: None, inc })
            .collect();
        self.apply(batch).await
    }

    /// Lets messages come back later: nak'd with `delay`, or parked when this was their last
    /// delivery (a nak would make the server drop them).
    async fn defer(&mut self, deliveries: Vec<Received>, delay: Duration) {
        let room = MAX_PARKED_BATCHES * self.settings.batch_size;
        for d in deliveries {
            if d.inc.delivered >= self.settings.max_deliver || d.msg.is_none() {
                if self.parked.len() < room {
                    self.parked.push(d);
                } else {
                    tracing::warn!(
                        sequence = d.inc.sequence,
                        "too many parked messages; it will be read back from the stream"
                    );
                }
            } else {
                self.ack(&d, AckKind::Nak(Some(delay))).await;
            }
        }
    }

    async fn ack(&self, d: &Received, kind: AckKind) {
        ack_one(d, kind, self.settings.request_timeout).await;
    }

    /// Acknowledges `deliveries`, in the background, once the writer's commit `commit` is on
    /// disk. If it never is (syncing failed, the writer stopped), they are not acknowledged
    /// and come back after a restart.
    fn ack_when_durable(&self, deliveries: Vec<Received>, commit: u64) {
        let writer = self.writer.clone();
        let timeout = self.settings.request_timeout;
        self.tracker.spawn(async move {
            if writer.durable(commit).await {
                ack_all(deliveries, timeout).await;
            }
        });
    }
}
