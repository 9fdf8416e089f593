//! The way in: `CART_EVENTS` read into the writer, in stream order.

pub mod consumer;
pub mod dead_letter_stream;
pub mod order_guard;
pub mod recovery;
