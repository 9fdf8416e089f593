//! The gateway against real services: an in-process aggregate (and projection and runner
//! where a test needs them) on a spawned `nats-server`, driven through the gateway's router
//! or its HTTP port. One test binary: each file below was a binary of its own.

mod common;
mod read_side;

mod bad_input;
mod dead_letters;
mod dead_letters_per_projection;
mod edge;
mod history;
mod openapi;
mod queries;
mod runner_admin;
mod runner_failover;
mod security;
mod storefront;
mod v1;
