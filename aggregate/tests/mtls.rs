//! Service identity on gRPC: with `GRPC_TLS_*` the node accepts only clients with a
//! certificate from the CA, and each RPC checks who the certificate names: the gateway may
//! change carts but not record what the payment provider said; only the runner may; the
//! admin RPCs are for operators.

mod common;

use cart_domain::ids::CommandId;
use common::*;
use proto::cart::v1 as pb;
use proto::cart::v1::aggregate_admin_client::AggregateAdminClient;
use proto::cart::v1::cart_service_client::CartServiceClient;
use shared::ErrorCode;
use shared::grpc_tls::GrpcTls;
use shared::test_support::TestPki;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

fn tls(pki: &TestPki, name: &str) -> GrpcTls {
    let files = pki.issue(name);
    GrpcTls {
        ca_file: pki.ca_file().display().to_string(),
        cert_file: files.cert.display().to_string(),
        key_file: files.key.display().to_string(),
    }
}

async fn channel_as(pki: &TestPki, name: &str, addr: std::net::SocketAddr) -> Channel {
    tls(pki, name)
        .endpoint(&addr.to_string(), "aggregate")
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

/// Starts node `node_id` serving gRPC over TLS with a certificate from a new CA.
async fn tls_node(env: &Env, node_id: &str) -> (TestPki, aggregate::Running) {
    let pki = TestPki::new();
    let mut config = env.config(node_id, false);
    config.grpc_tls = tls(&pki, "aggregate");
    let node = aggregate::start(config).await.expect("starts with TLS");
    (pki, node)
}

/// A provider outcome only the runner may record.
fn forged_failure() -> cart_domain::Command {
    cart_domain::Command::FailCheckout {
        attempt_id: "attempt-1".into(),
        code: "refused".into(),
        reason: "forged".into(),
    }
}

fn code(status: &tonic::Status) -> ErrorCode {
    shared::ApiError::from_status(status).code
}

#[tokio::test]
async fn only_clients_with_a_certificate_get_in_and_each_rpc_checks_who_calls() {
    let Some(env) = env().await else { return };
    let (pki, node) = tls_node(&env, "tls-node").await;
    let addr = node.grpc_addr;

    // Plaintext: refused (the server speaks TLS only).
    let plain = CartServiceClient::connect(format!("http://{addr}")).await;
    if let Ok(mut plain) = plain {
        let r = plain
            .execute(exec("tls-cart", CommandId::new(), add("TEST-SKU-123", 1)))
            .await;
        assert!(r.is_err(), "a plaintext call was served");
    }
    // TLS without a client certificate: the handshake fails.
    let ca = Certificate::from_pem(std::fs::read(pki.ca_file()).unwrap());
    let no_cert = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("aggregate"),
        )
        .unwrap();
    match no_cert.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let r = CartServiceClient::new(channel)
                .execute(exec("tls-cart", CommandId::new(), add("TEST-SKU-123", 1)))
                .await;
            assert!(r.is_err(), "a client without a certificate was served");
        }
    }
    // A certificate from another CA: refused too.
    let stranger = TestPki::new();
    let foreign = GrpcTls {
        ca_file: pki.ca_file().display().to_string(),
        ..tls(&stranger, "gateway")
    };
    if let Ok(channel) = foreign
        .endpoint(&addr.to_string(), "aggregate")
        .unwrap()
        .connect()
        .await
    {
        let r = CartServiceClient::new(channel)
            .execute(exec("tls-cart", CommandId::new(), add("TEST-SKU-123", 1)))
            .await;
        assert!(r.is_err(), "a certificate from another CA was served");
    }
    assert!(
        env.messages("tls-cart").await.is_empty(),
        "nothing was appended"
    );

    // The gateway changes carts, but cannot record a provider outcome.
    let mut gateway = CartServiceClient::new(channel_as(&pki, "gateway", addr).await);
    gateway
        .execute(exec("tls-cart", CommandId::new(), add("TEST-SKU-123", 1)))
        .await
        .expect("the gateway adds an item");
    let denied = gateway
        .execute(exec("tls-cart", CommandId::new(), forged_failure()))
        .await
        .unwrap_err();
    assert_eq!(code(&denied), ErrorCode::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("runner"), "{denied:?}");
    // Not even inside a batch.
    let batch = pb::ExecuteBatchRequest {
        tenant: TENANT.into(),
        cart_id: "tls-cart".into(),
        command_id: CommandId::new().to_string(),
        expected_version: None,
        commands: vec![
            proto::convert::command_bytes(&add("TEST-SKU-456", 1)),
            proto::convert::command_bytes(&forged_failure()),
        ],
        request_fingerprint: String::new(),
    };
    let denied = gateway.execute_batch(request(batch)).await.unwrap_err();
    assert_eq!(code(&denied), ErrorCode::PermissionDenied, "{denied:?}");
    assert_eq!(
        env.messages("tls-cart").await.len(),
        1,
        "only the add was stored"
    );

    // The runner may: the command reaches the cart (which has no such checkout).
    let mut runner = CartServiceClient::new(channel_as(&pki, "runner", addr).await);
    let answered = runner
        .execute(exec("tls-cart", CommandId::new(), forged_failure()))
        .await;
    if let Err(e) = &answered {
        assert_ne!(code(e), ErrorCode::PermissionDenied, "{e:?}");
    }

    // Admin RPCs: operators only.
    let mut as_gateway = AggregateAdminClient::new(channel_as(&pki, "gateway", addr).await);
    let denied = as_gateway.status(pb::StatusRequest {}).await.unwrap_err();
    assert_eq!(code(&denied), ErrorCode::PermissionDenied);
    let mut as_admin = AggregateAdminClient::new(channel_as(&pki, "admin", addr).await);
    as_admin
        .status(pb::StatusRequest {})
        .await
        .expect("an operator reads the status");
    node.drain().await.unwrap();
}

/// `ExecuteStream` checks callers as `Execute` does: the stream's certificate is the caller
/// of every call on it.
#[tokio::test]
async fn multiplexed_calls_are_checked_as_unary_ones() {
    let Some(env) = env().await else { return };
    let (pki, node) = tls_node(&env, "tls-mux-node").await;
    let addr = node.grpc_addr;
    let call = |cmd| {
        let r = exec("tls-mux-cart", CommandId::new(), cmd);
        let (md, _, body) = r.into_parts();
        (proto::multiplex::metadata_to_map(&md), body)
    };

    let gateway = cart_client::multiplex::Mux::new(channel_as(&pki, "gateway", addr).await);
    let (md, body) = call(add("TEST-SKU-123", 1));
    gateway
        .execute(md, None, body)
        .await
        .expect("the gateway adds an item over the stream");
    let metrics = metrics(&node).await;
    assert!(
        metrics.contains("cart_aggregate_execute_streams 1"),
        "the open stream is counted: {metrics}"
    );
    let (md, body) = call(forged_failure());
    let denied = gateway.execute(md, None, body).await.unwrap_err();
    assert_eq!(code(&denied), ErrorCode::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("runner"), "{denied:?}");

    // A service that may not call CartService at all is refused when it opens the stream.
    let admin = cart_client::multiplex::Mux::new(channel_as(&pki, "admin", addr).await);
    let (md, body) = call(add("TEST-SKU-123", 1));
    let denied = admin.execute(md, None, body).await.unwrap_err();
    assert_eq!(code(&denied), ErrorCode::PermissionDenied, "{denied:?}");
    assert_eq!(
        env.messages("tls-mux-cart").await.len(),
        1,
        "only the gateway's add was stored"
    );

    let runner = cart_client::multiplex::Mux::new(channel_as(&pki, "runner", addr).await);
    let (md, body) = call(forged_failure());
    if let Err(e) = runner.execute(md, None, body).await {
        assert_ne!(code(&e), ErrorCode::PermissionDenied, "{e:?}");
    }
    node.drain().await.unwrap();
}
