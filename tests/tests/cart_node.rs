//! `cart-node`: a gateway and an aggregate in one process. The carts its aggregate owns are
//! decided in-process (the node counts them, as does `cart_aggregate_in_process_calls_total`;
//! nothing crosses gRPC), with the same outcome a separate gateway gets over gRPC: a request retried through
//! the other replica is replayed, never applied twice; the in-process caller is held to what a
//! gateway may send; when its aggregate stops, its carts go to another node.

use std::time::Duration;

use cart_client::LocalNode as _;
use serde_json::{Value, json};
use shared::test_support::wait_until;
use tests::processes::{Children, free_ports, service_command};
use tests::requests::{add, add_one, call, lines, metric_value};
use tests::stack::{Stack, WAIT, test_streams, wait_for_status};

const IN_PROCESS: &str = "cart_aggregate_in_process_calls_total";

/// One `TEST-SKU-123` as the gateway sends it to a node (the country filled in).
fn gateway_add() -> Value {
    let mut command = add("TEST-SKU-123", 1);
    command["country"] = "se".into();
    command
}

/// The value of the unlabelled series `name` on the Prometheus page at `url` (0 when absent).
async fn metric(url: &str, name: &str) -> f64 {
    let page = reqwest::get(url).await.unwrap().text().await.unwrap();
    metric_value(&page, name)
}

/// A cart-node on `stack` (aggregate `node_id`) once its gateway serves carts, and its base URL.
async fn cart_node(stack: &Stack, node_id: &str) -> (cart_node::Running, String) {
    let node = cart_node::start(stack.aggregate_config(node_id), stack.gateway_config())
        .await
        .unwrap();
    let base = format!("http://{}", node.gateway.http_addr);
    wait_for_status(
        &format!("{base}/v1/carts/probe"),
        200,
        "the node serves carts",
    )
    .await;
    (node, base)
}

/// A storefront add of one `TEST-SKU-123` to `cart` through `base` (the benchmark's request).
async fn storefront_add(base: &str, cart: &str) -> (u16, Value) {
    let shopper = tests::requests::browser();
    call(
        shopper
            .post(format!("{base}/cart/byid/{cart}"))
            .json(&add_one()),
    )
    .await
}

/// The metadata a gateway's `Execute` carries for the default tenant.
fn gateway_metadata() -> shared::headers::CallMetadata {
    let tenant = shared::TenantId::parse("default").unwrap();
    let mut md = shared::headers::CallMetadata::new();
    shared::headers::RequestContext::new(tenant).to_call_metadata(&mut md);
    md
}

/// An `Execute` of `command` on the default tenant's `cart`, under a fresh command id.
fn execute_request(cart: &str, command: Value) -> proto::cart::v1::ExecuteRequest {
    proto::cart::v1::ExecuteRequest {
        tenant: "default".into(),
        cart_id: cart.into(),
        command_id: uuid::Uuid::new_v4().to_string(),
        command: serde_json::to_vec(&command).unwrap(),
        ..Default::default()
    }
}

/// A keyed `/v1` add of one `TEST-SKU-123` to `cart` through `base`: (status, replayed, ETag,
/// body).
async fn keyed_add(
    http: &reqwest::Client,
    base: &str,
    cart: &str,
    key: &str,
) -> (u16, bool, Option<String>, Value) {
    let resp = http
        .post(format!("{base}/v1/carts/{cart}/commands"))
        .header("idempotency-key", key)
        .json(&add("TEST-SKU-123", 1))
        .send()
        .await
        .unwrap();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let etag = (resp.headers().get("etag")).map(|v| v.to_str().unwrap().to_owned());
    (
        resp.status().as_u16(),
        replayed,
        etag,
        resp.json().await.unwrap(),
    )
}

/// A cart id `node` owns as its placement view has it (the ids are tried in turn).
fn cart_owned_by(node: &aggregate::Running, prefix: &str) -> String {
    let placement = node.placement.as_ref().expect("placement is on");
    // One owner per shard, so as many as the node was configured with.
    let owners = placement.view().owners();
    let tenant = shared::TenantId::parse("default").unwrap();
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|cart| {
            let cart_id = shared::CartId::parse(cart).unwrap();
            let shard = shared::placement::shard_for(&tenant, &cart_id, owners.len() as u32);
            owners[shard as usize]
                .as_ref()
                .is_some_and(|o| o.node == node.node_id)
        })
        .expect("the node owns some shard")
}

#[tokio::test]
async fn a_cart_node_decides_its_carts_in_process_and_a_retry_through_another_gateway_replays() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let (node, base) = cart_node(&stack, "node-a").await;
    let (_plain, plain_base) = stack.cart_gateway("/v1/carts/probe").await;
    let local = node.aggregate.in_process();
    let http = reqwest::Client::new();

    // The node's only aggregate owns every shard: its gateway decides the add in-process.
    let first = keyed_add(&http, &base, "node-cart", "key-1").await;
    assert_eq!((first.0, first.1), (200, false), "{}", first.3);
    assert_eq!(local.calls(), 1);

    // The same request through the plain gateway (over gRPC) is the original outcome.
    let again = keyed_add(&http, &plain_base, "node-cart", "key-1").await;
    assert_eq!((again.0, again.1), (200, true), "{}", again.3);
    assert_eq!(again.2, first.2, "the original version");
    assert!(first.2.is_some(), "an ETag: {}", first.3);
    assert_eq!(local.calls(), 1, "went over gRPC");
    // And the other way round.
    let second = keyed_add(&http, &plain_base, "node-cart", "key-2").await;
    assert_eq!((second.0, second.1), (200, false), "{}", second.3);
    let replayed = keyed_add(&http, &base, "node-cart", "key-2").await;
    assert_eq!((replayed.0, replayed.1), (200, true), "{}", replayed.3);
    assert_eq!(replayed.2, second.2, "the original version");
    let (_, cart) = call(http.get(format!("{base}/v1/carts/node-cart"))).await;
    assert_eq!(lines(&cart), [("TEST-SKU-123".to_owned(), 2)], "{cart}");

    // The storefront path (the benchmark's) goes in-process too.
    let (status, body) = storefront_add(&base, "node-shopper").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(local.calls(), 3);
    node.stop().await.unwrap();
}

/// The in-process caller is the gateway: what only the runner may send is refused, as it is
/// to a gateway's certificate over mutual TLS. Once the node has stopped, it refuses calls as
/// `unavailable` (the routing client then tries another node).
#[tokio::test]
async fn the_in_process_caller_is_held_to_what_a_gateway_may_send() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let node = stack.aggregate("node-a").await.unwrap();
    let local = node.in_process();
    let forged = execute_request(
        "node-forged",
        json!({
            "type": "RecordProviderOrder",
            "attemptId": "a1",
            "providerOrderId": "p1",
            "status": "checkout_incomplete"
        }),
    );
    let status = local
        .execute(gateway_metadata(), None, forged)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("runner only"), "{status:?}");

    // A node that has stopped takes nothing more: the caller goes to another node.
    node.drain().await.unwrap();
    let add = execute_request("node-late", gateway_add());
    let status = local
        .execute(gateway_metadata(), None, add)
        .await
        .unwrap_err();
    let e = shared::ApiError::from_upstream("aggregate node", &status);
    assert_eq!(e.code, shared::ErrorCode::Unavailable, "{status:?}");
}

/// A caller that hangs up (the shopper's connection closed, and the gateway dropped its
/// request) does not cut the decision short: it runs to its end in a task of its own, as a call
/// read from a stream does, so an append is never left without its commit.
#[tokio::test]
async fn a_decision_handed_over_in_process_outlives_a_caller_that_hangs_up() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let node = stack.aggregate("node-a").await.unwrap();
    let (_plain, base) = stack.cart_gateway("/v1/carts/probe").await;
    let local = node.in_process();
    let add = execute_request("node-hung-up", gateway_add());
    // Polled once, then dropped: the caller is gone before any answer.
    let md = gateway_metadata();
    let hung_up = tokio::time::timeout(Duration::ZERO, local.execute(md, None, add)).await;
    assert!(hung_up.is_err(), "answered at its first poll: {hung_up:?}");
    let http = reqwest::Client::new();
    let applied = wait_until(
        || async {
            let (_, cart) = call(http.get(format!("{base}/v1/carts/node-hung-up"))).await;
            cart["items"][0]["qty"] == 1
        },
        WAIT,
    )
    .await;
    assert!(applied.is_ok(), "the add was cut short with its caller");
    node.drain().await.unwrap();
}

/// Two nodes: each cart-node decides its own carts in-process and sends the other's over
/// gRPC; once its aggregate has drained, its gateway sends every cart to the other node.
#[tokio::test]
async fn a_cart_node_sends_other_nodes_carts_over_grpc_and_all_of_them_once_drained() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let (a, base) = cart_node(&stack, "node-a").await;
    let b = stack.aggregate("node-b").await.unwrap();
    let local = a.aggregate.in_process();
    // Both nodes hold shards, and the gateway's view knows it.
    wait_until(
        || async {
            let owns = |n: &aggregate::Running| n.placement.as_ref().unwrap().owned_shards() > 0;
            owns(&a.aggregate) && owns(&b)
        },
        WAIT,
    )
    .await
    .expect("both nodes own shards");
    let http = reqwest::Client::new();
    let add = |cart: String| {
        let (http, base) = (&http, &base);
        async move {
            call(
                http.post(format!("{base}/v1/carts/{cart}/commands"))
                    .json(&add("TEST-SKU-123", 1)),
            )
            .await
        }
    };
    // The views (the gateway's, each node's) converge within a few heartbeats: until then a
    // cart may still be routed as before, or change hands.
    let picked = std::cell::RefCell::new((String::new(), String::new()));
    let routed = wait_until(
        || async {
            let mine = cart_owned_by(&a.aggregate, "node-mine");
            let theirs = cart_owned_by(&b, "node-theirs");
            *picked.borrow_mut() = (mine.clone(), theirs.clone());
            let before = local.calls();
            let theirs_ok = add(theirs.clone()).await.0 == 200;
            let between = local.calls();
            let mine_ok = add(mine.clone()).await.0 == 200;
            theirs_ok && mine_ok && between == before && local.calls() == before + 1
        },
        WAIT,
    )
    .await;
    assert!(
        routed.is_ok(),
        "the other node's cart over gRPC, its own in-process"
    );
    let (mine, theirs) = picked.into_inner();

    // Its aggregate drains; the gateway goes on, sending every cart to node-b.
    let gateway = a.gateway;
    a.aggregate.drain().await.unwrap();
    let after = local.calls();
    for cart in [&mine, &theirs] {
        let url = format!("{base}/v1/carts/{cart}");
        let (_, before) = call(http.get(&url)).await;
        let (status, body) = add(cart.clone()).await;
        assert_eq!(status, 200, "{cart}: {body}");
        let (_, now) = call(http.get(&url)).await;
        assert_eq!(
            now["items"][0]["qty"].as_u64(),
            before["items"][0]["qty"].as_u64().map(|q| q + 1),
            "{cart}: {now}"
        );
    }
    assert_eq!(local.calls(), after, "nothing in-process");
    gateway.stop().await.unwrap();
    b.drain().await.unwrap();
}

/// The binary: both parts from one environment, each with its own NATS user (the shipped
/// accounts let neither do the other's work: the add needs both), serving a storefront add
/// in-process.
#[tokio::test]
async fn the_cart_node_binary_serves_the_storefront_with_each_part_as_its_own_nats_user() {
    let Some(stack) = Stack::start(test_streams()).await else {
        return;
    };
    let ports = free_ports(3);
    let (gateway, grpc, ops) = (ports[0], ports[1], ports[2]);
    let work = tempfile::tempdir().unwrap();
    let mut command = service_command("cart-node");
    for (prefix, user) in [("GATEWAY", "gateway"), ("AGGREGATE", "aggregate")] {
        let nats = stack.nats(user);
        command
            .env(format!("{prefix}_NATS_URL"), &nats.url)
            .env(format!("{prefix}_NATS_USER"), &nats.user)
            .env(format!("{prefix}_NATS_PASSWORD"), nats.password.expose());
    }
    command
        .env("GATEWAY_HTTP_ADDR", format!("127.0.0.1:{gateway}"))
        .env("AGGREGATE_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("AGGREGATE_HTTP_ADDR", format!("127.0.0.1:{ops}"))
        .env("STREAMS_NODE_TTL_SECS", "2")
        .env("AGGREGATE_HEARTBEAT_MS", "500")
        .env("LOG_FORMAT", "json");
    let mut running = Children::default();
    running.spawn("cart-node", work.path(), command);
    let base = format!("http://127.0.0.1:{gateway}");
    let ready = wait_until(
        || async {
            reqwest::get(format!("{base}/v1/carts/probe"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
        Duration::from_secs(60),
    )
    .await;
    assert!(
        ready.is_ok(),
        "cart-node never served carts:{}",
        running.exited()
    );

    let (status, body) = storefront_add(&base, "binary-shopper").await;
    assert_eq!(status, 200, "{body}");
    let metrics = format!("http://127.0.0.1:{ops}/metrics");
    assert_eq!(metric(&metrics, IN_PROCESS).await, 1.0);
}
