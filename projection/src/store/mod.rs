//! The SQLite file itself: connections and migrations, the `poison` table, the state format.

pub mod db;
pub mod poison_table;
pub mod state_format;
