//! Projection configuration. Every field has a default that runs locally; environment
//! variables override them (`PROJECTION_<FIELD>` for the fields below, `NATS_<FIELD>` for the
//! connection, `STREAMS_<FIELD>` for stream sizing shared by all services), and an optional
//! TOML file named by `CART_CONFIG_FILE` sits in between.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::config::ServiceConfig;
use shared::nats::{ConsumerSettings, NatsConfig, NatsResourceSettings};
use shared::secret::Secret;

/// Largest batch one fetch (and one SQLite transaction) may hold.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// Longest `state_flush_secs`.
pub const MAX_STATE_FLUSH_SECS: u64 = 3_600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The view name: durable `projection-<view>`, dead-letter subjects `dlq.projection-<view>.…`.
    /// Nodes with different views run side by side, each with its own database.
    pub view: String,
    /// SQLite database file; empty: `.dev/projection-<view>.db`.
    pub db_path: String,
    /// gRPC listen address (QueryService). The default differs from every other service's,
    /// so a whole stack runs on one host.
    pub grpc_addr: String,
    /// HTTP listen address of `/health`, `/ready`, `/metrics` and `/admin/rebuild`.
    pub http_addr: String,
    /// Messages per fetch, applied in one transaction.
    pub batch_size: usize,
    /// Messages per fetch (and transaction) while the projection is behind: after a fetch came
    /// back full, the next asks for this many. A larger transaction writes a page shared by
    /// several of its carts once, so catching up goes faster; a projection that keeps up
    /// fetches `batch_size` at a time. `max_ack_pending` is twice it: while one batch is
    /// applied, the next is fetched.
    pub catch_up_batch_size: usize,
    /// Longest wait of an idle fetch before it returns empty (and the loop checks shutdown).
    pub fetch_wait_ms: u64,
    /// Server redelivers a message not acknowledged within this time.
    pub ack_wait_ms: u64,
    /// Deliveries of a failing message before it is dead-lettered.
    pub max_deliver: i64,
    /// Delay of the redelivery of a failing message (and of the unapplied rest of its batch).
    pub nak_delay_ms: u64,
    /// Open carts with items and no activity for this long are abandoned.
    pub abandoned_after_secs: u64,
    /// `/ready` fails while more than this many messages are not yet applied.
    pub ready_max_lag: u64,
    /// Read connections (concurrent queries).
    pub read_connections: usize,
    /// Cart states the writer keeps in memory (0: none), so a message for a cart seen recently
    /// neither reads nor parses its stored state. States are written behind the views: this
    /// many changed ones waiting are written at once.
    pub state_cache_carts: u64,
    /// A node starting at least this many messages behind (0: never) drops the views'
    /// secondary indexes until it has caught up, when it creates them again: catching up
    /// then writes each cart's rows only. It is not ready meanwhile (see `ready_max_lag`);
    /// queries still answer, by scanning. Skipped when the database holds so many carts that
    /// creating the indexes again would cost more than it saves.
    pub drop_indexes_behind: u64,
    /// Longest a changed cart state waits in memory before it is written (0: every batch
    /// writes its states). After a crash the projection folds the messages of up to this long
    /// again at start-up; the stream must still hold them.
    pub state_flush_secs: u64,
    /// Seconds between two reads of every platform stream's size and every durable consumer's
    /// backlog into the `cart_jetstream_*` gauges (`shared::nats::stats`); 0 turns them off.
    /// One service reads them for the whole platform: this one.
    pub jetstream_stats_secs: u64,
    /// Bearer token for `POST /admin/rebuild`; empty disables the admin API.
    pub admin_token: Secret,
    pub nats: NatsConfig,
    pub streams: NatsResourceSettings,
    /// Mutual TLS of its gRPC server and calls (`GRPC_TLS_*`; empty: plaintext).
    pub grpc_tls: shared::grpc_tls::GrpcTls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            view: "main".into(),
            db_path: String::new(),
            grpc_addr: "127.0.0.1:50062".into(),
            http_addr: "127.0.0.1:9102".into(),
            batch_size: 256,
            catch_up_batch_size: 4_096,
            fetch_wait_ms: 1_000,
            ack_wait_ms: 30_000,
            max_deliver: 5,
            nak_delay_ms: 2_000,
            abandoned_after_secs: 3_600,
            ready_max_lag: 1_000,
            read_connections: 4,
            state_cache_carts: 100_000,
            state_flush_secs: 10,
            drop_indexes_behind: 100_000,
            jetstream_stats_secs: 15,
            admin_token: Secret::default(),
            nats: NatsConfig::named(Self::SERVICE),
            streams: NatsResourceSettings::default(),
            grpc_tls: Default::default(),
        }
    }
}

impl Config {
    /// The durable consumer name, `projection-<view>` (also the dead-letter consumer token).
    pub fn durable(&self) -> String {
        shared::subjects::projection_durable(&self.view).unwrap_or_else(|_| self.view.clone())
    }

    pub fn db_path(&self) -> PathBuf {
        if self.db_path.trim().is_empty() {
            PathBuf::from(format!(".dev/projection-{}.db", self.view))
        } else {
            PathBuf::from(self.db_path.trim())
        }
    }

    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            ack_wait_ms: self.ack_wait_ms,
            max_deliver: self.max_deliver,
            max_ack_pending: i64::try_from(2 * self.catch_up_batch_size).unwrap_or(i64::MAX),
        }
    }

    /// How the writer keeps cart states in memory.
    pub fn state_settings(&self) -> crate::write::writer::StateSettings {
        crate::write::writer::StateSettings {
            cached_carts: self.state_cache_carts,
            flush_after: Duration::from_secs(self.state_flush_secs),
        }
    }

    /// Longest wait for the next message of a replay from the stream (rebuild, recovery):
    /// the NATS request timeout, at least 5 s.
    pub fn replay_timeout(&self) -> Duration {
        self.nats.request_timeout().max(Duration::from_secs(5))
    }

    pub fn fetch_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_wait_ms.max(10))
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }

    pub fn nak_delay(&self) -> Duration {
        Duration::from_millis(self.nak_delay_ms)
    }

    /// How often the JetStream gauges are read; `None` when they are off.
    pub fn jetstream_stats_interval(&self) -> Option<Duration> {
        (self.jetstream_stats_secs > 0).then(|| Duration::from_secs(self.jetstream_stats_secs))
    }

    pub fn abandoned_after(&self) -> Duration {
        Duration::from_secs(self.abandoned_after_secs)
    }

    /// Problems that make the projection unable to run, each naming the field.
    pub fn check(&self) -> Result<(), String> {
        self.grpc_tls.check()?;
        shared::subjects::projection_durable(&self.view).map_err(|e| format!("view: {e}"))?;
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(format!(
                "batch_size must be 1..={MAX_BATCH_SIZE}, got {}",
                self.batch_size
            ));
        }
        if !(self.batch_size..=MAX_BATCH_SIZE).contains(&self.catch_up_batch_size) {
            return Err(format!(
                "catch_up_batch_size must be batch_size ({})..={MAX_BATCH_SIZE}, got {}",
                self.batch_size, self.catch_up_batch_size
            ));
        }
        if self.state_flush_secs > MAX_STATE_FLUSH_SECS {
            return Err(format!(
                "state_flush_secs must be at most {MAX_STATE_FLUSH_SECS} (a crash refolds that much of the stream at start-up), got {}",
                self.state_flush_secs
            ));
        }
        if self.max_deliver < 1 {
            return Err(format!(
                "max_deliver must be at least 1 (poison messages are dead-lettered after it), got {}",
                self.max_deliver
            ));
        }
        if self.ack_wait_ms < 100 {
            return Err(format!(
                "ack_wait_ms must be at least 100, got {}",
                self.ack_wait_ms
            ));
        }
        if self.fetch_wait_ms >= self.ack_wait_ms {
            return Err(format!(
                "fetch_wait_ms ({}) must be below ack_wait_ms ({})",
                self.fetch_wait_ms, self.ack_wait_ms
            ));
        }
        if self.read_connections == 0 {
            return Err("read_connections must be at least 1".into());
        }
        if self.abandoned_after_secs == 0 {
            return Err("abandoned_after_secs must be at least 1".into());
        }
        Ok(())
    }
}

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = "PROJECTION";
    const SERVICE: &'static str = "projection";
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::test_support::config_check::{
        BadField, assert_debug_hides, assert_names_bad_field, load_from_env,
    };

    #[test]
    fn defaults_are_valid_and_name_the_durable_and_file() {
        let c = Config::default();
        c.check().unwrap();
        assert_eq!(c.durable(), "projection-main");
        assert_eq!(c.db_path(), PathBuf::from(".dev/projection-main.db"));
        assert_eq!(c.consumer_settings().max_ack_pending, 8_192);
        assert_eq!(c.abandoned_after(), Duration::from_secs(3600));
        assert_eq!(c.jetstream_stats_interval(), Some(Duration::from_secs(15)));
        let off = Config {
            jetstream_stats_secs: 0,
            ..Config::default()
        };
        assert_eq!(off.jetstream_stats_interval(), None);
    }

    /// The admin token (and the NATS password) read from the environment as usual, but a
    /// printed config shows neither.
    #[test]
    fn a_printed_config_does_not_show_the_admin_token() {
        let env = [
            ("PROJECTION_ADMIN_TOKEN", "rebuild-s3cret"),
            ("NATS_PASSWORD", "nats-s3cret"),
            ("NATS_USER", "projection"),
        ];
        let c: Config = load_from_env(&env);
        assert!(c.admin_token.matches("rebuild-s3cret"));
        assert_eq!(c.nats.password.expose(), "nats-s3cret");
        let secrets = ["rebuild-s3cret", "nats-s3cret"];
        assert_debug_hides(&c, &secrets, "admin_token: \"<redacted>\"");
    }

    #[test]
    fn env_uses_the_service_prefix_and_shared_sections() {
        let env = [
            ("PROJECTION_VIEW", "analytics"),
            ("PROJECTION_BATCH_SIZE", "64"),
            ("PROJECTION_DB_PATH", "/tmp/p.db"),
            ("NATS_URL", "nats://n:4222"),
            ("STREAMS_REPLICAS", "3"),
            ("AGGREGATE_GRPC_ADDR", "ignored:1"),
        ];
        let c: Config = load_from_env(&env);
        assert_eq!(c.view, "analytics");
        assert_eq!(c.durable(), "projection-analytics");
        assert_eq!(c.batch_size, 64);
        assert_eq!(c.db_path(), PathBuf::from("/tmp/p.db"));
        assert_eq!(c.nats.url, "nats://n:4222");
        assert_eq!(c.streams.replicas, 3);
        assert_eq!(c.grpc_addr, Config::default().grpc_addr);
    }

    #[test]
    fn check_names_the_bad_field() {
        let cases: [BadField<Config>; 8] = [
            (|c| c.view = "a.b".into(), "view"),
            (|c| c.batch_size = 0, "batch_size"),
            (|c| c.catch_up_batch_size = 100, "catch_up_batch_size"),
            (
                |c| c.state_flush_secs = MAX_STATE_FLUSH_SECS + 1,
                "state_flush_secs",
            ),
            (
                |c| c.catch_up_batch_size = MAX_BATCH_SIZE + 1,
                "catch_up_batch_size",
            ),
            (|c| c.max_deliver = -1, "max_deliver"),
            (|c| c.fetch_wait_ms = 40_000, "fetch_wait_ms"),
            (|c| c.read_connections = 0, "read_connections"),
        ];
        assert_names_bad_field(&cases, Config::check);
    }
}
