//! Settings for the NATS connection, the JetStream resources and durable consumers.
//!
//! Every field has a default that runs against a local single-node server, so a service starts
//! with no configuration at all; production overrides a few (`replicas`, limits) through
//! [`crate::config::load`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// How to reach NATS. Embedded as `nats` in service configs (env `NATS_URL`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsConfig {
    /// Comma-separated server URLs (`nats://a:4222,nats://b:4222`); the client discovers the
    /// rest of a cluster itself.
    pub url: String,
    /// Connection name shown by `nats server report connections`; set it to the service name.
    pub name: String,
    /// Deadline for establishing the first connection.
    pub connect_timeout_ms: u64,
    /// Deadline for every request and JetStream API call (publish acks included).
    pub request_timeout_ms: u64,
    /// Path of a `.creds` file (JWT + NKey seed, decentralised auth). Empty: none.
    pub creds_file: String,
    /// Token authentication. Empty: none.
    pub token: Secret,
    /// User/password authentication (both set, or neither). With a user set, reply inboxes
    /// are `_INBOX_<user>.>` (the only subjects deploy/nats/accounts.conf lets it subscribe to).
    pub user: String,
    pub password: Secret,
    /// A file holding the password (a mounted Secret); read at connect, surrounding whitespace
    /// removed. Set this or `password`, not both.
    pub password_file: String,
    /// Require TLS even when the URL is `nats://`.
    pub tls_required: bool,
    /// PEM file of the CA that signed the servers' certificates. Empty: system roots.
    pub tls_ca_file: String,
    /// Client certificate and key (PEM) for mutual TLS. Empty: none.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            name: "cart".into(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            creds_file: String::new(),
            token: Secret::default(),
            user: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            tls_required: false,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl NatsConfig {
    /// The defaults, with the connection named after `service` (what `nats server report
    /// connections` shows).
    pub fn named(service: &str) -> Self {
        Self {
            name: service.into(),
            ..Self::default()
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    /// The server list, split and trimmed.
    pub fn urls(&self) -> Vec<String> {
        crate::config::split_list(&self.url)
            .map(str::to_owned)
            .collect()
    }
}

/// Sizing and retention of the streams and KV buckets. The same values must be used by every
/// service: they are checked against what exists, and a service whose settings ask for more
/// than the server has refuses to start (see [`super::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsResourceSettings {
    /// Replicas of every stream and bucket: 1 for a single server, 3 in production.
    pub replicas: usize,
    /// JetStream de-duplication window (`Nats-Msg-Id`): how long a retried publish is
    /// recognised as a duplicate. Retries after it rely on the command ids kept in the cart.
    pub duplicate_window_secs: u64,
    /// `CART_NODES` TTL: a node whose entry is not refreshed within it counts as dead.
    pub node_ttl_secs: u64,
    /// Size cap of `CART_EVENTS` in bytes (-1 = unlimited). With `discard: new`, a full stream
    /// rejects writes instead of dropping history.
    pub cart_events_max_bytes: i64,
    /// Age limit of `WORKFLOW_COMMANDS` / `WORKFLOW_EVENTS` in seconds (0 = keep forever).
    /// Must exceed the longest time a checkout can be retried.
    pub workflow_max_age_secs: u64,
    /// Age limit of `DEAD_LETTERS` in seconds (0 = keep until purged by an operator).
    pub dead_letters_max_age_secs: u64,
    /// History kept per `CART_PLACEMENT` key (for inspecting ownership changes).
    pub placement_history: i64,
    /// History kept per `CATALOG` key (1..=5).
    pub catalog_history: i64,
}

impl Default for NatsResourceSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window_secs: 120,
            node_ttl_secs: 6,
            cart_events_max_bytes: -1,
            workflow_max_age_secs: 0,
            dead_letters_max_age_secs: 0,
            placement_history: 5,
            catalog_history: 1,
        }
    }
}

impl NatsResourceSettings {
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_secs)
    }

    pub fn node_ttl(&self) -> Duration {
        Duration::from_secs(self.node_ttl_secs)
    }

    /// Rejects settings the server would refuse or that break an invariant, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=5).contains(&self.replicas) {
            return Err(format!("replicas must be 1..=5, got {}", self.replicas));
        }
        if self.duplicate_window_secs == 0 {
            return Err("duplicate_window_secs must be at least 1".into());
        }
        if self.node_ttl_secs == 0 {
            return Err("node_ttl_secs must be at least 1".into());
        }
        for (key, age) in [
            ("workflow_max_age_secs", self.workflow_max_age_secs),
            ("dead_letters_max_age_secs", self.dead_letters_max_age_secs),
        ] {
            if age != 0 && age < self.duplicate_window_secs {
                return Err(format!(
                    "{key} ({age}) must be 0 or at least duplicate_window_secs ({})",
                    self.duplicate_window_secs
                ));
            }
        }
        if !(1..=64).contains(&self.placement_history) {
            return Err(format!(
                "placement_history must be 1..=64, got {}",
                self.placement_history
            ));
        }
        if !(1..=5).contains(&self.catalog_history) {
            return Err(format!(
                "catalog_history must be 1..=5, got {}",
                self.catalog_history
            ));
        }
        Ok(())
    }
}

/// Delivery settings of one durable pull consumer. `max_ack_pending` bounds the messages in
/// flight, so tie it to the worker concurrency (a few times the number of workers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerSettings {
    /// How long the server waits for an ack before redelivering.
    pub ack_wait_ms: u64,
    /// Deliveries before a message is given up on (then dead-lettered by the service).
    pub max_deliver: i64,
    /// Unacknowledged messages allowed in flight. Not a setting: each service derives it from
    /// its own concurrency (runner lanes, projection batch size).
    #[serde(skip)]
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            ack_wait_ms: 30_000,
            max_deliver: 5,
            max_ack_pending: 256,
        }
    }
}

impl ConsumerSettings {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::config_check::{BadField, assert_names_bad_field};

    #[test]
    fn defaults_run_locally() {
        let c = NatsConfig::default();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.urls(), ["nats://127.0.0.1:4222"]);
        let r = NatsResourceSettings::default();
        assert_eq!(r.replicas, 1);
        assert_eq!(r.duplicate_window(), Duration::from_secs(120));
        assert_eq!(r.node_ttl(), Duration::from_secs(6));
        r.check().unwrap();
    }

    #[test]
    fn urls_split_on_commas() {
        let c = NatsConfig {
            url: " nats://a:4222, nats://b:4222 ,".into(),
            ..Default::default()
        };
        assert_eq!(c.urls(), ["nats://a:4222", "nats://b:4222"]);
    }

    #[test]
    fn partial_json_fills_defaults() {
        let c: ConsumerSettings = serde_json::from_str(r#"{"max_deliver": 9}"#).unwrap();
        assert_eq!(c.max_deliver, 9);
        assert_eq!(c.ack_wait(), Duration::from_secs(30));
        let r: NatsResourceSettings = serde_json::from_str(r#"{"replicas": 3}"#).unwrap();
        assert_eq!(r.replicas, 3);
        assert_eq!(r.duplicate_window_secs, 120);
    }

    #[test]
    fn check_names_the_bad_key() {
        let cases: [BadField<NatsResourceSettings>; 6] = [
            (|r| r.replicas = 0, "replicas"),
            (|r| r.duplicate_window_secs = 0, "duplicate_window_secs"),
            (|r| r.node_ttl_secs = 0, "node_ttl_secs"),
            (|r| r.workflow_max_age_secs = 5, "workflow_max_age_secs"),
            (|r| r.catalog_history = 6, "catalog_history"),
            (|r| r.placement_history = 0, "placement_history"),
        ];
        assert_names_bad_field(&cases, NatsResourceSettings::check);
    }
}
