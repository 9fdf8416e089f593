//! Fault injection for tests and drills ([`Hooks`], re-exported as `projection::Hooks`): make
//! applying a message fail, make the writer "crash" around a commit, or hold back or fail the
//! sync of commits to disk. The writer, the changes and the sync thread call them at those
//! points. Production passes [`Hooks::default`] (no hooks, no cost).

use std::fmt;
use std::sync::Arc;

use cart_domain::EventMessage;

/// What the writer does at the end of a live batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAction {
    Commit,
    /// Roll back and stop the writer, like a process killed before the commit.
    CrashBeforeCommit,
    /// Commit, then stop the writer without reporting back, like a process killed between the
    /// commit and the acks (the batch is redelivered and must be skipped).
    CrashAfterCommit,
    /// Roll back and report a database error, like a commit that fails (I/O error, disk
    /// full): the writer keeps running and the batch is retried.
    FailCommit,
}

/// Returns `Some(reason)` to make applying the message at that stream sequence fail.
pub type FailApply = dyn Fn(&EventMessage, u64) -> Option<String> + Send + Sync;
/// Called with the last sequence of a live batch before it is committed.
pub type BeforeCommit = dyn Fn(u64) -> CommitAction + Send + Sync;
/// Called by the sync thread before it syncs the WAL (it may block, to hold commits back
/// from the disk); an error stands for a failed sync.
pub type BeforeSync = dyn Fn() -> std::io::Result<()> + Send + Sync;

#[derive(Clone, Default)]
pub struct Hooks {
    pub fail_apply: Option<Arc<FailApply>>,
    pub before_commit: Option<Arc<BeforeCommit>>,
    pub before_sync: Option<Arc<BeforeSync>>,
}

impl Hooks {
    pub(crate) fn apply_failure(&self, msg: &EventMessage, sequence: u64) -> Option<String> {
        self.fail_apply.as_ref().and_then(|f| f(msg, sequence))
    }

    pub(crate) fn commit_action(&self, last_sequence: u64) -> CommitAction {
        self.before_commit
            .as_ref()
            .map_or(CommitAction::Commit, |f| f(last_sequence))
    }

    pub(crate) fn before_sync(&self) -> std::io::Result<()> {
        self.before_sync.as_ref().map_or(Ok(()), |f| f())
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("fail_apply", &self.fail_apply.is_some())
            .field("before_commit", &self.before_commit.is_some())
            .field("before_sync", &self.before_sync.is_some())
            .finish()
    }
}
