//! The event store: `CART_EVENTS` on JetStream.
//!
//! An append is one message per accepted command, published with `Nats-Msg-Id` = command id
//! (JetStream de-duplication) and `Nats-Expected-Last-Subject-Sequence` = the cart's version
//! (the fence: two writers can never both commit on the same version). Reading a cart's tail
//! uses the server's batch direct get: one round trip for a typical cart.

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    context::PublishErrorKind,
    message::StreamMessage,
    stream::{RawMessageError, RawMessageErrorKind, Stream},
};
use cart_domain::EventMessage;
use shared::headers::RequestContext;
use shared::nats::direct_get::{BatchGetOptions, DirectGetError, read_subject_after};
use shared::subjects::CART_EVENTS_STREAM;

use crate::metrics as m;

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Stream sequence of the message: the cart's new version.
    pub sequence: u64,
    /// The command id had already been stored (a retry of a committed command).
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another writer appended to the cart first (expected version {expected})")]
    WrongLastSequence { expected: u64 },
    #[error("JetStream did not acknowledge the append in time; its outcome is unknown")]
    Timeout,
    /// Nobody answered for the stream: it has no leader (an election after a NATS server
    /// died takes 4–9 s) or this node cannot reach the cluster. Nothing was stored.
    #[error(
        "no JetStream server accepted the append (the event stream has no leader, e.g. during an election); nothing was stored, retry"
    )]
    NoLeader,
    #[error("append failed: {0}")]
    Append(String),
    #[error("reading from the stream leader failed: {0}")]
    LeaderRead(String),
    #[error(transparent)]
    Read(#[from] DirectGetError),
}

/// A message read back from the stream. `message` is `None` when its envelope could not be
/// parsed: the cart's version must still move past it, or every later append would fail the
/// expected-sequence check.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sequence: u64,
    pub message: Option<EventMessage>,
}

#[derive(Clone)]
pub struct EventStore {
    client: async_nats::Client,
    js: jetstream::Context,
    /// `CART_EVENTS`, for reads only its leader answers.
    events: Stream<()>,
    read: BatchGetOptions,
    append_seconds: metrics::Histogram,
}

impl EventStore {
    pub async fn new(
        client: async_nats::Client,
        js: jetstream::Context,
        read_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // A handle only: no request is made.
        let events = js
            .get_stream_no_info(CART_EVENTS_STREAM)
            .await
            .map_err(|e| StoreError::LeaderRead(e.to_string()))?;
        Ok(Self {
            client,
            js,
            events,
            read: BatchGetOptions {
                batch: shared::nats::direct_get::MAX_BATCH,
                timeout: read_timeout,
            },
            append_seconds: m::append_seconds(),
        })
    }

    /// Append `msg` to `subject` if the subject's last sequence is still `expected`.
    pub async fn append(
        &self,
        subject: &str,
        msg: &EventMessage,
        expected: u64,
        ctx: &RequestContext,
    ) -> Result<Appended, StoreError> {
        let publish =
            shared::nats::event_publish(msg, &shared::spans::downstream(ctx), Some(expected));
        let started = Instant::now();
        let result = async {
            self.js
                .send_publish(subject.to_owned(), publish)
                .await?
                .await
        }
        .await;
        self.append_seconds.record(started.elapsed().as_secs_f64());
        match result {
            Ok(ack) => Ok(Appended {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }),
            Err(e) => Err(match e.kind() {
                PublishErrorKind::WrongLastSequence => StoreError::WrongLastSequence { expected },
                PublishErrorKind::TimedOut => StoreError::Timeout,
                PublishErrorKind::StreamNotFound => StoreError::NoLeader,
                _ => StoreError::Append(e.to_string()),
            }),
        }
    }

    /// Every message of the cart at `subject` with a sequence above `after`. Messages whose
    /// envelope cannot be parsed are logged, counted and skipped so the cart stays loadable.
    pub async fn read_after(
        &self,
        subject: &str,
        after: u64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let raw = read_subject_after(&self.client, CART_EVENTS_STREAM, subject, after, &self.read)
            .await?;
        Ok(raw
            .into_iter()
            .map(|stored| StoredMessage::parse(subject, stored.sequence, &stored.payload))
            .collect())
    }

    /// The sequence of the last message of `subject`, as the stream's leader holds it (`None`:
    /// the subject has none).
    pub async fn last_sequence_from_leader(
        &self,
        subject: &str,
    ) -> Result<Option<u64>, StoreError> {
        let get = self
            .events
            .raw_message_builder()
            .last_by_subject(subject)
            .send();
        Ok(self.ask_leader(get).await?.map(|msg| msg.sequence))
    }

    /// The first message of `subject` after sequence `after`, as the stream's leader holds
    /// it. Direct gets (what [`Self::read_after`] uses) may be answered by a follower that has
    /// not stored an acknowledged append yet; this request always reaches the leader.
    pub async fn next_from_leader(
        &self,
        subject: &str,
        after: u64,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let get = self
            .events
            .raw_message_builder()
            .sequence(after + 1)
            .next_by_subject(subject)
            .send();
        Ok(self
            .ask_leader(get)
            .await?
            .map(|msg| StoredMessage::parse(subject, msg.sequence, &msg.payload)))
    }

    /// One `STREAM.MSG.GET` (only the leader answers it), timed; "no message" is `None`.
    async fn ask_leader(
        &self,
        get: impl std::future::Future<Output = Result<StreamMessage, RawMessageError>>,
    ) -> Result<Option<StreamMessage>, StoreError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.read.timeout, get).await;
        metrics::histogram!(m::LEADER_READ_SECONDS).record(started.elapsed().as_secs_f64());
        match result {
            Err(_) => Err(StoreError::LeaderRead("no reply in time".into())),
            Ok(Ok(msg)) => Ok(Some(msg)),
            Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Ok(Err(e)) => Err(StoreError::LeaderRead(e.to_string())),
        }
    }
}

impl StoredMessage {
    /// Logged and counted when its envelope cannot be parsed.
    fn parse(subject: &str, sequence: u64, payload: &[u8]) -> Self {
        match EventMessage::from_json(payload) {
            Ok(message) => Self {
                sequence,
                message: Some(message),
            },
            Err(e) => {
                metrics::counter!(m::UNREADABLE_MESSAGES).increment(1);
                tracing::error!(
                    subject,
                    sequence,
                    error = %e,
                    "skipping an event message that is not a valid envelope"
                );
                Self {
                    sequence,
                    message: None,
                }
            }
        }
    }
}
