//! The dead-letter admin routes through the real stack: a poison message published on a cart
//! subject is dead-lettered by the projection after its `max_deliver` (2 here) and listed, and
//! replayed, through the gateway — for the admin token only.

use crate::common;
use crate::read_side;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{WAIT, assert_error, call};
use read_side::{ADMIN, add, stack};
use reqwest::Method;
use serde_json::{Value, json};
use shared::headers::{RequestContext, TENANT_ID};
use shared::test_support::wait_until;
use shared::{CartId, TenantId};

#[tokio::test]
async fn poison_is_listed_and_replayed_through_the_admin_api() {
    let Some(stack) = stack().await else { return };
    // Garbage where an event envelope belongs, with the headers the aggregate would set.
    let tenant = TenantId::parse("shop-a").unwrap();
    let subject = shared::subjects::cart_events(&tenant, &CartId::parse("poison-1").unwrap());
    let mut headers = async_nats::HeaderMap::new();
    RequestContext::new(tenant).to_nats_headers(&mut headers);
    let seq = stack
        .nats
        .js
        .publish_with_headers(subject, headers, Bytes::from_static(b"{not an event"))
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    let last = Arc::new(Mutex::new(Value::Null));
    wait_until(
        || {
            let last = last.clone();
            let stack = &stack;
            async move {
                let (status, body) = stack.admin(Method::GET, "/admin/dead-letters").await;
                let found = status == 200 && body["deadLetters"].as_array().unwrap().len() == 1;
                *last.lock().unwrap() = body;
                found
            }
        },
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("dead letter listed: {e}; last {}", last.lock().unwrap()));
    let body = last.lock().unwrap().clone();
    let dl = &body["deadLetters"][0];
    assert_eq!(dl["tenant"], "shop-a");
    assert_eq!(dl["cartId"], "poison-1");
    assert_eq!(dl["subject"], "cart.events.shop-a.poison-1");
    assert_eq!(dl["streamSequence"], seq);
    assert_eq!(dl["consumer"], "projection-main");
    assert_eq!(dl["deliveries"], 2);
    assert_eq!(dl["replayed"], false);
    assert!(!dl["reason"].as_str().unwrap().is_empty(), "{dl}");
    let id = dl["id"].as_u64().unwrap();

    // One tenant's view, and bad filters.
    let (status, a) = stack
        .admin(Method::GET, "/admin/dead-letters?tenant=shop-a&limit=5")
        .await;
    assert_eq!(
        (status, a["deadLetters"].as_array().unwrap().len()),
        (200, 1)
    );
    let (_, b) = stack
        .admin(Method::GET, "/admin/dead-letters?tenant=shop-b")
        .await;
    assert_eq!(b["deadLetters"], json!([]));
    for (query, param) in [("tenant=Not%20Valid", "tenant"), ("limit=0", "limit")] {
        let got = stack
            .admin(Method::GET, &format!("/admin/dead-letters?{query}"))
            .await;
        assert_error(&got, 400, "invalid_argument", param);
    }

    // The garbage still cannot be applied: the replay says why, and it stays listed.
    let (status, out) = stack
        .admin(Method::POST, &format!("/admin/dead-letters/{id}/replay"))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["applied"], false);
    assert!(
        out["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    let (_, after) = stack.admin(Method::GET, "/admin/dead-letters").await;
    assert_eq!(after["deadLetters"][0]["replayed"], false);
    let got = stack
        .admin(Method::POST, "/admin/dead-letters/999999/replay")
        .await;
    assert_error(&got, 404, "not_found", "999999");
    let got = stack
        .admin(Method::POST, "/admin/dead-letters/x/replay")
        .await;
    assert_error(&got, 400, "invalid_argument", "id");

    // The projection kept going past the poison.
    stack
        .commands("shop-a", "after-1", add("TEST-SKU-123", 1))
        .await;
    stack
        .until("shop-a", "/v1/carts/after-1/view", |v| v["itemCount"] == 1)
        .await;
}

#[tokio::test]
async fn dead_letters_need_the_admin_token() {
    let Some(stack) = stack().await else { return };
    let list = stack.url("/admin/dead-letters");
    let replay = stack.url("/admin/dead-letters/1/replay");
    // Without the token, or with a wrong one: 401, whatever the tenant header says.
    for req in [
        stack.http.get(&list),
        stack.http.get(&list).header(TENANT_ID, "shop-a"),
        stack.http.get(&list).bearer_auth("wrong"),
        stack.http.post(&replay),
        stack.http.post(&replay).bearer_auth("wrong"),
    ] {
        let got = call(req).await;
        assert_error(&got, 401, "unauthenticated", "admin");
    }
    let (status, empty) = stack.admin(Method::GET, "/admin/dead-letters").await;
    assert_eq!(
        (status, &empty["deadLetters"]),
        (200, &json!([])),
        "{empty}"
    );
    // The one projection it has, named.
    assert_eq!(
        empty["projections"],
        json!([empty["projection"]]),
        "{empty}"
    );

    // No token configured: the admin API is off, whatever token is sent.
    let (closed, base) = stack.another(|_| {}).await;
    let got = call(
        stack
            .http
            .get(format!("{base}/admin/dead-letters"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_error(&got, 401, "unauthenticated", "disabled");
    closed.stop().await.unwrap();
}
