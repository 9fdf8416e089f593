//! Keeping stream order across retries ([`OrderGuard`], used by [`super::consumer`]).
//!
//! The checkpoint is one number ("everything up to here is applied"), so a message may only be
//! applied when nothing before it is still outstanding. After a message is nak'd for a retry,
//! the server keeps delivering newer ones; those must wait too. A batch is therefore split at
//! the first gap: a sequence after the checkpoint that the stream still holds but this batch
//! does not. Gaps are rare (a message being retried, or one deleted from the stream), so the
//! check (one direct get) costs nothing on the normal path.
//!
//! If a gap does not close within the stall limit (the server will not redeliver the
//! messages, e.g. their deliveries ran out while this process was down), the consumer reads
//! them back itself and applies or dead-letters them, so the projection never wedges.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use shared::subjects::CART_EVENTS_ALL;

use crate::error::ProjectionError;
use crate::write::changes::Incoming;

pub struct OrderGuard {
    events: Stream,
    timeout: Duration,
    stall_limit: Duration,
    /// The missing sequence being waited for, and since when.
    waiting: Option<(u64, Instant)>,
}

/// A batch split at its first gap.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// Leading items that may be applied now.
    pub ready: usize,
    /// The first missing sequence, when the rest must wait.
    pub missing: Option<u64>,
}

impl OrderGuard {
    pub fn new(events: Stream, timeout: Duration, stall_limit: Duration) -> Self {
        Self {
            events,
            timeout,
            stall_limit,
            waiting: None,
        }
    }

    /// Splits `sequences` (ascending, all above `checkpoint`) at the first gap.
    pub async fn split(
        &mut self,
        checkpoint: u64,
        sequences: &[u64],
    ) -> Result<Split, ProjectionError> {
        let mut expected = checkpoint + 1;
        for (index, &seq) in sequences.iter().enumerate() {
            if seq > expected {
                match self.first_at_or_after(expected).await? {
                    // Nothing is stored between: the gap is deleted messages (or other subjects).
                    Some(found) if found >= seq => {}
                    // `found` is still outstanding; `None`: this replica lags, ask again later.
                    other => {
                        let missing = other.unwrap_or(expected);
                        if self.waiting.is_none_or(|(s, _)| s != missing) {
                            self.waiting = Some((missing, Instant::now()));
                        }
                        return Ok(Split {
                            ready: index,
                            missing: Some(missing),
                        });
                    }
                }
            }
            expected = seq + 1;
        }
        self.waiting = None;
        Ok(Split {
            ready: sequences.len(),
            missing: None,
        })
    }

    /// Notes that `seq` is expected but nothing was delivered (the stream is ahead of the
    /// checkpoint and the fetch came back empty).
    pub fn expect(&mut self, seq: u64) {
        if self.waiting.is_none_or(|(s, _)| s != seq) {
            self.waiting = Some((seq, Instant::now()));
        }
    }

    /// The sequence that has been missing for longer than the stall limit, if any.
    pub fn stalled(&self) -> Option<u64> {
        self.waiting
            .filter(|(_, since)| since.elapsed() >= self.stall_limit)
            .map(|(seq, _)| seq)
    }

    /// Forget the wait (the missing message was handled).
    pub fn clear(&mut self) {
        self.waiting = None;
    }

    async fn first_at_or_after(&self, seq: u64) -> Result<Option<u64>, ProjectionError> {
        Ok(self.next_message(seq).await?.map(|m| m.sequence))
    }

    async fn next_message(&self, seq: u64) -> Result<Option<StreamMessage>, ProjectionError> {
        let lookup = self
            .events
            .direct_get_next_for_subject(CART_EVENTS_ALL, Some(seq));
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(ProjectionError::nats("order check", "no reply in time")),
            Ok(Ok(msg)) => Ok(Some(msg)),
            Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(ProjectionError::nats("order check", e)),
        }
    }

    /// Reads up to `max` stored messages from `from` on, stopping before `until`, as
    /// deliveries on their last attempt (so one that fails is dead-lettered at once).
    pub async fn read_back(
        &self,
        from: u64,
        until: u64,
        max: usize,
        delivered: i64,
    ) -> Result<Vec<Incoming>, ProjectionError> {
        let mut out = Vec::new();
        let mut next = from;
        while out.len() < max {
            match self.next_message(next).await? {
                Some(msg) if msg.sequence < until => {
                    next = msg.sequence + 1;
                    out.push(Incoming::new(
                        msg.sequence,
                        msg.subject.to_string(),
                        Some(msg.headers),
                        msg.payload,
                        delivered,
                    ));
                }
                _ => break,
            }
        }
        Ok(out)
    }
}
