//! The way out: the views served over gRPC (`projection.v1.QueryService`).
//!
//! - [`grpc`]: the service: checks the request (tenant first), makes one call into the queries
//!   or the writer, maps the rows.
//! - [`queries`]: the read-side SQL, every query filtered by tenant.
//! - [`page`]: keyset pagination and its opaque page tokens.
//! - [`pool`]: the read connections, apart from the writer's, reopened when a rebuild swaps
//!   the file.

pub mod grpc;
pub mod page;
pub mod pool;
pub mod queries;
