//! The writer's half of start-up recovery ([`crate::consume::recovery`] reads the messages
//! back): `Recover` folds messages already in the views into the cart states in memory,
//! writing nothing; `FinishRecovery` checks each recovered state against its view row and
//! writes them all.

use rusqlite::OptionalExtension;

use super::thread::WriterThread;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::store::{db, poison_table};
use crate::write::changes::{ApplyError, Changes, Incoming, Order};

impl WriterThread {
    /// Folds `batch` into the states in memory; nothing is written (see
    /// [`Command::Recover`](super::command::Command::Recover)).
    pub(super) fn recover(&mut self, batch: &[Incoming]) -> Result<u64, ProjectionError> {
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
    pub(super) fn finish_recovery(&mut self) -> Result<usize, ProjectionError> {
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
}
