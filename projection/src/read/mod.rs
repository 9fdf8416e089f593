//! The way out: the views served over gRPC (`projection.v1.QueryService`).

pub mod grpc;
pub mod page;
pub mod pool;
pub mod queries;
