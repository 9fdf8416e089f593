//! Dead letters with more than one projection (`GATEWAY_PROJECTION_ADDR=a,b`): each projection
//! keeps its own (its database), so a list and a replay name one (`?projection=`, default the
//! first) and never move on to another, whose ids mean other messages. Stand-in projections
//! (in-process `QueryService` gRPC servers) behind the gateway's router; no NATS needed.

use crate::common;

use std::sync::{Arc, Mutex};

use gateway::Config;
use proto::projection::v1 as pb;
use proto::projection::v1::query_service_server::{QueryService, QueryServiceServer};
use serde_json::{Value, json};
use tonic::{Response, Status};

const ADMIN: &str = common::ADMIN_TOKEN;

/// A projection with one dead letter, whose id is `id`; it records the ids replayed.
#[derive(Clone)]
struct StandIn {
    id: u64,
    replayed: Arc<Mutex<Vec<u64>>>,
}

impl StandIn {
    fn new(id: u64) -> Self {
        Self {
            id,
            replayed: Arc::default(),
        }
    }

    fn replayed(&self) -> Vec<u64> {
        self.replayed.lock().unwrap().clone()
    }
}

fn unused<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not used here"))
}

#[tonic::async_trait]
impl QueryService for StandIn {
    async fn get_cart(
        &self,
        _: tonic::Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::CartRecord>, Status> {
        unused()
    }

    async fn list_carts(
        &self,
        _: tonic::Request<pb::ListCartsRequest>,
    ) -> Result<Response<pb::ListCartsResponse>, Status> {
        unused()
    }

    async fn list_orders(
        &self,
        _: tonic::Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        unused()
    }

    async fn abandoned_carts(
        &self,
        _: tonic::Request<pb::AbandonedCartsRequest>,
    ) -> Result<Response<pb::ListCartsResponse>, Status> {
        unused()
    }

    async fn sku_demand(
        &self,
        _: tonic::Request<pb::SkuDemandRequest>,
    ) -> Result<Response<pb::SkuDemandResponse>, Status> {
        unused()
    }

    async fn list_dead_letters(
        &self,
        _: tonic::Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: vec![pb::DeadLetter {
                id: self.id,
                consumer: "projection-main".into(),
                ..Default::default()
            }],
        }))
    }

    async fn replay_dead_letter(
        &self,
        req: tonic::Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        let id = req.into_inner().id;
        self.replayed.lock().unwrap().push(id);
        if id != self.id {
            return Err(Status::not_found(format!("no dead letter {id}")));
        }
        Ok(Response::new(pb::ReplayDeadLetterResponse {
            applied: true,
            error: String::new(),
        }))
    }

    async fn status(
        &self,
        _: tonic::Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        unused()
    }
}

/// `projection` on a free port, until the guard is dropped.
async fn serve(projection: StandIn) -> (String, tokio_util::sync::DropGuard) {
    common::serve_grpc(
        tonic::transport::Server::builder().add_service(QueryServiceServer::new(projection)),
    )
    .await
}

async fn admin(app: &axum::Router, method: &str, path: &str) -> (u16, Value) {
    common::admin_json(app, method, path).await
}

#[tokio::test]
async fn a_list_and_a_replay_name_the_same_projection() {
    let (a, b) = (StandIn::new(1), StandIn::new(2));
    let (a_addr, _stop_a) = serve(a.clone()).await;
    let (b_addr, _stop_b) = serve(b.clone()).await;
    let app = gateway::app(common::offline_state(Config {
        projection_addr: format!("{a_addr},{b_addr}"),
        admin_token: ADMIN.into(),
        client_rate_per_sec: 0,
        ..Config::default()
    }));

    // Without a name: the first projection's dead letters, and whose they are.
    let (status, list) = admin(&app, "GET", "/admin/dead-letters").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        (
            &list["projection"],
            &list["projections"],
            &list["deadLetters"][0]["id"]
        ),
        (&json!(a_addr), &json!([a_addr, b_addr]), &json!(1)),
        "{list}"
    );
    let (status, list) = admin(
        &app,
        "GET",
        &format!("/admin/dead-letters?projection={b_addr}"),
    )
    .await;
    assert_eq!(
        (status, &list["projection"], &list["deadLetters"][0]["id"]),
        (200, &json!(b_addr), &json!(2)),
        "{list}"
    );

    // The replay of b's dead letter goes to b, and to no other.
    let path = format!("/admin/dead-letters/2/replay?projection={b_addr}");
    let (status, out) = admin(&app, "POST", &path).await;
    assert_eq!((status, &out["applied"]), (200, &json!(true)), "{out}");
    assert_eq!((a.replayed(), b.replayed()), (vec![], vec![2]));
    // Without a name it goes to the first, which knows no dead letter 2.
    let (status, out) = admin(&app, "POST", "/admin/dead-letters/2/replay").await;
    assert_eq!((status, &out["code"]), (404, &json!("not_found")), "{out}");
    assert_eq!((a.replayed(), b.replayed()), (vec![2], vec![2]));

    // A projection that is not configured is refused before anything is called.
    for (method, path) in [
        ("GET", "/admin/dead-letters?projection=127.0.0.2:1"),
        (
            "POST",
            "/admin/dead-letters/1/replay?projection=127.0.0.2:1",
        ),
    ] {
        common::assert_unknown_address(&admin(&app, method, path).await, &a_addr, "127.0.0.2");
    }
    assert_eq!((a.replayed(), b.replayed()), (vec![2], vec![2]));
}

#[tokio::test]
async fn a_list_does_not_move_on_to_another_projection() {
    // The first projection is down: its dead letters are not another's.
    let down = format!("127.0.0.1:{}", tests::processes::free_ports(1)[0]);
    let b = StandIn::new(2);
    let (b_addr, _stop) = serve(b).await;
    let app = gateway::app(common::offline_state(Config {
        projection_addr: format!("{down},{b_addr}"),
        admin_token: ADMIN.into(),
        client_rate_per_sec: 0,
        service_timeout_ms: 500,
        ..Config::default()
    }));
    let (status, body) = admin(&app, "GET", "/admin/dead-letters").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = admin(
        &app,
        "GET",
        &format!("/admin/dead-letters?projection={b_addr}"),
    )
    .await;
    assert_eq!(
        (status, &body["projection"]),
        (200, &json!(b_addr)),
        "{body}"
    );
}
