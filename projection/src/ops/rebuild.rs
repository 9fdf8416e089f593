//! `projection rebuild`: replay `CART_EVENTS` from sequence 1 into a fresh database file and
//! swap it in.
//!
//! Online (the running service's admin path): the fresh file is filled from an ordered
//! consumer ([`Source`]) up to the stream's last sequence while the old file keeps serving; then the live
//! writer is paused between batches, the fresh file catches up to the live checkpoint, the
//! files are swapped (rename, read connections reopened) and the writer resumes. Nothing
//! applied live during the rebuild is lost: the fresh file is at or past the live checkpoint
//! when it takes over, and messages at or below the checkpoint are skipped.
//!
//! Offline (the CLI with no service running): build the fresh file, swap it, done.
//!
//! Messages that cannot be applied are recorded in the fresh poison table (not published to
//! `DEAD_LETTERS` again); at the swap the poison table of the old file is carried over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream;
use tokio::sync::Mutex;

use crate::consume::same_stream::{self, Verdict};
use crate::consume::stream_replay::Source;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::read::pool::Readers;
use crate::status::{ProjectionStatus, stream_info};
use crate::store::db;
use crate::write::fault_injection::Hooks;
use crate::write::writer::{OnFailure, StateSettings, Writer};

/// How often progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(2);

/// What a rebuild needs, online or offline.
#[derive(Clone)]
pub struct Rebuild {
    pub events: Stream,
    /// The live database file.
    pub path: PathBuf,
    pub view: String,
    /// Durable name, recorded as the consumer of poison rows.
    pub consumer: String,
    /// Messages per transaction: the catch-up size, as a rebuild is always behind.
    pub batch_size: usize,
    /// How the fresh database's writer keeps cart states in memory.
    pub states: StateSettings,
    /// Longest wait for the next message of the replay.
    pub read_timeout: Duration,
    pub hooks: Hooks,
}

/// The running service's parts a rebuild pauses and swaps.
#[derive(Clone)]
pub struct Live {
    pub writer: Writer,
    pub readers: Readers,
    pub gate: Arc<Mutex<()>>,
    pub shared: Arc<ProjectionStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// Messages applied to the fresh database.
    pub applied: u64,
    /// Messages that could not be applied (recorded in the poison table).
    pub failed: u64,
    /// Checkpoint of the swapped-in database.
    pub checkpoint: u64,
    pub seconds: f64,
}

impl Rebuild {
    pub fn fresh_path(&self) -> PathBuf {
        db::sibling(&self.path, ".rebuild")
    }

    /// Rebuilds while the service runs; see the module docs.
    pub async fn online(&self, live: &Live) -> Result<RebuildReport, ProjectionError> {
        if !live.shared.rebuild.begin(&self.view) {
            return Err(ProjectionError::RebuildRunning);
        }
        let result = self.online_inner(live).await;
        live.shared.set_paused(false);
        self.finish(&live.shared, &result);
        result
    }

    /// Rebuilds with no service running: build, then replace the file.
    pub async fn offline(
        &self,
        shared: &ProjectionStatus,
    ) -> Result<RebuildReport, ProjectionError> {
        if !shared.rebuild.begin(&self.view) {
            return Err(ProjectionError::RebuildRunning);
        }
        let result = async {
            let started = Instant::now();
            let (fresh, mut fill) = self.start_fill(shared).await?;
            self.close_fresh(fresh).await?;
            let path = self.path.clone();
            let fresh_path = self.fresh_path();
            let old = tokio::task::spawn_blocking(move || -> Result<_, ProjectionError> {
                if !path.exists() {
                    return Ok(None);
                }
                let conn = db::open_writer(&path)?;
                let witness = db::witness(&conn)?;
                Ok(Some((conn, witness)))
            })
            .await
            .map_err(|e| ProjectionError::Rebuild(format!("open task failed: {e}")))??;
            let (old, other_stream) = match old {
                Some((conn, witness)) => (Some(conn), self.built_from_another(witness).await),
                None => (None, false),
            };
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                crate::write::writer::replace_database(&path, &fresh_path, old, other_stream)
            })
            .await
            .map_err(|e| ProjectionError::Rebuild(format!("swap task failed: {e}")))??;
            fill.seconds = started.elapsed().as_secs_f64();
            Ok(fill)
        }
        .await;
        self.finish(shared, &result);
        result
    }

    async fn online_inner(&self, live: &Live) -> Result<RebuildReport, ProjectionError> {
        let started = Instant::now();
        let (fresh, mut report) = self.start_fill(&live.shared).await?;
        let FreshDb {
            writer,
            thread,
            mut source,
        } = fresh;

        // Pause the live writer between batches; catch up to its checkpoint.
        let _paused = live.gate.lock().await;
        live.shared.set_paused(true);
        let live_checkpoint = live.writer.checkpoint();
        let more = self
            .replay_until(&mut source, &writer, live_checkpoint, &live.shared)
            .await?;
        report.applied += more.applied;
        report.failed += more.failed;
        self.close_fresh(FreshDb {
            writer,
            thread,
            source,
        })
        .await?;

        let other_stream = self.built_from_another(live.writer.witness().await?).await;
        let (readers, live_writer, fresh_path) =
            (live.readers.clone(), live.writer.clone(), self.fresh_path());
        report.checkpoint = tokio::task::spawn_blocking(move || {
            readers.exclusive_blocking(|| live_writer.swap_blocking(fresh_path, other_stream))
        })
        .await
        .map_err(|e| ProjectionError::Rebuild(format!("swap task failed: {e}")))??;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Whether the file being replaced, whose [`db::Witness`] is `witness`, was built from
    /// another `CART_EVENTS` than the one now (see [`same_stream`]). A failed check does not
    /// throw the filled file away: it counts as the same stream (the carry-over still drops
    /// the old dead letters when the old checkpoint is past the rebuilt one).
    async fn built_from_another(&self, witness: Option<db::Witness>) -> bool {
        let verdict = async {
            let stream = stream_info(&self.events, self.read_timeout).await?.state;
            same_stream::check(&self.events, &stream, witness.as_ref(), self.read_timeout).await
        }
        .await;
        match verdict {
            Ok(v) => matches!(v, Verdict::Other(_)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check which CART_EVENTS the old file was built from; its dead letters are carried over");
                false
            }
        }
    }

    /// Creates the fresh database and fills it up to the stream's current last sequence.
    async fn start_fill(
        &self,
        shared: &ProjectionStatus,
    ) -> Result<(FreshDb, RebuildReport), ProjectionError> {
        let fresh_path = self.fresh_path();
        let (hooks, view, states) = (self.hooks.clone(), self.view.clone(), self.states);
        let (writer, thread) = tokio::task::spawn_blocking(move || {
            db::remove_files(&fresh_path)?;
            Writer::spawn_bulk(&fresh_path, hooks, &view, states)
        })
        .await
        .map_err(|e| ProjectionError::Rebuild(format!("open task failed: {e}")))??;
        let target = stream_info(&self.events, self.read_timeout)
            .await?
            .state
            .last_sequence;
        tracing::info!(view = %self.view, target, "rebuild started");
        let mut source = Source::open(&self.events, 1, self.read_timeout).await?;
        let report = self
            .replay_until(&mut source, &writer, target, shared)
            .await?;
        Ok((
            FreshDb {
                writer,
                thread,
                source,
            },
            report,
        ))
    }

    async fn close_fresh(&self, fresh: FreshDb) -> Result<(), ProjectionError> {
        fresh.writer.close().await?;
        drop(fresh.writer);
        tokio::task::spawn_blocking(move || fresh.thread.join())
            .await
            .map_err(|e| ProjectionError::Rebuild(format!("join task failed: {e}")))?
            .map_err(|_| ProjectionError::Rebuild("the rebuild writer panicked".into()))
    }

    fn finish(&self, shared: &ProjectionStatus, result: &Result<RebuildReport, ProjectionError>) {
        let (label, text) = match result {
            Ok(r) => {
                tracing::info!(view = %self.view, applied = r.applied, failed = r.failed, checkpoint = r.checkpoint, seconds = r.seconds, "rebuild finished and swapped in");
                (
                    "ok",
                    format!(
                        "ok: {} messages applied, {} failed, checkpoint {}, {:.1} s",
                        r.applied, r.failed, r.checkpoint, r.seconds
                    ),
                )
            }
            Err(e) => {
                tracing::error!(view = %self.view, error = %e, "rebuild failed; the old database keeps serving");
                let _ = db::remove_files(&self.fresh_path());
                ("error", format!("failed: {e}"))
            }
        };
        metrics::counter!(m::REBUILDS, m::VIEW => self.view.clone(), "result" => label)
            .increment(1);
        shared.rebuild.finish(&self.view, text);
    }

    /// Applies messages to `fresh` until its checkpoint reaches `goal`.
    async fn replay_until(
        &self,
        source: &mut Source,
        fresh: &Writer,
        goal: u64,
        shared: &ProjectionStatus,
    ) -> Result<RebuildReport, ProjectionError> {
        let mut report = RebuildReport {
            applied: 0,
            failed: 0,
            checkpoint: fresh.checkpoint(),
            seconds: 0.0,
        };
        let mut logged = Instant::now();
        while report.checkpoint < goal {
            let mut batch = vec![source.next().await?];
            while batch.len() < self.batch_size && batch.last().is_some_and(|i| i.sequence < goal) {
                match source.next_ready() {
                    Some(inc) => batch.push(inc?),
                    None => break,
                }
            }
            // Reading stops at the first message past the goal; keep it for the next phase.
            if let Some(past) = batch.pop_if(|i| i.sequence > goal) {
                source.put_back(past);
            }
            if batch.is_empty() {
                break;
            }
            let out = fresh
                .apply(
                    batch,
                    OnFailure::Record {
                        consumer: self.consumer.clone(),
                    },
                )
                .await?;
            report.applied += out.applied as u64;
            report.failed += (out.handled - out.applied - out.skipped) as u64;
            report.checkpoint = out.checkpoint;
            shared.rebuild.progress(&self.view, report.checkpoint, goal);
            if logged.elapsed() >= LOG_EVERY {
                logged = Instant::now();
                tracing::info!(view = %self.view, applied = report.checkpoint, target = goal, "rebuild progress");
            }
        }
        Ok(report)
    }
}

struct FreshDb {
    writer: Writer,
    thread: std::thread::JoinHandle<()>,
    source: Source,
}
