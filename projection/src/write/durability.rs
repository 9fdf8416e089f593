//! Making commits durable off the writer thread.
//!
//! The writer's connection runs `synchronous = NORMAL`: in WAL mode a commit then writes its
//! frames to the `-wal` file without waiting for the disk. A process crash loses nothing (the
//! frames are in the OS), a power loss may roll back the last commits, and the file is never
//! corrupted either way (SQLite's own checkpoints sync the WAL before copying it into the
//! database and the database afterwards).
//!
//! Nothing may be acknowledged on the strength of such a commit alone, so a second thread
//! (the [`Syncer`]) `fdatasync`s the WAL file after commits and only then publishes them as
//! durable; the consumer acknowledges a batch once its commit is durable ([`Durability::wait`]).
//! The writer meanwhile applies the next batch instead of waiting for the disk, and commits
//! made while a sync runs share the next one. On Linux a sync covers everything written to the
//! file, through any descriptor, so syncing the path is enough.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::metrics as m;
use crate::store::db;
use crate::write::fault_injection::Hooks;

/// What is on disk.
#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    /// Commits (numbered by the writer from 1) up to this one are durable.
    commit: u64,
    /// A sync failed: nothing committed since can be trusted to be on disk.
    failed: bool,
}

/// The writer's commits and which of them are durable; shared by the writer thread, the
/// [`Syncer`] and the consumer. Commits are numbered from 1 in the order they are made.
pub struct Durability {
    synced: watch::Sender<Synced>,
    /// The checkpoint of the newest commit (what the views show).
    applied: AtomicU64,
    /// The checkpoint of the newest durable commit.
    checkpoint: AtomicU64,
    /// The newest commit made (durable or not).
    committed: AtomicU64,
}

impl Durability {
    /// Nothing committed yet; `checkpoint` is what the file holds (it is on disk).
    pub fn new(checkpoint: u64) -> Arc<Self> {
        Arc::new(Self {
            synced: watch::Sender::new(Synced::default()),
            applied: AtomicU64::new(checkpoint),
            checkpoint: AtomicU64::new(checkpoint),
            committed: AtomicU64::new(0),
        })
    }

    /// The newest commit made, durable or not.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The checkpoint of the newest commit, durable or not.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The writer made a commit at `checkpoint` (only the writer thread calls this); returns
    /// its number.
    pub(crate) fn commit(&self, checkpoint: u64) -> u64 {
        self.applied.store(checkpoint, Ordering::Release);
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Commit `commit` and every one before it are on disk; `checkpoint` is its checkpoint.
    pub(crate) fn publish(&self, commit: u64, checkpoint: u64) {
        self.checkpoint.fetch_max(checkpoint, Ordering::AcqRel);
        self.synced.send_modify(|s| s.commit = s.commit.max(commit));
    }

    /// The database file was replaced by one that is on disk as a whole, at `checkpoint`.
    pub(crate) fn replaced(&self, commit: u64, checkpoint: u64) {
        self.checkpoint.store(checkpoint, Ordering::Release);
        self.synced.send_modify(|s| s.commit = s.commit.max(commit));
    }

    /// A sync failed: waiters give up (their messages are redelivered after a restart).
    pub(crate) fn fail(&self) {
        self.synced.send_modify(|s| s.failed = true);
    }

    pub fn failed(&self) -> bool {
        self.synced.borrow().failed
    }

    /// The checkpoint of the newest durable commit.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::Acquire)
    }

    /// Waits until commit `commit` is on disk. False if it never will be (a sync failed).
    pub async fn wait(&self, commit: u64) -> bool {
        let mut rx = self.synced.subscribe();
        rx.wait_for(|s| s.failed || s.commit >= commit)
            .await
            .is_ok_and(|s| !s.failed)
    }
}

/// Syncs the WAL file of the database at `db` to disk.
pub fn sync_wal(db: &Path) -> std::io::Result<()> {
    match File::open(db::sibling(db, "-wal")) {
        Ok(wal) => wal.sync_data(),
        // No WAL file: the writer folded it into the database, with a synced checkpoint.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Commits waiting for their sync: `(commit, checkpoint)`.
type Request = (u64, u64);

/// The thread that syncs the WAL after commits. It stops when this handle is dropped.
pub struct Syncer {
    tx: std::sync::mpsc::Sender<Request>,
}

impl Syncer {
    pub fn spawn(
        db: PathBuf,
        durability: Arc<Durability>,
        view: Arc<str>,
        hooks: Hooks,
    ) -> std::io::Result<Syncer> {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name(format!("projection-sync-{view}"))
            .spawn(move || {
                while let Ok(mut newest) = rx.recv() {
                    // Every commit made so far shares this sync.
                    while let Ok(next) = rx.try_recv() {
                        newest = next;
                    }
                    let started = Instant::now();
                    if let Err(e) = hooks.before_sync().and_then(|()| sync_wal(&db)) {
                        tracing::error!(error = %e, db = %db.display(), "cannot sync the database's WAL to disk; the projection stops");
                        durability.fail();
                        return;
                    }
                    metrics::histogram!(m::SYNC_SECONDS, m::VIEW => view.clone())
                        .record(started.elapsed().as_secs_f64());
                    durability.publish(newest.0, newest.1);
                }
            })?;
        Ok(Syncer { tx })
    }

    /// Commit `commit` (at `checkpoint`) is made; sync it.
    pub fn committed(&self, commit: u64, checkpoint: u64) {
        // The thread only ends after a failed sync, which `Durability::fail` reported.
        let _ = self.tx.send((commit, checkpoint));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_is_durable_once_the_syncer_has_synced_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let conn = db::open_writer(&path).unwrap();
        let durability = Durability::new(0);
        let syncer = Syncer::spawn(
            path.clone(),
            durability.clone(),
            "t".into(),
            Hooks::default(),
        )
        .unwrap();
        db::set_checkpoint(&conn, 9).unwrap();
        assert_eq!(durability.commit(9), 1);
        syncer.committed(1, 9);
        assert!(durability.wait(1).await);
        assert_eq!(durability.checkpoint(), 9);
        assert_eq!((durability.committed(), durability.applied()), (1, 9));
        // A later commit is not durable until synced.
        let later = durability.clone();
        let waiting = tokio::spawn(async move { later.wait(2).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(durability.commit(10), 2);
        syncer.committed(2, 10);
        assert!(waiting.await.unwrap());
        assert_eq!(durability.checkpoint(), 10);
    }

    #[tokio::test]
    async fn waiters_give_up_when_a_sync_fails() {
        let durability = Durability::new(3);
        let waiter = durability.clone();
        let waiting = tokio::spawn(async move { waiter.wait(1).await });
        durability.fail();
        assert!(
            !waiting.await.unwrap(),
            "a failed sync never reports durable"
        );
        assert!(durability.failed());
        assert_eq!(durability.checkpoint(), 3);
    }

    #[test]
    fn a_database_without_a_wal_file_has_nothing_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        sync_wal(&dir.path().join("none.db")).unwrap();
    }
}
