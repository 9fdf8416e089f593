//! deploy/nats/cluster.conf run for real, started the way a whole deployment starts: a service
//! that connects while its cluster has not formed yet (no JetStream meta leader, streams
//! without leaders) waits for it instead of exiting at its first JetStream call.

use std::time::Duration;

use shared::nats::{NatsConfig, NatsResourceSettings, ensure_all, ensure_all_within};
use shared::test_support::server_binary_or_skip;

use crate::common::root;
use crate::members::{FORMED, Members};

#[tokio::test]
async fn a_service_started_before_its_cluster_has_formed_waits_for_it() {
    let Some(bin) = server_binary_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = root().join("deploy/nats/cluster.conf");
    let mut members = Members::new(bin, conf, dir.path(), "127.0.0.1");
    // One member of three: it takes connections, but JetStream has no quorum.
    members.start(0);
    members.wait_accepting(0).await;
    let config = NatsConfig {
        url: format!("nats://127.0.0.1:{}", members.ports[0].client),
        name: "cluster-start-test".into(),
        user: "aggregate".into(),
        password: members.accounts.password("aggregate").into(),
        request_timeout_ms: 1_000,
        ..Default::default()
    };
    let client = shared::nats::connect(&config).await.unwrap();
    let js = shared::nats::jetstream(client, &config);
    let settings = NatsResourceSettings {
        replicas: 3,
        ..Default::default()
    };

    // Tried once, the lone member's answer is "not ready": worth another try, not a failure.
    let alone = ensure_all_within(&js, &settings, Duration::ZERO)
        .await
        .expect_err("no stream can be made without a quorum");
    assert!(alone.is_not_ready(), "{alone}");

    // Start-up goes on trying while the two other members come up and elect their leaders.
    let starting = tokio::spawn({
        let js = js.clone();
        async move { ensure_all(&js, &settings).await }
    });
    members.start(1);
    members.start(2);
    let resources = tokio::time::timeout(FORMED, starting)
        .await
        .expect("start-up ends once the cluster has formed")
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.path().display()));

    // What it made is the three-replica stream, and it takes an append.
    let mut events = resources.cart_events;
    let info = events.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let ack = js.publish("cart.events.t1.c1", "{}".into()).await.unwrap();
    assert_eq!(ack.await.unwrap().sequence, 1);
}
