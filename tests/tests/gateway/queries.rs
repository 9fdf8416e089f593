//! The query routes through the real stack (nats-server, aggregate, projection, gateway):
//! commands go through the gateway, then the read model shows them — filtered, paginated and
//! per tenant.

use crate::common;
use crate::read_side;

use common::{WAIT, assert_error, call};
use read_side::{add, ids, stack};
use serde_json::{Value, json};
use shared::headers::{API_KEY, TENANT_ID};
use shared::test_support::wait_until;

#[tokio::test]
async fn carts_are_listed_filtered_and_paginated_once_each() {
    let Some(stack) = stack().await else { return };
    let t = "shop-a";
    let mut all: Vec<String> = (0..7).map(|i| format!("list-{i}")).collect();
    for (i, cart) in all.iter().enumerate() {
        stack
            .commands(t, cart, add("TEST-SKU-123", i as i64 + 1))
            .await;
    }
    // Two carts go to checkout, one gets a user.
    for cart in ["list-5", "list-6"] {
        let body = json!({"type": "StartCheckout", "attemptId": format!("att-{cart}")});
        stack.commands(t, cart, body).await;
    }
    let cart = stack
        .commands(t, "list-0", json!({"type": "SetUser", "userId": "u-1"}))
        .await;
    all.sort();

    // Wait for the read model: the last commands are visible.
    stack
        .until(t, "/v1/carts?status=checkout", |b| {
            b["carts"].as_array().unwrap().len() == 2
        })
        .await;
    stack
        .until(t, "/v1/carts?user=u-1", |b| {
            b["carts"].as_array().unwrap().len() == 1
        })
        .await;

    // Pages of 3: every cart exactly once, in three pages, newest update first.
    let (rows, pages) = stack.all_pages(t, "/v1/carts?page_size=3", "carts").await;
    assert_eq!(ids(&rows), all, "every cart once");
    assert_eq!(pages, 3);
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let updated: Vec<time::OffsetDateTime> = rows
        .iter()
        .map(|r| time::OffsetDateTime::parse(r["updatedAt"].as_str().unwrap(), rfc3339).unwrap())
        .collect();
    assert!(
        updated.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {updated:?}"
    );

    // Status filters partition the carts.
    let (open, _) = stack
        .all_pages(t, "/v1/carts?status=open&page_size=2", "carts")
        .await;
    let (checkout, _) = stack
        .all_pages(t, "/v1/carts?status=checkout", "carts")
        .await;
    assert_eq!(ids(&checkout), ["list-5", "list-6"]);
    assert_eq!(open.len(), 5);
    assert!(open.iter().all(|c| c["status"] == "open"));

    // Filters by user and update time.
    let (_, by_user) = stack.get(t, "/v1/carts?user=u-1").await;
    assert_eq!(ids(by_user["carts"].as_array().unwrap()), ["list-0"]);
    let (_, future) = stack
        .get(t, "/v1/carts?updated_since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(future["carts"], json!([]));
    assert_eq!(future["nextPageToken"], Value::Null);

    // One cart's read model: status, totals in minor units with currency, lines.
    let view = stack
        .until(t, "/v1/carts/list-0/view", |v| v["userId"] == "u-1")
        .await;
    assert_eq!(view["id"], "list-0");
    assert_eq!(view["status"], "open");
    assert_eq!(view["itemCount"], 1);
    assert_eq!(
        view["total"],
        json!({"amount": cart["totalPrice"]["incVat"], "currency": "SEK"})
    );
    assert_eq!(view["lines"][0]["sku"], "TEST-SKU-123");
    assert_eq!(view["lines"][0]["unitPrice"]["amount"], 24900);
    assert_eq!(view["lines"][0]["taxRate"], 2500);
    let got = stack.get(t, "/v1/carts/no-such-cart/view").await;
    assert_error(&got, 404, "not_found", "no-such-cart");

    // POST /v1/carts still creates carts on the same path.
    let resp = stack
        .http
        .post(stack.url("/v1/carts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn orders_sku_demand_and_abandoned_carts() {
    let Some(stack) = stack().await else { return };
    let t = "shop-a";
    stack
        .commands(
            t,
            "demand-1",
            json!({"commands": [add("TEST-SKU-123", 2), add("TEST-SKU-456", 1)]}),
        )
        .await;
    stack.commands(t, "demand-2", add("TEST-SKU-123", 3)).await;
    // An ordered cart no longer counts as demand.
    stack.commands(t, "ordered-1", add("TEST-SKU-AAA", 4)).await;
    stack
        .commands(
            t,
            "ordered-1",
            json!({"type": "StartCheckout", "attemptId": "att-1"}),
        )
        .await;
    stack.place_order(t, "ordered-1", "att-1", "po-1").await;

    let orders = stack
        .until(t, "/v1/orders", |b| {
            b["orders"].as_array().unwrap().len() == 1
        })
        .await;
    let order = &orders["orders"][0];
    assert_eq!(order["cartId"], "ordered-1");
    assert_eq!(order["providerOrderId"], "po-1");
    assert_eq!(order["orderReference"], "ref-po-1");
    assert_eq!(
        order["total"],
        json!({"amount": 4 * 12900, "currency": "SEK"})
    );
    let (_, none) = stack.get(t, "/v1/orders?since=2999-01-01T00:00:00Z").await;
    assert_eq!(none["orders"], json!([]));
    let (_, ordered) = stack.get(t, "/v1/carts?status=ordered").await;
    assert_eq!(ids(ordered["carts"].as_array().unwrap()), ["ordered-1"]);

    let demand = stack
        .until(t, "/v1/reports/sku-demand", |b| {
            b["skus"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(
        demand["skus"],
        json!([
            {"sku": "TEST-SKU-123", "quantity": 5, "carts": 2},
            {"sku": "TEST-SKU-456", "quantity": 1, "carts": 1},
        ])
    );
    let (_, top) = stack.get(t, "/v1/reports/sku-demand?limit=1").await;
    assert_eq!(top["skus"].as_array().unwrap().len(), 1);

    // With a one-second threshold both open carts become abandoned; the ordered one never.
    let abandoned = stack
        .until(t, "/v1/reports/abandoned?idle_seconds=1", |b| {
            b["carts"].as_array().unwrap().len() == 2
        })
        .await;
    assert_eq!(
        ids(abandoned["carts"].as_array().unwrap()),
        ["demand-1", "demand-2"]
    );
    let carts = abandoned["carts"].as_array().unwrap();
    assert!(carts.iter().all(|c| c["status"] == "abandoned"));
    let (rows, pages) = stack
        .all_pages(
            t,
            "/v1/reports/abandoned?idle_seconds=1&page_size=1",
            "carts",
        )
        .await;
    assert_eq!((rows.len(), pages), (2, 2));
    // The projection's own threshold (an hour) has not passed.
    let (_, default) = stack.get(t, "/v1/reports/abandoned").await;
    assert_eq!(default["carts"], json!([]));
}

#[tokio::test]
async fn bad_query_parameters_are_400_naming_them() {
    let Some(stack) = stack().await else { return };
    let cases = [
        ("/v1/carts?status=lost", "status"),
        ("/v1/carts?page_size=x", "page_size"),
        ("/v1/carts?page_size=0", "page_size"),
        ("/v1/carts?page_size=-1", "page_size"),
        ("/v1/carts?updated_since=yesterday", "updated_since"),
        ("/v1/carts?page_token=zz", "page_token"),
        // The tenant is the caller's, never a query parameter.
        ("/v1/carts?tenant=shop-b", "tenant"),
        ("/v1/orders?since=2025-13-01", "since"),
        ("/v1/orders?page_size=1e3", "page_size"),
        ("/v1/reports/abandoned?idle_seconds=0", "idle_seconds"),
        ("/v1/reports/abandoned?idle_seconds=soon", "idle_seconds"),
        ("/v1/reports/sku-demand?limit=0", "limit"),
        ("/v1/reports/sku-demand?top=3", "top"),
        ("/v1/carts/a.b/view", "id"),
    ];
    for (path, param) in cases {
        let got = stack.get("shop-a", path).await;
        assert_error(&got, 400, "invalid_argument", param);
    }
    // A token of one listing is refused by another.
    for cart in ["tok-1", "tok-2"] {
        stack.commands("shop-a", cart, add("TEST-SKU-123", 1)).await;
    }
    let page = stack
        .until("shop-a", "/v1/carts?page_size=1", |b| {
            b["nextPageToken"].is_string()
        })
        .await;
    let token = page["nextPageToken"].as_str().unwrap();
    let got = stack
        .get("shop-a", &format!("/v1/orders?page_token={token}"))
        .await;
    assert_error(&got, 400, "invalid_argument", "page_token");
}

#[tokio::test]
async fn tenants_see_only_their_own_carts() {
    let Some(stack) = stack().await else { return };
    for (tenant, cart, line) in [
        ("shop-a", "mine-a", add("TEST-SKU-123", 1)),
        ("shop-b", "mine-b", add("TEST-SKU-456", 2)),
    ] {
        stack.commands(tenant, cart, line).await;
    }
    for (tenant, cart) in [("shop-a", "mine-a"), ("shop-b", "mine-b")] {
        let page = stack
            .until(tenant, "/v1/carts", |b| {
                b["carts"].as_array().unwrap().len() == 1
            })
            .await;
        assert_eq!(ids(page["carts"].as_array().unwrap()), [cart]);
    }
    // Another tenant's cart id is unknown, not forbidden: nothing leaks.
    let got = stack.get("shop-b", "/v1/carts/mine-a/view").await;
    assert_error(&got, 404, "not_found", "mine-a");
    let (_, demand) = stack.get("shop-b", "/v1/reports/sku-demand").await;
    assert_eq!(
        demand["skus"],
        json!([{"sku": "TEST-SKU-456", "quantity": 2, "carts": 1}])
    );
    let (_, abandoned) = stack
        .get("shop-b", "/v1/reports/abandoned?idle_seconds=1")
        .await;
    let carts = abandoned["carts"].as_array().unwrap();
    assert!(carts.iter().all(|c| c["tenant"] == "shop-b"));

    // With API keys the key decides the tenant, on the same projection; the listings take
    // back-office keys only.
    let (keyed, base) = stack
        .another(|c| {
            c.api_keys = "key-a=shop-a,key-b=shop-b".into();
            c.backoffice_keys = "office-a=shop-a,office-b=shop-b".into();
        })
        .await;
    let get = |key: Option<&'static str>, tenant: Option<&'static str>, path: &'static str| {
        let mut req = stack.http.get(format!("{base}{path}"));
        if let Some(k) = key {
            req = req.header(API_KEY, k);
        }
        if let Some(t) = tenant {
            req = req.header(TENANT_ID, t);
        }
        async move { call(req).await }
    };
    wait_until(
        || async { get(Some("office-a"), None, "/v1/carts").await.0 == 200 },
        WAIT,
    )
    .await
    .expect("keyed gateway serves queries");
    let (_, a) = get(Some("office-a"), None, "/v1/carts").await;
    assert_eq!(ids(a["carts"].as_array().unwrap()), ["mine-a"]);
    let (_, b) = get(Some("office-b"), None, "/v1/carts").await;
    assert_eq!(ids(b["carts"].as_array().unwrap()), ["mine-b"]);
    let got = get(Some("office-b"), Some("shop-a"), "/v1/carts").await;
    assert_error(&got, 403, "permission_denied", TENANT_ID);
    let got = get(None, Some("shop-a"), "/v1/carts").await;
    assert_error(&got, 401, "unauthenticated", API_KEY);
    // A storefront key (it sits in a shop's page) lists nothing: the ids it would get are
    // all it takes to read and change the carts.
    for path in [
        "/v1/carts",
        "/v1/orders",
        "/v1/reports/abandoned",
        "/v1/reports/sku-demand",
    ] {
        let got = get(Some("key-a"), None, path).await;
        assert_error(&got, 403, "permission_denied", "back-office key");
    }
    let got = get(Some("key-b"), None, "/v1/carts/mine-a/view").await;
    assert_error(&got, 404, "not_found", "mine-a");
    let (status, view) = get(Some("key-a"), None, "/v1/carts/mine-a/view").await;
    assert_eq!(
        (status, view["id"].as_str()),
        (200, Some("mine-a")),
        "{view}"
    );
    keyed.stop().await.unwrap();
}

#[tokio::test]
async fn the_routes_are_documented_and_the_projection_is_optional() {
    let Some(stack) = stack().await else { return };
    let (_, doc) = call(stack.http.get(stack.url("/openapi.json"))).await;
    for (path, method) in [
        ("/v1/carts", "get"),
        ("/v1/carts", "post"),
        ("/v1/carts/{id}/view", "get"),
        ("/v1/orders", "get"),
        ("/v1/reports/abandoned", "get"),
        ("/v1/reports/sku-demand", "get"),
        ("/admin/dead-letters", "get"),
        ("/admin/dead-letters/{id}/replay", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let security = &doc["paths"]["/admin/dead-letters"]["get"]["security"];
    assert_eq!(security, &json!([{"admin_token": []}]));

    // Projection not configured: 501; configured but down: 503 (after the read retries).
    let (off, base_off) = stack.another(|c| c.projection_addr.clear()).await;
    let got = call(stack.http.get(format!("{base_off}/v1/carts"))).await;
    assert_error(
        &got,
        501,
        "unimplemented",
        "GATEWAY_PROJECTION_ADDR is empty",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (down, base_down) = stack
        .another(|c| {
            c.projection_addr = dead_addr;
            c.service_timeout_ms = 2_000;
            c.upstream_connect_timeout_ms = 200;
        })
        .await;
    let got = call(stack.http.get(format!("{base_down}/v1/reports/sku-demand"))).await;
    assert_error(&got, 503, "unavailable", "projection");
    off.stop().await.unwrap();
    down.stop().await.unwrap();
}
