//! The `Flush` command: write every cart state waiting in memory, in a transaction of its own
//! (states are written behind the views, see [`crate::write::state_cache`]). Other commands
//! flush too: a batch when it is time, a replay, a swap, a close and the thread's stop.

use super::thread::WriterThread;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::write::changes::Changes;

impl WriterThread {
    /// A flush of `states` committed.
    pub(super) fn flushed(&self, states: usize) {
        metrics::counter!(m::STATE_FLUSHES, m::VIEW => self.view.clone()).increment(1);
        metrics::counter!(m::STATES_WRITTEN, m::VIEW => self.view.clone()).increment(states as u64);
        metrics::gauge!(m::UNWRITTEN_STATES, m::VIEW => self.view.clone()).set(0.0);
    }

    /// Writes every waiting state in a transaction of its own, if it is time (`force`: in any
    /// case). Returns how many were written.
    pub(super) fn flush(&mut self, force: bool) -> Result<usize, ProjectionError> {
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
}
