//! Tenants and API keys, the admin token, rate limits, request ids and the operational
//! endpoints, through the real stack.

use crate::common;

use common::*;
use serde_json::json;
use shared::headers::{CORRELATION_ID, REQUEST_ID, TENANT_ID, TRACEPARENT};

#[tokio::test]
async fn api_keys_decide_the_tenant() {
    let Some(stack) = stack_with(|c| c.api_keys = "k1=tenant-a,k2=tenant-b".into()).await else {
        return;
    };
    let http = reqwest::Client::new();
    let url = stack.url("/cart/byid/shared-cart");
    let post = |headers: &[(&str, &str)]| {
        let mut req = http.post(&url).json(&add_one());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        call(req)
    };

    for (headers, status, code, needle) in [
        (&[][..], 401, "unauthenticated", "x-api-key"),
        (
            &[("x-api-key", "stolen")][..],
            401,
            "unauthenticated",
            "not a known API key",
        ),
        (
            &[("x-api-key", "k1"), (TENANT_ID, "tenant-b")][..],
            403,
            "permission_denied",
            "tenant-b",
        ),
    ] {
        assert_error(&post(headers).await, status, code, needle);
    }

    let (status, reply) = post(&[("x-api-key", "k1"), (TENANT_ID, "tenant-a")]).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(stack.events("tenant-a", "shared-cart").await.len(), 1);
    // The same cart id is another cart for another tenant.
    let (status, other) = call(http.get(&url).header("x-api-key", "k2")).await;
    assert_eq!(status, 200);
    assert_eq!(other["items"], json!([]));
    assert!(stack.events("tenant-b", "shared-cart").await.is_empty());

    // Probes and the document need no key.
    for path in ["/health", "/ready", "/metrics", "/openapi.json"] {
        let resp = http.get(stack.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn tenant_header_without_api_keys() {
    let Some(stack) = stack().await else { return };
    let http = reqwest::Client::new();
    let post = |tenant: &str| {
        http.post(stack.url("/cart/byid/c1"))
            .header(TENANT_ID, tenant)
            .json(&add_one())
    };
    let got = call(post("Not A Tenant")).await;
    assert_error(&got, 400, "invalid_argument", "x-tenant-id");
    let resp = post("shop-1").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(stack.events("shop-1", "c1").await.len(), 1);
    assert!(stack.events("default", "c1").await.is_empty());
}

#[tokio::test]
async fn admin_is_denied_by_default_and_needs_the_token() {
    let Some(stack) = stack().await else { return };
    let http = reqwest::Client::new();
    let got = call(
        http.get(stack.url("/admin/placement"))
            .bearer_auth("anything"),
    )
    .await;
    assert_error(&got, 401, "unauthenticated", "disabled");

    let (admin, base) = stack
        .another_gateway(|c| c.admin_token = "s3cret".into())
        .await;
    let url = format!("{base}/admin/placement");
    let got = call(http.get(&url)).await;
    assert_error(&got, 401, "unauthenticated", "Bearer");
    let got = call(http.get(&url).bearer_auth("guess")).await;
    assert_error(&got, 401, "unauthenticated", "wrong");
    let report = ok(http.get(&url).bearer_auth("s3cret")).await;
    assert_eq!(report["shardCount"], 16);
    assert_eq!(report["nodes"][0]["id"], "n1");
    assert_eq!(report["nodes"][0]["draining"], false);
    assert!(
        report["nodes"][0]["grpcAddr"]
            .as_str()
            .unwrap()
            .contains(':')
    );
    let shards = &report["shards"];
    assert_eq!(
        shards["owned"].as_u64().unwrap()
            + shards["unowned"].as_u64().unwrap()
            + shards["ownedByGoneNodes"].as_u64().unwrap(),
        16
    );
    admin.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let Some(stack) = stack_with(|c| {
        c.client_rate_per_sec = 1;
        c.client_rate_burst = 3;
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    // The readiness probes of stack start-up are not rate limited; three reads pass.
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let resp = http.get(stack.url("/cart/byid/rl")).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1);
    assert_error(&json(resp).await, 429, "rate_limited", "retry after");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 2,
        "{statuses:?}"
    );
    // Probes are not limited.
    assert_eq!(
        http.get(stack.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Per cart: the second mutation of one cart is refused, another cart is fine.
    let (carts, base) = stack
        .another_gateway(|c| {
            c.cart_rate_per_sec = 1;
            c.cart_rate_burst = 1;
        })
        .await;
    let post = |cart: &str| {
        http.post(format!("{base}/cart/byid/{cart}"))
            .json(&add_one())
            .send()
    };
    assert_eq!(post("hot").await.unwrap().status(), 200);
    let resp = post("hot").await.unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(&json(resp).await, 429, "rate_limited", "cart");
    assert_eq!(post("cold").await.unwrap().status(), 200);
    assert_eq!(
        stack.events("default", "hot").await.len(),
        1,
        "the refused one changed nothing"
    );

    let metrics = text(&http, &stack.url("/metrics")).await;
    assert!(
        metrics.contains("cart_gateway_rate_limited_total{scope=\"client\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cart_gateway_rate_limited_total{scope=\"cart\"}"));
    carts.stop().await.unwrap();
}

/// The push callback needs no key, so many addresses could record forged pushes without bound
/// (each one a record in `WORKFLOW_COMMANDS` and a provider read by the runner): beyond a
/// tenant's push budget a push is refused with 429 (the provider retries) and not recorded;
/// tenants the gateway is not configured with share one budget.
#[tokio::test]
async fn provider_pushes_are_budgeted_per_tenant_and_a_refused_one_is_not_recorded() {
    let Some(stack) = stack_with(|c| {
        c.push_rate_per_sec = 1;
        c.push_rate_burst = 2;
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let push = |tenant: &str, order: &str| {
        call(http.post(stack.url(&format!(
            "/cart/push?tenant={tenant}&klarna_order_id={order}"
        ))))
    };
    for order in ["forged-1", "forged-2"] {
        let (status, reply) = push("default", order).await;
        assert_eq!(status, 200, "{reply}");
    }
    let refused = push("default", "forged-3").await;
    assert_error(&refused, 429, "rate_limited", "provider pushes");
    // Malformed pushes are refused before they count.
    let bad = push("default", &"x".repeat(5000)).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    // A push names its tenant itself: names the gateway is not configured with share one
    // budget, so a new name per push brings no new budget.
    for (tenant, order) in [("made-up-1", "o-1"), ("made-up-2", "o-2")] {
        let (status, reply) = push(tenant, order).await;
        assert_eq!(status, 200, "{reply}");
    }
    let refused = push("made-up-3", "o-3").await;
    assert_error(&refused, 429, "rate_limited", "provider pushes");

    let recorded = |tenant: &str| {
        let filter = format!("workflow.commands.{tenant}.push.>");
        let js = stack.nats.js.clone();
        async move {
            let stream = shared::subjects::WORKFLOW_COMMANDS_STREAM;
            let subjects = shared::test_support::subject_counts(&js, stream, &filter).await;
            let orders: Vec<String> = subjects
                .into_iter()
                .map(|(s, _)| s.rsplit('.').next().unwrap().to_owned())
                .collect();
            orders
        }
    };
    assert_eq!(recorded("default").await, ["forged-1", "forged-2"]);
    assert_eq!(recorded("made-up-1").await, ["o-1"]);
    assert_eq!(recorded("made-up-2").await, ["o-2"]);
    assert!(recorded("made-up-3").await.is_empty());
    let metrics = text(&http, &stack.url("/metrics")).await;
    assert!(
        metrics.contains("cart_gateway_rate_limited_total{scope=\"push\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn request_ids_travel_and_come_back() {
    let Some(stack) = stack().await else { return };
    let http = reqwest::Client::new();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = http
        .post(stack.url("/cart/byid/ids"))
        .header(CORRELATION_ID, "order-flow-42")
        .header(REQUEST_ID, "req-7")
        .header(TRACEPARENT, trace)
        .json(&add_one())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[CORRELATION_ID], "order-flow-42");
    assert_eq!(resp.headers()[REQUEST_ID], "req-7");
    // The aggregate received them in gRPC metadata and wrote them on the event.
    let events = stack.events("default", "ids").await;
    let headers = &events[0].headers;
    assert_eq!(
        headers.get(CORRELATION_ID).unwrap().as_str(),
        "order-flow-42"
    );
    let tp = headers.get(TRACEPARENT).unwrap().as_str();
    assert!(tp.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{tp}");

    // Errors carry ids too, generated when the client sent none.
    let resp = http.get(stack.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(!resp.headers()[CORRELATION_ID].is_empty());
    assert!(!resp.headers()[REQUEST_ID].is_empty());

    let ready = ok(http.get(stack.url("/ready"))).await;
    assert_eq!(ready["checks"]["aggregates"]["ok"], true);
    let metrics = text(&http, &stack.url("/metrics")).await;
    let needles = [
        "cart_gateway_http_requests_total{method=\"POST\",route=\"/cart/byid/{cartId}\",status=\"200\"}",
        "route=\"unmatched\",status=\"404\"",
        "cart_gateway_http_request_duration_seconds",
        "cart_gateway_upstream_duration_seconds",
    ];
    shared::test_support::assert_contains_all(&metrics, &needles, "/metrics");
}

/// No aggregate reachable: 503 with `Retry-After` (and `/ready` says why); an aggregate that
/// never answers: 504 within the configured deadline. Nothing is ever a bare 500.
#[tokio::test]
async fn upstream_failures_are_503_and_504() {
    let Some(stack) = stack().await else { return };
    let Stack {
        base,
        gateway,
        aggregate,
        nats,
    } = stack;
    let stack_nats = nats;
    aggregate.drain().await.unwrap();
    let http = reqwest::Client::new();
    let ready = format!("{base}/ready");
    wait_for_status(&http, &ready, 503, "not ready without aggregates").await;
    let (_, report) = call(http.get(&ready)).await;
    assert_eq!(report["checks"]["aggregates"]["ok"], false);
    let resp = http
        .post(format!("{base}/cart/byid/down"))
        .json(&add_one())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_error(&json(resp).await, 503, "unavailable", "aggregate");

    // A black hole: accepts connections, never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let mut cfg = gateway_config(&stack_nats);
    cfg.aggregate_addrs = addr.to_string();
    cfg.upstream_timeout_ms = 200;
    cfg.upstream_deadline_ms = 500;
    let slow = gateway::start(cfg).await.unwrap();
    let started = std::time::Instant::now();
    let resp = http
        .get(format!("http://{}/cart/byid/slow", slow.http_addr))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(resp.headers().contains_key("retry-after"));
    assert_error(&json(resp).await, 504, "timeout", "");
    // A change that timed out may have been stored: a client without a key (every try a new
    // change) is told to read the cart first, a keyed one that it may send the request again.
    let resp = http
        .post(format!("http://{}/cart/byid/slow", slow.http_addr))
        .json(&add_one())
        .send()
        .await
        .unwrap();
    assert_error(&json(resp).await, 504, "timeout", "read the cart before");
    let resp = http
        .post(format!("http://{}/v1/carts/slow/commands", slow.http_addr))
        .header("idempotency-key", "k-1")
        .json(&add("TEST-SKU-123", 1))
        .send()
        .await
        .unwrap();
    assert_error(&json(resp).await, 504, "timeout", "same Idempotency-Key");
    held.abort();
    slow.stop().await.unwrap();
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_shard_count_other_than_the_aggregates_stops_startup() {
    let Some(stack) = stack().await else { return };
    let mut cfg = gateway_config(&stack.nats);
    cfg.shard_count = 8;
    let err = gateway::start(cfg).await.err().expect("start must fail");
    let message = err.to_string();
    assert!(message.contains("GATEWAY_SHARD_COUNT is 8"), "{message}");
}
