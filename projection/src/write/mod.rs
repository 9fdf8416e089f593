//! The write side: one thread owns the SQLite write connection and turns batches of event
//! messages into view rows.
//!
//! - [`writer`]: the writer thread and its handle; one file per kind of transaction.
//! - [`changes`]: a transaction's messages applied to carts in memory, then written once.
//! - [`views`]: a cart's state → its `carts`, `cart_lines` and `orders` rows.
//! - [`state_cache`]: cart states kept in memory and written behind the views.
//! - [`durability`]: the second thread that syncs commits to disk before anything is
//!   acknowledged.
//! - [`fault_injection`]: hooks that make the writer or the sync fail on purpose (tests,
//!   drills); production runs without them.
//!
//! What a transaction writes is decided here; how the file and its tables are laid out is
//! [`crate::store`]'s.

pub mod changes;
pub mod durability;
pub mod fault_injection;
pub mod state_cache;
pub mod views;
pub mod writer;
