//! Aggregate configuration. Every field has a default that runs locally; environment variables
//! override them (`AGGREGATE_<FIELD>` for the fields below, `NATS_<FIELD>` for the connection,
//! `STREAMS_<FIELD>` for stream/bucket sizing shared by all services), and an optional TOML
//! file named by `CART_CONFIG_FILE` sits in between.

use std::time::Duration;

use cart_domain::{CartState, Limits, Retain};
use serde::{Deserialize, Serialize};
use shared::config::ServiceConfig;
use shared::nats::{NatsConfig, NatsResourceSettings};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unique per node (`CART_NODES` key). Default: `aggregate-<host>-<pid>`.
    pub node_id: String,
    /// gRPC listen address (CartService, AggregateAdmin).
    pub grpc_addr: String,
    /// Address other services dial; defaults to the bound gRPC address.
    pub advertise_addr: Option<String>,
    /// HTTP listen address of `/health`, `/ready`, `/metrics`.
    pub http_addr: String,
    /// Shards carts hash into; must be equal on every node and gateway.
    pub shard_count: u32,
    /// Join placement (register, claim shards, refuse carts owned elsewhere). Off: this node
    /// serves every cart (single-node setups; tests of the append fence).
    pub placement: bool,
    pub heartbeat_ms: u64,
    /// The cart cache's capacity, in weight units: a cart weighs 1 (about 1 KiB) plus 1 per 8
    /// of its lines and kept keyed commands.
    pub cache_capacity: u64,
    /// A cached cart unused this long is dropped.
    pub cache_idle_secs: u64,
    /// Snapshot a cart every this many messages (0: never).
    pub snapshot_every: u64,
    /// Command ids remembered per cart for exactly-once replies beyond the duplicate window.
    pub recent_commands: usize,
    /// How long a cart keeps a command sent with an `Idempotency-Key` (its request fingerprint
    /// and outcome), however many commands follow: a retry within it returns the original
    /// outcome from any gateway, and the same key with another request is refused.
    pub idempotency_retention_secs: u64,
    /// Conflicts (another writer appended first) tolerated per command, each followed by a
    /// jittered back-off of up to 16 ms and a catch-up read.
    pub max_conflict_retries: u32,
    pub append_timeout_retries: u32,
    /// Most commands in one ExecuteBatch.
    pub max_batch: usize,
    pub catalog_cache_capacity: u64,
    pub catalog_cache_ttl_secs: u64,
    /// Drain: longest wait for other nodes to take this node's shards.
    pub drain_handoff_secs: u64,
    /// Drain: longest wait for in-flight commands.
    pub drain_in_flight_secs: u64,
    pub limits: Limits,
    pub nats: NatsConfig,
    pub streams: NatsResourceSettings,
    /// Mutual TLS of its gRPC server and calls (`GRPC_TLS_*`; empty: plaintext).
    pub grpc_tls: shared::grpc_tls::GrpcTls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            grpc_addr: "127.0.0.1:50051".into(),
            advertise_addr: None,
            http_addr: "127.0.0.1:9101".into(),
            shard_count: 256,
            placement: true,
            heartbeat_ms: 2_000,
            cache_capacity: 100_000,
            cache_idle_secs: 900,
            snapshot_every: 50,
            recent_commands: CartState::DEFAULT_RECENT,
            idempotency_retention_secs: Retain::DEFAULT.keyed_secs as u64,
            max_conflict_retries: 32,
            append_timeout_retries: 2,
            max_batch: 50,
            catalog_cache_capacity: 50_000,
            catalog_cache_ttl_secs: 300,
            drain_handoff_secs: 20,
            drain_in_flight_secs: 10,
            limits: Limits::default(),
            nats: NatsConfig::named(Self::SERVICE),
            streams: NatsResourceSettings::default(),
            grpc_tls: Default::default(),
        }
    }
}

impl Config {
    /// What each cart keeps to answer retries.
    pub fn retain(&self) -> Retain {
        Retain {
            recent: self.recent_commands,
            keyed_secs: self.idempotency_retention_secs as i64,
        }
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(50))
    }

    /// Problems that make the node unable to run, each naming the field.
    pub fn check(&self) -> Result<(), String> {
        self.grpc_tls.check()?;
        if self.shard_count == 0 {
            return Err("shard_count must be at least 1".into());
        }
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        if !(60..=i64::MAX as u64).contains(&self.idempotency_retention_secs) {
            return Err("idempotency_retention_secs must be at least 60".into());
        }
        // A key forgotten while the stream still knows its message id would answer a retry
        // with "this id was used for another request" (the store says duplicate, the cart
        // no longer knows the key), and a client would send the change again under a new key.
        if self.idempotency_retention_secs < self.streams.duplicate_window_secs {
            return Err(format!(
                "idempotency_retention_secs ({}) must be at least the streams' duplicate window \
                 (STREAMS_DUPLICATE_WINDOW_SECS, {} s)",
                self.idempotency_retention_secs, self.streams.duplicate_window_secs
            ));
        }
        let ttl = Duration::from_secs(self.streams.node_ttl_secs);
        if self.placement && self.heartbeat() * 2 >= ttl {
            return Err(format!(
                "heartbeat_ms ({}) must be below half the node TTL ({} s); a third or less is recommended",
                self.heartbeat_ms, self.streams.node_ttl_secs
            ));
        }
        Ok(())
    }
}

fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| cart_domain::ids::is_token(h))
        .unwrap_or_else(|| "local".into());
    format!("aggregate-{host}-{}", std::process::id())
}

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = shared::config::AGGREGATE_ENV_PREFIX;
    const SERVICE: &'static str = "aggregate";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_kept_at_least_as_long_as_the_stream_knows_their_ids() {
        let mut cfg = Config {
            idempotency_retention_secs: 60,
            ..Config::default()
        };
        cfg.streams.duplicate_window_secs = 120;
        let err = cfg.check().unwrap_err();
        assert!(err.contains("duplicate window"), "{err}");
        cfg.idempotency_retention_secs = 120;
        assert_eq!(cfg.check(), Ok(()));
    }
}
