//! The write side: the one SQLite writer thread and what its transactions write.

pub mod changes;
pub mod durability;
pub mod fault_injection;
pub mod state_cache;
pub mod views;
pub mod writer;
