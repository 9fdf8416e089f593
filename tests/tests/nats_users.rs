//! Every service runs as its own NATS user of the shipped accounts (`deploy/nats/accounts.conf`)
//! through a whole shopper journey: the catalog seeded as `seed`, carts on the aggregate,
//! checkout and payment through the gateway and the runner, the projection catching up. The
//! server logs every permissions violation; there must be none (a refused watch or consumer is
//! retried quietly by the services, so a passing journey alone would not show a missing
//! permission). shared/tests/nats/permissions.rs tests what each user may not do.

use shared::test_support::wait_until;
use tests::platform::platform;
use tests::stack::{WAIT, ok};

#[tokio::test]
async fn every_service_does_its_work_as_its_own_nats_user_without_a_permission_violation() {
    let Some(p) = platform().await else { return };
    let server = p.stack.server.as_ref().expect("a spawned server");
    assert!(server.accounts().is_some(), "the stack runs with accounts");

    let dir = tempfile::tempdir().unwrap();
    let projection = projection::start(p.stack.projection_config(dir.path()))
        .await
        .expect("the projection starts as its user");

    let shopper = p.shopper();
    ok(shopper.get(p.url("/cart/add/TEST-SKU-123"))).await;
    ok(shopper
        .post(p.url("/cart"))
        .json(&serde_json::json!({"sku": "TEST-SKU-456", "quantity": 2, "country": "se"})))
    .await;
    let cart = ok(shopper.get(p.url("/cart"))).await;
    assert_eq!(cart["items"].as_array().map(Vec::len), Some(2), "{cart}");
    ok(shopper
        .post(p.url("/cart/delivery"))
        .json(&serde_json::json!({"provider": "standard", "items": []})))
    .await;
    let order = ok(shopper.get(p.url("/cart/checkout"))).await;
    let order_id = order["order_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a provider order: {order}"))
        .to_owned();
    assert_eq!(p.mock.complete(&order_id).await.unwrap(), 200);
    wait_until(
        || async {
            let c = ok(shopper.get(p.url("/cart"))).await;
            c["orderReference"].is_string()
        },
        WAIT,
    )
    .await
    .expect("the order is placed: aggregate, gateway and runner did their part");
    p.settled().await;
    // The gateway reads the cart's history straight from CART_EVENTS, as its own user.
    let cart_id = cart["id"].as_str().unwrap();
    let history = ok(shopper.get(p.url(&format!("/v1/carts/{cart_id}/history")))).await;
    let types: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["events"].as_array().unwrap())
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(types.contains(&"OrderPlaced"), "{history}");

    let events = shared::subjects::CART_EVENTS_STREAM;
    let last = shared::test_support::stream_state(&p.stack.js, events)
        .await
        .last_sequence;
    wait_until(|| async { projection.durable_checkpoint() >= last }, WAIT)
        .await
        .expect("the projection applied every cart event");
    projection.stop().await.unwrap();

    let violations = server.permission_violations();
    assert!(
        violations.is_empty(),
        "a service was refused something it does (fix deploy/nats/accounts.conf):\n{}",
        violations.join("\n")
    );
}
