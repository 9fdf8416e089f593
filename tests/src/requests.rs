//! The requests and assertions the HTTP tests share: a shopper's client, `/v1` command bodies,
//! the `{error, code}` check and reading lines out of a cart view. The calls themselves (`call`,
//! `ok`, `json`, `text`) are `shared::test_support::http`'s, re-exported here.

use serde_json::Value;

pub use shared::test_support::http::{call, json, ok, text};

/// A client with a cookie jar, like a browser (the storefront's cart cookie).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// A `/v1` `AddItem` command (any quantity, to test the refusals too).
pub fn add(sku: &str, quantity: i64) -> Value {
    serde_json::json!({"type": "AddItem", "sku": sku, "quantity": quantity})
}

/// The storefront body adding one `TEST-SKU-123`.
pub fn add_one() -> Value {
    serde_json::json!({"sku": "TEST-SKU-123", "quantity": 1})
}

/// Asserts an error reply: status, stable code, a message containing `needle`, nothing else.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str, needle: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "status for {body}");
    assert_eq!(body["code"], code, "code in {body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "an error is exactly {{error, code}}: {body}"
    );
}

/// `(sku, qty)` of every line of a cart view.
pub fn lines(cart: &Value) -> Vec<(String, u64)> {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap().to_owned(),
                i["qty"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Line id of `sku` in a cart view.
pub fn line_id(cart: &Value, sku: &str) -> u64 {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sku"] == sku)
        .unwrap_or_else(|| panic!("{sku} not in {cart}"))["id"]
        .as_u64()
        .unwrap()
}

/// The value of an unlabelled series in a Prometheus text page (0 when absent).
pub fn metric_value(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
