//! Start-up after a stop that did not write every cart state.
//!
//! Cart states are written behind the views ([`crate::write::state_cache`]): a transaction commits
//! the view rows and the checkpoint, while the states it changed wait in the writer's memory until
//! the next flush. A crash loses them; the views and the checkpoint are whole. The database records
//! the checkpoint of the last flush (`states_sequence`), and every stored state holds its cart's
//! messages up to it, so the lost states are the stored ones plus the messages after it: before the
//! consumer starts, this module reads those messages back from `CART_EVENTS` ([`Source`], an
//! ordered consumer), the writer folds them into the states in memory without writing any view,
//! checks each recovered state against its view row (version, message count, update time) and
//! writes them all.
//!
//! Messages given up on (in the poison table, not replayed) were never applied and are skipped.
//! If the stream no longer holds the messages, or is not the stream the database was built from
//! (it was deleted and created again: its creation time differs, or it ends before the
//! checkpoint), the projection cannot start: rebuild it.

use std::time::Duration;

use async_nats::jetstream::stream::{Info, State, Stream};
use time::format_description::well_known::Rfc3339;

use crate::consume::stream_replay::Source;
use crate::error::ProjectionError;
use crate::status::stream_info;
use crate::write::writer::Writer;

/// Messages folded per writer command.
const BATCH: usize = 4096;

/// Refuses a database that has applied more of `CART_EVENTS` than the stream holds now
/// (`checkpoint` past its last sequence): the stream was deleted and created again (or
/// replaced), so its sequences are not the ones the views were built from. Going on would skip
/// the new stream's messages up to the old checkpoint and fold the rest into views of another
/// history.
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

/// The identity of the stream `info` describes, as the database records it: its creation time
/// (RFC 3339, to the nanosecond). A stream deleted and created again under the same name gets
/// a new one; a server restart or a leader change keeps it.
pub fn stream_created(info: &Info) -> String {
    info.created
        .format(&Rfc3339)
        .unwrap_or_else(|_| info.created.unix_timestamp_nanos().to_string())
}

/// Refuses to go on with a database built from another `CART_EVENTS` than the one `info`
/// describes (binding a database that names none yet).
pub async fn bind_stream(writer: &Writer, info: &Info) -> Result<(), ProjectionError> {
    writer.bind_stream(stream_created(info)).await
}

/// Whether a durable consumer may be re-created on `CART_EVENTS` as it is now (a durable
/// disappears with its stream): false while there is no stream to create it on, the
/// [`ProjectionError::Rebuild`] that stops the projection when the stream was created again
/// since the database was built.
pub async fn still_ours(
    events: &Stream,
    writer: &Writer,
    timeout: Duration,
) -> Result<bool, ProjectionError> {
    let info = match stream_info(events, timeout).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "no CART_EVENTS to re-create the durable consumer on");
            return Ok(false);
        }
    };
    match bind_stream(writer, &info).await {
        Err(e @ ProjectionError::Rebuild(_)) => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check which CART_EVENTS this is");
            Ok(true)
        }
        Ok(()) => Ok(true),
    }
}

/// Recovers the states `writer` did not write before it last stopped, if any. `stream` is
/// what `CART_EVENTS` holds now.
pub async fn recover(
    events: &Stream,
    stream: &State,
    writer: &Writer,
    timeout: Duration,
) -> Result<(), ProjectionError> {
    let Some(range) = writer.states_behind() else {
        return Ok(());
    };
    let (from, to) = range.into_inner();
    let (first, last) = (stream.first_sequence, stream.last_sequence);
    if first > from || last < to {
        return Err(ProjectionError::Rebuild(format!(
            "the cart states need the messages {from}..={to} folded again, but CART_EVENTS \
             holds only {first}..={last}; rebuild the projection"
        )));
    }
    tracing::info!(
        from,
        to,
        "recovering cart states not written before the last stop"
    );
    let mut source = Source::open(events, from, timeout).await?;
    let mut messages = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let inc = source.next().await?;
        let sequence = inc.sequence;
        if sequence <= to {
            batch.push(inc);
        }
        if batch.len() >= BATCH || sequence >= to {
            messages += writer.recover(std::mem::take(&mut batch)).await?;
        }
        if sequence >= to {
            break;
        }
    }
    let carts = writer.finish_recovery().await?;
    tracing::info!(from, to, messages, carts, "cart states recovered");
    Ok(())
}
