//! The runner against real services: an in-process aggregate on a spawned `nats-server`, the
//! mock payment provider in its real HTTP shape.

mod common;

mod checkout;
mod lease;
