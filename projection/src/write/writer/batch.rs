//! The `Apply` command: one batch of messages in one transaction, with the checkpoint.
//!
//! Messages at or below the checkpoint are skipped; the others are applied to the carts in
//! memory ([`Changes`]) and each changed cart's view rows are written once. A message that
//! cannot be applied changes nothing and, as [`OnFailure`] says, either ends the batch (the
//! live consumer: what came before it is committed, it is retried) or is recorded in the
//! poison table (a rebuild). The fault-injection hooks may stop the writer around the commit.

use std::time::Instant;

use super::command::{BatchOutcome, Failure, OnFailure};
use super::thread::WriterThread;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::store::db;
use crate::store::poison_table::{self, PoisonRecord};
use crate::write::changes::{ApplyError, Changes, Incoming, Order};
use crate::write::fault_injection::CommitAction;

impl WriterThread {
    pub(super) fn apply(
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
}
