//! NATS over TLS with certificates from a CA made in the test: what every service's
//! connection does (`shared::nats::connect`, the one crypto provider installed by it), server
//! verification, and mutual TLS.

use std::time::Duration;

use shared::nats::{NatsConfig, connect, jetstream};
use shared::test_support::{NatsServer, ServerTls, TestPki};

fn config(nats: &NatsServer, pki: &TestPki) -> NatsConfig {
    NatsConfig {
        url: nats.url().to_owned(),
        name: "tls-test".into(),
        connect_timeout_ms: 2_000,
        tls_required: true,
        tls_ca_file: pki.ca_file().display().to_string(),
        ..Default::default()
    }
}

/// A round trip through JetStream on `config`'s connection.
async fn jetstream_works(config: &NatsConfig) {
    let client = connect(config).await.expect("connects over TLS");
    let js = jetstream(client, config);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TLS_CHECK".into(),
        subjects: vec!["tls.check".into()],
        ..Default::default()
    })
    .await
    .expect("stream over TLS");
    let ack = js
        .publish("tls.check", "over tls".into())
        .await
        .unwrap()
        .await
        .expect("publish ack over TLS");
    let stream = js.get_stream("TLS_CHECK").await.unwrap();
    let stored = stream.get_raw_message(ack.sequence).await.unwrap();
    assert_eq!(&stored.payload[..], b"over tls");
}

#[tokio::test]
async fn a_service_connection_speaks_tls_to_a_server_signed_by_its_ca() {
    let pki = TestPki::new();
    let Some(nats) = NatsServer::start_tls(ServerTls::from(&pki, false)).await else {
        return;
    };
    assert!(nats.url().starts_with("tls://"), "{}", nats.url());
    jetstream_works(&config(&nats, &pki)).await;

    // A server whose certificate another CA signed is not trusted.
    let other = TestPki::new();
    let mut wrong_ca = config(&nats, &pki);
    wrong_ca.tls_ca_file = other.ca_file().display().to_string();
    let err = tokio::time::timeout(Duration::from_secs(10), connect(&wrong_ca))
        .await
        .expect("fails fast")
        .expect_err("a server certificate from an unknown CA is refused");
    assert!(err.to_string().contains(nats.url()), "{err}");
}

#[tokio::test]
async fn with_mutual_tls_only_a_client_with_a_certificate_from_the_ca_gets_in() {
    let pki = TestPki::new();
    let Some(nats) = NatsServer::start_tls(ServerTls::from(&pki, true)).await else {
        return;
    };
    let mut with_cert = config(&nats, &pki);
    let aggregate = pki.issue("aggregate");
    with_cert.tls_cert_file = aggregate.cert.display().to_string();
    with_cert.tls_key_file = aggregate.key.display().to_string();
    jetstream_works(&with_cert).await;

    let without = config(&nats, &pki);
    let refused = tokio::time::timeout(Duration::from_secs(10), connect(&without))
        .await
        .expect("fails fast");
    assert!(refused.is_err(), "a client without a certificate got in");

    // A certificate the test CA did not sign.
    let stranger = TestPki::new().issue("stranger");
    let mut foreign = config(&nats, &pki);
    foreign.tls_cert_file = stranger.cert.display().to_string();
    foreign.tls_key_file = stranger.key.display().to_string();
    let refused = tokio::time::timeout(Duration::from_secs(10), connect(&foreign))
        .await
        .expect("fails fast");
    assert!(
        refused.is_err(),
        "a client certificate from another CA got in"
    );
}
