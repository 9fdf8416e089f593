//! Handing the database file over: `Swap` moves a rebuilt file over the live one and reopens
//! it; `Close` writes what is waiting, folds the WAL and stops the thread, so the file can be
//! moved (a rebuild closes its fresh file this way). [`replace_database`] is the move itself,
//! shared with the offline rebuild.

use std::path::Path;

use rusqlite::Connection;

use super::thread::WriterThread;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::store::{db, poison_table};

impl WriterThread {
    /// Writes what is waiting, creates the dropped indexes again and folds the WAL into the
    /// file with a full sync; the connection is closed (see [`super::Writer::close`]).
    pub(super) fn close(&mut self) -> Result<(), ProjectionError> {
        self.flush(true)
            .and_then(|_| self.indexes(None))
            .and_then(|_| {
                self.conn.take().map_or(Ok(()), |c| {
                    c.execute_batch("PRAGMA synchronous = FULL;")
                        .map_err(ProjectionError::db("pragmas"))?;
                    db::fold_wal(&c)
                })
            })
    }

    /// Moves `fresh` over the live file. The caller guarantees no reader holds a connection.
    pub(super) fn swap(
        &mut self,
        fresh: &Path,
        other_stream: bool,
    ) -> Result<u64, ProjectionError> {
        // The old file gets every waiting state first: if the swap fails, it is still whole.
        self.flush(true)?;
        let old = self.conn.take();
        // Whatever the outcome, the cached states may no longer be the file's.
        self.cache.clear();
        let replaced = replace_database(&self.path, fresh, old, other_stream);
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

/// Moves `fresh` over `path`: the fresh file inherits the poison table of `path` (unless
/// `other_stream`: the two were built from different `CART_EVENTS`, see
/// [`poison_table::carry_over`]), the old file's WAL is folded in (`old` must be the only
/// connection to it) and the fresh file is renamed over it. Callers reopen `path` afterwards.
pub(crate) fn replace_database(
    path: &Path,
    fresh: &Path,
    old: Option<Connection>,
    other_stream: bool,
) -> Result<(), ProjectionError> {
    if path.exists() {
        let conn = Connection::open(fresh).map_err(ProjectionError::db("open fresh database"))?;
        conn.execute(
            "ATTACH DATABASE ?1 AS old",
            [path.to_string_lossy().as_ref()],
        )
        .map_err(ProjectionError::db("attach live database"))?;
        poison_table::carry_over(&conn, other_stream)?;
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
