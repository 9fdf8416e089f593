use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy};
use shared::nats::{
    NatsError, NatsResourceSettings, ensure_all, ensure_kv, ensure_stream, policies,
};
use shared::nats_or_skip;
use shared::subjects;
use shared::test_support::NatsServer;

/// A fresh nats-server (kept running while the first element lives) and its JetStream.
async fn server() -> Option<(NatsServer, async_nats::jetstream::Context)> {
    let nats = nats_or_skip!()?;
    let js = nats.jetstream().await;
    Some((nats, js))
}

#[tokio::test]
async fn ensure_all_creates_everything_then_is_idempotent() {
    let Some((_nats, js)) = server().await else {
        return;
    };
    let settings = NatsResourceSettings::default();

    let mut first = ensure_all(&js, &settings).await.unwrap();
    let info = first.cart_events.info().await.unwrap().clone();
    assert_eq!(info.config.name, subjects::CART_EVENTS_STREAM);
    assert_eq!(info.config.discard, DiscardPolicy::New);
    assert!(info.config.allow_direct && info.config.deny_delete && info.config.deny_purge);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    for name in [
        subjects::WORKFLOW_COMMANDS_STREAM,
        subjects::WORKFLOW_EVENTS_STREAM,
        subjects::DEAD_LETTERS_STREAM,
    ] {
        let s = js.get_stream(name).await.unwrap();
        assert!(s.cached_info().config.allow_direct, "{name}");
    }
    let nodes = js.get_stream("KV_CART_NODES").await.unwrap();
    assert_eq!(nodes.cached_info().config.max_age, Duration::from_secs(6));
    assert_eq!(nodes.cached_info().config.max_messages_per_subject, 1);
    let placement = js.get_stream("KV_CART_PLACEMENT").await.unwrap();
    assert_eq!(placement.cached_info().config.max_messages_per_subject, 5);

    // The KV handles work.
    let rev = first
        .cart_placement
        .create("shards.0", "{}".into())
        .await
        .unwrap();
    first
        .cart_placement
        .update("shards.0", r#"{"node":"a","epoch":1}"#.into(), rev)
        .await
        .unwrap();

    // Second run: validates what exists, creates nothing, changes nothing.
    let before = js.query_account().await.unwrap().streams;
    let second = ensure_all(&js, &settings).await.unwrap();
    assert_eq!(js.query_account().await.unwrap().streams, before);
    assert_eq!(before, 8);
    let entry = second
        .cart_placement
        .get("shards.0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.as_ref(), br#"{"node":"a","epoch":1}"#);
}

#[tokio::test]
async fn concurrent_ensure_all_from_many_services_agrees() {
    let Some((_nats, js)) = server().await else {
        return;
    };
    let settings = NatsResourceSettings::default();
    let runs = (0..4).map(|_| ensure_all(&js, &settings));
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    assert_eq!(js.query_account().await.unwrap().streams, 8);
}

#[tokio::test]
async fn incompatible_existing_stream_is_a_startup_error_naming_the_field() {
    let Some((_nats, js)) = server().await else {
        return;
    };
    let settings = NatsResourceSettings::default();
    let mut wrong = policies::cart_events(&settings);
    wrong.discard = DiscardPolicy::Old;
    js.create_stream(wrong).await.unwrap();

    let err = ensure_all(&js, &settings).await.unwrap_err();
    assert!(matches!(err, NatsError::Incompatible(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "stream CART_EVENTS: field discard is Old, expected New"
    );
    // Nothing was changed.
    let s = js.get_stream("CART_EVENTS").await.unwrap();
    assert_eq!(s.cached_info().config.discard, DiscardPolicy::Old);
}

#[tokio::test]
async fn existing_stream_with_more_subjects_and_a_longer_window_is_accepted() {
    let Some((_nats, js)) = server().await else {
        return;
    };
    let settings = NatsResourceSettings::default();
    let mut wider = policies::workflow_events(&settings);
    wider.subjects.push("legacy.workflow.>".into());
    wider.duplicate_window = Duration::from_secs(600);
    js.create_stream(wider).await.unwrap();
    ensure_stream(&js, &policies::workflow_events(&settings))
        .await
        .unwrap();

    let missing = stream::Config {
        subjects: vec!["workflow.commands.acme.>".into()],
        ..policies::workflow_commands(&settings)
    };
    js.create_stream(missing).await.unwrap();
    let err = ensure_stream(&js, &policies::workflow_commands(&settings))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("field subjects is"), "{err}");
    assert!(err.to_string().contains("workflow.commands.>"), "{err}");
}

#[tokio::test]
async fn kv_bucket_with_a_different_ttl_is_rejected() {
    let Some((_nats, js)) = server().await else {
        return;
    };
    let mut other = policies::cart_nodes(&NatsResourceSettings::default());
    other.max_age = Duration::from_secs(60);
    js.create_key_value(other).await.unwrap();

    let expected = policies::cart_nodes(&NatsResourceSettings::default());
    let err = ensure_kv(&js, &expected).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "kv bucket CART_NODES: field ttl is 60s, expected 6s"
    );
}

#[tokio::test]
async fn invalid_settings_are_rejected_before_touching_the_server() {
    let Some((_nats, js)) = server().await else {
        return;
    };
    let bad = NatsResourceSettings {
        replicas: 0,
        ..Default::default()
    };
    let err = ensure_all(&js, &bad).await.unwrap_err();
    assert!(err.to_string().contains("replicas"), "{err}");
    assert_eq!(js.query_account().await.unwrap().streams, 0);
}
