//! Cross-service test support and the `cart-bench` load tool.
//!
//! [`stack`] starts the platform in one process (nats-server through the harness, services on
//! free ports) for end-to-end tests and the benchmark; [`bench`] holds the benchmark modes.

pub mod bench;
pub mod chaos;
pub mod forward;
pub mod platform;
pub mod stack;
