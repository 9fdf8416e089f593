//! What the [`Writer`](super::Writer) handle and the writer thread say to each other: the
//! [`Command`]s queued for the thread (one per transaction kind) and the outcomes of a batch
//! and of a replay.

use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::error::ProjectionError;
use crate::store::db::Witness;
use crate::store::poison_table::PoisonRecord;
use crate::write::changes::Incoming;

/// What to do with a message that cannot be applied.
#[derive(Debug, Clone)]
pub enum OnFailure {
    /// Stop there: commit what came before, report the failure (live consumer).
    Stop,
    /// Record it in the poison table as consumer `consumer` and go on (rebuild).
    Record { consumer: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Leading messages of the batch that are committed (applied, skipped or recorded).
    pub handled: usize,
    pub applied: usize,
    pub skipped: usize,
    pub checkpoint: u64,
    pub failure: Option<Failure>,
    /// The commit that holds the batch: acknowledge its messages once it is durable
    /// ([`Writer::durable`](super::Writer::durable)).
    pub commit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub applied: bool,
    pub error: Option<String>,
}

/// A request to the writer thread, with the channel its answer goes back on.
pub(super) enum Command {
    Apply {
        batch: Vec<Incoming>,
        on_failure: OnFailure,
        reply: oneshot::Sender<Result<BatchOutcome, ProjectionError>>,
    },
    DeadLetter {
        record: PoisonRecord,
        reply: oneshot::Sender<Result<u64, ProjectionError>>,
    },
    Replay {
        id: u64,
        message: Incoming,
        reply: oneshot::Sender<Result<ReplayOutcome, ProjectionError>>,
    },
    /// Replace the database file by `fresh` (carrying the poison table over) and reopen.
    Swap {
        fresh: PathBuf,
        /// The file was built from another `CART_EVENTS` than the one in place (its dead
        /// letters name messages that are gone).
        other_stream: bool,
        reply: oneshot::Sender<Result<u64, ProjectionError>>,
    },
    /// Fold the WAL into the file and stop (the file is about to be moved).
    Close {
        reply: oneshot::Sender<Result<(), ProjectionError>>,
    },
    /// Fold messages already applied to the views into the cart states again (start-up after
    /// a crash, see [`crate::consume::recovery`]).
    Recover {
        batch: Vec<Incoming>,
        reply: oneshot::Sender<Result<u64, ProjectionError>>,
    },
    /// Check the recovered states against the views, then write them.
    FinishRecovery {
        reply: oneshot::Sender<Result<usize, ProjectionError>>,
    },
    /// Drop the views' secondary indexes (catching up from `behind` messages back, if that is
    /// worth it; `None`: create the dropped ones again).
    Indexes {
        behind: Option<u64>,
        reply: oneshot::Sender<Result<usize, ProjectionError>>,
    },
    /// Read the message the database recognises its stream by ([`crate::store::db::witness`]).
    Witness {
        reply: oneshot::Sender<Result<Option<Witness>, ProjectionError>>,
    },
    /// Write the waiting states if it is time (`force`: in any case). Returns how many.
    Flush {
        force: bool,
        reply: oneshot::Sender<Result<usize, ProjectionError>>,
    },
}
