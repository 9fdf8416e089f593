use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy};
use shared::nats::{
    ConsumerSettings, Durable, NatsResourceSettings, durable_pull_config, ensure_durable_pull,
    ensure_stream, policies,
};
use shared::nats_or_skip;
use shared::subjects;
use shared::test_support::pull_one;

/// Publishes `n` messages on `subject`, each acknowledged by its stream.
async fn publish(js: &async_nats::jetstream::Context, subject: &'static str, n: usize) {
    for i in 1..=n {
        js.publish(subject, format!("m{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// JetStream and the `CART_EVENTS` stream on `nats`.
async fn cart_events(
    nats: &shared::test_support::NatsServer,
) -> (
    async_nats::jetstream::Context,
    async_nats::jetstream::stream::Stream,
) {
    let js = nats.jetstream().await;
    let stream = ensure_stream(
        &js,
        &policies::cart_events(&NatsResourceSettings::default()),
    )
    .await
    .unwrap();
    (js, stream)
}

fn filters(f: &[&str]) -> Vec<String> {
    f.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn durable_is_created_updated_in_place_and_consumes() {
    let Some(nats) = nats_or_skip!() else { return };
    let (js, stream) = cart_events(&nats).await;
    let name = subjects::projection_durable("carts").unwrap();
    let settings = ConsumerSettings::default();
    let want = durable_pull_config(&name, &filters(&[subjects::CART_EVENTS_ALL]), &settings);

    let mut c = ensure_durable_pull(&stream, want.clone()).await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
    assert_eq!(info.config.max_deliver, 5);
    assert_eq!(info.config.max_ack_pending, 256);
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));

    // Consume one message and ack it, so we can see the position survive the update.
    js.publish("cart.events.acme.c1", "e1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let m = pull_one(&c).await;
    m.double_ack().await.unwrap();

    let tuned = ConsumerSettings {
        ack_wait_ms: 5_000,
        max_deliver: 9,
        max_ack_pending: 32,
    };
    let want = durable_pull_config(&name, &filters(&[subjects::CART_EVENTS_ALL]), &tuned);
    let mut c = ensure_durable_pull(&stream, want).await.unwrap();
    let info = c.info().await.unwrap().clone();
    assert_eq!(info.config.max_deliver, 9);
    assert_eq!(info.config.max_ack_pending, 32);
    assert_eq!(info.config.ack_wait, Duration::from_secs(5));
    assert_eq!(info.ack_floor.stream_sequence, 1, "position kept");
}

#[tokio::test]
async fn a_deleted_durable_comes_back_after_what_was_handled_not_from_the_start() {
    let Some(nats) = nats_or_skip!() else { return };
    let (js, stream) = cart_events(&nats).await;
    publish(&js, "cart.events.acme.c1", 3).await;
    let name = subjects::projection_durable("again").unwrap();
    let config = durable_pull_config(
        &name,
        &filters(&[subjects::CART_EVENTS_ALL]),
        &ConsumerSettings::default(),
    );
    let durable = Durable {
        stream: stream.clone(),
        config,
    };
    let first = |c: async_nats::jetstream::consumer::PullConsumer| async move {
        let m = pull_one(&c).await;
        m.double_ack().await.unwrap();
        m.info().unwrap().stream_sequence
    };
    // Present: validated, its position kept (whatever `handled` says).
    assert_eq!(first(durable.ensure().await.unwrap()).await, 1);
    assert_eq!(first(durable.recreate(2).await.unwrap()).await, 2);
    // Deleted: back after what was handled, not from sequence 1.
    stream.delete_consumer(&name).await.unwrap();
    assert_eq!(first(durable.recreate(2).await.unwrap()).await, 3);

    // The stream re-created (its sequences start again at 1): `handled` no longer means
    // anything there, so the new consumer reads the new stream from its start.
    js.delete_stream(subjects::CART_EVENTS_STREAM)
        .await
        .unwrap();
    let (js, _) = cart_events(&nats).await;
    publish(&js, "cart.events.acme.c2", 4).await;
    assert_eq!(first(durable.recreate(2).await.unwrap()).await, 1);
}

#[tokio::test]
async fn durable_with_another_filter_or_ack_policy_is_an_error() {
    let Some(nats) = nats_or_skip!() else { return };
    let (_, stream) = cart_events(&nats).await;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("runner-checkout".into()),
            ack_policy: AckPolicy::Explicit,
            filter_subject: "cart.events.acme.*".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let want = durable_pull_config(
        subjects::RUNNER_CHECKOUT_DURABLE,
        &filters(&[subjects::CART_EVENTS_ALL]),
        &ConsumerSettings::default(),
    );
    let err = ensure_durable_pull(&stream, want).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("consumer runner-checkout: field filter_subjects is"),
        "{msg}"
    );

    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("projection-lines".into()),
            ack_policy: AckPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let want = durable_pull_config("projection-lines", &[], &ConsumerSettings::default());
    let err = ensure_durable_pull(&stream, want).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "consumer projection-lines: field ack_policy is All, expected Explicit"
    );
}

#[tokio::test]
async fn durable_with_several_filters() {
    let Some(nats) = nats_or_skip!() else { return };
    let (_, stream) = cart_events(&nats).await;
    let f = filters(&["cart.events.acme.*", "cart.events.other.*"]);
    let want = durable_pull_config("projection-multi", &f, &ConsumerSettings::default());
    ensure_durable_pull(&stream, want.clone()).await.unwrap();
    // Idempotent, including the multi-filter form.
    let mut c = ensure_durable_pull(&stream, want).await.unwrap();
    let mut have = c.info().await.unwrap().config.filter_subjects.clone();
    have.sort();
    assert_eq!(have, f);
}
