//! Is `CART_EVENTS` still the stream the database was built from?
//!
//! A checkpoint numbers one stream's messages. A stream deleted and created again (or replaced
//! by a restore) starts again at sequence 1, and its sequences name other messages: going on
//! would skip the new stream's messages up to the old checkpoint and fold the rest into views
//! of another history. The projection recognises its stream by content, not by the stream's
//! creation time (nats-server 2.12.3 reports a new one after a restart, a config update and
//! another restart: nats-io/nats-server#8470): the newest message the database applied to a
//! cart ([`Witness`]) must still be in the stream, at its sequence and on its cart's subject
//! ([`read_back`], from the stream's leader). Only a message on another subject (or a stream that ends
//! before the checkpoint) counts as another stream; anything that cannot be told is logged and
//! the projection goes on.
//!
//! Checked at start-up, and by a running node before it re-creates a durable consumer that
//! disappeared (a durable goes with its stream) and before it reads messages back by sequence
//! (a gap, a stall); a rebuild checks the file it replaces, so the old stream's dead letters
//! are not carried over.

use std::time::Duration;

use async_nats::jetstream::stream::{State, Stream};

use crate::consume::dead_letter_stream::read_back;
use crate::error::ProjectionError;
use crate::status::stream_info;
use crate::store::db::Witness;
use crate::write::writer::Writer;

/// What the stream says about a database's [`Witness`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The witness is there: the same stream.
    Same,
    /// The stream holds something else at the witness's sequence, or ends before it.
    Other(String),
    /// Nothing to tell by (no cart applied yet, or the stream no longer holds the message);
    /// the reason.
    Unknown(String),
}

/// Refuses a database that has applied more of `CART_EVENTS` than the stream holds now
/// (`checkpoint` past its last sequence): the stream was deleted and created again.
pub fn check_checkpoint(stream: &State, checkpoint: u64) -> Result<(), ProjectionError> {
    if checkpoint > stream.last_sequence {
        return Err(ProjectionError::Rebuild(format!(
            "the database has applied CART_EVENTS up to sequence {checkpoint}, but the stream \
             ends at {}: it was deleted and created again since; rebuild the projection",
            stream.last_sequence
        )));
    }
    Ok(())
}

/// Reads the witness's sequence back from `events` (which holds `stream`).
pub async fn check(
    events: &Stream,
    stream: &State,
    witness: Option<&Witness>,
    timeout: Duration,
) -> Result<Verdict, ProjectionError> {
    let Some(w) = witness else {
        return Ok(Verdict::Unknown("the database holds no cart yet".into()));
    };
    if w.sequence > stream.last_sequence {
        return Ok(Verdict::Other(format!(
            "the database applied message {} ({}), but CART_EVENTS ends at {}",
            w.sequence, w.subject, stream.last_sequence
        )));
    }
    if w.sequence < stream.first_sequence {
        return Ok(Verdict::Unknown(format!(
            "CART_EVENTS no longer holds message {} (it starts at {})",
            w.sequence, stream.first_sequence
        )));
    }
    match read_back(events, w.sequence, timeout).await? {
        Some(m) if m.subject == w.subject => Ok(Verdict::Same),
        Some(m) => Ok(Verdict::Other(format!(
            "message {} of CART_EVENTS is on {}, but the database applied it as {}",
            w.sequence, m.subject, w.subject
        ))),
        // A stream created again has no gaps, and CART_EVENTS refuses deletes: a message
        // missing inside its range tells nothing about which stream this is.
        None => Ok(Verdict::Unknown(format!(
            "the stream has no message {}",
            w.sequence
        ))),
    }
}

/// The error that stops the projection when `verdict` is another stream.
fn refuse(verdict: Verdict) -> Result<(), ProjectionError> {
    match verdict {
        Verdict::Other(why) => Err(ProjectionError::Rebuild(format!(
            "{why}: CART_EVENTS was deleted and created again (or replaced) since the database \
             was built; rebuild the projection"
        ))),
        Verdict::Unknown(why) => {
            tracing::warn!(%why, "cannot tell whether CART_EVENTS is the stream the database was built from; going on");
            Ok(())
        }
        Verdict::Same => Ok(()),
    }
}

/// At start-up: refuses a database built from another `CART_EVENTS` than `events` (which holds
/// `stream`).
pub async fn refuse_another(
    events: &Stream,
    stream: &State,
    writer: &Writer,
    timeout: Duration,
) -> Result<(), ProjectionError> {
    refuse(verdict_for(events, stream, writer, timeout).await?)
}

/// The verdict on the database `writer` keeps: its checkpoint, then its [`Witness`].
async fn verdict_for(
    events: &Stream,
    stream: &State,
    writer: &Writer,
    timeout: Duration,
) -> Result<Verdict, ProjectionError> {
    check_checkpoint(stream, writer.checkpoint())?;
    let witness = writer.witness().await?;
    check(events, stream, witness.as_ref(), timeout).await
}

/// Whether a running node may re-create its durable consumer on `CART_EVENTS` as it is now:
/// false while that cannot be told (no stream, no answer: the next attempt looks again), the
/// [`ProjectionError::Rebuild`] that stops the node when the stream is another one.
pub async fn still_ours(
    events: &Stream,
    writer: &Writer,
    timeout: Duration,
) -> Result<bool, ProjectionError> {
    let verdict = async {
        let stream = stream_info(events, timeout).await?.state;
        verdict_for(events, &stream, writer, timeout).await
    }
    .await;
    match verdict {
        Ok(v) => refuse(v).map(|()| true),
        Err(e @ ProjectionError::Rebuild(_)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check CART_EVENTS before re-creating the durable consumer");
            Ok(false)
        }
    }
}
