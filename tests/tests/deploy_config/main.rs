//! The deployment files checked against the code, since no container engine runs them in CI:
//! docker-compose.yml, deploy/k8s (kustomize), deploy/prometheus, deploy/grafana, deploy/nats,
//! the Dockerfile.
//!
//! - Every environment variable a service gets names a real setting of its `Config`
//!   (`shared::config::unknown_env_keys`), the whole environment loads the way the binary loads
//!   it, and the loaded config passes the service's own `check()`.
//! - Settings that must agree across services do (shard count, stream settings, replicas 3 in
//!   Kubernetes); drain grace periods cover the drain timeouts in the configs.
//! - Probes, ports, selectors and references point at things that exist.
//! - Every metric name in the alerts and dashboards is a constant in some `*/src/metrics.rs`,
//!   used in the shape the exporter really renders (summaries with `quantile`, or buckets).
//! - NATS keeps `sync_interval: always` everywhere; a cluster member has one source,
//!   deploy/nats/member.conf and routes.conf, which cluster.conf (`scripts/dev --cluster`, in
//!   plaintext) and cluster-tls.conf (the Kubernetes ConfigMap: TLS for clients and routes)
//!   both include, each setting the per-member variables it reads.
//! - Every service logs in to NATS as its own user of deploy/nats/accounts.conf with a password
//!   file only it gets, the NATS server gets every password accounts.conf reads, NATS and gRPC
//!   run with mutual TLS (the server verifies clients), and every secret and certificate is
//!   mounted read-only where the settings say.
//!
//! Every check also has a test that breaks its input on purpose (`a_..._is_rejected`), next to
//! the check, so a check that accepts everything cannot pass unnoticed.
//!
//! Where:
//! - `common`: reading the files (YAML with merge keys, JSON) and the accessors for them.
//! - `services`: a service's config loaded from an environment as its binary loads it.
//! - `containers`: a container of either deployment (command, environment, mounted files) and
//!   the checks compose and Kubernetes share: loading, NATS logins, client and server TLS.
//! - `nats`: deploy/nats, and reading a NATS config as the server does.
//! - `cluster_tls`: deploy/nats/cluster-tls.conf run as three real members (TLS routes).
//! - `compose::{stack, security}`: docker-compose.yml.
//! - `k8s::{workloads, nats, network, security}`: deploy/k8s.
//! - `monitoring`, `monitoring::promql`, `monitoring::rules`: deploy/prometheus and
//!   deploy/grafana; every alert scoped to the platform's jobs with a runbook section.
//! - `k8s::nats_box`: the operators' on-demand `nats` CLI pod.
//! - `nats_cli`: the `nats` commands of the README and the docs, against the code's names.
//! - `image`: the Dockerfile.
//! - `toolchain`: the workspace's `rust-version` against the locked dependencies and the image.

mod cluster_start;
mod cluster_tls;
mod common;
mod compose;
mod containers;
mod image;
mod k8s;
mod members;
mod monitoring;
mod nats;
mod nats_cli;
mod services;
mod toolchain;
