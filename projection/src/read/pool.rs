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
            let result = f(&conn);
            inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
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
