//! The cart platform's single source of truth.
//!
//! Everything two services must agree on lives here exactly once: header names, NATS subjects
//! and resource policies, how error codes travel, configuration and telemetry. The pure cart
//! (commands, events, state, ids, the catalog model, the error codes) is the `cart_domain`
//! crate, which this one builds on. A string literal such as `"cart.events."` or `"tenant-id"`
//! outside this crate is a bug.

pub mod certs;
pub mod config;
pub mod error;
pub mod grpc_tls;
pub mod headers;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod placement;
pub mod process;
pub mod propagation;
pub mod provider_order;
pub mod secret;
pub mod serve;
pub mod shutdown;
pub mod spans;
pub mod subjects;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tls;
pub mod trace_log;
pub mod workflow;

pub use cart_domain::ids::{CartId, CommandId, CorrelationId, IdError, SpanId, TenantId, TraceId};
pub use error::{ApiError, ErrorCode};
pub use headers::RequestContext;
