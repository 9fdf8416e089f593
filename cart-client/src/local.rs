//! An aggregate node in the caller's own process (`cart-node`: a gateway and an aggregate in
//! one process). `Execute` for a cart that node owns is handed to it directly: no protobuf
//! encoding, HTTP/2 stream or socket between the two, and the same admission, authorisation
//! and command path as a call over gRPC. Every other call, and every cart another node owns,
//! goes over gRPC as before.

use std::pin::Pin;
use std::time::Duration;

use proto::cart::v1 as pb;
use shared::headers::CallMetadata;
use tonic::Status;

/// What an `Execute` handed to a [`LocalNode`] returns: what the call over gRPC would.
pub type LocalReply = Pin<Box<dyn Future<Output = Result<pb::ExecuteResponse, Status>> + Send>>;

/// An aggregate node in this process, reachable without the network.
pub trait LocalNode: Send + Sync + 'static {
    /// The address the node advertises in `CART_NODES`: calls routed there are its own.
    fn addr(&self) -> &str;

    /// One `Execute` with the metadata and deadline a call on the node's `ExecuteStream` would
    /// carry (the same [`CallMetadata`]); its result is what that call would return.
    fn execute(
        &self,
        metadata: CallMetadata,
        timeout: Option<Duration>,
        request: pb::ExecuteRequest,
    ) -> LocalReply;
}
