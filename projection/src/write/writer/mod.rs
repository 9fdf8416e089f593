//! The one SQLite writer: a dedicated thread owning the write connection, fed through a bounded
//! channel, and [`Writer`], the cloneable handle the async side talks to it through.
//!
//! Each batch is applied in one transaction that also stores the checkpoint: its messages are
//! applied to the carts in memory ([`crate::write::changes::Changes`]), then each changed
//! cart's view rows are written once. Cart states are written behind
//! ([`crate::write::state_cache`], which also says when a transaction writes all waiting states:
//! "flushes"); the writer also flushes before a replay, a swap and when it stops. A message
//! that fails changes nothing and either stops the batch (live consumer: what came before it is
//! committed; retry it, keep order) or is recorded in the poison table (rebuild).
//!
//! This file is the handle: every method that touches the file queues a `Command`
//! (`command.rs`) and waits for its answer; the others read the shared durability state. `thread.rs` is the thread that runs them; each kind of transaction has a file of its
//! own: `batch.rs` (`Apply`), `dead_letters.rs` (`DeadLetter`, `Replay`), `recover.rs`
//! (`Recover`, `FinishRecovery`), `flush.rs`, `indexes.rs`, `swap.rs` (`Swap`, `Close`).

mod batch;
mod command;
mod dead_letters;
mod flush;
mod indexes;
mod recover;
mod swap;
mod thread;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use self::command::Command;
pub use self::command::{BatchOutcome, Failure, OnFailure, ReplayOutcome};
pub(crate) use self::swap::replace_database;
use self::thread::WriterThread;
use crate::error::ProjectionError;
use crate::store::db::{self, Witness};
use crate::store::poison_table::PoisonRecord;
use crate::write::changes::Incoming;
use crate::write::durability::{Durability, Syncer};
use crate::write::fault_injection::Hooks;
use crate::write::state_cache::StateCache;
pub use crate::write::state_cache::StateSettings;

/// Commands queued for the writer; small, because each holds a whole batch.
const QUEUE: usize = 8;

/// A handle to the writer thread. The thread stops when every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
    durability: Arc<Durability>,
    /// At start: the stream sequences whose messages are in the views but not in the stored
    /// states (the writer before stopped without writing them).
    states_behind: Option<RangeInclusive<u64>>,
    /// The views' secondary indexes are dropped (see [`Writer::drop_indexes`]).
    indexes_dropped: Arc<AtomicBool>,
}

impl Writer {
    /// Opens (creating and migrating) the database at `path` and starts the writer thread,
    /// which keeps cart states in memory as `states` says, and the thread that syncs its
    /// commits to disk (see [`crate::write::durability`]).
    pub fn spawn(
        path: &Path,
        hooks: Hooks,
        view: &str,
        states: StateSettings,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), ProjectionError> {
        Self::start(db::open_writer(path)?, path, hooks, view, states, true)
    }

    /// Like [`Writer::spawn`] for a file being filled by a rebuild: commits are not synced
    /// (the file is worthless until swapped in); [`Writer::close`] syncs it.
    pub fn spawn_bulk(
        path: &Path,
        hooks: Hooks,
        view: &str,
        states: StateSettings,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), ProjectionError> {
        let mut conn = db::open_writer(path)?;
        conn.execute_batch("PRAGMA synchronous = OFF;")
            .map_err(ProjectionError::db("pragmas"))?;
        // The whole stream goes in: without secondary indexes, created again by `close`.
        db::drop_indexes(&mut conn)?;
        Self::start(conn, path, hooks, view, states, false)
    }

    fn start(
        conn: Connection,
        path: &Path,
        hooks: Hooks,
        view: &str,
        states: StateSettings,
        sync: bool,
    ) -> Result<(Writer, std::thread::JoinHandle<()>), ProjectionError> {
        let checkpoint = db::checkpoint(&conn)?;
        let states_checkpoint = db::states_checkpoint(&conn)?;
        let states_behind =
            (states_checkpoint < checkpoint).then(|| states_checkpoint + 1..=checkpoint);
        let durability = Durability::new(checkpoint);
        let view: Arc<str> = view.into();
        let syncer = if sync {
            let spawned = Syncer::spawn(
                path.to_path_buf(),
                durability.clone(),
                view.clone(),
                hooks.clone(),
            );
            Some(spawned.map_err(|source| ProjectionError::Io {
                what: "cannot start the sync thread for",
                path: path.display().to_string(),
                source,
            })?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let indexes_dropped = Arc::new(AtomicBool::new(db::indexes_dropped(&conn)?));
        let state = WriterThread {
            indexes_dropped: indexes_dropped.clone(),
            path: path.to_path_buf(),
            conn: Some(conn),
            hooks,
            view: view.clone(),
            cache: StateCache::new(states),
            durability: durability.clone(),
            syncer,
        };
        let thread = std::thread::Builder::new()
            .name(format!("projection-writer-{}", view))
            .spawn(move || state.run(rx))
            .map_err(|source| ProjectionError::Io {
                what: "cannot start the writer thread for",
                path: path.display().to_string(),
                source,
            })?;
        Ok((
            Writer {
                tx,
                durability,
                states_behind,
                indexes_dropped,
            },
            thread,
        ))
    }

    /// The stream sequences to fold into the stored states again before applying anything
    /// (see [`crate::consume::recovery`]); `None` when the states were all written.
    pub fn states_behind(&self) -> Option<RangeInclusive<u64>> {
        self.states_behind.clone()
    }

    /// Folds `batch` (messages within [`Writer::states_behind`], in stream order) into the
    /// states in memory. Returns how many were folded.
    pub async fn recover(&self, batch: Vec<Incoming>) -> Result<u64, ProjectionError> {
        self.call(|reply| Command::Recover { batch, reply }).await
    }

    /// Checks every recovered state against its view row and writes them all. Returns how
    /// many carts were recovered.
    pub async fn finish_recovery(&self) -> Result<usize, ProjectionError> {
        self.call(|reply| Command::FinishRecovery { reply }).await
    }

    /// Drops the views' secondary indexes before catching up `behind` messages, so that each
    /// cart update writes its rows only, unless creating them again would cost more: that
    /// takes about as long as applying two messages per stored cart. Queries still answer
    /// meanwhile, by scanning. Returns how many were dropped.
    pub async fn drop_indexes(&self, behind: u64) -> Result<usize, ProjectionError> {
        self.call(|reply| Command::Indexes {
            behind: Some(behind),
            reply,
        })
        .await
    }

    /// Creates the dropped indexes again (caught up). Returns how many.
    pub async fn restore_indexes(&self) -> Result<usize, ProjectionError> {
        self.call(|reply| Command::Indexes {
            behind: None,
            reply,
        })
        .await
    }

    /// Whether the views' secondary indexes are dropped (catching up from far behind).
    pub fn indexes_dropped(&self) -> bool {
        self.indexes_dropped.load(Ordering::Relaxed)
    }

    /// Writes the waiting states if it is time (`force`: in any case; an idle consumer asks,
    /// so states do not wait for the next message). Returns how many were written.
    pub async fn flush_states(&self, force: bool) -> Result<usize, ProjectionError> {
        self.call(|reply| Command::Flush { force, reply }).await
    }

    /// The message the database recognises the stream it was built from by
    /// ([`crate::store::db::witness`]).
    pub async fn witness(&self) -> Result<Option<Witness>, ProjectionError> {
        self.call(|reply| Command::Witness { reply }).await
    }

    /// The last committed stream sequence (what the views show).
    pub fn checkpoint(&self) -> u64 {
        self.durability.applied()
    }

    /// The last stream sequence whose commit is on disk.
    pub fn durable_checkpoint(&self) -> u64 {
        self.durability.checkpoint()
    }

    /// Whether syncing a commit to disk failed (the writer takes no more batches).
    pub fn sync_failed(&self) -> bool {
        self.durability.failed()
    }

    /// The newest commit made (see [`BatchOutcome::commit`]).
    pub fn last_commit(&self) -> u64 {
        self.durability.committed()
    }

    /// Waits until commit `commit` is on disk; false if it never will be (syncing failed and
    /// the writer stopped), in which case nothing of it may be acknowledged.
    pub async fn durable(&self, commit: u64) -> bool {
        self.durability.wait(commit).await
    }

    pub async fn apply(
        &self,
        batch: Vec<Incoming>,
        on_failure: OnFailure,
    ) -> Result<BatchOutcome, ProjectionError> {
        self.call(|reply| Command::Apply {
            batch,
            on_failure,
            reply,
        })
        .await
    }

    /// Records a dead letter and moves the checkpoint past it.
    pub async fn dead_letter(&self, record: PoisonRecord) -> Result<u64, ProjectionError> {
        self.call(|reply| Command::DeadLetter { record, reply })
            .await
    }

    pub async fn replay(
        &self,
        id: u64,
        message: Incoming,
    ) -> Result<ReplayOutcome, ProjectionError> {
        self.call(|reply| Command::Replay { id, message, reply })
            .await
    }

    /// Blocking form of the swap, for a caller that holds the readers' swap lock on a blocking
    /// thread; `other_stream`: `fresh` was built from another `CART_EVENTS` than the file in
    /// place (see [`replace_database`]). Returns the new checkpoint.
    pub fn swap_blocking(
        &self,
        fresh: PathBuf,
        other_stream: bool,
    ) -> Result<u64, ProjectionError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Command::Swap {
                fresh,
                other_stream,
                reply,
            })
            .map_err(|_| ProjectionError::WriterStopped)?;
        rx.blocking_recv()
            .map_err(|_| ProjectionError::WriterStopped)?
    }

    /// Folds the WAL and stops the writer (its file can then be moved).
    pub async fn close(&self) -> Result<(), ProjectionError> {
        self.call(|reply| Command::Close { reply }).await
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ProjectionError>>) -> Command,
    ) -> Result<T, ProjectionError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| ProjectionError::WriterStopped)?;
        rx.await.map_err(|_| ProjectionError::WriterStopped)?
    }
}
