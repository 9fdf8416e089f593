//! What operators see and drive: the admin path and rebuilding.

pub mod admin;
pub mod rebuild;
