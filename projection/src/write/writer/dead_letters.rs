//! The commands of messages given up on: `DeadLetter` records one in the poison table and moves
//! the checkpoint past it; `Replay` applies one now, once an operator has fixed its cause.
//! Both sync their commit before answering (their callers act on the answer at once).

use super::command::ReplayOutcome;
use super::thread::WriterThread;
use crate::error::ProjectionError;
use crate::store::db;
use crate::store::poison_table::{self, PoisonRecord};
use crate::write::changes::{ApplyError, Changes, Incoming, Order};

impl WriterThread {
    pub(super) fn dead_letter(&mut self, record: &PoisonRecord) -> Result<u64, ProjectionError> {
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
    pub(super) fn replay(
        &mut self,
        id: u64,
        message: &Incoming,
    ) -> Result<ReplayOutcome, ProjectionError> {
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
}
