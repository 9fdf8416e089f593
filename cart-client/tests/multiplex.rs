//! The `ExecuteStream` multiplexer against a scripted node (a real tonic server on loopback):
//! answers reach the call they belong to whatever their order, a stream that ends fails the
//! calls waiting on it and the next call opens a new one, a node that never answers costs a
//! call its deadline, not a hang, and a call that queued past its deadline is never sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
enum Script {
    /// Read `n` calls, then answer them in reverse order (version = the call's
    /// expected_version, event type = its x-tenant-id metadata).
    Reverse(usize),
    /// The first stream: read `n` calls and end the stream unanswered. Later streams answer
    /// each call at once.
    DropFirst(usize),
    /// Read calls and never answer.
    Silent,
    /// Read nothing until released, then answer each call at once, noting its expected
    /// version and the deadline it came with.
    Stalled,
}

#[derive(Clone)]
struct Node {
    script: Script,
    streams: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
    /// (expected version, timeout_ms) of each call read, in order.
    seen: Arc<std::sync::Mutex<Vec<(u64, u32)>>>,
}

fn answer(call: &pb::ExecuteCall) -> pb::ExecuteCallResult {
    let req = call.request.clone().unwrap_or_default();
    proto::multiplex::result(
        call.call_id,
        Ok(pb::ExecuteResponse {
            version: req.expected_version.unwrap_or(0),
            event_types: vec![
                call.metadata
                    .get("x-tenant-id")
                    .cloned()
                    .unwrap_or_default(),
            ],
            ..Default::default()
        }),
    )
}

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

/// A scripted node on a loopback port, and a multiplexer connected to it.
async fn node(script: Script) -> (Arc<Mux>, Arc<AtomicUsize>) {
    let node = Node {
        script,
        streams: Arc::default(),
        release: Arc::default(),
        seen: Arc::default(),
    };
    let streams = node.streams.clone();
    (serve(node).await, streams)
}

async fn serve(node: Node) -> Arc<Mux> {
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
    Arc::new(Mux::new(channel))
}

fn meta(tenant: &str) -> CallMetadata {
    CallMetadata::from([("x-tenant-id".to_owned(), tenant.to_owned())])
}

fn request(n: u64) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        expected_version: Some(n),
        ..Default::default()
    }
}

#[tokio::test]
async fn answers_in_any_order_reach_the_call_they_belong_to() {
    const CALLS: u64 = 32;
    let (mux, streams) = node(Script::Reverse(CALLS as usize)).await;
    let calls = (0..CALLS).map(|i| {
        let mux = mux.clone();
        tokio::spawn(async move {
            let md = meta(&format!("tenant-{i}"));
            let resp = mux
                .execute(md, Some(Duration::from_secs(10)), request(i))
                .await
                .expect("answered");
            (i, resp)
        })
    });
    for call in futures::future::join_all(calls).await {
        let (i, resp) = call.unwrap();
        assert_eq!(resp.version, i, "call {i} got another call's answer");
        assert_eq!(
            resp.event_types,
            vec![format!("tenant-{i}")],
            "its metadata travelled"
        );
    }
    assert_eq!(
        streams.load(Ordering::SeqCst),
        1,
        "all calls shared one stream"
    );
    assert_eq!(mux.in_flight(), 0);
}

#[tokio::test]
async fn a_stream_that_ends_fails_its_waiting_calls_and_the_next_call_opens_another() {
    const CALLS: usize = 4;
    let (mux, streams) = node(Script::DropFirst(CALLS)).await;
    let waiting = (0..CALLS as u64).map(|i| {
        let mux = mux.clone();
        tokio::spawn(async move {
            mux.execute(meta("t"), Some(Duration::from_secs(30)), request(i))
                .await
        })
    });
    for r in futures::future::join_all(waiting).await {
        let status = r
            .unwrap()
            .expect_err("the node ended the stream unanswered");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        // The routing client resends on this code (to another node when there is one).
        let err = shared::ApiError::from_upstream("aggregate node", &status);
        assert_eq!(err.code, shared::ErrorCode::Unavailable);
    }
    let resp = mux
        .execute(meta("t"), Some(Duration::from_secs(10)), request(99))
        .await
        .expect("a new stream answers");
    assert_eq!(resp.version, 99);
    assert_eq!(streams.load(Ordering::SeqCst), 2);
    assert_eq!(mux.in_flight(), 0);
}

#[tokio::test]
async fn a_node_that_never_answers_costs_a_call_its_deadline() {
    let (mux, _) = node(Script::Silent).await;
    let started = std::time::Instant::now();
    let status = mux
        .execute(meta("t"), Some(Duration::from_millis(50)), request(1))
        .await
        .expect_err("no answer");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(mux.in_flight(), 0, "the call no longer waits");
    let err = shared::ApiError::from_upstream("aggregate node", &status);
    assert_eq!(err.code, shared::ErrorCode::Timeout);
}

#[tokio::test]
async fn a_call_that_queued_past_its_deadline_is_never_sent() {
    // Calls far larger than HTTP/2's windows (1 MiB by default): while the node reads
    // nothing, the later ones wait in the multiplexer's queue.
    const FILLERS: u64 = 64;
    const PROBE: u64 = 1_000;
    const MARKER: u64 = 2_000;
    let node = Node {
        script: Script::Stalled,
        streams: Arc::default(),
        release: Arc::default(),
        seen: Arc::default(),
    };
    let (release, seen) = (node.release.clone(), node.seen.clone());
    let mux = serve(node).await;
    let pad = CallMetadata::from([("pad".to_owned(), "x".repeat(64 * 1024))]);
    let fillers: Vec<_> = (0..FILLERS)
        .map(|i| {
            let (mux, pad) = (mux.clone(), pad.clone());
            tokio::spawn(async move {
                mux.execute(pad, Some(Duration::from_secs(30)), request(i))
                    .await
            })
        })
        .collect();
    // Each filler is queued in the same step that registers it.
    shared::test_support::wait_until(
        || async { mux.in_flight() == FILLERS as usize },
        Duration::from_secs(10),
    )
    .await
    .expect("the fillers are queued");
    let status = mux
        .execute(meta("t"), Some(Duration::from_millis(100)), request(PROBE))
        .await
        .expect_err("the node read nothing while the probe's deadline passed");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    release.notify_one();
    for f in futures::future::join_all(fillers).await {
        f.unwrap()
            .expect("a filler is answered once the node reads");
    }
    // Sent after the probe on the same stream: once it is answered, the node has read
    // everything the probe could have been sent with.
    let marker = mux
        .execute(meta("t"), Some(Duration::from_secs(30)), request(MARKER))
        .await
        .expect("answered");
    assert_eq!(marker.version, MARKER);
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|(v, _)| *v == PROBE),
        "the node was sent a call whose caller had already been told it timed out"
    );
    // The last filler waited in the queue for more than a second: it left with what was
    // left of its 30 s, which is the deadline the node enforces.
    let (_, last_timeout) = seen.iter().find(|(v, _)| *v == FILLERS - 1).unwrap();
    assert!(
        *last_timeout <= 29_000,
        "the last filler left with {last_timeout} ms of a 30 s deadline it had spent over 1 s of"
    );
}
