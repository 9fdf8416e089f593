//! The runner admin routes against a stand-in runner (an in-process `RunnerAdmin` gRPC server
//! whose drain takes a known time): a drain may outlast the gateway's service timeout by the
//! wait it asked for, and the admin token alone authorizes these routes even when API keys are
//! configured. No NATS needed: nothing here reaches an aggregate.

use crate::common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::Config;
use proto::runner::admin::v1 as rpb;
use proto::runner::admin::v1::runner_admin_server::{RunnerAdmin, RunnerAdminServer};
use serde_json::{Value, json};
use tonic::{Response, Status};

const ADMIN: &str = common::ADMIN_TOKEN;

/// A runner whose drain finishes its in-flight work after `drain_takes`.
#[derive(Clone, Default)]
struct FakeRunner {
    drain_takes: Duration,
    /// `wait_seconds` of every drain received.
    drains: Arc<Mutex<Vec<u32>>>,
    /// It holds the checkout lease (the active runner).
    lease_held: bool,
    /// Reloads received.
    reloads: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl RunnerAdmin for FakeRunner {
    async fn drain(
        &self,
        req: tonic::Request<rpb::DrainRequest>,
    ) -> Result<Response<rpb::DrainResponse>, Status> {
        self.drains.lock().unwrap().push(req.get_ref().wait_seconds);
        // The in-flight effects take this long to finish.
        tokio::time::sleep(self.drain_takes).await;
        Ok(Response::new(rpb::DrainResponse {
            draining: true,
            idle: true,
            in_flight: 0,
        }))
    }

    async fn status(
        &self,
        _: tonic::Request<rpb::StatusRequest>,
    ) -> Result<Response<rpb::StatusResponse>, Status> {
        Ok(Response::new(rpb::StatusResponse {
            in_flight: 2,
            provider_base_url: "http://provider.test".into(),
            lease_held: self.lease_held,
            ..Default::default()
        }))
    }

    async fn reload(
        &self,
        _: tonic::Request<rpb::ReloadRequest>,
    ) -> Result<Response<rpb::ReloadResponse>, Status> {
        let before = self.reloads.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(rpb::ReloadResponse {
            provider_base_url: "http://provider.test".into(),
            generation: 7 + before,
        }))
    }
}

/// The stand-in runner on a free port; stops when the returned guard is dropped.
async fn serve(runner: FakeRunner) -> (String, tokio_util::sync::DropGuard) {
    common::serve_grpc(
        tonic::transport::Server::builder().add_service(RunnerAdminServer::new(runner)),
    )
    .await
}

fn app(tune: impl FnOnce(&mut Config)) -> axum::Router {
    let mut cfg = Config {
        admin_token: ADMIN.into(),
        client_rate_per_sec: 0,
        ..Config::default()
    };
    tune(&mut cfg);
    gateway::app(common::offline_state(cfg))
}

/// An admin call with the admin token and nothing else (no API key, no tenant).
async fn admin(app: &axum::Router, method: &str, path: &str) -> (u16, Value) {
    common::admin_json(app, method, path).await
}

#[tokio::test]
async fn a_drain_may_take_its_wait_beyond_the_service_timeout() {
    let runner = FakeRunner {
        drain_takes: Duration::from_secs(1),
        ..FakeRunner::default()
    };
    let (addr, _stop) = serve(runner.clone()).await;
    // The runner needs 1 s to go idle: five times the service timeout, half the wait.
    let app = app(|c| {
        c.runner_addr = addr.clone();
        c.service_timeout_ms = 200;
    });
    let got = admin(&app, "POST", "/admin/runner/drain?waitSeconds=2").await;
    assert_eq!(
        got,
        (
            200,
            json!({"runner": addr, "draining": true, "idle": true, "inFlight": 0})
        )
    );
    assert_eq!(*runner.drains.lock().unwrap(), vec![2]);

    // Without a wait the service timeout still holds.
    let got = admin(&app, "POST", "/admin/runner/drain").await;
    assert_eq!(got.0, 504, "{}", got.1);
    assert_eq!(got.1["code"], "timeout", "{}", got.1);
}

#[tokio::test]
async fn the_admin_token_is_enough_when_api_keys_are_configured() {
    let (addr, _stop) = serve(FakeRunner::default()).await;
    let app = app(|c| {
        c.runner_addr = addr;
        c.api_keys = "key-a=shop-a".into();
    });
    let (status, body) = admin(&app, "GET", "/admin/runner/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["inFlight"], 2);
    let (status, body) = admin(&app, "POST", "/admin/runner/drain").await;
    assert_eq!(
        (status, body["draining"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let (status, body) = admin(&app, "POST", "/admin/runner/reload").await;
    assert_eq!(
        (status, body["generation"].clone()),
        (200, json!(7)),
        "{body}"
    );
}

#[tokio::test]
async fn each_runner_is_named_by_its_address_and_a_reload_reaches_every_one() {
    let standby = FakeRunner::default();
    let active = FakeRunner {
        lease_held: true,
        ..FakeRunner::default()
    };
    let (a, _stop_a) = serve(standby.clone()).await;
    let (b, _stop_b) = serve(active.clone()).await;
    let app = app(|c| c.runner_addr = format!("{a}, {b}"));

    // Without a name: the first; the status lists every runner and says which holds the lease.
    let (status, body) = admin(&app, "GET", "/admin/runner/status").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["runner"], &body["runners"], &body["leaseHeld"]),
        (&json!(a), &json!([a, b]), &json!(false)),
        "{body}"
    );
    let (status, body) = admin(&app, "GET", &format!("/admin/runner/status?runner={b}")).await;
    assert_eq!(
        (status, &body["runner"], &body["leaseHeld"]),
        (200, &json!(b), &json!(true)),
        "{body}"
    );

    // A drain reaches the runner named, and no other.
    let (status, body) = admin(&app, "POST", &format!("/admin/runner/drain?runner={b}")).await;
    assert_eq!((status, &body["runner"]), (200, &json!(b)), "{body}");
    assert_eq!(*active.drains.lock().unwrap(), vec![0]);
    assert!(standby.drains.lock().unwrap().is_empty());

    // A reload reaches every runner (a standby that takes over later must not keep the old
    // provider settings); named, only that one.
    let (status, body) = admin(&app, "POST", "/admin/runner/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["runners"],
        json!([
            {"runner": a, "providerBaseUrl": "http://provider.test", "generation": 7},
            {"runner": b, "providerBaseUrl": "http://provider.test", "generation": 7},
        ])
    );
    let (status, body) = admin(&app, "POST", &format!("/admin/runner/reload?runner={a}")).await;
    assert_eq!(
        (
            status,
            &body["runners"][0]["generation"],
            &body["generation"]
        ),
        (200, &json!(8), &json!(8)),
        "{body}"
    );
    assert_eq!(
        (
            standby.reloads.load(Ordering::SeqCst),
            active.reloads.load(Ordering::SeqCst)
        ),
        (2, 1)
    );
}

#[tokio::test]
async fn a_runner_that_is_not_configured_is_refused_without_calling_any() {
    let runner = FakeRunner::default();
    let (a, _stop) = serve(runner.clone()).await;
    let gateway = app(|c| c.runner_addr = a.clone());
    let long = "r".repeat(5_000);
    for named in ["127.0.0.2:1", "evil.example:443", long.as_str()] {
        for (method, path) in [
            ("GET", "/admin/runner/status"),
            ("POST", "/admin/runner/drain"),
            ("POST", "/admin/runner/reload"),
        ] {
            let got = admin(&gateway, method, &format!("{path}?runner={named}")).await;
            common::assert_unknown_address(&got, &a, named);
        }
    }
    // A misspelled parameter is refused, not read as "the default runner" (or a wait of 0).
    for (method, path) in [
        ("GET", format!("/admin/runner/status?runer={a}")),
        ("POST", format!("/admin/runner/drain?runer={a}")),
        ("POST", "/admin/runner/drain?wait_seconds=60".to_owned()),
        ("POST", format!("/admin/runner/reload?runnr={a}")),
    ] {
        let (status, body) = admin(&gateway, method, &path).await;
        assert_eq!(
            (status, &body["code"]),
            (400, &json!("invalid_argument")),
            "{path}: {body}"
        );
    }
    assert!(runner.drains.lock().unwrap().is_empty());
    assert_eq!(runner.reloads.load(Ordering::SeqCst), 0);

    // No runner configured: the routes are off, whatever is named.
    let off = app(|c| c.runner_addr = String::new());
    for path in [
        "/admin/runner/status",
        "/admin/runner/status?runner=127.0.0.2:1",
    ] {
        let (status, body) = admin(&off, "GET", path).await;
        assert_eq!(
            (status, &body["code"]),
            (501, &json!("unimplemented")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_reload_that_misses_a_runner_says_which_did_and_which_did_not() {
    let runner = FakeRunner::default();
    let (up, _stop) = serve(runner.clone()).await;
    // A port nothing listens on any more.
    // Below the ephemeral range: no other test's listener or connection takes it meanwhile.
    let down = format!("127.0.0.1:{}", tests::processes::free_ports(1)[0]);
    let app = app(|c| {
        c.runner_addr = format!("{down},{up}");
        c.service_timeout_ms = 500;
    });
    let (status, body) = admin(&app, "POST", "/admin/runner/reload").await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(&format!("not reloaded: {down}"))
            && message.contains(&format!("reloaded: [{up}]")),
        "{message}"
    );
    assert_eq!(runner.reloads.load(Ordering::SeqCst), 1);

    // One runner named: its own error, as for any other call.
    let (status, body) = admin(&app, "POST", &format!("/admin/runner/reload?runner={down}")).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body["error"].as_str().unwrap().contains("reloaded"),
        "{body}"
    );
}
