use std::time::Duration;

use async_nats::jetstream::stream;
use shared::nats_or_skip;
use shared::test_support::wait_until;

#[tokio::test]
async fn starts_connects_and_serves_jetstream() {
    let Some(nats) = nats_or_skip!() else { return };
    assert!(nats.url().starts_with("nats://127.0.0.1:"));
    let client = nats.client().await;
    let mut sub = client.subscribe("harness.ping").await.unwrap();
    client.publish("harness.ping", "hi".into()).await.unwrap();
    client.flush().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut sub))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload.as_ref(), b"hi");
    let info = nats.jetstream().await.query_account().await.unwrap();
    assert_eq!(info.streams, 0, "a fresh server has an empty store");
}

#[tokio::test]
async fn two_servers_are_independent() {
    let Some(a) = nats_or_skip!() else { return };
    let Some(b) = nats_or_skip!() else { return };
    if !a.can_restart() {
        return; // external server: both are the same one
    }
    assert_ne!(a.url(), b.url());
}

#[tokio::test]
async fn kill_and_restart_keep_jetstream_data() {
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    if !nats.can_restart() {
        eprintln!("external CART_TEST_NATS_URL server: restart test not applicable");
        return;
    }
    let url = nats.url().to_owned();
    let js = nats.jetstream().await;
    js.create_stream(stream::Config {
        name: "SURVIVOR".into(),
        subjects: vec!["survivor.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let ack = js
        .publish("survivor.one", "persisted".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let client = js.client();

    nats.kill();
    wait_until(
        || {
            let state = client.connection_state();
            async move { state != async_nats::connection::State::Connected }
        },
        Duration::from_secs(10),
    )
    .await
    .expect("client notices the crash");

    nats.restart().await;
    assert_eq!(nats.url(), url, "same port after restart");

    let js = nats.jetstream().await;
    let stream = js.get_stream("SURVIVOR").await.unwrap();
    let msg = stream.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(msg.payload.as_ref(), b"persisted");

    // The original client reconnects by itself (same address).
    wait_until(
        || {
            let state = client.connection_state();
            async move { state == async_nats::connection::State::Connected }
        },
        Duration::from_secs(15),
    )
    .await
    .expect("client reconnects after restart");
}
