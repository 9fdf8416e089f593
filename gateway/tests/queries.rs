//! The query and dead-letter routes through the real stack: a nats-server (harness), one
//! aggregate node, a projection and the gateway, in-process on free ports. Commands go through
//! the gateway; the read model catches up asynchronously, so every check waits for its
//! condition (never a fixed sleep).

mod common;

use std::sync::{Arc, Mutex};

use aggregate::client::{CartClient, ClientConfig};
use bytes::Bytes;
use common::{WAIT, assert_error, json};
use proto::cart::v1 as cart_pb;
use serde_json::{Value, json};
use shared::domain::Command;
use shared::headers::{API_KEY, RequestContext, TENANT_ID};
use shared::nats::NatsResourceSettings;
use shared::test_support::{NatsServer, wait_until};
use shared::{CartId, CommandId, TenantId};

const SHARDS: u32 = 16;
const ADMIN: &str = "admin-secret";

/// NATS, catalog, aggregate, projection and a gateway pointed at the projection.
struct Stack {
    base: String,
    http: reqwest::Client,
    _gateway: gateway::Running,
    projection: projection::Running,
    aggregate: aggregate::Running,
    nats: NatsServer,
    _dir: tempfile::TempDir,
}

fn streams() -> NatsResourceSettings {
    NatsResourceSettings {
        node_ttl_secs: 2,
        ..NatsResourceSettings::default()
    }
}

/// A projection that gives up on a poison message quickly: two deliveries, short waits.
fn projection_config(nats: &NatsServer, dir: &std::path::Path) -> projection::Config {
    let mut cfg = projection::Config {
        db_path: dir.join("projection.db").display().to_string(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        batch_size: 64,
        fetch_wait_ms: 100,
        ack_wait_ms: 500,
        max_deliver: 2,
        nak_delay_ms: 50,
        streams: streams(),
        ..projection::Config::default()
    };
    cfg.nats.url = nats.url().to_owned();
    cfg
}

async fn stack() -> Option<Stack> {
    let nats = shared::nats_or_skip!()?;
    let js = nats.jetstream().await;
    let resources = shared::nats::ensure_all(&js, &streams())
        .await
        .expect("ensure streams");
    let seed = aggregate::seed::parse(include_str!("../../deploy/catalog.json")).unwrap();
    aggregate::seed::write(&resources.catalog, &seed)
        .await
        .expect("seed catalog");

    let mut agg = aggregate::Config::default();
    agg.nats.url = nats.url().to_owned();
    let aggregate = aggregate::start(aggregate::Config {
        node_id: "n1".into(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        shard_count: SHARDS,
        heartbeat_ms: 200,
        streams: streams(),
        ..agg
    })
    .await
    .expect("start aggregate");

    let dir = tempfile::tempdir().unwrap();
    let projection = projection::start(projection_config(&nats, dir.path()))
        .await
        .expect("start projection");

    let mut cfg = common::gateway_config(&nats);
    cfg.shard_count = SHARDS;
    cfg.projection_addr = projection.grpc_addr.to_string();
    cfg.admin_token = ADMIN.into();
    let gateway = gateway::start(cfg).await.expect("start gateway");
    let stack = Stack {
        base: format!("http://{}", gateway.http_addr),
        http: reqwest::Client::new(),
        _gateway: gateway,
        projection,
        aggregate,
        nats,
        _dir: dir,
    };
    let ready = [
        format!("http://{}/ready", stack.aggregate.http_addr),
        format!("http://{}/ready", stack.projection.http_addr),
        stack.url("/ready"),
    ];
    let http = stack.http.clone();
    wait_until(
        || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                for url in ready {
                    if !http
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                    {
                        return false;
                    }
                }
                true
            }
        },
        WAIT,
    )
    .await
    .expect("aggregate, projection and gateway ready");
    Some(stack)
}

impl Stack {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` as `tenant` (through `x-tenant-id`).
    async fn get(&self, tenant: &str, path: &str) -> (u16, Value) {
        json(
            self.http
                .get(self.url(path))
                .header(TENANT_ID, tenant)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Runs commands on a cart through the gateway's `/v1` API; returns the cart.
    async fn commands(&self, tenant: &str, cart: &str, body: Value) -> Value {
        let (status, reply) = json(
            self.http
                .post(self.url(&format!("/v1/carts/{cart}/commands")))
                .header(TENANT_ID, tenant)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        reply["result"].clone()
    }

    /// Polls `GET path` as `tenant` until `done` holds for the 200 body; returns that body.
    async fn until(&self, tenant: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let last = Arc::new(Mutex::new(Value::Null));
        let ok = wait_until(
            || {
                let last = last.clone();
                let done = &done;
                async move {
                    let (status, body) = self.get(tenant, path).await;
                    let met = status == 200 && done(&body);
                    *last.lock().unwrap() = json!({"status": status, "body": body});
                    met
                }
            },
            WAIT,
        )
        .await;
        let last = last.lock().unwrap().clone();
        ok.unwrap_or_else(|e| panic!("GET {path} as {tenant}: {e}; last answer {last}"));
        last["body"].clone()
    }

    /// Every page of a listing (`path` ends with its query, `page_token` is appended).
    async fn all_pages(&self, tenant: &str, path: &str, key: &str) -> (Vec<Value>, usize) {
        let (mut rows, mut pages, mut token) = (Vec::new(), 0, None::<String>);
        loop {
            let url = match &token {
                Some(t) => format!("{path}&page_token={t}"),
                None => path.to_owned(),
            };
            let (status, page) = self.get(tenant, &url).await;
            assert_eq!(status, 200, "{url}: {page}");
            pages += 1;
            rows.extend(page[key].as_array().unwrap().iter().cloned());
            match page["nextPageToken"].as_str() {
                Some(t) => token = Some(t.to_owned()),
                None => return (rows, pages),
            }
        }
    }

    /// The runner's part of a checkout, sent straight to the aggregate: the provider order
    /// exists, then the shopper paid.
    async fn place_order(&self, tenant: &str, cart: &str, attempt: &str, order: &str) {
        let client = CartClient::new(
            ClientConfig::default(),
            None,
            vec![self.aggregate.grpc_addr.to_string()],
        );
        let tenant = TenantId::parse(tenant).unwrap();
        let cart = CartId::parse(cart).unwrap();
        let ctx = RequestContext::new(tenant.clone());
        for command in [
            Command::RecordProviderOrder {
                attempt_id: attempt.into(),
                provider_order_id: order.into(),
                status: "checkout_incomplete".into(),
            },
            Command::ConfirmOrder {
                provider_order_id: order.into(),
                order_reference: format!("ref-{order}"),
            },
        ] {
            let req = cart_pb::ExecuteRequest::new(&tenant, &cart, CommandId::new(), None, command);
            client.execute(&ctx, req).await.expect("runner command");
        }
    }
}

fn add(sku: &str, quantity: u32) -> Value {
    json!({"type": "AddItem", "sku": sku, "quantity": quantity})
}

fn ids(rows: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn carts_are_listed_filtered_and_paginated_once_each() {
    let Some(stack) = stack().await else { return };
    let t = "shop-a";
    let mut all: Vec<String> = (0..7).map(|i| format!("list-{i}")).collect();
    for (i, cart) in all.iter().enumerate() {
        stack
            .commands(t, cart, add("TEST-SKU-123", i as u32 + 1))
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
    let updated: Vec<&str> = rows
        .iter()
        .map(|r| r["updatedAt"].as_str().unwrap())
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
    assert!(
        abandoned["carts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "abandoned")
    );
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
    stack
        .commands("shop-a", "tok-1", add("TEST-SKU-123", 1))
        .await;
    stack
        .commands("shop-a", "tok-2", add("TEST-SKU-123", 1))
        .await;
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
    stack
        .commands("shop-a", "mine-a", add("TEST-SKU-123", 1))
        .await;
    stack
        .commands("shop-b", "mine-b", add("TEST-SKU-456", 2))
        .await;
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
    assert!(
        abandoned["carts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["tenant"] == "shop-b")
    );

    // With API keys the key decides the tenant, on the same projection.
    let mut cfg = common::gateway_config(&stack.nats);
    cfg.shard_count = SHARDS;
    cfg.projection_addr = stack.projection.grpc_addr.to_string();
    cfg.api_keys = "key-a=shop-a,key-b=shop-b".into();
    let keyed = gateway::start(cfg).await.expect("start keyed gateway");
    let base = format!("http://{}", keyed.http_addr);
    let get = |key: Option<&'static str>, tenant: Option<&'static str>, path: &'static str| {
        let mut req = stack.http.get(format!("{base}{path}"));
        if let Some(k) = key {
            req = req.header(API_KEY, k);
        }
        if let Some(t) = tenant {
            req = req.header(TENANT_ID, t);
        }
        async move { json(req.send().await.unwrap()).await }
    };
    wait_until(
        || async { get(Some("key-a"), None, "/v1/carts").await.0 == 200 },
        WAIT,
    )
    .await
    .expect("keyed gateway serves queries");
    let (_, a) = get(Some("key-a"), None, "/v1/carts").await;
    assert_eq!(ids(a["carts"].as_array().unwrap()), ["mine-a"]);
    let (_, b) = get(Some("key-b"), None, "/v1/carts").await;
    assert_eq!(ids(b["carts"].as_array().unwrap()), ["mine-b"]);
    let got = get(Some("key-b"), Some("shop-a"), "/v1/carts").await;
    assert_error(&got, 403, "permission_denied", TENANT_ID);
    let got = get(None, Some("shop-a"), "/v1/carts").await;
    assert_error(&got, 401, "unauthenticated", API_KEY);
    let got = get(Some("key-b"), None, "/v1/carts/mine-a/view").await;
    assert_error(&got, 404, "not_found", "mine-a");
    keyed.stop().await.unwrap();
}

#[tokio::test]
async fn poison_shows_up_in_dead_letters_for_the_admin_only() {
    let Some(stack) = stack().await else { return };
    let js = stack.nats.jetstream().await;
    let tenant = TenantId::parse("shop-a").unwrap();
    let subject = shared::subjects::cart_events(&tenant, &CartId::parse("poison-1").unwrap());
    let mut headers = async_nats::HeaderMap::new();
    RequestContext::new(tenant).to_nats_headers(&mut headers);
    let seq = js
        .publish_with_headers(subject, headers, Bytes::from_static(b"{not an event"))
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;

    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN);
    let list = stack.url("/admin/dead-letters");
    let last = Arc::new(Mutex::new(Value::Null));
    wait_until(
        || {
            let (req, last) = (admin(stack.http.get(&list)), last.clone());
            async move {
                let (status, body) = json(req.send().await.unwrap()).await;
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
    assert!(!dl["reason"].as_str().unwrap().is_empty());
    let id = dl["id"].as_u64().unwrap();

    // Filtered by tenant (an admin view of one tenant), and bounded.
    let (status, only_a) = json(
        admin(stack.http.get(format!("{list}?tenant=shop-a&limit=5")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, only_a["deadLetters"].as_array().unwrap().len()),
        (200, 1)
    );
    let (_, only_b) = json(
        admin(stack.http.get(format!("{list}?tenant=shop-b")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(only_b["deadLetters"], json!([]));
    let got = json(
        admin(stack.http.get(format!("{list}?tenant=Not%20Valid")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "tenant");

    // The garbage cannot be applied: the replay says why.
    let replay = stack.url(&format!("/admin/dead-letters/{id}/replay"));
    let (status, out) = json(admin(stack.http.post(&replay)).send().await.unwrap()).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["applied"], false);
    assert!(
        out["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{out}"
    );
    let got = json(
        admin(
            stack
                .http
                .post(stack.url("/admin/dead-letters/999999/replay")),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_error(&got, 404, "not_found", "999999");
    let got = json(
        admin(stack.http.post(stack.url("/admin/dead-letters/x/replay")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "id");

    // Without the token, or with a wrong one: 401, whatever the tenant header says.
    for req in [
        stack.http.get(&list),
        stack.http.get(&list).header(TENANT_ID, "shop-a"),
        stack.http.get(&list).bearer_auth("wrong"),
        stack.http.post(&replay),
        stack.http.post(&replay).bearer_auth("wrong"),
    ] {
        let got = json(req.send().await.unwrap()).await;
        assert_error(&got, 401, "unauthenticated", "");
    }
    // Admin disabled (no token configured): denied by default.
    let mut cfg = common::gateway_config(&stack.nats);
    cfg.shard_count = SHARDS;
    cfg.projection_addr = stack.projection.grpc_addr.to_string();
    let closed = gateway::start(cfg).await.expect("start gateway");
    let got = json(
        stack
            .http
            .get(format!("http://{}/admin/dead-letters", closed.http_addr))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 401, "unauthenticated", "disabled");
    closed.stop().await.unwrap();

    // The projection kept going past the poison.
    stack
        .commands("shop-a", "after-1", add("TEST-SKU-123", 1))
        .await;
    stack
        .until("shop-a", "/v1/carts/after-1/view", |v| v["itemCount"] == 1)
        .await;
}

#[tokio::test]
async fn the_routes_are_documented_and_the_projection_is_optional() {
    let Some(stack) = stack().await else { return };
    let (_, doc) = json(
        stack
            .http
            .get(stack.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
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
    let (off, base_off) = another(&stack, "").await;
    let got = json(
        stack
            .http
            .get(format!("{base_off}/v1/carts"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 501, "unimplemented", "projection");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (down, base_down) = another(&stack, &dead_addr).await;
    let resp = stack
        .http
        .get(format!("{base_down}/v1/reports/sku-demand"))
        .send()
        .await
        .unwrap();
    let got = json(resp).await;
    assert_error(&got, 503, "unavailable", "projection");
    off.stop().await.unwrap();
    down.stop().await.unwrap();
}

/// Another gateway on the stack's NATS, with `projection_addr`.
async fn another(stack: &Stack, projection_addr: &str) -> (gateway::Running, String) {
    let mut cfg = common::gateway_config(&stack.nats);
    cfg.shard_count = SHARDS;
    cfg.projection_addr = projection_addr.into();
    cfg.service_timeout_ms = 2_000;
    cfg.upstream_connect_timeout_ms = 200;
    let gw = gateway::start(cfg).await.expect("start gateway");
    let base = format!("http://{}", gw.http_addr);
    (gw, base)
}
