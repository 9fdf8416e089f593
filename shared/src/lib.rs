//! The cart platform's single source of truth.
//!
//! Everything two services must agree on lives here exactly once: identifiers, header names,
//! NATS subjects and resource policies, the error-code table, configuration, telemetry and the
//! pure cart domain ([`domain`]). A string literal such as `"cart.events."` or `"tenant-id"`
//! outside this crate is a bug.

pub mod catalog;
pub mod certs;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc_tls;
pub mod headers;
pub mod ids;
pub mod metrics;
pub mod nats;
pub mod ops;
pub mod placement;
pub mod provider_order;
pub mod serve;
pub mod shutdown;
pub mod spans;
pub mod subjects;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod tls;
pub mod trace;
pub mod workflow;

pub use error::{ApiError, ErrorCode};
pub use headers::RequestContext;
pub use ids::{CartId, CommandId, CorrelationId, IdError, SpanId, TenantId, TraceId};
pub use trace::Traceparent;
