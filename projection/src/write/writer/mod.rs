//! The one SQLite writer: a dedicated thread owning the write connection, fed through a bounded
//! channel. Each batch is applied in one transaction that also stores the checkpoint: its
//! messages are applied to the carts in memory ([`Changes`]), then each changed cart's view
//! rows are written once. Cart states are written behind ([`crate::write::state_cache`], which also
//! says when a transaction writes all waiting states: "flushes"); the writer also flushes
//! before a replay, a swap and when it stops. A message that fails changes nothing and either stops the batch (live consumer: what
//! came before it is committed; retry it, keep order) or is recorded in the poison table
//! (rebuild).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::error::ProjectionError;
use crate::metrics as m;
use crate::store::db;
use crate::store::poison_table::{self, PoisonRecord};
use crate::write::changes::{ApplyError, Changes, Incoming, Order};
use crate::write::durability::{self, Durability, Syncer};
use crate::write::fault_injection::{CommitAction, Hooks};
use crate::write::state_cache::StateCache;
pub use crate::write::state_cache::StateSettings;

/// Commands queued for the writer; small, because each holds a whole batch.
const QUEUE: usize = 8;

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
    /// ([`Writer::durable`]).
    pub commit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub applied: bool,
    pub error: Option<String>,
}

enum Command {
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
    /// Write the waiting states if it is time (`force`: in any case). Returns how many.
    Flush {
        force: bool,
        reply: oneshot::Sender<Result<usize, ProjectionError>>,
    },
}

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

struct State {
    path: PathBuf,
    conn: Option<Connection>,
    hooks: Hooks,
    view: Arc<str>,
    /// Cart states in memory (see [`StateCache`]); only this thread uses it.
    cache: StateCache,
    indexes_dropped: Arc<AtomicBool>,
    durability: Arc<Durability>,
    /// Syncs commits to disk (`None`: a bulk file, synced when closed).
    syncer: Option<Syncer>,
}

impl Writer {
    /// Opens (creating and migrating) the database at `path` and starts the writer thread,
    /// which keeps cart states in memory as `states` says, and the thread that syncs its
    /// commits to disk (see [`durability`]).
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
        let state = State {
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
    /// thread. Returns the new checkpoint.
    pub fn swap_blocking(&self, fresh: PathBuf) -> Result<u64, ProjectionError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Command::Swap { fresh, reply })
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

impl State {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                Command::Apply {
                    batch,
                    on_failure,
                    reply,
                } => match self.apply(&batch, &on_failure) {
                    Ok((outcome, CommitAction::Commit)) => {
                        let _ = reply.send(Ok(outcome));
                    }
                    Ok((_, action)) => {
                        tracing::warn!(?action, "writer stopped by a fault-injection hook");
                        return;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
                Command::DeadLetter { record, reply } => {
                    let _ = reply.send(self.dead_letter(&record));
                }
                Command::Replay { id, message, reply } => {
                    let _ = reply.send(self.replay(id, &message));
                }
                Command::Swap { fresh, reply } => {
                    let _ = reply.send(self.swap(&fresh));
                }
                Command::Close { reply } => {
                    let r = self
                        .flush(true)
                        .and_then(|_| self.indexes(None))
                        .and_then(|_| {
                            self.conn.take().map_or(Ok(()), |c| {
                                c.execute_batch("PRAGMA synchronous = FULL;")
                                    .map_err(ProjectionError::db("pragmas"))?;
                                db::fold_wal(&c)
                            })
                        });
                    let _ = reply.send(r);
                    return;
                }
                Command::Recover { batch, reply } => {
                    let _ = reply.send(self.recover(&batch));
                }
                Command::FinishRecovery { reply } => {
                    let _ = reply.send(self.finish_recovery());
                }
                Command::Flush { force, reply } => {
                    let _ = reply.send(self.flush(force));
                }
                Command::Indexes { behind, reply } => {
                    let _ = reply.send(self.indexes(behind));
                }
            }
        }
        if let Err(e) = self.indexes(None) {
            tracing::warn!(error = %e, "cannot create the dropped indexes again; the next start does");
        }
        // Every handle is gone (the service stops): write what is waiting, so the next start
        // has nothing to recover.
        if let Err(e) = self.flush(true) {
            tracing::warn!(error = %e, "cannot write the waiting cart states; the next start recovers them from the stream");
        }
    }

    /// Drops the secondary indexes (`behind`: catching up that many messages, see
    /// [`Writer::drop_indexes`]) or creates the dropped ones again.
    fn indexes(&mut self, behind: Option<u64>) -> Result<usize, ProjectionError> {
        let drop = behind.is_some();
        if drop == self.indexes_dropped.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let conn = self.conn.as_mut().ok_or(ProjectionError::WriterStopped)?;
        if let Some(behind) = behind {
            let carts: i64 = conn
                .query_row("SELECT COUNT(*) FROM carts", [], |r| r.get(0))
                .map_err(ProjectionError::db("count carts"))?;
            if behind < 2 * db::to_u64(carts) {
                return Ok(0);
            }
        }
        let started = Instant::now();
        let n = if drop {
            db::drop_indexes(conn)?
        } else {
            db::restore_indexes(conn)?
        };
        self.indexes_dropped.store(drop, Ordering::Relaxed);
        metrics::gauge!(m::INDEXES_DROPPED, m::VIEW => self.view.clone()).set(if drop {
            n as f64
        } else {
            0.0
        });
        tracing::info!(view = %self.view, indexes = n, seconds = started.elapsed().as_secs_f64(), "{}", if drop { "secondary indexes dropped while catching up" } else { "secondary indexes created again" });
        Ok(n)
    }

    /// A flush of `states` committed.
    fn flushed(&self, states: usize) {
        metrics::counter!(m::STATE_FLUSHES, m::VIEW => self.view.clone()).increment(1);
        metrics::counter!(m::STATES_WRITTEN, m::VIEW => self.view.clone()).increment(states as u64);
        metrics::gauge!(m::UNWRITTEN_STATES, m::VIEW => self.view.clone()).set(0.0);
    }

    /// Writes every waiting state in a transaction of its own, if it is time (`force`: in any
    /// case). Returns how many were written.
    fn flush(&mut self, force: bool) -> Result<usize, ProjectionError> {
        let waiting = self.cache.dirty_len();
        if waiting == 0 || !(force || self.cache.flush_due(waiting)) {
            return Ok(0);
        }
        let checkpoint = self.durability.applied();
        let conn = self.conn.as_mut().ok_or(ProjectionError::WriterStopped)?;
        let tx = conn
            .transaction()
            .map_err(ProjectionError::db("begin state flush"))?;
        let changes = Changes::new(&mut self.cache);
        changes.write_all_states(&tx, checkpoint)?;
        tx.commit()
            .map_err(ProjectionError::db("commit state flush"))?;
        changes.committed(true);
        self.flushed(waiting);
        Ok(waiting)
    }

    /// Folds `batch` into the states in memory; nothing is written (see [`Command::Recover`]).
    fn recover(&mut self, batch: &[Incoming]) -> Result<u64, ProjectionError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(0);
        };
        let checkpoint = self.durability.applied();
        let conn = self.conn.as_ref().ok_or(ProjectionError::WriterStopped)?;
        let never_applied = poison_table::unapplied_between(conn, first.sequence, last.sequence)?;
        let mut changes = Changes::recovery(&mut self.cache);
        let mut folded = 0;
        for inc in batch {
            if inc.sequence > checkpoint || never_applied.contains(&inc.sequence) {
                continue;
            }
            match changes.apply(conn, inc, &self.hooks, Order::Stream) {
                Ok(applied) => folded += u64::from(!applied.already),
                Err(ApplyError::Db(e)) => return Err(e),
                Err(ApplyError::Poison(reason)) => {
                    return Err(ProjectionError::Rebuild(format!(
                        "message {} ({}) is in the views but cannot be applied again to \
                         recover the cart states ({reason}); rebuild the projection",
                        inc.sequence, inc.subject
                    )));
                }
            }
        }
        changes.committed(false);
        metrics::counter!(m::RECOVERED_MESSAGES, m::VIEW => self.view.clone()).increment(folded);
        Ok(folded)
    }

    /// Checks that every recovered (waiting) state is what the views show, then writes them.
    fn finish_recovery(&mut self) -> Result<usize, ProjectionError> {
        let conn = self.conn.as_ref().ok_or(ProjectionError::WriterStopped)?;
        let mut check = conn
            .prepare_cached(
                "SELECT version, applied_messages, updated_ns FROM carts
                 WHERE tenant = ?1 AND cart_id = ?2",
            )
            .map_err(ProjectionError::db("check recovered states"))?;
        for ((tenant, cart), stored) in self.cache.dirty() {
            let view: Option<(i64, i64, i64)> = check
                .query_row(rusqlite::params![tenant.as_str(), cart.as_str()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
                .map_err(ProjectionError::db("check recovered states"))?;
            let recovered = (
                db::to_i64(stored.state.version),
                stored.applied,
                stored.updated_ns,
            );
            if view != Some(recovered) {
                return Err(ProjectionError::Rebuild(format!(
                    "the recovered state of {tenant}/{cart} (version, applied messages, updated) \
                     = {recovered:?} does not match its view {view:?}; rebuild the projection"
                )));
            }
        }
        drop(check);
        let recovered = self.cache.dirty_len();
        self.flush(true)?;
        Ok(recovered)
    }

    fn conn(&mut self) -> Result<&mut Connection, ProjectionError> {
        self.conn.as_mut().ok_or(ProjectionError::WriterStopped)
    }

    /// A commit at `checkpoint` was made: counts it and has it synced in the background.
    fn committed(&self, checkpoint: u64) -> u64 {
        let commit = self.durability.commit(checkpoint);
        match &self.syncer {
            Some(syncer) => syncer.committed(commit, checkpoint),
            None => self.durability.publish(commit, checkpoint),
        }
        commit
    }

    /// Like [`State::committed`], but syncs here, for a rare commit whose caller answers as
    /// soon as it returns (a dead letter, a replay).
    fn committed_and_synced(&self, checkpoint: u64) -> Result<(), ProjectionError> {
        let commit = self.durability.commit(checkpoint);
        if self.syncer.is_some() {
            durability::sync_wal(&self.path).map_err(|source| {
                self.durability.fail();
                ProjectionError::Io {
                    what: "cannot sync the WAL of",
                    path: self.path.display().to_string(),
                    source,
                }
            })?;
        }
        self.durability.publish(commit, checkpoint);
        Ok(())
    }

    fn apply(
        &mut self,
        batch: &[Incoming],
        on_failure: &OnFailure,
    ) -> Result<(BatchOutcome, CommitAction), ProjectionError> {
        if self.durability.failed() {
            // Commits can no longer be made durable: restart (SQLite recovers the file).
            return Err(ProjectionError::WriterStopped);
        }
        let started = Instant::now();
        let view = self.view.clone();
        let hooks = self.hooks.clone();
        let live = matches!(on_failure, OnFailure::Stop);
        let conn = self.conn.as_mut().ok_or(ProjectionError::WriterStopped)?;
        let tx = conn
            .transaction()
            .map_err(ProjectionError::db("begin batch"))?;
        let mut out = BatchOutcome {
            checkpoint: db::checkpoint(&tx)?,
            ..BatchOutcome::default()
        };
        // Dropped on an early return: the transaction rolls back, the states taken go back.
        let mut changes = Changes::new(&mut self.cache);
        let mut events = 0;
        for (index, inc) in batch.iter().enumerate() {
            if inc.sequence <= out.checkpoint {
                out.skipped += 1;
                out.handled = index + 1;
                continue;
            }
            match changes.apply(&tx, inc, &hooks, Order::Stream) {
                Ok(applied) => {
                    out.applied += usize::from(!applied.already);
                    events += applied.events;
                    for t in applied.unknown {
                        metrics::counter!(m::UNKNOWN_EVENTS, m::VIEW => view.clone(), "type" => t)
                            .increment(1);
                    }
                }
                Err(ApplyError::Db(e)) => return Err(e),
                Err(ApplyError::Poison(reason)) => {
                    metrics::counter!(m::FAILED_MESSAGES, m::VIEW => view.clone()).increment(1);
                    match on_failure {
                        OnFailure::Stop => {
                            out.failure = Some(Failure { reason });
                            break;
                        }
                        OnFailure::Record { consumer } => {
                            tracing::warn!(sequence = inc.sequence, %reason, "rebuild skips a message that cannot be applied");
                            let record = PoisonRecord::new(
                                consumer,
                                &inc.subject,
                                inc.sequence,
                                &reason,
                                inc.delivered,
                                false,
                            );
                            poison_table::insert(&tx, &record)?;
                        }
                    }
                }
            }
            out.checkpoint = inc.sequence;
            out.handled = index + 1;
        }
        changes.write(&tx)?;
        db::set_checkpoint(&tx, out.checkpoint)?;
        let unwritten = changes.unwritten_after();
        let flush = changes.flush_due();
        if flush {
            changes.write_all_states(&tx, out.checkpoint)?;
        }
        let action = if live {
            hooks.commit_action(batch.last().map_or(0, |i| i.sequence))
        } else {
            CommitAction::Commit
        };
        match action {
            // Dropping the transaction rolls it back.
            CommitAction::CrashBeforeCommit => return Ok((out, action)),
            CommitAction::FailCommit => {
                return Err(ProjectionError::Db {
                    what: "commit batch (injected failure)",
                    source: rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                        None,
                    ),
                });
            }
            CommitAction::Commit | CommitAction::CrashAfterCommit => {}
        }
        tx.commit().map_err(ProjectionError::db("commit batch"))?;
        let loads = changes.loads;
        changes.committed(flush);
        if flush {
            self.flushed(unwritten);
        } else {
            metrics::gauge!(m::UNWRITTEN_STATES, m::VIEW => view.clone()).set(unwritten as f64);
        }
        out.commit = self.committed(out.checkpoint);
        if live {
            metrics::histogram!(m::BATCH_SECONDS, m::VIEW => view.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(m::MESSAGES_APPLIED, m::VIEW => view.clone())
                .increment(out.applied as u64);
            metrics::counter!(m::EVENTS_APPLIED, m::VIEW => view.clone()).increment(events as u64);
            metrics::counter!(m::MESSAGES_SKIPPED, m::VIEW => view.clone())
                .increment(out.skipped as u64);
            metrics::counter!(m::STATE_LOADS, m::VIEW => view.clone()).increment(loads);
            metrics::gauge!(m::APPLIED_SEQUENCE, m::VIEW => view).set(out.checkpoint as f64);
        }
        Ok((out, action))
    }

    fn dead_letter(&mut self, record: &PoisonRecord) -> Result<u64, ProjectionError> {
        let conn = self.conn()?;
        let tx = conn
            .transaction()
            .map_err(ProjectionError::db("begin dead letter"))?;
        let id = poison_table::insert(&tx, record)?;
        db::set_checkpoint(&tx, record.stream_sequence)?;
        let checkpoint = db::checkpoint(&tx)?;
        tx.commit()
            .map_err(ProjectionError::db("commit dead letter"))?;
        self.committed_and_synced(checkpoint)?;
        Ok(id)
    }

    /// Applies a dead letter now. Its message is older than the last flush's checkpoint, so
    /// recovery would not fold it again: the transaction writes every waiting state.
    fn replay(&mut self, id: u64, message: &Incoming) -> Result<ReplayOutcome, ProjectionError> {
        let hooks = self.hooks.clone();
        let checkpoint = self.durability.applied();
        let conn = self.conn.as_mut().ok_or(ProjectionError::WriterStopped)?;
        let tx = conn
            .transaction()
            .map_err(ProjectionError::db("begin replay"))?;
        let record = poison_table::get(&tx, id)?
            .ok_or_else(|| ProjectionError::NotFound(format!("no dead letter with id {id}")))?;
        if let Some(at) = &record.replayed_at {
            return Ok(ReplayOutcome {
                applied: false,
                error: Some(format!("dead letter {id} was already replayed at {at}")),
            });
        }
        let mut changes = Changes::new(&mut self.cache);
        let outcome = match changes.apply(&tx, message, &hooks, Order::Late) {
            Ok(_) => {
                changes.write(&tx)?;
                poison_table::mark_replayed(&tx, id)?;
                ReplayOutcome {
                    applied: true,
                    error: None,
                }
            }
            Err(ApplyError::Db(e)) => return Err(e),
            Err(ApplyError::Poison(reason)) => {
                poison_table::mark_replay_failed(&tx, id, &reason)?;
                ReplayOutcome {
                    applied: false,
                    error: Some(reason),
                }
            }
        };
        let unwritten = changes.unwritten_after();
        changes.write_all_states(&tx, checkpoint)?;
        tx.commit().map_err(ProjectionError::db("commit replay"))?;
        changes.committed(true);
        self.flushed(unwritten);
        self.committed_and_synced(checkpoint)?;
        Ok(outcome)
    }

    /// Moves `fresh` over the live file. The caller guarantees no reader holds a connection.
    fn swap(&mut self, fresh: &Path) -> Result<u64, ProjectionError> {
        // The old file gets every waiting state first: if the swap fails, it is still whole.
        self.flush(true)?;
        let old = self.conn.take();
        // Whatever the outcome, the cached states may no longer be the file's.
        self.cache.clear();
        let replaced = replace_database(&self.path, fresh, old);
        // Reopen whatever is now at the path (the old file if the swap failed).
        let conn = db::open_writer(&self.path)?;
        let checkpoint = db::checkpoint(&conn)?;
        self.conn = Some(conn);
        replaced?;
        // The rebuilt file was synced as a whole when its writer closed it.
        let commit = self.durability.commit(checkpoint);
        self.durability.replaced(commit, checkpoint);
        metrics::gauge!(m::APPLIED_SEQUENCE, m::VIEW => self.view.clone()).set(checkpoint as f64);
        Ok(checkpoint)
    }
}

/// Moves `fresh` over `path`: the fresh file inherits the poison table of `path`, the old
/// file's WAL is folded in (`old` must be the only connection to it) and the fresh file is
/// renamed over it. Callers reopen `path` afterwards.
pub(crate) fn replace_database(
    path: &Path,
    fresh: &Path,
    old: Option<Connection>,
) -> Result<(), ProjectionError> {
    if path.exists() {
        let conn = Connection::open(fresh).map_err(ProjectionError::db("open fresh database"))?;
        conn.execute(
            "ATTACH DATABASE ?1 AS old",
            [path.to_string_lossy().as_ref()],
        )
        .map_err(ProjectionError::db("attach live database"))?;
        poison_table::carry_over(&conn)?;
    }
    if let Some(old) = old {
        db::fold_wal(&old)?;
    }
    std::fs::rename(fresh, path).map_err(|source| ProjectionError::Io {
        what: "cannot move the rebuilt database over",
        path: path.display().to_string(),
        source,
    })
}
