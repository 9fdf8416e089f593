//! Every storefront mutation route, every kind of bad input, through the real stack: each
//! request gets its documented status and `{error, code}`, and the cart stays exactly as it
//! was (same content, same version). Run for the cookie routes and the `/cart/byid` twins.

use crate::common;

use common::*;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

/// One bad request: method, path below the cart root, raw body, expected status, code, and a
/// fragment of the message (usually the field it names).
type Bad = (
    &'static str,
    String,
    Option<String>,
    u16,
    &'static str,
    &'static str,
);

fn q(quantity: Value) -> String {
    json!({"sku": "TEST-SKU-123", "quantity": quantity}).to_string()
}

fn items(item: &str) -> String {
    format!(r#"{{"items":[{item}]}}"#)
}

#[rustfmt::skip]
fn cases(line: u64, delivery: u64) -> Vec<Bad> {
    let s = |v: &str| Some(v.to_owned());
    let p = |v: &str| v.to_owned();
    let (bad, nf) = (400, 404);
    let inv = "invalid_argument";
    let mut cases: Vec<Bad> = vec![
        // POST /cart
        ("POST", p(""), s(r#"{"sku":"TEST-SKU-123","quantity":"#), bad, inv, "malformed JSON"),
        ("POST", p(""), s(""), bad, inv, "empty"),
        ("POST", p(""), s("[1,2]"), bad, inv, "must be a JSON object"),
        ("POST", p(""), s(r#"{"sku":123,"quantity":1}"#), bad, inv, "sku: invalid type"),
        ("POST", p(""), s(r#"{"quantity":1}"#), bad, inv, "missing field sku"),
        ("POST", p(""), Some(q(json!(-1))), bad, inv, "quantity: invalid value: integer -1, expected u32"),
        ("POST", p(""), Some(q(json!(0))), bad, inv, "quantity must be 1..=999, got 0"),
        ("POST", p(""), Some(q(json!(1000))), bad, inv, "quantity must be 1..=999, got 1000"),
        ("POST", p(""), Some(q(json!(99_999_999_999u64))), bad, inv, "quantity: invalid value"),
        ("POST", p(""), Some(q(json!(1.5))), bad, inv, "quantity: invalid type"),
        ("POST", p(""), s(r#"{"sku":"NOPE","quantity":1}"#), nf, "unknown_sku", "NOPE"),
        // GET /cart/add/{sku}
        ("GET", p("/add/NOPE"), None, nf, "unknown_sku", "NOPE"),
        // POST /cart/add
        ("POST", p("/add"), s("{"), bad, inv, "malformed JSON"),
        ("POST", p("/add"), s(r#"{"items":"TEST-SKU-123"}"#), bad, inv, "items: invalid type"),
        ("POST", p("/add"), Some(items(&q(json!(-5)))), bad, inv, "items[0].quantity: invalid value: integer -5"),
        ("POST", p("/add"), Some(items(&q(json!(0)))), bad, inv, "got 0"),
        ("POST", p("/add"), s(r#"{"items":[]}"#), bad, inv, "items"),
        ("POST", p("/add"), Some(items(&format!(r#"{},{{"sku":"NOPE","quantity":1}}"#, q(json!(1))))), nf, "unknown_sku", "NOPE"),
        // PUT /cart
        ("PUT", p(""), s(r#"{"id":"#), bad, inv, "malformed JSON"),
        ("PUT", p(""), Some(json!({"id": line, "qty": 2}).to_string()), bad, inv, "qty: unknown field qty"),
        ("PUT", p(""), s(r#"{"id":"one","quantity":2}"#), bad, inv, "id: invalid type"),
        ("PUT", p(""), Some(json!({"id": line, "quantity": -1}).to_string()), bad, inv, "quantity: invalid value: integer -1"),
        ("PUT", p(""), Some(json!({"id": line, "quantity": 0}).to_string()), bad, inv, "quantity must be 1..=999, got 0"),
        ("PUT", p(""), Some(json!({"id": line, "quantity": 100_000}).to_string()), bad, inv, "got 100000"),
        ("PUT", p(""), s(r#"{"id":999,"quantity":1}"#), nf, "unknown_line", "no line 999"),
        // DELETE /cart/{id}
        ("DELETE", p("/999"), None, nf, "unknown_line", "no line 999"),
        ("DELETE", p("/abc"), None, bad, inv, "path parameter"),
        // POST /cart/set
        ("POST", p("/set"), s("{items:[]}"), bad, inv, "malformed JSON"),
        ("POST", p("/set"), s(r#"{"items":[],"replace":true}"#), bad, inv, "replace: unknown field"),
        ("POST", p("/set"), Some(items(&q(json!(-1)))), bad, inv, "items[0].quantity"),
        ("POST", p("/set"), Some(items(&q(json!(1000)))), bad, inv, "got 1000"),
        ("POST", p("/set"), Some(items(r#"{"sku":"NOPE","quantity":1}"#)), nf, "unknown_sku", "NOPE"),
        // POST /cart/delivery, DELETE /cart/delivery/{id}, PUT /cart/delivery/{id}/pickupPoint
        ("POST", p("/delivery"), s(r#"{"provider":"standard","items":[999]}"#), nf, "unknown_line", "no line 999"),
        ("POST", p("/delivery"), s(r#"{"provider":"teleport"}"#), nf, "unknown_delivery", "teleport"),
        ("POST", p("/delivery"), s(r#"{"provider":"standard","items":"all"}"#), bad, inv, "items: invalid type"),
        ("POST", p("/delivery"), s(r#"{"provider":"standard","speed":1}"#), bad, inv, "speed: unknown field"),
        ("DELETE", p("/delivery/999"), None, nf, "unknown_delivery", "no delivery 999"),
        ("PUT", p("/delivery/999/pickupPoint"), s(r#"{"id":"P1"}"#), nf, "unknown_delivery", "no delivery 999"),
        ("PUT", format!("/delivery/{delivery}/pickupPoint"), s(r#"{"id":"P1","street":"x"}"#), bad, inv, "street: unknown field"),
        ("PUT", format!("/delivery/{delivery}/pickupPoint"), s(r#"{"id":7}"#), bad, inv, "id: invalid type"),
        ("PUT", p("/delivery/x/pickupPoint"), s(r#"{"id":"P1"}"#), bad, inv, "path parameter"),
        // PUT /cart/voucher, DELETE /cart/voucher/{id}
        ("PUT", p("/voucher"), s(r#"{"code":"NOPE"}"#), nf, "unknown_voucher", "NOPE"),
        ("PUT", p("/voucher"), s(r#"{"code":10}"#), bad, inv, "code: invalid type"),
        ("PUT", p("/voucher"), s(r#"{"code":"WELCOME10","percent":50}"#), bad, inv, "percent: unknown field"),
        ("DELETE", p("/voucher/999"), None, nf, "unknown_voucher", "no voucher 999"),
        // PUT /cart/user
        ("PUT", p("/user"), s(r#"{"userId":5}"#), bad, inv, "userId: invalid type"),
        ("PUT", p("/user"), s(r#"{"user":"u1"}"#), bad, inv, "user: unknown field"),
        // PUT|DELETE /cart/item/{lineId}/marking
        ("PUT", p("/item/999/marking"), s(r#"{"type":1,"text":"hi"}"#), nf, "unknown_line", "no line 999"),
        ("PUT", format!("/item/{line}/marking"), s(r#"{"type":"gift","text":"hi"}"#), bad, inv, "type: invalid type"),
        ("PUT", format!("/item/{line}/marking"), s(r#"{"type":1}"#), bad, inv, "missing field text"),
        ("DELETE", p("/item/999/marking"), None, nf, "unknown_line", "no line 999"),
    ];
    // An oversize body is refused on every mutation route, DELETEs included.
    let huge = format!(r#"{{"sku":"{}","quantity":1}}"#, "x".repeat(70 * 1024));
    for (method, path) in [
        ("POST", p("")), ("PUT", p("")), ("GET", p("/add/TEST-SKU-123")), ("POST", p("/add")),
        ("DELETE", format!("/{line}")), ("POST", p("/set")), ("POST", p("/delivery")),
        ("DELETE", format!("/delivery/{delivery}")), ("PUT", format!("/delivery/{delivery}/pickupPoint")),
        ("PUT", p("/voucher")), ("DELETE", p("/voucher/1")), ("PUT", p("/user")),
        ("PUT", format!("/item/{line}/marking")), ("DELETE", format!("/item/{line}/marking")),
    ] {
        cases.push((method, path, Some(huge.clone()), 413, "payload_too_large", "limit"));
    }
    cases
}

#[tokio::test]
async fn bad_input_on_every_mutation_route_changes_nothing() {
    let Some(stack) = stack().await else { return };
    let b = browser();
    let (_, reply) = call(b.get(stack.url("/cart/add/TEST-SKU-123"))).await;
    let id = reply["result"]["id"].as_str().unwrap().to_owned();
    let line = line_id(&reply["result"], "TEST-SKU-123");
    let (status, reply) = call(
        b.post(stack.url("/cart/delivery"))
            .json(&json!({"provider": "standard"})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let delivery = reply["result"]["deliveries"][0]["id"].as_u64().unwrap();

    let plain = reqwest::Client::new();
    let snapshot = || async {
        let resp = plain
            .get(stack.url(&format!("/v1/carts/{id}")))
            .send()
            .await
            .unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        (etag, resp.json::<Value>().await.unwrap())
    };
    let before = snapshot().await;
    let cases = cases(line, delivery);
    for root in ["/cart".to_owned(), format!("/cart/byid/{id}")] {
        for (method, path, body, status, code, says) in &cases {
            let url = stack.url(&format!("{root}{path}"));
            // Bodies go as browsers send them: text/plain.
            let mut req = b.request(method.parse().unwrap(), &url);
            if let Some(body) = body {
                req = req
                    .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
                    .body(body.clone());
            }
            let got = call(req).await;
            let shown = body.as_deref().map(|b| &b[..b.len().min(80)]);
            assert_eq!(got.0, *status, "{method} {url} {shown:?}: {}", got.1);
            assert_error(&got, *status, code, says);
        }
    }
    assert_eq!(
        snapshot().await,
        before,
        "a refused request changed the cart"
    );
}

/// A path naming a cart whose id is not text (`%FF`) is refused: before, it fell back to the
/// cookie's cart (changed instead of the one the request named) or made a new one.
#[tokio::test]
async fn a_cart_id_that_is_not_text_is_refused_not_replaced_by_the_cookies_cart() {
    let Some(stack) = stack().await else { return };
    let b = browser();
    let (_, reply) = call(b.get(stack.url("/cart/add/TEST-SKU-123"))).await;
    let id = reply["result"]["id"].as_str().unwrap().to_owned();
    let before = stack.events("default", &id).await.len();
    let add = json!({"sku": "TEST-SKU-456", "quantity": 1}).to_string();
    for (method, path, body) in [
        ("POST", "/cart/byid/%FF", Some(add.clone())),
        ("POST", "/cart/byid/%FF/add", Some(items(&add))),
        ("GET", "/cart/byid/%C3%28", None),
    ] {
        for cookie in [true, false] {
            let client = if cookie { &b } else { &reqwest::Client::new() };
            let mut req = client.request(method.parse().unwrap(), stack.url(path));
            if let Some(body) = &body {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let resp = req.send().await.unwrap();
            assert!(
                resp.headers().get("set-cookie").is_none(),
                "{method} {path}: a new cart's cookie"
            );
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_error(&(status, body), 400, "invalid_argument", "path parameter");
        }
    }
    assert_eq!(
        stack.events("default", &id).await.len(),
        before,
        "the cookie's cart changed"
    );
}
