//! `Idempotency-Key` is kept with the cart: the same key through another gateway, after 20
//! more commands, after JetStream's duplicate window and after the aggregate restarted returns
//! the original outcome and never applies twice; the same key with another request is refused
//! with `idempotency_key_reused` by every gateway.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use serde_json::{Value, json};
use shared::test_support::wait_until;
use tests::stack::{Stack, wait_for_status};

/// A one-second duplicate window, so the test can wait until JetStream's de-duplication no
/// longer covers the first request.
fn streams() -> shared::nats::NatsResourceSettings {
    shared::nats::NatsResourceSettings {
        duplicate_window_secs: 1,
        ..tests::stack::test_streams()
    }
}

struct Reply {
    status: u16,
    etag: Option<String>,
    replayed: bool,
    body: Value,
}

async fn send(http: &reqwest::Client, base: &str, cart: &str, key: &str, body: &Value) -> Reply {
    let resp = http
        .post(format!("{base}/v1/carts/{cart}/commands"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (etag, replayed) = (header("etag"), header("idempotent-replayed").is_some());
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap();
    Reply {
        status,
        etag,
        replayed,
        body,
    }
}

/// `reply` is the original outcome, replayed: a 200 with the original version.
fn assert_replayed(reply: &Reply, version: &str) {
    assert_eq!(
        (reply.status, reply.replayed),
        (200, true),
        "{}",
        reply.body
    );
    assert_eq!(reply.etag.as_deref(), Some(version), "the original version");
}

/// Quantity of `sku` in the cart, as read through `base`.
async fn quantity(http: &reqwest::Client, base: &str, cart: &str, sku: &str) -> u64 {
    let (_, cart) = tests::stack::call(http.get(format!("{base}/v1/carts/{cart}"))).await;
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["sku"] == sku)
        .map(|i| i["qty"].as_u64().unwrap())
        .sum()
}

/// Waits until JetStream no longer de-duplicates a message id published before: the window
/// that protected the first request has passed.
async fn wait_for_the_duplicate_window_to_pass(stack: &Stack) {
    let subject = "cart.events.default.window-probe";
    // Whether JetStream took the probe as a duplicate of one published before.
    let duplicate = || async {
        let probe = PublishMessage::build()
            .payload("{}".into())
            .message_id("duplicate-window-probe");
        let ack = stack.js.send_publish(subject, probe).await.unwrap();
        ack.await.unwrap().duplicate
    };
    assert!(!duplicate().await);
    wait_until(|| async { !duplicate().await }, Duration::from_secs(30))
        .await
        .expect("the duplicate window passes");
}

#[tokio::test]
async fn an_idempotency_key_holds_across_gateways_commands_restarts_and_the_duplicate_window() {
    let Some(stack) = Stack::start(streams()).await else {
        return;
    };
    let mut config = stack.aggregate_config("n1");
    config.snapshot_every = 5;
    let n1 = aggregate::start(config).await.unwrap();
    let (g1, one) = stack.cart_gateway("/v1/carts/probe").await;
    let (g2, two) = stack.cart_gateway("/v1/carts/probe").await;
    let http = reqwest::Client::new();
    let cart = "idempotent-cart";
    let add = json!({"type": "AddItem", "sku": "TEST-SKU-123", "quantity": 2});
    let clear = json!({"type": "ClearCart"});

    let first = send(&http, &one, cart, "k-1", &add).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed);
    let version = first.etag.clone().unwrap();

    // Another gateway never saw the key: another request with it is refused and changes
    // nothing; the same request gets the original outcome.
    let reused = send(&http, &two, cart, "k-1", &clear).await;
    assert_eq!(
        (reused.status, reused.body["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{}",
        reused.body
    );
    assert_eq!(quantity(&http, &one, cart, "TEST-SKU-123").await, 2);
    let again = send(&http, &two, cart, "k-1", &add).await;
    assert_replayed(&again, &version);

    // Twenty more commands: the key outlives the cart's recent-command memory.
    for _ in 0..20 {
        let resp = http
            .post(format!("{one}/v1/carts/{cart}/commands"))
            .json(&json!({"type": "AddItem", "sku": "TEST-SKU-456", "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let late = send(&http, &two, cart, "k-1", &add).await;
    assert_replayed(&late, &version);

    // Past JetStream's duplicate window, through a new node that loads the cart from its
    // snapshot and the stream, and a new gateway with an empty cache.
    wait_for_the_duplicate_window_to_pass(&stack).await;
    let mut config = stack.aggregate_config("n2");
    config.snapshot_every = 5;
    let n2 = aggregate::start(config).await.unwrap();
    n1.drain().await.unwrap();
    let (g3, three) = stack.cart_gateway("/v1/carts/probe").await;
    let served = format!("{three}/v1/carts/{cart}");
    wait_for_status(&served, 200, "the new node serves the cart").await;
    let restarted = send(&http, &three, cart, "k-1", &add).await;
    assert_replayed(&restarted, &version);
    let reused = send(&http, &three, cart, "k-1", &clear).await;
    assert_eq!(reused.status, 422, "{}", reused.body);

    assert_eq!(
        quantity(&http, &three, cart, "TEST-SKU-123").await,
        2,
        "applied once"
    );
    assert_eq!(quantity(&http, &three, cart, "TEST-SKU-456").await, 20);
    let subject = format!("cart.events.default.{cart}");
    let messages = shared::test_support::subject_messages(
        &stack.client,
        shared::subjects::CART_EVENTS_STREAM,
        &subject,
    )
    .await;
    assert_eq!(messages.len(), 21, "one keyed command and twenty others");

    for g in [g1, g2, g3] {
        g.stop().await.unwrap();
    }
    n2.drain().await.unwrap();
}

/// A keyed request the cart refused is refused for good: its retry, after the cart changed so
/// that the request would now apply and through another gateway, gets the first refusal (a
/// node still deciding the first try, frozen or slow, cannot apply it behind the client's
/// back either: it finds the refusal stored when its append is fenced out).
#[tokio::test]
async fn a_refused_keyed_request_stays_refused_when_the_cart_changes_under_its_retry() {
    let Some(stack) = Stack::start(tests::stack::test_streams()).await else {
        return;
    };
    let n1 = aggregate::start(stack.aggregate_config("n1"))
        .await
        .unwrap();
    let (g1, one) = stack.cart_gateway("/v1/carts/probe").await;
    let (g2, two) = stack.cart_gateway("/v1/carts/probe").await;
    let http = reqwest::Client::new();
    let cart = "refused-for-good";
    let change = json!({"type": "ChangeQuantity", "lineId": 1, "quantity": 3});

    let refused = send(&http, &one, cart, "k-refused", &change).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_str()),
        (404, Some("unknown_line")),
        "{}",
        refused.body
    );
    assert!(!refused.replayed);
    // Line 1 now exists: the same request sent afresh would apply.
    let add = json!({"type": "AddItem", "sku": "TEST-SKU-123", "quantity": 1});
    let added = send(&http, &one, cart, "k-add", &add).await;
    assert_eq!(added.status, 200, "{}", added.body);

    for base in [&one, &two] {
        let retry = send(&http, base, cart, "k-refused", &change).await;
        assert_eq!(
            (retry.status, retry.body["code"].as_str()),
            (404, Some("unknown_line")),
            "the retry gets the first answer: {}",
            retry.body
        );
        assert_eq!(retry.body["error"], refused.body["error"]);
        assert!(retry.replayed, "marked as the stored answer");
    }
    let reused = send(&http, &two, cart, "k-refused", &add).await;
    assert_eq!(
        (reused.status, reused.body["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{}",
        reused.body
    );
    assert_eq!(quantity(&http, &two, cart, "TEST-SKU-123").await, 1);

    // The history lists the refusal: an entry without events that names it.
    let (status, history) =
        tests::stack::call(http.get(format!("{two}/v1/carts/{cart}/history"))).await;
    assert_eq!(status, 200, "{history}");
    let entries = history["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[0]["events"], json!([]));
    assert_eq!(entries[0]["refused"]["code"], "unknown_line", "{history}");
    assert_eq!(entries[1]["refused"], Value::Null, "{history}");

    for g in [g1, g2] {
        g.stop().await.unwrap();
    }
    n1.drain().await.unwrap();
}
