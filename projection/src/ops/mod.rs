//! What operators see and drive, on the HTTP port and the command line.
//!
//! - [`readiness`]: the checks behind `/ready`, kept by a monitor task, and the lag gauges.
//! - [`admin`]: `POST`/`GET /admin/rebuild`, behind a bearer token.
//! - [`rebuild`]: `projection rebuild`: replay the stream into a fresh database file and swap
//!   it in, online (the service keeps serving) or offline.

pub mod admin;
pub mod readiness;
pub mod rebuild;
