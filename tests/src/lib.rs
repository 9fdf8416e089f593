//! Cross-service test support.
//!
//! [`stack`] starts the platform in one process (nats-server through the harness, services on
//! free ports) for end-to-end tests and the benchmark (`bench/`, the `cart-bench` crate); [`chaos`] is the
//! fault-injection harness; [`processes`] runs the service binaries as child processes, and
//! [`otlp_collector`] receives their spans; [`requests`] holds the HTTP helpers and
//! assertions every suite uses.

pub mod chaos;
pub mod forward;
pub mod otlp_collector;
pub mod platform;
pub mod processes;
pub mod requests;
pub mod stack;

/// The workspace root (where the top-level README, docker-compose.yml and deploy/ are).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}
