//! The SQLite file itself, below any decision about when to write: opening it and migrating
//! its schema ([`db`]), the `poison` table of messages given up on ([`poison_table`]) and the
//! byte format of a stored cart state ([`state_format`]).
//!
//! Everything here is plain functions over a `rusqlite::Connection`; the writer
//! ([`crate::write`]) and the queries ([`crate::read`]) decide what to call and when.

pub mod db;
pub mod poison_table;
pub mod state_format;
