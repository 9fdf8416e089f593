//! Metric names every service records through this crate, defined once.

/// Lost NATS connections, by `connection` (the client name): every request in flight on a
/// lost connection fails or waits for the reconnect, so this should stay at zero.
pub const NATS_DISCONNECTS: &str = "cart_nats_disconnects_total";
