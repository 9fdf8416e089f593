//! Checkout reads with more than one runner address (`GATEWAY_RUNNER_ADDR=a,b`): a runner that
//! refuses connections or is frozen (accepts, never answers, as a stopped process does) is
//! passed over for the next, later reads start at the one that answered, and they move back
//! when it goes away. Stand-in runners (in-process `CheckoutQuery` gRPC servers on free ports)
//! behind the gateway's router; no NATS needed.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use gateway::Config;
use http::Request;
use proto::runner::admin::v1 as rpb;
use proto::runner::admin::v1::checkout_query_server::{CheckoutQuery, CheckoutQueryServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

/// A runner that answers every confirmation with an order naming itself.
#[derive(Clone)]
struct StandIn {
    name: &'static str,
    calls: Arc<AtomicU32>,
}

impl StandIn {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl CheckoutQuery for StandIn {
    async fn get_checkout(
        &self,
        _: tonic::Request<rpb::GetCheckoutRequest>,
    ) -> Result<Response<rpb::CheckoutRecord>, Status> {
        Err(Status::unimplemented("not used here"))
    }

    async fn get_confirmation(
        &self,
        req: tonic::Request<rpb::GetConfirmationRequest>,
    ) -> Result<Response<rpb::ProviderOrder>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(rpb::ProviderOrder {
            order_id: req.into_inner().order_id,
            status: "checkout_complete".into(),
            html_snippet: self.name.into(),
            ..Default::default()
        }))
    }
}

/// A stand-in serving until stopped.
struct Serving {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Serving {
    /// Stops it and waits until its connections are closed and its port is free.
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// `runner` served on `listener`.
fn serve(listener: TcpListener, runner: StandIn) -> Serving {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CheckoutQueryServer::new(runner))
            .serve_with_incoming_shutdown(shared::serve::grpc_incoming(listener), async move {
                stopped.cancelled().await
            }),
    );
    Serving { stop, task }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

fn app(runner_addr: String) -> axum::Router {
    gateway::app(common::offline_state(Config {
        runner_addr,
        service_timeout_ms: 500,
        client_rate_per_sec: 0,
        ..Config::default()
    }))
}

/// `GET /cart/confirmation/o-1` for a cart the shopper has: the stand-in that answered.
async fn confirmation(app: &axum::Router) -> String {
    let req = Request::get("/cart/confirmation/o-1")
        .header("cookie", "cartid=c-failover")
        .body(Body::empty())
        .unwrap();
    let (status, body) = common::oneshot_json(app, req).await;
    assert_eq!(status, 200, "{body}");
    body["html_snippet"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn reads_pass_over_a_runner_that_refuses_and_stay_with_the_one_that_answered() {
    // Nothing listens on the first address yet.
    let (first, first_addr) = listener().await;
    drop(first);
    let (second, second_addr) = listener().await;
    let (a, b) = (StandIn::new("a"), StandIn::new("b"));
    let stop_b = serve(second, b.clone());
    let app = app(format!("{first_addr},{second_addr}"));
    assert_eq!(confirmation(&app).await, "b");

    // The first comes back: reads stay with the one that answered.
    let first = TcpListener::bind(&first_addr).await.unwrap();
    let _stop_a = serve(first, a.clone());
    for _ in 0..3 {
        assert_eq!(confirmation(&app).await, "b");
    }
    assert_eq!((a.calls(), b.calls()), (0, 4));

    // Until that one goes away.
    stop_b.stop().await;
    assert_eq!(confirmation(&app).await, "a");
    assert_eq!(confirmation(&app).await, "a");
    assert_eq!((a.calls(), b.calls()), (2, 4));
}

#[tokio::test]
async fn reads_pass_over_a_frozen_runner() {
    // Connections to the first are accepted by the kernel and never answered.
    let (_frozen, frozen_addr) = listener().await;
    let (live, live_addr) = listener().await;
    let b = StandIn::new("b");
    let _stop = serve(live, b.clone());
    let app = app(format!("{frozen_addr},{live_addr}"));
    assert_eq!(confirmation(&app).await, "b");
    assert_eq!(confirmation(&app).await, "b");
    assert_eq!(b.calls(), 2);
}

#[tokio::test]
async fn runner_admin_without_a_runner_named_acts_on_the_first_address_only() {
    let (first, first_addr) = listener().await;
    drop(first);
    let (second, second_addr) = listener().await;
    let _stop = serve(second, StandIn::new("b"));
    let app = gateway::app(common::offline_state(Config {
        runner_addr: format!("{first_addr},{second_addr}"),
        admin_token: "admin-secret".into(),
        service_timeout_ms: 500,
        ..Config::default()
    }));
    let req = Request::get("/admin/runner/status")
        .header(http::header::AUTHORIZATION, "Bearer admin-secret")
        .body(Body::empty())
        .unwrap();
    // The first runner is down: a status of another runner would be a status of the wrong one.
    let (status, body) = common::oneshot_json(&app, req).await;
    assert_eq!(status, 503, "{body}");
}
