//! The `Indexes` command: drop the views' secondary indexes before a long catch-up, or
//! create the dropped ones again once caught up (see [`super::Writer::drop_indexes`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::thread::WriterThread;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::store::db;

impl WriterThread {
    /// Drops the secondary indexes (`behind`: catching up that many messages, see
    /// [`Writer::drop_indexes`](super::Writer::drop_indexes)) or creates the dropped ones again.
    pub(super) fn indexes(&mut self, behind: Option<u64>) -> Result<usize, ProjectionError> {
        let drop = behind.is_some();
        if drop == self.indexes_dropped.load(Ordering::Relaxed) {
            return Ok(0);
        }
        let conn = self.conn()?;
        if let Some(behind) = behind {
            let carts: i64 = db::query_value(conn, "SELECT COUNT(*) FROM carts", "count carts")?;
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
}
