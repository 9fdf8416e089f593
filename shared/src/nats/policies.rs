//! The desired configuration of every stream and KV bucket in the design's NATS table.
//!
//! One builder per resource, so the policy (and the reason for it) is written once and used
//! both to create a missing resource and to validate an existing one.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};

use super::settings::NatsResourceSettings;
use crate::subjects::{
    CART_EVENTS_ALL, CART_EVENTS_STREAM, CART_NODES_BUCKET, CART_PLACEMENT_BUCKET,
    CART_SNAPSHOTS_BUCKET, CATALOG_BUCKET, DEAD_LETTERS_ALL, DEAD_LETTERS_STREAM,
    RUNNER_LEASE_BUCKET, WORKFLOW_COMMANDS_ALL, WORKFLOW_COMMANDS_STREAM, WORKFLOW_EVENTS_ALL,
    WORKFLOW_EVENTS_STREAM,
};

fn limit_or_unlimited(v: i64) -> i64 {
    if v > 0 { v } else { -1 }
}

/// The common shape of our streams: file storage (survives restarts), limits retention (the
/// stream is the record, not a queue), `discard: new` (when a limit is hit, refuse new writes
/// loudly rather than silently dropping old ones), de-duplication by `Nats-Msg-Id`, and direct
/// get so readers spread over replicas without a consumer.
fn base_stream(
    name: &str,
    subject: &str,
    description: &str,
    s: &NatsResourceSettings,
) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        subjects: vec![subject.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        duplicate_window: s.duplicate_window(),
        num_replicas: s.replicas,
        allow_direct: true,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        ..Default::default()
    }
}

/// `CART_EVENTS`: the event store. Nothing may ever remove an event (deny delete and purge,
/// no age or per-subject limit), because a cart's state is the fold of all of them.
pub fn cart_events(s: &NatsResourceSettings) -> stream::Config {
    stream::Config {
        deny_delete: true,
        deny_purge: true,
        max_bytes: limit_or_unlimited(s.cart_events_max_bytes),
        ..base_stream(
            CART_EVENTS_STREAM,
            CART_EVENTS_ALL,
            "Cart events: one message per accepted command (event store)",
            s,
        )
    }
}

/// `WORKFLOW_COMMANDS`: the runner's outbox, one message per effect (Msg-Id = effect id).
pub fn workflow_commands(s: &NatsResourceSettings) -> stream::Config {
    stream::Config {
        max_age: Duration::from_secs(s.workflow_max_age_secs),
        ..base_stream(
            WORKFLOW_COMMANDS_STREAM,
            WORKFLOW_COMMANDS_ALL,
            "Checkout effects to perform (runner outbox)",
            s,
        )
    }
}

/// `WORKFLOW_EVENTS`: effect results (Msg-Id = result id). Direct get lets the runner read the
/// last result of an effect by subject, which is how it avoids a second provider order.
pub fn workflow_events(s: &NatsResourceSettings) -> stream::Config {
    stream::Config {
        max_age: Duration::from_secs(s.workflow_max_age_secs),
        ..base_stream(
            WORKFLOW_EVENTS_STREAM,
            WORKFLOW_EVENTS_ALL,
            "Checkout effect results",
            s,
        )
    }
}

/// `DEAD_LETTERS`: messages consumers gave up on, kept for inspection and replay.
pub fn dead_letters(s: &NatsResourceSettings) -> stream::Config {
    stream::Config {
        max_age: Duration::from_secs(s.dead_letters_max_age_secs),
        ..base_stream(
            DEAD_LETTERS_STREAM,
            DEAD_LETTERS_ALL,
            "Poison messages with reason, original subject and sequence",
            s,
        )
    }
}

fn base_kv(bucket: &str, description: &str, s: &NatsResourceSettings) -> kv::Config {
    kv::Config {
        bucket: bucket.to_owned(),
        description: description.to_owned(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        max_bytes: -1,
        ..Default::default()
    }
}

/// `CART_SNAPSHOTS`: latest snapshot per cart (history 1; an optimisation only).
pub fn cart_snapshots(s: &NatsResourceSettings) -> kv::Config {
    base_kv(
        CART_SNAPSHOTS_BUCKET,
        "Cart snapshots {stream_seq, revision, state}, completed from CART_EVENTS",
        s,
    )
}

/// `CART_PLACEMENT`: shard owners, written with revision CAS; a little history shows recent
/// ownership changes when debugging a rebalance.
pub fn cart_placement(s: &NatsResourceSettings) -> kv::Config {
    kv::Config {
        history: s.placement_history,
        ..base_kv(
            CART_PLACEMENT_BUCKET,
            "Shard -> owning aggregate node {node, epoch}",
            s,
        )
    }
}

/// `CART_NODES`: live aggregate nodes. The bucket TTL *is* the liveness timeout.
pub fn cart_nodes(s: &NatsResourceSettings) -> kv::Config {
    kv::Config {
        max_age: s.node_ttl(),
        ..base_kv(
            CART_NODES_BUCKET,
            "Live aggregate nodes {grpc_addr, started_at, draining}; TTL = liveness",
            s,
        )
    }
}

/// `CATALOG`: SKUs, delivery prices and vouchers, seeded from a JSON file.
pub fn catalog(s: &NatsResourceSettings) -> kv::Config {
    kv::Config {
        history: s.catalog_history,
        ..base_kv(
            CATALOG_BUCKET,
            "Catalog: sku.<sku>, delivery.<provider>, voucher.<code>",
            s,
        )
    }
}

/// `RUNNER_LEASE`: which runner may fetch effects. The bucket TTL *is* the lease's: a holder
/// that stops refreshing loses it after `ttl`. Created and used by the runner alone.
pub fn runner_lease(s: &NatsResourceSettings, ttl: Duration) -> kv::Config {
    kv::Config {
        max_age: ttl,
        ..base_kv(
            RUNNER_LEASE_BUCKET,
            "The active runner {holder, since}; TTL = how long a silent holder keeps it",
            s,
        )
    }
}

/// The stream a KV bucket is stored in, as async-nats creates it (`KV_<bucket>`,
/// `$KV.<bucket>.>`, per-subject limit = history, direct get on, rollups allowed).
pub fn kv_stream(c: &kv::Config) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", c.bucket),
        description: Some(c.description.clone()),
        subjects: vec![format!("$KV.{}.>", c.bucket)],
        max_messages_per_subject: c.history.max(1),
        max_bytes: c.max_bytes,
        max_age: c.max_age,
        storage: c.storage,
        num_replicas: c.num_replicas.max(1),
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        retention: stream::RetentionPolicy::Limits,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};

    #[test]
    fn cart_events_policy() {
        let s = NatsResourceSettings {
            replicas: 3,
            duplicate_window_secs: 300,
            ..Default::default()
        };
        let c = cart_events(&s);
        assert_eq!(c.name, "CART_EVENTS");
        assert_eq!(c.subjects, ["cart.events.>"]);
        assert_eq!(c.storage, StorageType::File);
        assert_eq!(c.retention, RetentionPolicy::Limits);
        assert_eq!(c.discard, DiscardPolicy::New);
        assert_eq!(c.duplicate_window, Duration::from_secs(300));
        assert_eq!(c.num_replicas, 3);
        assert!(c.allow_direct && c.deny_delete && c.deny_purge);
        assert_eq!(c.max_age, Duration::ZERO);
        assert_eq!(c.max_bytes, -1);
        let capped = cart_events(&NatsResourceSettings {
            cart_events_max_bytes: 1 << 30,
            ..Default::default()
        });
        assert_eq!(capped.max_bytes, 1 << 30);
    }

    #[test]
    fn workflow_and_dlq_policies() {
        let s = NatsResourceSettings {
            workflow_max_age_secs: 86_400,
            ..Default::default()
        };
        for (c, name, subject) in [
            (
                workflow_commands(&s),
                "WORKFLOW_COMMANDS",
                "workflow.commands.>",
            ),
            (workflow_events(&s), "WORKFLOW_EVENTS", "workflow.events.>"),
        ] {
            assert_eq!(c.name, name);
            assert_eq!(c.subjects, [subject]);
            assert_eq!(c.discard, DiscardPolicy::New);
            assert!(c.allow_direct);
            assert_eq!(c.max_age, Duration::from_secs(86_400));
            assert_eq!(c.duplicate_window, Duration::from_secs(120));
        }
        let d = dead_letters(&s);
        assert_eq!(
            (d.name.as_str(), d.subjects[0].as_str()),
            ("DEAD_LETTERS", "dlq.>")
        );
        assert_eq!(d.storage, StorageType::File);
    }

    #[test]
    fn kv_policies() {
        let s = NatsResourceSettings {
            node_ttl_secs: 9,
            catalog_history: 3,
            ..Default::default()
        };
        assert_eq!(cart_snapshots(&s).history, 1);
        assert_eq!(cart_placement(&s).history, 5);
        let nodes = cart_nodes(&s);
        assert_eq!((nodes.history, nodes.max_age), (1, Duration::from_secs(9)));
        assert_eq!(catalog(&s).history, 3);
        let ks = kv_stream(&nodes);
        assert_eq!(ks.name, "KV_CART_NODES");
        assert_eq!(ks.subjects, ["$KV.CART_NODES.>"]);
        assert_eq!(ks.max_messages_per_subject, 1);
        assert_eq!(ks.max_age, Duration::from_secs(9));
        assert!(ks.allow_direct);
        for c in [cart_snapshots(&s), cart_placement(&s), nodes, catalog(&s)] {
            assert_eq!(c.storage, StorageType::File, "{}", c.bucket);
        }
    }
}
