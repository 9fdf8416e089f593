//! The routing client's attempts across nodes, against scripted nodes on loopback: what the
//! caller hears when every attempt fails.

mod common;

use std::time::Duration;

use cart_client::{CartClient, ClientConfig};
use common::{EARLIER_ATTEMPT_UNKNOWN, Node, Script, serve_at};
use proto::cart::v1 as pb;
use shared::ErrorCode;
use shared::headers::RequestContext;

/// A client over `nodes` (no placement: tried in order), one attempt per node.
async fn client_of(scripts: &[Script]) -> CartClient {
    let mut addrs = Vec::new();
    for script in scripts {
        let (_, addr) = serve_at(Node::new(*script)).await;
        addrs.push(addr.to_string());
    }
    let cfg = ClientConfig {
        attempts: scripts.len() as u32,
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    CartClient::new(cfg, None, addrs)
}

fn add() -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        tenant: "t".into(),
        cart_id: "c1".into(),
        command_id: "6f1c1f5e-2b7a-4c33-9a55-5d3b0c6c8e11".into(),
        command: br#"{"type":"AddItem","sku":"TEST-SKU-123","quantity":1}"#.to_vec(),
        ..Default::default()
    }
}

/// The first node timed out on the command (it may have appended it); the next could not
/// take it. The caller must hear "may have been applied", not "unreachable": a storefront
/// resends an unreachable-refused add under a new command id, and it would apply twice.
#[tokio::test]
async fn an_unknown_outcome_is_what_the_caller_hears_when_a_later_attempt_fails() {
    let ctx = RequestContext::new(shared::TenantId::parse("t").unwrap());
    for later in [ErrorCode::Unavailable, ErrorCode::Draining] {
        let client = client_of(&[Script::Fail(ErrorCode::Timeout), Script::Fail(later)]).await;
        let err = client.execute(&ctx, add()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout, "then {later}: {err:?}");
    }
    // Without an unknown outcome the last failure is what the caller hears.
    let client = client_of(&[
        Script::Fail(ErrorCode::Unavailable),
        Script::Fail(ErrorCode::Unavailable),
    ])
    .await;
    let err = client.execute(&ctx, add()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
}

/// The attempt after one that timed out tells its node so (`EARLIER_ATTEMPT_UNKNOWN`): the
/// node that timed out may still decide the command, so a refusal must be stored with the
/// cart. An attempt after a node that was merely unavailable (never decided it) does not.
#[tokio::test]
async fn the_attempt_after_a_timeout_says_an_earlier_one_may_still_be_decided() {
    let ctx = RequestContext::new(shared::TenantId::parse("t").unwrap());
    let marked =
        |r: &pb::ExecuteResponse| r.event_types.iter().any(|t| t == EARLIER_ATTEMPT_UNKNOWN);
    let client = client_of(&[Script::Fail(ErrorCode::Timeout), Script::Answer]).await;
    let after_timeout = client.execute(&ctx, add()).await.unwrap();
    assert!(marked(&after_timeout), "{after_timeout:?}");
    for first in [ErrorCode::Unavailable, ErrorCode::Draining] {
        let client = client_of(&[Script::Fail(first), Script::Answer]).await;
        let answered = client.execute(&ctx, add()).await.unwrap();
        assert!(!marked(&answered), "after {first}: {answered:?}");
    }
}

/// A batch (a unary call) whose connection reset under it may have been decided: with the next
/// node unable to take it, the caller hears "may have been applied", not "unreachable".
#[tokio::test]
async fn a_batch_whose_connection_reset_has_an_unknown_outcome() {
    let ctx = RequestContext::new(shared::TenantId::parse("t").unwrap());
    let client = client_of(&[Script::BreakAfter(0), Script::Fail(ErrorCode::Unavailable)]).await;
    let batch = pb::ExecuteBatchRequest {
        tenant: "t".into(),
        cart_id: "c1".into(),
        command_id: "6f1c1f5e-2b7a-4c33-9a55-5d3b0c6c8e12".into(),
        ..Default::default()
    };
    let err = client.execute_batch(&ctx, batch).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Timeout, "{err:?}");
    assert!(err.message.contains("may have been applied"), "{err:?}");
}
