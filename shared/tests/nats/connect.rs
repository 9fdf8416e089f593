use std::time::Duration;

use shared::nats::{NatsConfig, NatsError, connect, jetstream};
use shared::nats_or_skip;

#[tokio::test]
async fn connects_with_config_and_builds_a_jetstream_context() {
    let Some(nats) = nats_or_skip!() else { return };
    let config = NatsConfig {
        url: format!("{}, {}", nats.url(), nats.url()),
        name: "connect-test".into(),
        ..Default::default()
    };
    let client = connect(&config).await.unwrap();
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    assert_eq!(client.timeout(), Some(Duration::from_millis(5_000)));
    let js = jetstream(client, &config);
    js.query_account().await.unwrap();
}

#[tokio::test]
async fn unreachable_or_invalid_urls_fail_fast_naming_the_url() {
    let config = NatsConfig {
        url: "nats://127.0.0.1:1".into(),
        connect_timeout_ms: 500,
        ..Default::default()
    };
    let err = tokio::time::timeout(Duration::from_secs(10), connect(&config))
        .await
        .expect("initial connect is not retried forever")
        .unwrap_err();
    assert!(matches!(err, NatsError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("nats://127.0.0.1:1"), "{err}");

    for url in ["", " , ", "not a url at all::"] {
        let config = NatsConfig {
            url: url.into(),
            ..Default::default()
        };
        let err = connect(&config).await.unwrap_err();
        assert!(matches!(err, NatsError::Connect { .. }), "{url:?}: {err:?}");
    }
}
