//! Metric names every service records through this crate, defined once.

/// Lost NATS connections, by `connection` (the client name): every request in flight on a
/// lost connection fails or waits for the reconnect, so this should stay at zero.
pub const NATS_DISCONNECTS: &str = "cart_nats_disconnects_total";

/// gRPC calls refused because the caller's certificate names a service the RPC is not for,
/// by `rpc` and `caller` (see `crate::grpc_tls`): should stay at zero.
pub const GRPC_CALLS_DENIED: &str = "cart_grpc_calls_denied_total";
