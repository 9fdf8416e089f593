//! The JetStream gauges (`shared::nats::stats`) against a real server with the shipped
//! accounts: the projection's user reads every platform stream's size and every durable
//! consumer's backlog without a permissions violation, and a read that fails is reported, not
//! fatal. Each test reads once, directly, and records into a recorder of its own.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use metrics_exporter_prometheus::PrometheusBuilder;
use shared::nats::stats::{ConsumerStats, JetStreamStats, Snapshot, platform_streams};
use shared::nats::{ConsumerSettings, NatsResourceSettings, durable_pull_config, ensure_all};
use shared::subjects::{
    self, CART_EVENTS_ALL, CART_EVENTS_STREAM, RUNNER_PUSH_DURABLE, WORKFLOW_COMMANDS_ALL,
    WORKFLOW_COMMANDS_STREAM,
};
use shared::test_support::{NatsServer, pull_one, stream_state};

const CART: &str = "cart.events.default.11111111-1111-4111-8111-111111111111";

/// A server with the shipped accounts and the platform's resources, `CART_EVENTS` capped at
/// `max_bytes`; the admin's JetStream.
async fn server(max_bytes: i64) -> Option<(NatsServer, jetstream::Context)> {
    let nats = NatsServer::start_with_accounts().await?;
    let admin = nats.jetstream().await;
    let settings = NatsResourceSettings {
        cart_events_max_bytes: max_bytes,
        ..NatsResourceSettings::default()
    };
    ensure_all(&admin, &settings).await.expect("resources");
    Some((nats, admin))
}

/// JetStream as `user`, connected the way the services connect (`NATS_USER`, its inbox).
async fn js_as(nats: &NatsServer, user: &str, timeout: Duration) -> jetstream::Context {
    let config = shared::nats::NatsConfig {
        request_timeout_ms: u64::try_from(timeout.as_millis()).unwrap(),
        ..nats.service_config(user)
    };
    let client = shared::nats::connect(&config).await.unwrap();
    shared::nats::jetstream(client, &config)
}

/// What `snapshot` renders in a recorder of its own, recorded `times` times.
fn rendered(snapshot: &Snapshot, times: usize) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..times {
            snapshot.record();
        }
    });
    handle.render()
}

#[tokio::test]
async fn the_projection_reads_every_streams_size_and_every_durables_backlog() {
    let Some((nats, admin)) = server(1 << 20).await else {
        return;
    };
    // The projection's and the runner's durables, and an ephemeral reader (not reported).
    let events = admin.get_stream(CART_EVENTS_STREAM).await.unwrap();
    let durable = subjects::projection_durable("main").unwrap();
    let settings = ConsumerSettings::default();
    let projection: consumer::PullConsumer = events
        .create_consumer(durable_pull_config(
            &durable,
            &[CART_EVENTS_ALL.to_owned()],
            &settings,
        ))
        .await
        .unwrap();
    admin
        .get_stream(WORKFLOW_COMMANDS_STREAM)
        .await
        .unwrap()
        .create_consumer(durable_pull_config(
            RUNNER_PUSH_DURABLE,
            &[WORKFLOW_COMMANDS_ALL.to_owned()],
            &settings,
        ))
        .await
        .unwrap();
    let _reader = events
        .create_consumer(consumer::pull::Config::default())
        .await
        .unwrap();

    // Five appends; the projection holds two of them, unacknowledged.
    for i in 0..5 {
        admin
            .publish(CART, format!("event {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _first = pull_one(&projection).await;
    let _second = pull_one(&projection).await;

    let js = js_as(&nats, "projection", Duration::from_secs(5)).await;
    let snapshot = JetStreamStats::new(js).read().await;
    assert_eq!(snapshot.failures, [], "the projection may read all of it");
    assert_eq!(
        nats.permission_violations(),
        Vec::<String>::new(),
        "no request of the read was refused"
    );

    let read: Vec<&str> = snapshot.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(read, platform_streams());
    let cart_events = &snapshot.streams[0];
    let state = stream_state(&admin, CART_EVENTS_STREAM).await;
    assert_eq!(cart_events.messages, 5);
    assert_eq!(cart_events.bytes, state.bytes);
    assert!(cart_events.bytes > 0);
    assert_eq!(cart_events.max_bytes, 1 << 20);
    let placement = snapshot
        .streams
        .iter()
        .find(|s| s.stream == "KV_CART_PLACEMENT")
        .unwrap();
    assert_eq!((placement.messages, placement.max_bytes), (0, -1));

    assert_eq!(
        snapshot.consumers,
        [
            ConsumerStats {
                stream: CART_EVENTS_STREAM.into(),
                consumer: durable.clone(),
                num_pending: 3,
                num_ack_pending: 2,
                num_redelivered: 0,
            },
            ConsumerStats {
                stream: WORKFLOW_COMMANDS_STREAM.into(),
                consumer: RUNNER_PUSH_DURABLE.into(),
                num_pending: 0,
                num_ack_pending: 0,
                num_redelivered: 0,
            },
        ],
        "the durables only, in order"
    );

    let text = rendered(&snapshot, 1);
    for line in [
        r#"cart_jetstream_stream_messages{stream="CART_EVENTS"} 5"#.to_owned(),
        format!(
            r#"cart_jetstream_stream_bytes{{stream="CART_EVENTS"}} {}"#,
            state.bytes
        ),
        r#"cart_jetstream_stream_max_bytes{stream="CART_EVENTS"} 1048576"#.to_owned(),
        r#"cart_jetstream_stream_max_bytes{stream="KV_CART_SNAPSHOTS"} -1"#.to_owned(),
        format!(r#"cart_jetstream_consumer_num_pending{{stream="CART_EVENTS",consumer="{durable}"}} 3"#),
        format!(r#"cart_jetstream_consumer_num_ack_pending{{stream="CART_EVENTS",consumer="{durable}"}} 2"#),
        r#"cart_jetstream_consumer_num_pending{stream="WORKFLOW_COMMANDS",consumer="runner-push"} 0"#
            .to_owned(),
    ] {
        assert!(text.contains(&line), "no {line} in\n{text}");
    }
    assert!(
        !text.contains("cart_jetstream_stats_errors_total"),
        "{text}"
    );
}

#[tokio::test]
async fn a_read_that_fails_is_counted_and_the_rest_is_still_read() {
    let Some((nats, _admin)) = server(-1).await else {
        return;
    };
    // The gateway may read stream info but not list consumers; MISSING does not exist.
    let js = js_as(&nats, "gateway", Duration::from_millis(500)).await;
    let streams = vec![CART_EVENTS_STREAM.to_owned(), "MISSING".to_owned()];
    let snapshot = JetStreamStats::of(js, streams).read().await;

    assert_eq!(snapshot.streams.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot.streams[0].stream, CART_EVENTS_STREAM);
    assert_eq!(snapshot.streams[0].max_bytes, -1, "no cap of its own");
    let failed: Vec<(&str, &str)> = snapshot
        .failures
        .iter()
        .map(|f| (f.stream.as_str(), f.op))
        .collect();
    assert_eq!(
        failed,
        [
            (CART_EVENTS_STREAM, "consumer list"),
            ("MISSING", "stream info")
        ],
        "{:?}",
        snapshot.failures
    );

    let text = rendered(&snapshot, 2);
    for line in [
        r#"cart_jetstream_stream_messages{stream="CART_EVENTS"} 0"#,
        r#"cart_jetstream_stats_errors_total{stream="CART_EVENTS"} 2"#,
        r#"cart_jetstream_stats_errors_total{stream="MISSING"} 2"#,
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
}
