use super::*;
use crate::nats::policies;
use crate::nats::settings::{ConsumerSettings, NatsResourceSettings};
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};

fn settings() -> NatsResourceSettings {
    NatsResourceSettings::default()
}

#[test]
fn subject_coverage() {
    assert!(subject_covers("cart.events.>", "cart.events.>"));
    assert!(subject_covers(">", "cart.events.>"));
    assert!(subject_covers("cart.>", "cart.events.>"));
    assert!(subject_covers("cart.*.>", "cart.events.>"));
    assert!(subject_covers("cart.events.*", "cart.events.a"));
    assert!(!subject_covers("cart.events.*", "cart.events.>"));
    assert!(!subject_covers("cart.events.*", "cart.events.a.b"));
    assert!(!subject_covers("cart.events", "cart.events.>"));
    assert!(!subject_covers("cart.other.>", "cart.events.>"));
    assert!(!subject_covers("cart.events.>", "cart.events"));
}

#[test]
fn identical_stream_is_valid_and_superset_of_subjects_too() {
    let want = policies::cart_events(&settings());
    validate_stream(&want, &want).unwrap();
    let mut have = want.clone();
    have.subjects = vec!["other.>".into(), "cart.>".into()];
    have.num_replicas = 3;
    have.duplicate_window = Duration::from_secs(600);
    validate_stream(&want, &have).unwrap();
}

#[test]
fn discard_old_is_named_with_both_values() {
    let want = policies::cart_events(&settings());
    let mut have = want.clone();
    have.discard = DiscardPolicy::Old;
    let err = validate_stream(&want, &have).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream CART_EVENTS: field discard is Old, expected New"
    );
}

#[test]
fn every_stream_rule_fires() {
    let want = policies::cart_events(&settings());
    type Mutation = Box<dyn Fn(&mut stream::Config)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "subjects",
            Box::new(|c| c.subjects = vec!["cart.events.*".into()]),
        ),
        ("storage", Box::new(|c| c.storage = StorageType::Memory)),
        (
            "retention",
            Box::new(|c| c.retention = RetentionPolicy::WorkQueue),
        ),
        ("discard", Box::new(|c| c.discard = DiscardPolicy::Old)),
        ("num_replicas", Box::new(|c| c.num_replicas = 0)),
        (
            "duplicate_window",
            Box::new(|c| c.duplicate_window = Duration::from_secs(30)),
        ),
        ("allow_direct", Box::new(|c| c.allow_direct = false)),
        ("deny_delete", Box::new(|c| c.deny_delete = false)),
        ("deny_purge", Box::new(|c| c.deny_purge = false)),
        (
            "max_age",
            Box::new(|c| c.max_age = Duration::from_secs(3600)),
        ),
        (
            "max_msgs_per_subject",
            Box::new(|c| c.max_messages_per_subject = 100),
        ),
    ];
    for (field, mutate) in cases {
        let mut have = want.clone();
        mutate(&mut have);
        let err = validate_stream(&want, &have).unwrap_err();
        assert_eq!(err.mismatches.len(), 1, "{field}: {err}");
        assert_eq!(err.mismatches[0].field, field, "{err}");
        assert!(
            err.to_string().contains(&format!("field {field} is ")),
            "{err}"
        );
    }
}

#[test]
fn several_mismatches_are_all_reported() {
    let want = policies::cart_events(&settings());
    let mut have = want.clone();
    have.discard = DiscardPolicy::Old;
    have.storage = StorageType::Memory;
    let err = validate_stream(&want, &have).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("field storage is Memory, expected File"),
        "{msg}"
    );
    assert!(msg.contains("field discard is Old, expected New"), "{msg}");
}

#[test]
fn limits_may_be_looser_but_not_tighter() {
    let s = NatsResourceSettings {
        workflow_max_age_secs: 86_400,
        ..settings()
    };
    let want = policies::workflow_events(&s);
    let mut have = want.clone();
    have.max_age = Duration::ZERO;
    validate_stream(&want, &have).unwrap();
    have.max_age = Duration::from_secs(2 * 86_400);
    validate_stream(&want, &have).unwrap();
    have.max_age = Duration::from_secs(3600);
    let err = validate_stream(&want, &have).unwrap_err();
    assert_eq!(err.mismatches[0].field, "max_age");

    let capped = policies::cart_events(&NatsResourceSettings {
        cart_events_max_bytes: 1000,
        ..settings()
    });
    let mut have = capped.clone();
    have.max_bytes = -1;
    validate_stream(&capped, &have).unwrap();
    have.max_bytes = 10;
    assert_eq!(
        validate_stream(&capped, &have).unwrap_err().mismatches[0].field,
        "max_bytes"
    );
}

#[test]
fn kv_ttl_must_match_exactly_and_history_not_shrink() {
    let s = settings();
    let nodes = policies::cart_nodes(&s);
    let stream = policies::kv_stream(&nodes);
    validate_kv(&nodes, &stream).unwrap();

    let mut longer = stream.clone();
    longer.max_age = Duration::from_secs(60);
    let err = validate_kv(&nodes, &longer).unwrap_err();
    assert_eq!(err.kind, "kv bucket");
    assert!(
        err.to_string()
            .starts_with("kv bucket CART_NODES: field ttl is 60s"),
        "{err}"
    );

    let placement = policies::cart_placement(&s);
    let mut short = policies::kv_stream(&placement);
    short.max_messages_per_subject = 1;
    let err = validate_kv(&placement, &short).unwrap_err();
    assert_eq!(err.mismatches[0].field, "history");

    let snapshots = policies::cart_snapshots(&s);
    let mut more = policies::kv_stream(&snapshots);
    more.max_messages_per_subject = 3;
    validate_kv(&snapshots, &more).unwrap();
}

fn durable(filters: &[&str]) -> consumer::pull::Config {
    let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
    crate::nats::consumers::durable_pull_config(
        "projection-carts",
        &filters,
        &ConsumerSettings::default(),
    )
}

fn as_existing(p: &consumer::pull::Config) -> consumer::Config {
    consumer::Config {
        durable_name: p.durable_name.clone(),
        ack_policy: p.ack_policy,
        ack_wait: p.ack_wait,
        max_deliver: p.max_deliver,
        max_ack_pending: p.max_ack_pending,
        filter_subject: p.filter_subject.clone(),
        filter_subjects: p.filter_subjects.clone(),
        ..Default::default()
    }
}

#[test]
fn consumer_same_is_up_to_date_and_filter_form_does_not_matter() {
    let want = durable(&["cart.events.>"]);
    let mut have = as_existing(&want);
    assert_eq!(
        validate_consumer(&want, &have).unwrap(),
        ConsumerCheck::UpToDate
    );
    have.filter_subjects = vec![have.filter_subject.clone()];
    have.filter_subject.clear();
    assert_eq!(
        validate_consumer(&want, &have).unwrap(),
        ConsumerCheck::UpToDate
    );
}

#[test]
fn consumer_filter_and_ack_policy_are_errors_naming_the_field() {
    let want = durable(&["cart.events.>"]);
    let mut have = as_existing(&want);
    have.filter_subject = "cart.events.acme.*".into();
    let err = validate_consumer(&want, &have).unwrap_err();
    assert_eq!(err.mismatches[0].field, "filter_subjects");
    assert!(
        err.to_string()
            .starts_with("consumer projection-carts: field filter_subjects")
    );

    let mut have = as_existing(&want);
    have.ack_policy = consumer::AckPolicy::None;
    let err = validate_consumer(&want, &have).unwrap_err();
    assert_eq!(
        err.to_string(),
        "consumer projection-carts: field ack_policy is None, expected Explicit"
    );

    let mut have = as_existing(&want);
    have.deliver_subject = Some("push.here".into());
    assert_eq!(
        validate_consumer(&want, &have).unwrap_err().mismatches[0].field,
        "deliver_subject"
    );
}

#[test]
fn consumer_tuning_differences_need_an_update() {
    let want = durable(&["cart.events.>", "workflow.events.>"]);
    let mut have = as_existing(&want);
    have.max_ack_pending = 1;
    have.ack_wait = Duration::from_secs(1);
    match validate_consumer(&want, &have).unwrap() {
        ConsumerCheck::NeedsUpdate(fields) => {
            let names: Vec<_> = fields.iter().map(|f| f.field).collect();
            assert_eq!(names, ["ack_wait", "max_ack_pending"]);
        }
        other => panic!("expected NeedsUpdate, got {other:?}"),
    }
}
