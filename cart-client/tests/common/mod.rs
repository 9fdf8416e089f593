//! A scripted `CartService` node (a real tonic server on loopback) for the client's tests.

#![allow(dead_code)] // each test file uses part of it

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cart_client::multiplex::Mux;
use futures::Stream;
use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_server::{CartService, CartServiceServer};
use shared::headers::CallMetadata;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How the scripted node treats each stream.
#[derive(Clone, Copy)]
pub enum Script {
    /// Read `n` calls, then answer them in reverse order (version = the call's
    /// expected_version, event type = its x-tenant-id metadata).
    Reverse(usize),
    /// The first stream: read `n` calls and end the stream unanswered. Later streams answer
    /// each call at once.
    DropFirst(usize),
    /// Read calls and never answer.
    Silent,
    /// Read `n` calls and end the stream with a bare transport status, as a node that dies
    /// mid-stream does.
    BreakAfter(usize),
    /// Answer each call with this error code at once.
    Fail(shared::ErrorCode),
    /// Answer each call at once.
    Answer,
    /// Read nothing until released, then answer each call at once, noting its expected
    /// version and the deadline it came with.
    Stalled,
}

#[derive(Clone)]
pub struct Node {
    pub script: Script,
    pub streams: Arc<AtomicUsize>,
    pub release: Arc<tokio::sync::Notify>,
    /// (expected version, timeout_ms) of each call read, in order.
    pub seen: Arc<std::sync::Mutex<Vec<(u64, u32)>>>,
}

/// The answer to `call`: version = its expected version, event types = its `x-tenant-id`
/// metadata, then the name of [`EARLIER_ATTEMPT_UNKNOWN`] when the call carries it.
fn answer(call: &pb::ExecuteCall) -> pb::ExecuteCallResult {
    let req = call.request.clone().unwrap_or_default();
    let mut event_types = vec![
        call.metadata
            .get("x-tenant-id")
            .cloned()
            .unwrap_or_default(),
    ];
    if call.metadata.contains_key(EARLIER_ATTEMPT_UNKNOWN) {
        event_types.push(EARLIER_ATTEMPT_UNKNOWN.to_owned());
    }
    proto::multiplex::result(
        call.call_id,
        Ok(pb::ExecuteResponse {
            version: req.expected_version.unwrap_or(0),
            event_types,
            ..Default::default()
        }),
    )
}

pub use shared::headers::EARLIER_ATTEMPT_UNKNOWN;

type Results = Pin<Box<dyn Stream<Item = Result<pb::ExecuteCallResult, Status>> + Send>>;

#[tonic::async_trait]
impl CartService for Node {
    async fn execute(
        &self,
        _: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        Err(Status::unimplemented(
            "unary Execute is not used by the multiplexer",
        ))
    }
    async fn execute_batch(
        &self,
        _: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        match self.script {
            // The connection reset under the call: the transport's status, no code of ours.
            Script::BreakAfter(_) => return Err(Status::unknown("connection reset")),
            Script::Fail(code) => {
                return Err(shared::ApiError::new(code, format!("scripted {code}")).to_status());
            }
            _ => {}
        }
        Err(Status::unimplemented("not scripted"))
    }
    async fn get_cart(
        &self,
        _: Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::CartSnapshot>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    type WatchCartStream = Pin<Box<dyn Stream<Item = Result<pb::CartSnapshot, Status>> + Send>>;
    async fn watch_cart(
        &self,
        _: Request<pb::WatchCartRequest>,
    ) -> Result<Response<Self::WatchCartStream>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
    type ExecuteStreamStream = Results;
    async fn execute_stream(
        &self,
        req: Request<Streaming<pb::ExecuteCall>>,
    ) -> Result<Response<Results>, Status> {
        let nth = self.streams.fetch_add(1, Ordering::SeqCst);
        let script = self.script;
        let (release, seen) = (self.release.clone(), self.seen.clone());
        let mut calls = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            match script {
                Script::Reverse(n) => loop {
                    let mut batch = Vec::new();
                    while batch.len() < n {
                        match calls.message().await {
                            Ok(Some(c)) => batch.push(c),
                            _ => return,
                        }
                    }
                    for c in batch.iter().rev() {
                        if tx.send(Ok(answer(c))).await.is_err() {
                            return;
                        }
                    }
                },
                Script::DropFirst(n) if nth == 0 => {
                    for _ in 0..n {
                        if !matches!(calls.message().await, Ok(Some(_))) {
                            return;
                        }
                    }
                    // Returning drops `tx`: the node ends the stream.
                }
                Script::DropFirst(_) => {
                    while let Ok(Some(c)) = calls.message().await {
                        if tx.send(Ok(answer(&c))).await.is_err() {
                            return;
                        }
                    }
                }
                Script::Silent => {
                    let _hold = tx;
                    while let Ok(Some(_)) = calls.message().await {}
                }
                Script::BreakAfter(n) => {
                    for _ in 0..n {
                        if !matches!(calls.message().await, Ok(Some(_))) {
                            return;
                        }
                    }
                    let _ = tx.send(Err(Status::unknown("connection reset"))).await;
                }
                Script::Answer => {
                    while let Ok(Some(c)) = calls.message().await {
                        if tx.send(Ok(answer(&c))).await.is_err() {
                            return;
                        }
                    }
                }
                Script::Fail(code) => {
                    while let Ok(Some(c)) = calls.message().await {
                        let error = shared::ApiError::new(code, format!("scripted {code}"));
                        let result = proto::multiplex::result(c.call_id, Err(error.to_status()));
                        if tx.send(Ok(result)).await.is_err() {
                            return;
                        }
                    }
                }
                Script::Stalled => {
                    release.notified().await;
                    while let Ok(Some(c)) = calls.message().await {
                        let version = c.request.as_ref().and_then(|r| r.expected_version);
                        seen.lock()
                            .unwrap()
                            .push((version.unwrap_or(0), c.timeout_ms));
                        if tx.send(Ok(answer(&c))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Node {
    pub fn new(script: Script) -> Self {
        Self {
            script,
            streams: Arc::default(),
            release: Arc::default(),
            seen: Arc::default(),
        }
    }
}

/// A scripted node on a loopback port, and a multiplexer connected to it.
pub async fn node(script: Script) -> (Arc<Mux>, Arc<AtomicUsize>) {
    let node = Node::new(script);
    let streams = node.streams.clone();
    (serve(node).await, streams)
}

pub async fn serve(node: Node) -> Arc<Mux> {
    let (mux, _) = serve_at(node).await;
    mux
}

/// [`serve`], and the node's address.
pub async fn serve_at(node: Node) -> (Arc<Mux>, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = CartServiceServer::new(node);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    (Arc::new(Mux::new(channel)), addr)
}

pub fn meta(tenant: &str) -> CallMetadata {
    CallMetadata::from([("x-tenant-id".to_owned(), tenant.to_owned())])
}

pub fn request(n: u64) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        expected_version: Some(n),
        ..Default::default()
    }
}
