//! Cross-service test support.
//!
//! [`stack`] starts the platform in one process (nats-server through the harness, services on
//! free ports) for end-to-end tests and the benchmark (`bench/`, the `cart-bench` crate); [`chaos`] is the
//! fault-injection harness.

pub mod chaos;
pub mod forward;
pub mod platform;
pub mod stack;
