//! The storefront API through the real stack (nats-server + aggregate + gateway), as the
//! go-cart-actor storefront client and its README use it.

use crate::common;

use common::*;
use reqwest::header::{CONTENT_TYPE, SET_COOKIE};
use serde_json::{Value, json};

const TEXT: &str = "text/plain;charset=UTF-8";

/// The go-cart-actor README's curl walkthrough, step by step, with a cookie jar.
#[tokio::test]
async fn go_cart_actor_walkthrough() {
    let Some(stack) = stack().await else { return };
    let b = browser();

    // 1. Get (or create) a cart: a new cart id in an HttpOnly, SameSite=Lax cookie.
    let resp = b.get(stack.url("/cart/")).send().await.unwrap();
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["cartid=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    let (status, cart) = json(resp).await;
    assert_eq!(status, 200);
    assert_eq!(cart["items"], json!([]));
    let id = cart["id"].as_str().unwrap().to_owned();
    assert!(cookie.contains(&format!("cartid={id}")), "{cookie}");

    // 2. Add an item by SKU (implicit quantity 1); the same cookie is set again, its Max-Age
    //    counting from this change (an active cart outlives the cookie's first 30 days).
    let resp = b
        .get(stack.url("/cart/add/TEST-SKU-123"))
        .send()
        .await
        .unwrap();
    let again = resp.headers()[SET_COOKIE].to_str().unwrap();
    assert!(again.starts_with(&format!("cartid={id};")), "{again}");
    assert!(again.contains("Max-Age=2592000"), "{again}");
    let (status, reply) = json(resp).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"]["id"], id.as_str());
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-123".into(), 1)]);
    assert_eq!(reply["mutations"][0]["type"], "AddItem");
    assert_eq!(reply["mutations"][0]["mutation"]["sku"], "TEST-SKU-123");
    // A read sets no cookie: one that raced a newer cookie (the next cart after a purchase,
    // none after DELETE /cart) would set the old one back.
    let resp = b.get(stack.url("/cart/")).send().await.unwrap();
    assert!(resp.headers().get(SET_COOKIE).is_none());

    // 3. Add with an explicit payload: JSON content type, and the browser's text/plain.
    let body = json!({"sku": "TEST-SKU-456", "quantity": 2, "country": "se"});
    let reply = ok(b.post(stack.url("/cart/")).json(&body)).await;
    assert_eq!(reply["mutations"][0]["mutation"], body);
    let reply = ok(b
        .post(stack.url("/cart"))
        .header(CONTENT_TYPE, TEXT)
        .body(r#"{"sku":"TEST-SKU-456","quantity":1,"country":"se"}"#))
    .await;
    let cart = &reply["result"];
    assert_eq!(
        lines(cart),
        [("TEST-SKU-123".into(), 1), ("TEST-SKU-456".into(), 3)]
    );
    assert_eq!(cart["totalPrice"]["incVat"], 24900 + 3 * 19900);

    // 4. Change the quantity of a line (ids from the cart, as the README says).
    let line = line_id(cart, "TEST-SKU-123");
    let reply = ok(b
        .put(stack.url("/cart/"))
        .json(&json!({"id": line, "quantity": 3})))
    .await;
    assert_eq!(reply["mutations"][0]["type"], "ChangeQuantity");
    assert_eq!(lines(&reply["result"])[0], ("TEST-SKU-123".into(), 3));

    // 5. Remove an item (a JSON body on the DELETE is ignored).
    let reply = ok(b
        .delete(stack.url(&format!("/cart/{line}")))
        .header(CONTENT_TYPE, TEXT)
        .body(r#"{"id":1}"#))
    .await;
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-456".into(), 3)]);

    // 6. Set the entire cart contents.
    let reply = ok(b.post(stack.url("/cart/set")).json(&json!({"items": [
                {"sku": "TEST-SKU-AAA", "quantity": 1, "country": "se"},
                {"sku": "TEST-SKU-BBB", "quantity": 2, "country": "se"}]})))
    .await;
    let cart = reply["result"].clone();
    assert_eq!(
        lines(&cart),
        [("TEST-SKU-AAA".into(), 1), ("TEST-SKU-BBB".into(), 2)]
    );
    // A replaced cart numbers its lines from 1 again, as go-cart-actor does.
    assert_eq!(
        (
            line_id(&cart, "TEST-SKU-AAA"),
            line_id(&cart, "TEST-SKU-BBB")
        ),
        (1, 2)
    );

    // 7. Add a delivery for lines 1 and 2, exactly as the go-cart-actor README does; 8. remove it.
    let reply = ok(b
        .post(stack.url("/cart/delivery"))
        .json(&json!({"provider": "standard", "items": [1, 2]})))
    .await;
    let delivery = &reply["result"]["deliveries"][0];
    assert_eq!(delivery["provider"], "standard");
    assert_eq!(delivery["items"], json!([1, 2]));
    let delivery_id = delivery["id"].as_u64().unwrap();
    let reply = ok(b.delete(stack.url(&format!("/cart/delivery/{delivery_id}")))).await;
    assert_eq!(reply["result"]["deliveries"], json!([]));

    // 9. A pickup point on a delivery (items omitted: every line without a delivery).
    let reply = ok(b
        .post(stack.url("/cart/delivery"))
        .json(&json!({"provider": "postnord-pickup"})))
    .await;
    let delivery_id = reply["result"]["deliveries"][0]["id"].as_u64().unwrap();
    let point = json!({"id": "PUP123", "name": "Locker 5", "address": "Main St 1",
        "city": "Stockholm", "zip": "11122", "country": "SE"});
    let reply = ok(b
        .put(stack.url(&format!("/cart/delivery/{delivery_id}/pickupPoint")))
        .json(&point))
    .await;
    assert_eq!(reply["result"]["deliveries"][0]["pickupPoint"], point);

    // 10. The rest of the README's storefront routes, in its order: several items in one step,
    // a voucher applied and removed, a user, a gift marking set and removed.
    let reply = ok(b
        .post(stack.url("/cart/add"))
        .json(&json!({"items": [{"sku": "HOME-CANDLE-01", "quantity": 1}], "country": "se"})))
    .await;
    assert!(
        lines(&reply["result"]).contains(&("HOME-CANDLE-01".into(), 1)),
        "{reply}"
    );
    let reply = ok(b
        .put(stack.url("/cart/voucher"))
        .json(&json!({"code": "WELCOME10", "country": "se"})))
    .await;
    let voucher = &reply["result"]["vouchers"][0];
    assert_eq!(voucher["code"], "WELCOME10", "{reply}");
    // The storefront shape: the amount as a number (the storefront client renders it).
    assert!(voucher["discount"].as_i64().unwrap() > 0, "{reply}");
    assert_eq!(voucher["discount"], voucher["value"], "{reply}");
    assert_eq!(voucher["applied"], true, "{reply}");
    let voucher_id = voucher["id"].as_u64().unwrap();
    let reply = ok(b.delete(stack.url(&format!("/cart/voucher/{voucher_id}")))).await;
    assert_eq!(reply["result"]["vouchers"], json!([]));
    let reply = ok(b
        .put(stack.url("/cart/user"))
        .json(&json!({"userId": "user-42"})))
    .await;
    assert_eq!(reply["result"]["userId"], "user-42");
    let marking = json!({"type": 1, "text": "Happy birthday"});
    let reply = ok(b.put(stack.url("/cart/item/1/marking")).json(&marking)).await;
    assert_eq!(reply["result"]["items"][0]["id"], 1);
    assert_eq!(reply["result"]["items"][0]["marking"], marking);
    let reply = ok(b.delete(stack.url("/cart/item/1/marking"))).await;
    assert!(reply["result"]["items"][0]["marking"].is_null(), "{reply}");

    // 11. This stack has no runner: checkout is refused with a clear JSON error and nothing
    // changes (the checkout itself is tested end to end in tests/tests/checkout_e2e.rs).
    let got = call(b.get(stack.url("/cart/checkout"))).await;
    assert_error(&got, 501, "unimplemented", "runner");

    // 12. A known cart id directly: read and write without cookies.
    let plain = reqwest::Client::new();
    let by_id = ok(plain.get(stack.url(&format!("/cart/byid/{id}")))).await;
    assert_eq!(by_id, reply["result"], "byid reads the cookie's cart");
    let (status, same) = call(plain.get(stack.url(&format!("/cart/{id}")))).await;
    assert_eq!((status, &same), (200, &by_id));
    let known = "1720000000000000";
    let (status, fresh) = call(plain.get(stack.url(&format!("/cart/byid/{known}")))).await;
    assert_eq!(
        (status, fresh["id"].as_str(), lines(&fresh).len()),
        (200, Some(known), 0)
    );
    let resp = plain
        .post(stack.url(&format!("/cart/byid/{known}")))
        .json(&json!({"sku": "TEST-SKU-XYZ", "quantity": 1, "country": "se"}))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get(SET_COOKIE).is_none(),
        "byid sets no cookie"
    );
    let (status, reply) = json(resp).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-XYZ".into(), 1)]);

    // 13. Clear the cookie: the next request gets a new, empty cart; the old one stays.
    let resp = b.delete(stack.url("/cart/")).send().await.unwrap();
    assert!(
        resp.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "{:?}",
        resp.headers()
    );
    assert_eq!(resp.status(), 200);
    let next = ok(b.get(stack.url("/cart/"))).await;
    assert_ne!(next["id"], id.as_str());
    assert_eq!(next["items"], json!([]));
    let (_, old) = call(plain.get(stack.url(&format!("/cart/{id}")))).await;
    assert_eq!(lines(&old).len(), 3, "the old cart keeps its lines");

    // 14. The old cart's history: every accepted step, oldest first, as the stream holds it.
    let history = ok(plain.get(stack.url(&format!("/v1/carts/{id}/history")))).await;
    let entries = history["entries"].as_array().unwrap();
    let stored = stack.events("default", &id).await;
    let sequences: Vec<u64> = entries
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sequences,
        stored.iter().map(|m| m.sequence).collect::<Vec<_>>()
    );
    assert_eq!(entries[0]["events"][0]["type"], "ItemAdded", "step 2");
    assert_eq!(entries[0]["events"][0]["data"]["sku"], "TEST-SKU-123");
    assert_eq!(history["next"], Value::Null);
}

/// Without a cookie a mutation mints a cart like go-cart-actor; a line change on that new
/// cart is the domain's `unknown_line`, and a refused request sets no cookie.
#[tokio::test]
async fn mutations_without_a_cookie() {
    let Some(stack) = stack().await else { return };
    let plain = reqwest::Client::new();
    for (method, path, body) in [
        ("PUT", "/cart", json!({"id": 1, "quantity": 2})),
        ("DELETE", "/cart/1", Value::Null),
        (
            "PUT",
            "/cart/item/1/marking",
            json!({"type": 1, "text": "hi"}),
        ),
    ] {
        let mut req = plain.request(method.parse().unwrap(), stack.url(path));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.headers().get(SET_COOKIE).is_none(), "{method} {path}");
        assert_error(&json(resp).await, 404, "unknown_line", "no line 1");
    }
    let resp = plain
        .post(stack.url("/cart"))
        .body(r#"{"sku":"TEST-SKU-123","quantity":1}"#)
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let (status, reply) = json(resp).await;
    assert_eq!(status, 200, "{reply}");
    let id = reply["result"]["id"].as_str().unwrap();
    assert!(cookie.starts_with(&format!("cartid={id};")), "{cookie}");
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-123".into(), 1)]);
    // A cookie that is not a cart id is replaced rather than refused.
    let resp = plain
        .get(stack.url("/cart"))
        .header("cookie", "cartid=not.a.cart")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("cartid=")
    );
    assert_eq!(resp.status(), 200);
}

/// Unknown routes and wrong methods are JSON too.
#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let Some(stack) = stack().await else { return };
    let plain = reqwest::Client::new();
    let got = call(plain.get(stack.url("/nope"))).await;
    assert_error(&got, 404, "not_found", "/nope");
    let resp = plain.patch(stack.url("/cart")).send().await.unwrap();
    assert!(resp.headers()["allow"].to_str().unwrap().contains("POST"));
    assert_error(&json(resp).await, 405, "method_not_allowed", "PATCH");
    let got = call(plain.post(stack.url("/cart/push"))).await;
    assert_error(&got, 400, "invalid_argument", "klarna_order_id");
    let got = call(plain.get(stack.url("/cart/confirmation/o-1"))).await;
    assert_error(&got, 501, "unimplemented", "runner");
}
