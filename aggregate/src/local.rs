//! This node as the gateway in its own process sees it (`cart-node`): `Execute` handed over
//! without the network ([`cart_client::LocalNode`]), admitted, authorised and decided as a call
//! read from an `ExecuteStream` is, for the gateway's identity.

use std::time::Duration;

use cart_client::local::{LocalNode, LocalReply};
use proto::cart::v1 as pb;
use shared::grpc_tls::Caller;
use shared::grpc_tls::names::GATEWAY;
use shared::headers::CallMetadata;
use tokio_util::sync::CancellationToken;

use crate::grpc::CartGrpc;
use crate::metrics as m;

/// The node's cart service, reachable in-process at the address it advertises.
pub struct InProcess {
    svc: CartGrpc,
    addr: String,
    /// Cancelled when the node has stopped serving: calls then go to other nodes.
    stop: CancellationToken,
    calls: metrics::Counter,
}

impl InProcess {
    pub(crate) fn new(svc: CartGrpc, addr: String, stop: CancellationToken) -> Self {
        Self {
            svc,
            addr,
            stop,
            calls: metrics::counter!(m::IN_PROCESS_CALLS),
        }
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
            let stopped =
                shared::ApiError::unavailable("the aggregate node in this process has stopped");
            return Box::pin(std::future::ready(Err(stopped.to_status())));
        }
        self.calls.increment(1);
        let svc = self.svc.clone();
        let execute = move |caller, md, req| svc.clone().execute_owned(caller, md, req);
        Box::pin(crate::multiplex::decide(
            execute,
            Caller::in_process(GATEWAY),
            metadata,
            timeout,
            request,
        ))
    }
}
