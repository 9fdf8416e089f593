//! The pool of read connections for queries ([`Readers`]): bounded, used on blocking threads,
//! separate from the writer's connection (WAL lets them read while the writer commits). A rebuild's
//! swap takes the pool's lock exclusively, closes every connection and reopens them on the new
//! file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::error::ProjectionError;
use crate::store::db;

#[derive(Clone)]
pub struct Readers {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Shared by queries, exclusive for a swap.
    swap: RwLock<()>,
    idle: Mutex<Vec<Connection>>,
    /// Bounds concurrent queries (and so open connections).
    permits: Semaphore,
}

impl Readers {
    pub fn new(path: &Path, size: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                swap: RwLock::new(()),
                idle: Mutex::new(Vec::with_capacity(size)),
                permits: Semaphore::new(size.max(1)),
            }),
        }
    }

    /// Runs `f` with a read connection on a blocking thread.
    pub async fn with<T, F>(&self, f: F) -> Result<T, ProjectionError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ProjectionError> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| ProjectionError::WriterStopped)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _shared = inner.swap.read().unwrap_or_else(|p| p.into_inner());
            let conn = match inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                Some(c) => c,
                None => db::open_reader(&inner.path)?,
            };
            // One read transaction per query: a cart's row and its lines (several
            // statements) are read from the same commit of the writer, never half of one.
            conn.execute_batch("BEGIN")
                .map_err(ProjectionError::db("begin a read"))?;
            let result = f(&conn);
            // A connection that cannot end its read is not used again.
            if conn.execute_batch("COMMIT").is_ok() {
                inner
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
            }
            result
        })
        .await
        .map_err(|e| ProjectionError::Rebuild(format!("query task failed: {e}")))?
    }

    /// Runs `f` (blocking) while no query runs and no read connection is open, then lets
    /// queries reopen connections on whatever file is at the path afterwards.
    pub fn exclusive_blocking<T>(&self, f: impl FnOnce() -> T) -> T {
        let _exclusive = self.inner.swap.write().unwrap_or_else(|p| p.into_inner());
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query of several statements reads one commit: a change the writer commits between
    /// them is not seen half-way (a cart's row from before it, its lines from after).
    #[tokio::test]
    async fn a_query_reads_one_commit_of_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("views.db");
        let writer = db::open_writer(&path).unwrap();
        writer.execute_batch("CREATE TABLE t (n INTEGER)").unwrap();
        let readers = Readers::new(&path, 1);
        let (before, after) = readers
            .with(move |c| {
                let count = |c: &Connection| -> i64 {
                    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                        .unwrap()
                };
                let before = count(c);
                writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
                Ok((before, count(c)))
            })
            .await
            .unwrap();
        assert_eq!(
            (before, after),
            (0, 0),
            "the second statement saw a later commit"
        );
        let now = readers
            .with(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                        .unwrap(),
                )
            })
            .await;
        assert_eq!(now.unwrap(), 1, "the next query sees it");
    }
}
