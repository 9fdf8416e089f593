//! The writer thread: the one owner of the write connection and of the cart states in memory.
//! It takes [`Command`]s off a bounded channel, one at a time, and runs each as a transaction
//! of its own; each kind lives in a file of its own beside this one ([`super::batch`],
//! [`super::dead_letters`], [`super::recover`], [`super::flush`], [`super::indexes`],
//! [`super::swap`]). What every commit shares is here: numbering it and having it synced.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rusqlite::Connection;
use tokio::sync::mpsc;

use super::command::Command;
use crate::error::ProjectionError;
use crate::store::db;
use crate::write::durability::{self, Durability, Syncer};
use crate::write::fault_injection::{CommitAction, Hooks};
use crate::write::state_cache::StateCache;

/// The thread's resources; only the writer thread touches them.
pub(super) struct WriterThread {
    pub(super) path: PathBuf,
    pub(super) conn: Option<Connection>,
    pub(super) hooks: Hooks,
    pub(super) view: Arc<str>,
    /// Cart states in memory (see [`StateCache`]); only this thread uses it.
    pub(super) cache: StateCache,
    pub(super) indexes_dropped: Arc<AtomicBool>,
    pub(super) durability: Arc<Durability>,
    /// Syncs commits to disk (`None`: a bulk file, synced when closed).
    pub(super) syncer: Option<Syncer>,
}

impl WriterThread {
    /// Runs the commands in order. Stops at `Close`, or when a fault-injection hook stops the
    /// writer; when every handle is dropped, it first creates the dropped indexes again and
    /// writes the waiting states.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
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
                Command::Swap {
                    fresh,
                    other_stream,
                    reply,
                } => {
                    let _ = reply.send(self.swap(&fresh, other_stream));
                }
                Command::Close { reply } => {
                    let _ = reply.send(self.close());
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
                Command::Witness { reply } => {
                    let _ = reply.send(self.conn().and_then(|c| db::witness(c)));
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

    pub(super) fn conn(&mut self) -> Result<&mut Connection, ProjectionError> {
        self.conn.as_mut().ok_or(ProjectionError::WriterStopped)
    }

    /// A commit at `checkpoint` was made: counts it and has it synced in the background.
    pub(super) fn committed(&self, checkpoint: u64) -> u64 {
        let commit = self.durability.commit(checkpoint);
        match &self.syncer {
            Some(syncer) => syncer.committed(commit, checkpoint),
            None => self.durability.publish(commit, checkpoint),
        }
        commit
    }

    /// Like [`WriterThread::committed`], but syncs here, for a rare commit whose caller answers
    /// as soon as it returns (a dead letter, a replay).
    pub(super) fn committed_and_synced(&self, checkpoint: u64) -> Result<(), ProjectionError> {
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
}
