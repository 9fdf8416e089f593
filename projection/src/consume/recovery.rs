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
//! If the stream no longer holds the messages, the projection cannot start: rebuild it. (A
//! stream that is not the one the database was built from is refused before, by
//! [`crate::consume::same_stream`].)

use std::time::Duration;

use async_nats::jetstream::stream::{State, Stream};

use crate::consume::stream_replay::Source;
use crate::error::ProjectionError;
use crate::write::writer::Writer;

/// Messages folded per writer command.
const BATCH: usize = 4096;

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
