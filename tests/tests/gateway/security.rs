//! The storefront edge's security controls, answered by the gateway itself: CORS for the
//! allowed origins only, the legacy state-changing GET that can be turned off, and an audit
//! line for every admin request.

use crate::common;

use axum::body::Body;
use common::offline_state;
use http::{Method, Request, Response, StatusCode, header};
use tower::ServiceExt;

const SHOP: &str = "https://shop.example.com";

fn app(tune: impl FnOnce(&mut gateway::Config)) -> axum::Router {
    let mut cfg = gateway::Config::default();
    tune(&mut cfg);
    gateway::app::app(offline_state(cfg))
}

/// The reply of `app` to `req` sent without a body.
async fn send(app: &axum::Router, req: http::request::Builder) -> Response<Body> {
    let req = req.body(Body::empty()).unwrap();
    app.clone().oneshot(req).await.unwrap()
}

fn preflight(origin: &str) -> http::request::Builder {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/cart/")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "content-type,idempotency-key",
        )
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_with_credentials_and_another_is_not() {
    let app = app(|c| c.cors_origins = format!("{SHOP}, https://beta.example.com:8443"));
    let resp = send(&app, preflight(SHOP)).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let headers = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
    assert!(headers.contains("idempotency-key"), "{headers}");

    for other in [
        "https://evil.example.com",
        "https://shop.example.com.evil.net",
        "null",
    ] {
        let resp = send(&app, preflight(other)).await;
        assert!(
            !resp
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
            "{other} was allowed"
        );
    }

    // A simple cross-origin request: the response names the origin and exposes the headers
    // a client reads.
    let resp = send(
        &app,
        Request::get("/openapi.json").header(header::ORIGIN, SHOP),
    )
    .await;
    assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    let exposed = resp.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap();
    assert!(
        exposed.contains("etag") && exposed.contains("x-correlation-id"),
        "{exposed}"
    );
}

#[tokio::test]
async fn without_allowed_origins_no_cors_headers_are_sent() {
    let resp = send(&app(|_| {}), preflight(SHOP)).await;
    assert!(
        !resp
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[test]
fn origins_that_are_not_plain_origins_stop_the_gateway_with_the_field_named() {
    for bad in [
        "*",
        "https://*.example.com",
        "shop.example.com",
        "https://shop.example.com/",
        "ftp://shop.example.com",
        "https://",
        "https://Shop.example.com",
        "https://shop.example.com:443",
        "https://user@shop.example.com",
    ] {
        let cfg = gateway::Config {
            cors_origins: format!("{SHOP},{bad}"),
            ..Default::default()
        };
        let err = cfg.cors_origins().expect_err(bad).to_string();
        assert!(err.contains("cors_origins"), "{bad}: {err}");
    }
    let long = format!("https://{}.example.com", "a".repeat(5000));
    let err = gateway::Config {
        cors_origins: long,
        ..Default::default()
    }
    .cors_origins()
    .unwrap_err()
    .to_string();
    assert!(
        err.len() < 400,
        "the 5 KB value is not echoed: {} bytes",
        err.len()
    );
}

#[tokio::test]
async fn the_legacy_get_add_can_be_turned_off_and_says_what_to_use() {
    let app = app(|c| c.legacy_get_add = false);
    let resp = send(&app, Request::get("/cart/add/TEST-SKU-123")).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    assert!(
        body["error"].as_str().unwrap().contains("POST /cart"),
        "{body}"
    );
}

/// What this thread logs from now on (JSON lines, INFO and up), until the guard goes.
fn json_logs() -> (
    shared::test_support::Captured,
    tracing::subscriber::DefaultGuard,
) {
    let captured = shared::test_support::Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// A path or method of many kilobytes reaches no log line whole: the request's span (whose
/// fields every line in it carries) records them bounded, as the audit line does.
#[tokio::test]
async fn a_huge_path_or_method_is_logged_bounded() {
    let (captured, _guard) = json_logs();

    let app = app(|c| c.admin_token = "s3cret-admin".into());
    let long = "A".repeat(10_000);
    let resp = send(&app, Request::get(format!("/admin/{long}"))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let method = http::Method::from_bytes(long.as_bytes()).unwrap();
    let req = Request::builder().method(method).uri("/admin/dead-letters");
    assert_ne!(send(&app, req).await.status(), StatusCode::OK);
    let log = captured.text();
    assert!(log.contains("audit"), "the requests were logged: {log}");
    assert!(
        !log.contains(&"A".repeat(300)),
        "a log line holds the client's value whole: {}",
        &log[..log.len().min(2_000)]
    );
}

#[tokio::test]
async fn every_admin_request_leaves_an_audit_line_without_the_token() {
    let (captured, _guard) = json_logs();

    let app = app(|c| c.admin_token = "s3cret-admin".into());
    for (i, token) in ["wrong-guess", "s3cret-admin"].into_iter().enumerate() {
        let req = Request::get("/admin/dead-letters?limit=5")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("x-request-id", format!("audit-{i}"));
        let resp = send(&app, req).await;
        // The right token reaches the (unreachable) projection: 503; the wrong one: 401.
        assert_ne!(resp.status(), StatusCode::OK);
    }
    // Refused before the token is looked at (no such method): not the admin token's doing.
    let req = Request::delete("/admin/dead-letters").header("x-request-id", "audit-2");
    let resp = send(&app, req).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A path no admin route has (a probe, a typo): 404, audited all the same.
    for (i, token) in ["", "s3cret-admin"].into_iter().enumerate() {
        let req = Request::post("/admin/drop-everything")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("x-request-id", format!("audit-{}", 3 + i));
        let resp = send(&app, req).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    // A shopper's request is not an admin action: no audit line.
    let resp = send(&app, Request::get("/cart/")).await;
    assert_ne!(resp.status(), StatusCode::NOT_FOUND);
    let log = captured.text();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "audit")
        .collect();
    assert_eq!(audit.len(), 5, "{log}");
    let denied = &audit[0]["fields"];
    assert_eq!(denied["who"], "unauthenticated");
    assert_eq!(denied["result"], "denied");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["action"], "/admin/dead-letters?limit=5");
    assert_eq!(denied["request_id"], "audit-0");
    let allowed = &audit[1]["fields"];
    assert_eq!(allowed["who"], "admin-token");
    assert_eq!(allowed["method"], "GET");
    assert_eq!(allowed["request_id"], "audit-1");
    let refused = &audit[2]["fields"];
    assert_eq!(refused["who"], "unauthenticated", "{refused}");
    assert_eq!(refused["status"], 405);
    for (probe, id) in audit[3..].iter().zip(["audit-3", "audit-4"]) {
        let probe = &probe["fields"];
        // No route, so no token was checked: nothing authorised it.
        assert_eq!(probe["who"], "unauthenticated", "{probe}");
        assert_eq!(probe["method"], "POST");
        assert_eq!(probe["action"], "/admin/drop-everything");
        assert_eq!(
            (probe["status"].as_u64(), probe["result"].as_str()),
            (Some(404), Some("failed"))
        );
        assert_eq!(probe["request_id"], id);
    }
    assert!(
        !log.contains("s3cret-admin"),
        "the token never appears: {log}"
    );
    assert!(!log.contains("wrong-guess"), "nor a wrong one");
}
