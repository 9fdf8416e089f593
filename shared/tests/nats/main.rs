//! Integration tests against a real nats-server (spawned per test by the harness in
//! `shared::test_support`). One test binary, several modules, to keep link time down.

mod connect;
mod consumers;
mod deploy_config;
mod direct_get;
mod harness;
mod permissions;
mod resources;
mod stats;
mod tls;
