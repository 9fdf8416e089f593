//! The routing client's attempts across nodes, against scripted nodes on loopback: what the
//! caller hears when every attempt fails, and which calls a node in the caller's own process
//! takes.

mod common;

use std::sync::Arc;
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

/// A node in the caller's process, at `addr`: answers with [`IN_PROCESS`] and the call's
/// tenant, or fails with `fail`.
struct Local {
    addr: String,
    fail: Option<ErrorCode>,
    calls: std::sync::atomic::AtomicUsize,
}

const IN_PROCESS: &str = "in-process";

impl cart_client::LocalNode for Local {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn execute(
        &self,
        metadata: shared::headers::CallMetadata,
        _timeout: Option<Duration>,
        _request: pb::ExecuteRequest,
    ) -> cart_client::local::LocalReply {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reply = match self.fail {
            Some(code) => Err(shared::ApiError::new(code, "scripted").to_status()),
            None => Ok(pb::ExecuteResponse {
                event_types: vec![
                    IN_PROCESS.to_owned(),
                    metadata.get("x-tenant-id").cloned().unwrap_or_default(),
                ],
                ..Default::default()
            }),
        };
        Box::pin(std::future::ready(reply))
    }
}

/// A client over a node whose address is the in-process node's (its gRPC server would refuse
/// every call) and a remote node, taken in turn; and the in-process node.
async fn client_with_local(fail: Option<ErrorCode>) -> (CartClient, Node, Arc<Local>) {
    let here = Node::new(Script::Fail(ErrorCode::PermissionDenied));
    let (_, here_addr) = serve_at(here.clone()).await;
    let (_, there_addr) = serve_at(Node::new(Script::Answer)).await;
    let local = Arc::new(Local {
        addr: here_addr.to_string(),
        fail,
        calls: Default::default(),
    });
    let cfg = ClientConfig {
        attempts: 2,
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let client = CartClient::new(
        cfg,
        None,
        vec![here_addr.to_string(), there_addr.to_string()],
    )
    .with_local(local.clone());
    (client, here, local)
}

/// `Execute` routed to the in-process node's address is handed to it: its gRPC server never
/// sees a stream. Calls routed elsewhere go over the network as before.
#[tokio::test]
async fn an_execute_routed_to_the_node_in_this_process_skips_the_network() {
    let ctx = RequestContext::new(shared::TenantId::parse("t").unwrap());
    let (client, here, local) = client_with_local(None).await;
    let mut answered = Vec::new();
    for _ in 0..4 {
        let r = client.execute(&ctx, add()).await.unwrap();
        answered.push(r.event_types);
    }
    let in_process = vec![IN_PROCESS.to_owned(), "t".to_owned()];
    let remote = vec!["t".to_owned()];
    assert_eq!(
        answered,
        [in_process.clone(), remote.clone(), in_process, remote],
        "the two addresses in turn"
    );
    assert_eq!(local.calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(here.streams.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// An in-process node that has stopped (`unavailable`) or timed out on the call: the next
/// attempt goes to another node over the network, marked when the outcome was unknown.
#[tokio::test]
async fn a_failed_in_process_attempt_goes_on_to_another_node() {
    let ctx = RequestContext::new(shared::TenantId::parse("t").unwrap());
    for (fail, marked) in [(ErrorCode::Unavailable, false), (ErrorCode::Timeout, true)] {
        let (client, _, local) = client_with_local(Some(fail)).await;
        let r = client.execute(&ctx, add()).await.unwrap();
        assert_eq!(local.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            r.event_types[0], "t",
            "answered remotely after {fail}: {r:?}"
        );
        assert_eq!(
            r.event_types.iter().any(|t| t == EARLIER_ATTEMPT_UNKNOWN),
            marked,
            "after {fail}: {r:?}"
        );
    }
}
