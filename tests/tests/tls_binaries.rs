//! Every service binary starts against a NATS server that only speaks mutual TLS (each with its
//! own certificate from a CA made here), and its connection is TLS: the server's `/connz`
//! lists each one by name with its TLS version. Before one crypto provider was installed at
//! start-up, every binary panicked on its first TLS handshake.

use std::time::Duration;

use serde_json::Value;
use shared::test_support::{NatsServer, ServerTls, TestPki, wait_until};
use tests::processes::{Children, service_command};

const SERVICES: [&str; 4] = ["aggregate", "projection", "runner", "gateway"];

/// The TLS connections the server holds, by connection name.
async fn tls_connections(monitoring: &str) -> Vec<(String, String)> {
    let Ok(reply) = reqwest::get(format!("{monitoring}/connz?limit=1024")).await else {
        return Vec::new();
    };
    let Ok(connz) = reply.json::<Value>().await else {
        return Vec::new();
    };
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["tls_version"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_service_binary_starts_and_connects_over_mutual_tls() {
    let pki = TestPki::new();
    let Some(nats) = NatsServer::start_tls(ServerTls::from(&pki, true)).await else {
        return;
    };
    let monitoring = nats
        .monitoring_url()
        .expect("a TLS test server has monitoring");
    let work = tempfile::tempdir().unwrap();
    let mut running = Children::default();
    for service in SERVICES {
        let cert = pki.issue(service);
        let mut command = service_command(service);
        command
            .env("NATS_URL", nats.url())
            .env("NATS_NAME", format!("tls-{service}"))
            .env("NATS_TLS_REQUIRED", "true")
            .env("NATS_TLS_CA_FILE", pki.ca_file())
            .env("NATS_TLS_CERT_FILE", &cert.cert)
            .env("NATS_TLS_KEY_FILE", &cert.key)
            .env("AGGREGATE_GRPC_ADDR", "127.0.0.1:0")
            .env("AGGREGATE_HTTP_ADDR", "127.0.0.1:0")
            .env("PROJECTION_GRPC_ADDR", "127.0.0.1:0")
            .env("PROJECTION_HTTP_ADDR", "127.0.0.1:0")
            .env("PROJECTION_DB_PATH", work.path().join("projection.db"))
            .env("RUNNER_GRPC_ADDR", "127.0.0.1:0")
            .env("RUNNER_HTTP_ADDR", "127.0.0.1:0")
            .env("RUNNER_MOCK_PROVIDER_ADDR", "127.0.0.1:0")
            .env("GATEWAY_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info");
        running.spawn(service, work.path(), command);
    }

    let all_connected = wait_until(
        || async {
            let connections = tls_connections(&monitoring).await;
            SERVICES.iter().all(|service| {
                connections
                    .iter()
                    .any(|(name, tls)| *name == format!("tls-{service}") && !tls.is_empty())
            })
        },
        Duration::from_secs(60),
    )
    .await;
    let report = running.exited();
    assert!(
        report.is_empty(),
        "a service died on NATS over TLS:{report}"
    );
    if let Err(e) = all_connected {
        let seen = tls_connections(&monitoring).await;
        panic!("not every service connected over TLS ({e}); the server sees {seen:?}");
    }
}
