//! This node as the gateway in its own process sees it (`cart-node`): `Execute` handed over
//! without the network ([`cart_client::LocalNode`]). As a call read from an `ExecuteStream`,
//! each is admitted and authorised (for the gateway's identity), bounded in number, and decided
//! in a task of its own: a client that hangs up does not cut a decision short between its
//! append and its commit, and a panic is an unknown outcome, not the gateway's 500.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cart_client::local::{LocalNode, LocalReply};
use proto::cart::v1 as pb;
use shared::ApiError;
use shared::grpc_tls::Caller;
use shared::grpc_tls::names::GATEWAY;
use shared::headers::CallMetadata;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::grpc::CartGrpc;
use crate::metrics as m;

/// Calls decided at once: what a gateway's connections to a node admit over gRPC (four
/// streams of [`crate::multiplex::MAX_IN_FLIGHT`]).
pub const MAX_IN_FLIGHT: usize = 4 * crate::multiplex::MAX_IN_FLIGHT;

/// The node's cart service, reachable in-process at the address it advertises.
pub struct InProcess {
    svc: CartGrpc,
    addr: String,
    /// Cancelled when the node has stopped serving: calls then go to other nodes.
    stop: CancellationToken,
    permits: Arc<Semaphore>,
    /// Calls handed over (this node's own count; the metric is the process's).
    handed_over: AtomicU64,
    calls: metrics::Counter,
}

impl InProcess {
    pub(crate) fn new(svc: CartGrpc, addr: String, stop: CancellationToken) -> Self {
        Self {
            svc,
            addr,
            stop,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            handed_over: AtomicU64::new(0),
            calls: metrics::counter!(m::IN_PROCESS_CALLS),
        }
    }

    /// Calls handed over to this node so far, refused ones included.
    pub fn calls(&self) -> u64 {
        self.handed_over.load(Ordering::Relaxed)
    }
}

impl LocalNode for InProcess {
    fn addr(&self) -> &str {
        &self.addr
    }

    fn execute(
        &self,
        metadata: CallMetadata,
        timeout: Option<Duration>,
        request: pb::ExecuteRequest,
    ) -> LocalReply {
        if self.stop.is_cancelled() {
            // As a connection to a stopped node is refused: the caller tries another node.
            let stopped = ApiError::unavailable("the aggregate node in this process has stopped");
            return Box::pin(std::future::ready(Err(stopped.to_status())));
        }
        self.handed_over.fetch_add(1, Ordering::Relaxed);
        self.calls.increment(1);
        let (svc, permits) = (self.svc.clone(), self.permits.clone());
        let deadline = timeout.map(|t| Instant::now() + t);
        Box::pin(async move {
            let permit = admit(permits, timeout).await?;
            // What is left of the deadline after waiting for the permit, as a call leaves its
            // stream's queue with what is left of its own.
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let execute = move |caller, md, req| svc.execute_owned(caller, md, req);
            let decided = tokio::spawn(async move {
                let _permit = permit;
                crate::multiplex::decide(
                    execute,
                    Caller::in_process(GATEWAY),
                    metadata,
                    timeout,
                    request,
                )
                .await
            });
            decided.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "an in-process command's task failed");
                Err(
                    ApiError::outcome_unknown("the node failed while deciding the command")
                        .to_status(),
                )
            })
        })
    }
}

/// A permit to decide one more call, waiting at most `timeout` for one to free up. Without
/// one the call is refused as `unavailable`: it was not decided, so the caller may send it to
/// another node (as a call still queued for a stream when its deadline passes).
async fn admit(
    permits: Arc<Semaphore>,
    timeout: Option<Duration>,
) -> Result<OwnedSemaphorePermit, Status> {
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Ok(permit);
    }
    let waited = match timeout {
        Some(t) => tokio::time::timeout(t, permits.acquire_owned()).await,
        None => Ok(permits.acquire_owned().await),
    };
    waited.ok().and_then(Result::ok).ok_or_else(|| {
        ApiError::unavailable(format!(
            "the aggregate node in this process has {MAX_IN_FLIGHT} commands in flight"
        ))
        .to_status()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the bound, a call waits for a permit until its deadline, then is refused as
    /// `unavailable` (never decided, so safe to send elsewhere); a permit freed in time admits it.
    #[tokio::test]
    async fn a_call_past_the_bound_waits_until_its_deadline_then_goes_elsewhere() {
        let permits = Arc::new(Semaphore::new(1));
        let held = admit(permits.clone(), None).await.unwrap();
        let refused = admit(permits.clone(), Some(Duration::from_millis(20)))
            .await
            .unwrap_err();
        let e = ApiError::from_upstream("aggregate node", &refused);
        assert_eq!(e.code, shared::ErrorCode::Unavailable, "{refused:?}");
        let waiting = tokio::spawn(admit(permits.clone(), Some(Duration::from_secs(30))));
        drop(held);
        assert!(
            waiting.await.unwrap().is_ok(),
            "admitted once the permit was freed"
        );
    }
}
