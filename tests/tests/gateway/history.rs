//! A cart's history (`GET /v1/carts/{id}/history`) and its admin twin through the real stack:
//! every accepted command in stream order with the ids it was sent with, pages by `after` and
//! `limit`, bad parameters refused, tenants kept apart, the admin reading across them.

use crate::common;

use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "history-admin-token";

/// The entries of a history reply.
fn entries(history: &Value) -> &Vec<Value> {
    history["entries"].as_array().unwrap()
}

fn sequences(history: &Value) -> Vec<u64> {
    entries(history)
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}

/// The event types of each entry.
fn types(history: &Value) -> Vec<Vec<String>> {
    entries(history)
        .iter()
        .map(|e| {
            e["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ev| ev["type"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

fn etag(resp: &reqwest::Response) -> u64 {
    resp.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_history_lists_every_accepted_command_in_order_with_the_ids_it_was_sent_with() {
    let Some(stack) = stack_with(|c| c.admin_token = ADMIN.into()).await else {
        return;
    };
    let http = reqwest::Client::new();
    let id = "history-walk-1";
    let history_url = stack.url(&format!("/v1/carts/{id}/history"));

    // Nobody wrote to it yet: an empty history, as GET /v1/carts/{id} gives an empty cart.
    let empty = ok(http.get(&history_url)).await;
    assert_eq!(empty, json!({"cartId": id, "entries": [], "next": null}));

    // Four accepted commands (one an atomic pair), each with its own key and correlation id,
    // and a refused one, which records nothing.
    let commands = stack.url(&format!("/v1/carts/{id}/commands"));
    let sent = [
        ("h-1", add("TEST-SKU-123", 1)),
        (
            "h-2",
            json!({"commands": [add("TEST-SKU-456", 2), add("TEST-SKU-AAA", 1)]}),
        ),
        (
            "h-3",
            json!({"type": "ChangeQuantity", "lineId": 1, "quantity": 3}),
        ),
        ("h-4", json!({"type": "RemoveItem", "lineId": 2})),
    ];
    let mut versions = Vec::new();
    for (i, (key, body)) in sent.iter().enumerate() {
        if i == 2 {
            let refused = call(http.post(&commands).json(&add("NOPE", 1))).await;
            assert_error(&refused, 404, "unknown_sku", "NOPE");
        }
        let resp = http
            .post(&commands)
            .header("idempotency-key", *key)
            .header("x-correlation-id", format!("corr-{key}"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{key}");
        versions.push(etag(&resp));
    }

    let history = ok(http.get(&history_url)).await;
    assert_eq!(history["cartId"], id);
    assert_eq!(history["next"], Value::Null, "one page holds it all");
    // Each entry's sequence is the version its command's reply carried, ascending, and the
    // stream itself holds exactly these messages.
    assert_eq!(sequences(&history), versions);
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let stored = stack.events("default", id).await;
    assert_eq!(
        stored.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        versions
    );
    assert_eq!(
        types(&history),
        [
            vec!["ItemAdded"],
            vec!["ItemAdded", "ItemAdded"],
            vec!["ItemQuantityChanged"],
            vec!["ItemRemoved"],
        ]
    );
    for (i, (entry, (key, _))) in entries(&history).iter().zip(&sent).enumerate() {
        let expected = gateway::idempotency::command_id("default", id, key);
        assert_eq!(entry["commandId"], expected.to_string(), "{key}");
        assert_eq!(entry["correlationId"], format!("corr-{key}"));
        assert_eq!(entry["tenant"], "default");
        assert_eq!(entry["revision"], i as u64 + 1);
        for t in ["time", "occurredAt"] {
            let t = entry[t].as_str().unwrap();
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
    let first = &entries(&history)[0]["events"][0];
    assert_eq!(first["data"]["sku"], "TEST-SKU-123");
    assert_eq!(first["data"]["quantity"], 1);
    assert!(first["v"].as_u64().unwrap() >= 1);

    // Pages: `next` is the last sequence of a page that did not reach the end.
    let page = |query: String| ok(http.get(format!("{history_url}?{query}")));
    let one = page("limit=3".into()).await;
    assert_eq!(sequences(&one), versions[..3]);
    assert_eq!(one["next"], versions[2]);
    let rest = page(format!("after={}&limit=3", versions[2])).await;
    assert_eq!(sequences(&rest), versions[3..]);
    assert_eq!(rest["next"], Value::Null);
    let two = page(format!("after={}&limit=2", versions[0])).await;
    assert_eq!(sequences(&two), versions[1..3]);
    assert_eq!(two["next"], versions[2]);
    let none = page(format!("after={}", versions[3])).await;
    assert_eq!(sequences(&none), Vec::<u64>::new());
    assert_eq!(none["next"], Value::Null);

    // Bad parameters: a 400 naming them, and nothing changes.
    for (query, needle) in [
        ("limit=0", "limit must be 1..=500"),
        ("limit=501", "limit must be 1..=500"),
        ("limit=ten", "query parameter limit"),
        ("limit=-1", "query parameter limit"),
        ("after=-1", "query parameter after"),
        ("after=x", "query parameter after"),
        ("page=2", "unknown query parameter page"),
    ] {
        let got = call(http.get(format!("{history_url}?{query}"))).await;
        assert_error(&got, 400, "invalid_argument", needle);
    }
    // A 5 KB id is refused before any NATS call, without echoing it.
    let long = "A".repeat(5 * 1024);
    let resp = http
        .get(stack.url(&format!("/v1/carts/{long}/history")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    assert!(text.len() < 1024, "the reply does not echo the id: {text}");
    let got = (status, serde_json::from_str(&text).unwrap());
    assert_error(&got, 400, "invalid_argument", "cart_id");
    assert_eq!(stack.events("default", id).await.len(), versions.len());
    assert_eq!(ok(http.get(&history_url)).await, history, "unchanged");

    // The admin twin sees the same history.
    let admin = ok(http
        .get(stack.url(&format!("/admin/carts/{id}/history?tenant=default")))
        .bearer_auth(ADMIN))
    .await;
    assert_eq!(admin, history);
}

#[tokio::test]
async fn tenants_see_only_their_own_history_and_the_admin_sees_every_tenant() {
    let Some(stack) = stack_with(|c| {
        c.admin_token = ADMIN.into();
        c.api_keys = "key-a=shop-a,key-b=shop-b,key-c=shop-c".into();
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    // Ids are chosen by clients: shop-a and shop-b both have a cart "same-id".
    let id = "same-id";
    let run = |key: &'static str, body: Value| {
        http.post(stack.url(&format!("/v1/carts/{id}/commands")))
            .header("x-api-key", key)
            .json(&body)
            .send()
    };
    let mut a_versions = Vec::new();
    for sku in ["TEST-SKU-123", "TEST-SKU-456"] {
        let resp = run("key-a", add(sku, 1)).await.unwrap();
        assert_eq!(resp.status(), 200);
        a_versions.push(etag(&resp));
    }
    let resp = run("key-b", add("TEST-SKU-AAA", 4)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let b_version = etag(&resp);

    let history_of = |key: &'static str| {
        ok(http
            .get(stack.url(&format!("/v1/carts/{id}/history")))
            .header("x-api-key", key))
    };
    let a = history_of("key-a").await;
    assert_eq!(sequences(&a), a_versions);
    assert!(entries(&a).iter().all(|e| e["tenant"] == "shop-a"), "{a}");
    let b = history_of("key-b").await;
    assert_eq!(sequences(&b), [b_version]);
    assert_eq!(entries(&b)[0]["tenant"], "shop-b");
    assert_eq!(entries(&b)[0]["events"][0]["data"]["sku"], "TEST-SKU-AAA");
    let c = history_of("key-c").await;
    assert_eq!(entries(&c).len(), 0, "shop-c has no such cart: {c}");
    // Naming another tenant with one's key is refused, not answered.
    let got = call(
        http.get(stack.url(&format!("/v1/carts/{id}/history")))
            .header("x-api-key", "key-b")
            .header("x-tenant-id", "shop-a"),
    )
    .await;
    assert_error(&got, 403, "permission_denied", "x-tenant-id");
    let got = call(http.get(stack.url(&format!("/v1/carts/{id}/history")))).await;
    assert_error(&got, 401, "unauthenticated", "x-api-key");

    // The admin: one tenant, or the id in every tenant in stream order, paged the same way.
    let admin_url = stack.url(&format!("/admin/carts/{id}/history"));
    let admin = |query: &str| ok(http.get(format!("{admin_url}?{query}")).bearer_auth(ADMIN));
    assert_eq!(admin("tenant=shop-a").await, a);
    assert_eq!(admin("tenant=shop-c").await["entries"], json!([]));
    let all = admin("").await;
    let mut every = a_versions.clone();
    every.push(b_version);
    assert_eq!(sequences(&all), every);
    let tenants: Vec<&str> = entries(&all)
        .iter()
        .map(|e| e["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["shop-a", "shop-a", "shop-b"]);
    assert_eq!(all["next"], Value::Null);
    let first = admin("limit=2").await;
    assert_eq!(sequences(&first), a_versions);
    assert_eq!(first["next"], a_versions[1]);
    let second = admin(&format!("limit=2&after={}", a_versions[1])).await;
    assert_eq!(sequences(&second), [b_version]);
    assert_eq!(second["next"], Value::Null);

    // Without the token, or with a bad tenant or limit: refused with {error, code}.
    let got = call(http.get(&admin_url).header("x-api-key", "key-a")).await;
    assert_error(&got, 401, "unauthenticated", "Bearer");
    let got = call(http.get(&admin_url).bearer_auth("wrong")).await;
    assert_error(&got, 401, "unauthenticated", "wrong");
    let got = call(
        http.get(format!("{admin_url}?tenant=Shop%20A"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "query parameter tenant");
    let got = call(http.get(format!("{admin_url}?limit=0")).bearer_auth(ADMIN)).await;
    assert_error(&got, 400, "invalid_argument", "limit must be 1..=500");
}
