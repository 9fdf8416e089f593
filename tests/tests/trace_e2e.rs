//! One storefront checkout is one trace: the service binaries run as processes, each exporting
//! its spans over OTLP to a collector in this test, and the shopper's browser sends one
//! `traceparent` with every request (a page-level trace). From "add item" to "order placed",
//! every span the gateway, aggregate, runner, mock provider and projection export must be in
//! that trace, and each one's parent must be a span of the trace (or the browser's span). The
//! hops are checked one by one: a service that stops propagating loses its edge.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde_json::json;
use shared::test_support::wait_until;
use tests::otlp_collector::{Collector, ReceivedSpan};
use tests::processes::{Children, free_ports, service_command};
use tests::stack::{Stack, call, ok, test_streams, wait_for_status};

const SERVICES: [&str; 4] = ["aggregate", "projection", "runner", "gateway"];

/// The hops of a checkout, as (caller, callee): the gateway calls the aggregate and the
/// runner's CheckoutQuery, and records the provider's push for the runner; the aggregate's
/// events reach the runner and the projection; the runner calls the provider and the
/// aggregate; the provider pushes to the gateway. `provider` is the mock's own spans
/// (`provider.mock`, inside the runner's process).
const HOPS: [(&str, &str); 8] = [
    ("gateway", "aggregate"),
    ("gateway", "runner"),
    ("aggregate", "runner"),
    ("aggregate", "projection"),
    ("runner", "provider"),
    ("runner", "aggregate"),
    ("provider", "gateway"),
    ("browser", "gateway"),
];

struct Platform {
    _children: Children,
    /// Where each service writes its log (`<service>.log`).
    work: tempfile::TempDir,
    gateway: String,
    mock: String,
}

impl Platform {
    /// The last lines of every service's log, for a failure's message (a service that did not
    /// start, or stopped, says why there).
    fn log_tails(&self) -> String {
        SERVICES
            .iter()
            .map(|service| {
                let log = std::fs::read_to_string(self.work.path().join(format!("{service}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                format!("--- {service}.log (last 10 lines)\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// How long a service may take to start.
const STARTS: Duration = Duration::from_secs(60);

/// NATS (this process), then every service binary exporting to `collector`. Each service
/// listens on a port it picks (port 0) and logs the address, which the next one is given; only
/// the gateway's port is chosen here (the runner's callback URLs name it before the gateway,
/// which needs the runner's address, starts), below the kernel's ephemeral range.
async fn start(stack: &Stack, collector: &Collector) -> Platform {
    let work = tempfile::tempdir().unwrap();
    let gateway = free_ports(1)[0];
    let gateway_url = format!("http://127.0.0.1:{gateway}");
    let callback = |path: &str| {
        format!("{gateway_url}/cart/{path}?tenant={{tenant}}&klarna_order_id={{checkout.order.id}}")
    };
    let command = |service: &str, own: Vec<(&str, String)>| {
        let nats = stack.nats(service);
        let mut command = service_command(service);
        command
            .env("NATS_URL", &nats.url)
            .env("NATS_USER", &nats.user)
            .env("NATS_PASSWORD", nats.password.expose())
            .env(
                "STREAMS_NODE_TTL_SECS",
                test_streams().node_ttl_secs.to_string(),
            )
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(own);
        command
    };
    let any_port = || "127.0.0.1:0".to_owned();
    let mut children = Children::default();
    let address = |fields: serde_json::Value, field: &str| {
        fields[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {fields}"))
            .to_owned()
    };

    children.spawn(
        "aggregate",
        work.path(),
        command(
            "aggregate",
            vec![
                ("AGGREGATE_GRPC_ADDR", any_port()),
                ("AGGREGATE_HTTP_ADDR", any_port()),
                ("AGGREGATE_HEARTBEAT_MS", "200".into()),
            ],
        ),
    );
    let db = work.path().join("projection.db").display().to_string();
    children.spawn(
        "projection",
        work.path(),
        command(
            "projection",
            vec![
                ("PROJECTION_GRPC_ADDR", any_port()),
                ("PROJECTION_HTTP_ADDR", any_port()),
                ("PROJECTION_DB_PATH", db),
            ],
        ),
    );
    children.spawn(
        "runner",
        work.path(),
        command(
            "runner",
            vec![
                ("RUNNER_GRPC_ADDR", any_port()),
                ("RUNNER_HTTP_ADDR", any_port()),
                ("RUNNER_MOCK_PROVIDER_ADDR", any_port()),
                ("MERCHANT_PUSH", callback("push")),
                ("MERCHANT_VALIDATION", callback("validation")),
            ],
        ),
    );
    let projection = children
        .logged("projection", "projection started", STARTS)
        .await;
    let runner = children.logged("runner", "runner started", STARTS).await;
    let mock = children
        .logged(
            "runner",
            "no PROVIDER_BASE_URL: using the embedded mock provider",
            STARTS,
        )
        .await;
    children.spawn(
        "gateway",
        work.path(),
        command(
            "gateway",
            vec![
                ("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{gateway}")),
                ("GATEWAY_RUNNER_ADDR", address(runner, "grpc_addr")),
                ("GATEWAY_PROJECTION_ADDR", address(projection, "grpc_addr")),
                ("GATEWAY_CLIENT_RATE_PER_SEC", "0".into()),
                ("GATEWAY_CART_RATE_PER_SEC", "0".into()),
                ("GATEWAY_PLACEMENT_RESYNC_MS", "200".into()),
            ],
        ),
    );
    children
        .logged("aggregate", "aggregate started", STARTS)
        .await;
    children.logged("gateway", "gateway started", STARTS).await;
    wait_for_status(&format!("{gateway_url}/ready"), 200, "gateway ready").await;
    Platform {
        _children: children,
        work,
        gateway: gateway_url,
        mock: format!("http://{}", address(mock, "addr")),
    }
}

/// What is wrong with the spans of one trace, or `None` when they form the whole checkout:
/// each parent is a span of the trace or the browser's span, every service is there and so
/// is every hop of [`HOPS`].
fn problems(spans: &[ReceivedSpan], browser_span: &str) -> Option<String> {
    let label = |s: &ReceivedSpan| {
        if s.name.starts_with("provider.mock") {
            "provider".to_owned()
        } else {
            s.service.clone()
        }
    };
    let by_id: HashMap<&str, String> = spans
        .iter()
        .map(|s| (s.span_id.as_str(), label(s)))
        .collect();
    let mut wrong = Vec::new();
    let mut hops = HashSet::new();
    for span in spans {
        let caller = if span.parent_span_id == browser_span {
            "browser".to_owned()
        } else if let Some(parent) = by_id.get(span.parent_span_id.as_str()) {
            parent.clone()
        } else {
            wrong.push(format!(
                "{} {:?}: parent {:?} is not in the trace",
                span.service, span.name, span.parent_span_id
            ));
            continue;
        };
        hops.insert((caller, label(span)));
    }
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for service in SERVICES {
        if !services.contains(service) {
            wrong.push(format!("no span from {service}"));
        }
    }
    for (from, to) in HOPS {
        if !hops.contains(&(from.to_owned(), to.to_owned())) {
            wrong.push(format!("no {from} → {to} hop"));
        }
    }
    (!wrong.is_empty()).then(|| wrong.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_every_service() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let collector = Collector::start().await.unwrap();
    let p = start(&stack, &collector).await;

    // The browser's page-level trace, sent with every request.
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let browser_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{trace_id}-{browser_span}-01");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().unwrap());
    let shopper = reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
        .build()
        .unwrap();
    let url = |path: &str| format!("{}{path}", p.gateway);

    ok(shopper.get(url("/cart/add/TEST-SKU-123"))).await;
    ok(shopper
        .post(url("/cart/delivery"))
        .json(&json!({"provider": "standard", "items": []})))
    .await;
    // The runner creates the provider order; until then the page answers 202 (pending).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let order = loop {
        let (status, body) = call(shopper.get(url("/cart/checkout"))).await;
        if status == 200 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no provider order: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let order_id = order["order_id"].as_str().unwrap().to_owned();

    // The shopper pays at the provider, which pushes to the gateway; the runner places it.
    let paid = ok(shopper.post(format!("{}/__mock/orders/{order_id}/complete", p.mock))).await;
    assert_eq!(paid["push_status"], 200, "{paid}");
    wait_until(
        || async { call(shopper.get(url("/cart"))).await.1["orderReference"].is_string() },
        Duration::from_secs(30),
    )
    .await
    .expect("the order is placed");

    // The exporters send every 100 ms; wait until the trace is whole (or time runs out).
    let whole = wait_until(
        || async { problems(&collector.trace(&trace_id), &browser_span).is_none() },
        Duration::from_secs(30),
    )
    .await;
    let spans = collector.trace(&trace_id);
    if let (Err(_), Some(problems)) = (whole, problems(&spans, &browser_span)) {
        let listed: Vec<String> = spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} <- {}",
                    s.service, s.name, s.span_id, s.parent_span_id
                )
            })
            .collect();
        panic!(
            "trace {trace_id} is not one checkout:\n{problems}\nspans:\n{}\n{}",
            listed.join("\n"),
            p.log_tails()
        );
    }
    assert!(
        spans.iter().any(|s| s.name == "provider.call"),
        "the runner's provider call"
    );
    assert!(
        spans.iter().any(|s| s.name == "projection.apply"),
        "the read model's work"
    );
}
