//! `CartService.ExecuteStream`, the node's side: each call read from the stream is decided in
//! a task of its own (exactly as a unary `Execute`) and answered on the stream by its call id.
//!
//! A unary call costs an HTTP/2 stream (HEADERS frames both ways, HPACK, stream state) and a
//! server task with the tower stack around it; on one stream a call is a length-prefixed
//! message each way, several per write.

use std::sync::Arc;
use std::time::Duration;

use proto::cart::v1 as pb;
use shared::grpc_tls::Caller;
use shared::headers::CallMetadata;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status, Streaming};
use tracing::Instrument;

use crate::metrics as m;

/// Calls of one stream being decided at once. At the limit the node stops reading the stream,
/// and HTTP/2 flow control holds the caller back.
pub const MAX_IN_FLIGHT: usize = 1024;

/// The results of one stream, in the order they are decided.
pub type Results = ReceiverStream<Result<pb::ExecuteCallResult, Status>>;

/// Serve `calls` until the caller closes the stream, it breaks, or the node stops
/// (`shutdown`), each with `execute` (what a unary `Execute` runs, for `caller`). Calls being
/// decided are still answered; calls not read yet are not, and the caller resends them (they
/// carry command ids).
pub fn serve<E, Fut>(
    execute: E,
    caller: Caller,
    mut calls: Streaming<pb::ExecuteCall>,
    shutdown: CancellationToken,
) -> Results
where
    E: FnOnce(Caller, CallMetadata, pb::ExecuteRequest) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Response<pb::ExecuteResponse>, Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    tokio::spawn(async move {
        let _open = shared::metrics::GaugeGuard::new(metrics::gauge!(m::EXECUTE_STREAMS));
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let call = tokio::select! {
                () = shutdown.cancelled() => break,
                next = calls.message() => match next {
                    Ok(Some(call)) => call,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "execute stream ended by the caller");
                        break;
                    }
                },
            };
            let (execute, caller, tx) = (execute.clone(), caller.clone(), tx.clone());
            tokio::spawn(async move {
                let call_id = call.call_id;
                let outcome = one_call(execute, caller, call).await;
                // A caller gone meanwhile has given up on the answer.
                let _ = tx
                    .send(Ok(proto::multiplex::result(call_id, outcome)))
                    .await;
                drop(permit);
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn one_call<E, Fut>(
    execute: E,
    caller: Caller,
    call: pb::ExecuteCall,
) -> Result<pb::ExecuteResponse, Status>
where
    E: FnOnce(Caller, CallMetadata, pb::ExecuteRequest) -> Fut,
    Fut: Future<Output = Result<Response<pb::ExecuteResponse>, Status>>,
{
    let Some(request) = call.request else {
        return Err(shared::ApiError::invalid("an ExecuteCall must carry a request").into());
    };
    // The metadata is read as the map it came in (as a unary call reads its `MetadataMap`).
    let metadata = shared::headers::lowercase_names(call.metadata);
    let timeout = (call.timeout_ms != 0).then(|| Duration::from_millis(call.timeout_ms.into()));
    decide(execute, caller, metadata, timeout, request).await
}

/// One `Execute` with `execute`, in its own span, cut short when `timeout` (what is left of
/// the caller's deadline) passes: a call read from a stream, or one handed over in-process
/// ([`crate::local`]).
pub(crate) async fn decide<E, Fut>(
    execute: E,
    caller: Caller,
    metadata: CallMetadata,
    timeout: Option<Duration>,
    request: pb::ExecuteRequest,
) -> Result<pb::ExecuteResponse, Status>
where
    E: FnOnce(Caller, CallMetadata, pb::ExecuteRequest) -> Fut,
    Fut: Future<Output = Result<Response<pb::ExecuteResponse>, Status>>,
{
    let span = shared::spans::stream_call_span("/cart.v1.CartService/Execute", &metadata);
    // Boxed: the decision's future is large, and the task spawned for the call would copy it
    // on every move (measured: ~5 % of the CPU in memmove).
    let run = Box::pin(execute(caller, metadata, request).instrument(span));
    let resp = match timeout {
        None => run.await?,
        // As tonic ends a unary call whose grpc-timeout passed, but saying what that means:
        // the command may have been appended before the deadline cut it short.
        Some(timeout) => tokio::time::timeout(timeout, run).await.map_err(|_| {
            shared::ApiError::outcome_unknown(
                "the node did not finish the command within its deadline",
            )
            .to_status()
        })??,
    };
    Ok(resp.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's own deadline cuts a command short, possibly after its append: the caller
    /// hears that the outcome is unknown (resent with the same id, never reported as
    /// "unreachable").
    #[tokio::test]
    async fn a_call_past_its_deadline_on_the_node_has_an_unknown_outcome() {
        let call = pb::ExecuteCall {
            call_id: 1,
            request: Some(pb::ExecuteRequest::default()),
            metadata: Default::default(),
            timeout_ms: 5,
        };
        let never = |_: Caller, _: CallMetadata, _: pb::ExecuteRequest| {
            std::future::pending::<Result<Response<pb::ExecuteResponse>, Status>>()
        };
        let plaintext = Caller::of(&tonic::Request::new(())).unwrap();
        let status = one_call(never, plaintext, call).await.unwrap_err();
        let e = shared::ApiError::from_upstream("aggregate node", &status);
        assert_eq!(e.code, shared::ErrorCode::Timeout, "{status:?}");
        assert!(e.message.contains("may have been applied"), "{e}");
    }
}
