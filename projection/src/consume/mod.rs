//! The way in: `CART_EVENTS` read into the writer, in stream order.
//!
//! - [`consumer`]: the live loop over the durable consumer: fetch → apply → acknowledge, and
//!   what happens to a message that cannot be applied (retried, then dead-lettered).
//! - [`delivery`]: one fetched message, fetching a batch of them and acknowledging them.
//! - [`order_guard`]: never apply past a message that is still outstanding; read back what the
//!   server will not redeliver.
//! - [`dead_letter_stream`]: publishing a message given up on to the `DEAD_LETTERS` stream,
//!   and reading an original message back to replay it. (The local record of it is the
//!   `poison` table, [`crate::store::poison_table`].)
//! - [`stream_replay`]: an ordered read of the stream from a sequence on, outside the durable
//!   consumer; used by [`recovery`] and by the rebuild ([`crate::ops::rebuild`]).
//! - [`recovery`]: at start-up, the cart states a crash did not write, folded again from the
//!   stream.
//! - [`same_stream`]: whether `CART_EVENTS` is still the stream the database was built from
//!   (not deleted and created again), at start-up, before re-creating a vanished durable, and
//!   in a rebuild.

pub mod consumer;
pub mod dead_letter_stream;
pub mod delivery;
pub mod order_guard;
pub mod recovery;
pub mod same_stream;
pub mod stream_replay;
