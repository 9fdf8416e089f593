//! The storefront API through the real stack (nats-server + aggregate + gateway), as the
//! go-cart-actor storefront client and its README use it.

mod common;

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

    // 2. Add an item by SKU (implicit quantity 1); the cookie is not set again.
    let resp = b
        .get(stack.url("/cart/add/TEST-SKU-123"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get(SET_COOKIE).is_none());
    let (status, reply) = json(resp).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"]["id"], id.as_str());
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-123".into(), 1)]);
    assert_eq!(reply["mutations"][0]["type"], "AddItem");
    assert_eq!(reply["mutations"][0]["mutation"]["sku"], "TEST-SKU-123");

    // 3. Add with an explicit payload: JSON content type, and the browser's text/plain.
    let body = json!({"sku": "TEST-SKU-456", "quantity": 2, "country": "se"});
    let (status, reply) = json(
        b.post(stack.url("/cart/"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["mutations"][0]["mutation"], body);
    let (status, reply) = json(
        b.post(stack.url("/cart"))
            .header(CONTENT_TYPE, TEXT)
            .body(r#"{"sku":"TEST-SKU-456","quantity":1,"country":"se"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let cart = &reply["result"];
    assert_eq!(
        lines(cart),
        [("TEST-SKU-123".into(), 1), ("TEST-SKU-456".into(), 3)]
    );
    assert_eq!(cart["totalPrice"]["incVat"], 24900 + 3 * 19900);

    // 4. Change the quantity of a line (ids from the cart, as the README says).
    let line = line_id(cart, "TEST-SKU-123");
    let (status, reply) = json(
        b.put(stack.url("/cart/"))
            .json(&json!({"id": line, "quantity": 3}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["mutations"][0]["type"], "ChangeQuantity");
    assert_eq!(lines(&reply["result"])[0], ("TEST-SKU-123".into(), 3));

    // 5. Remove an item (a JSON body on the DELETE is ignored).
    let (status, reply) = json(
        b.delete(stack.url(&format!("/cart/{line}")))
            .header(CONTENT_TYPE, TEXT)
            .body(r#"{"id":1}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-456".into(), 3)]);

    // 6. Set the entire cart contents.
    let (status, reply) = json(
        b.post(stack.url("/cart/set"))
            .json(&json!({"items": [
                {"sku": "TEST-SKU-AAA", "quantity": 1, "country": "se"},
                {"sku": "TEST-SKU-BBB", "quantity": 2, "country": "se"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let cart = reply["result"].clone();
    assert_eq!(
        lines(&cart),
        [("TEST-SKU-AAA".into(), 1), ("TEST-SKU-BBB".into(), 2)]
    );
    let (aaa, bbb) = (
        line_id(&cart, "TEST-SKU-AAA"),
        line_id(&cart, "TEST-SKU-BBB"),
    );

    // 7. Add a delivery for both lines; 8. remove it.
    let (status, reply) = json(
        b.post(stack.url("/cart/delivery"))
            .json(&json!({"provider": "standard", "items": [aaa, bbb]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let delivery = &reply["result"]["deliveries"][0];
    assert_eq!(delivery["provider"], "standard");
    assert_eq!(delivery["items"], json!([aaa, bbb]));
    let delivery_id = delivery["id"].as_u64().unwrap();
    let (status, reply) = json(
        b.delete(stack.url(&format!("/cart/delivery/{delivery_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"]["deliveries"], json!([]));

    // 9. A pickup point on a delivery (items omitted: every line without a delivery).
    let (status, reply) = json(
        b.post(stack.url("/cart/delivery"))
            .json(&json!({"provider": "postnord-pickup"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let delivery_id = reply["result"]["deliveries"][0]["id"].as_u64().unwrap();
    let point = json!({"id": "PUP123", "name": "Locker 5", "address": "Main St 1",
        "city": "Stockholm", "zip": "11122", "country": "SE"});
    let (status, reply) = json(
        b.put(stack.url(&format!("/cart/delivery/{delivery_id}/pickupPoint")))
            .json(&point)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"]["deliveries"][0]["pickupPoint"], point);

    // 10. Checkout is not wired yet: a clear JSON error, nothing changes.
    let got = json(b.get(stack.url("/cart/checkout")).send().await.unwrap()).await;
    assert_error(&got, 501, "unimplemented", "runner");

    // 11. A known cart id directly: read and write without cookies.
    let plain = reqwest::Client::new();
    let (status, by_id) = json(
        plain
            .get(stack.url(&format!("/cart/byid/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(by_id, reply["result"], "byid reads the cookie's cart");
    let (status, same) = json(
        plain
            .get(stack.url(&format!("/cart/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &same), (200, &by_id));
    let known = "1720000000000000";
    let (status, fresh) = json(
        plain
            .get(stack.url(&format!("/cart/byid/{known}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
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

    // 12. Clear the cookie: the next request gets a new, empty cart; the old one stays.
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
    let (status, next) = json(b.get(stack.url("/cart/")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_ne!(next["id"], id.as_str());
    assert_eq!(next["items"], json!([]));
    let (_, old) = json(
        plain
            .get(stack.url(&format!("/cart/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(lines(&old).len(), 2);
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

/// One bad request: method, path below the cart root, body, expected status, code, and a
/// fragment of the message (the field it names).
struct Bad {
    method: &'static str,
    path: String,
    body: Option<String>,
    status: u16,
    code: &'static str,
    says: &'static str,
}

fn bad(
    method: &'static str,
    path: &str,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Bad {
    Bad {
        method,
        path: path.to_owned(),
        body: body.map(|b| b.to_string()),
        status,
        code,
        says,
    }
}

fn raw(
    method: &'static str,
    path: &str,
    body: &str,
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Bad {
    Bad {
        method,
        path: path.to_owned(),
        body: Some(body.to_owned()),
        status,
        code,
        says,
    }
}

/// Every mutation route, every kind of bad input: each gets its documented status and
/// `{error, code}`, and the cart is exactly as before (same content, same version).
#[tokio::test]
async fn bad_input_on_every_mutation_route_changes_nothing() {
    let Some(stack) = stack().await else { return };
    let b = browser();
    let (_, reply) = json(
        b.get(stack.url("/cart/add/TEST-SKU-123"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = reply["result"]["id"].as_str().unwrap().to_owned();
    let line = line_id(&reply["result"], "TEST-SKU-123");
    let (status, reply) = json(
        b.post(stack.url("/cart/delivery"))
            .json(&json!({"provider": "standard"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let delivery = reply["result"]["deliveries"][0]["id"].as_u64().unwrap();

    let (i400, n404) = (400, 404);
    let q = |quantity: Value| json!({"sku": "TEST-SKU-123", "quantity": quantity});
    let items = |item: Value| json!({"items": [item]});
    let mut cases = vec![
        // POST /cart
        raw(
            "POST",
            "",
            r#"{"sku":"TEST-SKU-123","quantity":"#,
            i400,
            "invalid_argument",
            "malformed JSON",
        ),
        raw("POST", "", "", i400, "invalid_argument", "empty"),
        raw(
            "POST",
            "",
            "[1,2]",
            i400,
            "invalid_argument",
            "must be a JSON object",
        ),
        bad(
            "POST",
            "",
            Some(json!({"sku": "TEST-SKU-123", "quantity": 1, "colour": "red"})),
            i400,
            "invalid_argument",
            "colour: unknown field colour",
        ),
        bad(
            "POST",
            "",
            Some(json!({"sku": 123, "quantity": 1})),
            i400,
            "invalid_argument",
            "sku: invalid type",
        ),
        bad(
            "POST",
            "",
            Some(json!({"quantity": 1})),
            i400,
            "invalid_argument",
            "missing field sku",
        ),
        bad(
            "POST",
            "",
            Some(q(json!(-1))),
            i400,
            "invalid_argument",
            "quantity: invalid value: integer -1, expected u32",
        ),
        bad(
            "POST",
            "",
            Some(q(json!(0))),
            i400,
            "invalid_argument",
            "quantity must be 1..=999, got 0",
        ),
        bad(
            "POST",
            "",
            Some(q(json!(1000))),
            i400,
            "invalid_argument",
            "quantity must be 1..=999, got 1000",
        ),
        bad(
            "POST",
            "",
            Some(q(json!(99_999_999_999u64))),
            i400,
            "invalid_argument",
            "quantity: invalid value",
        ),
        bad(
            "POST",
            "",
            Some(q(json!(1.5))),
            i400,
            "invalid_argument",
            "quantity: invalid type",
        ),
        bad(
            "POST",
            "",
            Some(json!({"sku": "NOPE", "quantity": 1})),
            n404,
            "unknown_sku",
            "NOPE",
        ),
        // GET /cart/add/{sku}
        bad("GET", "/add/NOPE", None, n404, "unknown_sku", "NOPE"),
        // POST /cart/add
        raw(
            "POST",
            "/add",
            "{",
            i400,
            "invalid_argument",
            "malformed JSON",
        ),
        bad(
            "POST",
            "/add",
            Some(items(json!({"sku": "TEST-SKU-123", "quantity": 1, "x": 1}))),
            i400,
            "invalid_argument",
            "items[0].x: unknown field x",
        ),
        bad(
            "POST",
            "/add",
            Some(json!({"items": "TEST-SKU-123"})),
            i400,
            "invalid_argument",
            "items: invalid type",
        ),
        bad(
            "POST",
            "/add",
            Some(items(q(json!(-5)))),
            i400,
            "invalid_argument",
            "items[0].quantity: invalid value: integer -5",
        ),
        bad(
            "POST",
            "/add",
            Some(items(q(json!(0)))),
            i400,
            "invalid_argument",
            "got 0",
        ),
        bad(
            "POST",
            "/add",
            Some(json!({"items": []})),
            i400,
            "invalid_argument",
            "items",
        ),
        bad(
            "POST",
            "/add",
            Some(json!({"items": [q(json!(1)), {"sku": "NOPE", "quantity": 1}]})),
            n404,
            "unknown_sku",
            "NOPE",
        ),
        // PUT /cart
        raw(
            "PUT",
            "",
            r#"{"id":"#,
            i400,
            "invalid_argument",
            "malformed JSON",
        ),
        bad(
            "PUT",
            "",
            Some(json!({"id": line, "qty": 2})),
            i400,
            "invalid_argument",
            "qty: unknown field qty",
        ),
        bad(
            "PUT",
            "",
            Some(json!({"id": "one", "quantity": 2})),
            i400,
            "invalid_argument",
            "id: invalid type",
        ),
        bad(
            "PUT",
            "",
            Some(json!({"id": line, "quantity": -1})),
            i400,
            "invalid_argument",
            "quantity: invalid value: integer -1",
        ),
        bad(
            "PUT",
            "",
            Some(json!({"id": line, "quantity": 0})),
            i400,
            "invalid_argument",
            "quantity must be 1..=999, got 0",
        ),
        bad(
            "PUT",
            "",
            Some(json!({"id": line, "quantity": 100_000})),
            i400,
            "invalid_argument",
            "got 100000",
        ),
        bad(
            "PUT",
            "",
            Some(json!({"id": 999, "quantity": 1})),
            n404,
            "unknown_line",
            "no line 999",
        ),
        // DELETE /cart/{id}
        bad("DELETE", "/999", None, n404, "unknown_line", "no line 999"),
        bad(
            "DELETE",
            "/abc",
            None,
            i400,
            "invalid_argument",
            "path parameter",
        ),
        // POST /cart/set
        raw(
            "POST",
            "/set",
            "{items:[]}",
            i400,
            "invalid_argument",
            "malformed JSON",
        ),
        bad(
            "POST",
            "/set",
            Some(json!({"items": [], "replace": true})),
            i400,
            "invalid_argument",
            "replace: unknown field",
        ),
        bad(
            "POST",
            "/set",
            Some(items(q(json!(-1)))),
            i400,
            "invalid_argument",
            "items[0].quantity",
        ),
        bad(
            "POST",
            "/set",
            Some(items(q(json!(1000)))),
            i400,
            "invalid_argument",
            "got 1000",
        ),
        bad(
            "POST",
            "/set",
            Some(items(json!({"sku": "NOPE", "quantity": 1}))),
            n404,
            "unknown_sku",
            "NOPE",
        ),
        // POST /cart/delivery
        bad(
            "POST",
            "/delivery",
            Some(json!({"provider": "standard", "items": [999]})),
            n404,
            "unknown_line",
            "no line 999",
        ),
        bad(
            "POST",
            "/delivery",
            Some(json!({"provider": "teleport"})),
            n404,
            "unknown_delivery",
            "teleport",
        ),
        bad(
            "POST",
            "/delivery",
            Some(json!({"provider": "standard", "items": "all"})),
            i400,
            "invalid_argument",
            "items: invalid type",
        ),
        bad(
            "POST",
            "/delivery",
            Some(json!({"provider": "standard", "speed": 1})),
            i400,
            "invalid_argument",
            "speed: unknown field",
        ),
        // DELETE /cart/delivery/{id}
        bad(
            "DELETE",
            "/delivery/999",
            None,
            n404,
            "unknown_delivery",
            "no delivery 999",
        ),
        // PUT /cart/delivery/{id}/pickupPoint
        bad(
            "PUT",
            "/delivery/999/pickupPoint",
            Some(json!({"id": "P1"})),
            n404,
            "unknown_delivery",
            "no delivery 999",
        ),
        bad(
            "PUT",
            &format!("/delivery/{delivery}/pickupPoint"),
            Some(json!({"id": "P1", "street": "x"})),
            i400,
            "invalid_argument",
            "street: unknown field",
        ),
        bad(
            "PUT",
            &format!("/delivery/{delivery}/pickupPoint"),
            Some(json!({"id": 7})),
            i400,
            "invalid_argument",
            "id: invalid type",
        ),
        bad(
            "PUT",
            "/delivery/x/pickupPoint",
            Some(json!({"id": "P1"})),
            i400,
            "invalid_argument",
            "path parameter",
        ),
        // PUT /cart/voucher, DELETE /cart/voucher/{id}
        bad(
            "PUT",
            "/voucher",
            Some(json!({"code": "NOPE"})),
            n404,
            "unknown_voucher",
            "NOPE",
        ),
        bad(
            "PUT",
            "/voucher",
            Some(json!({"code": 10})),
            i400,
            "invalid_argument",
            "code: invalid type",
        ),
        bad(
            "PUT",
            "/voucher",
            Some(json!({"code": "WELCOME10", "percent": 50})),
            i400,
            "invalid_argument",
            "percent: unknown field",
        ),
        bad(
            "DELETE",
            "/voucher/999",
            None,
            n404,
            "unknown_voucher",
            "no voucher 999",
        ),
        // PUT /cart/user
        bad(
            "PUT",
            "/user",
            Some(json!({"userId": 5})),
            i400,
            "invalid_argument",
            "userId: invalid type",
        ),
        bad(
            "PUT",
            "/user",
            Some(json!({"user": "u1"})),
            i400,
            "invalid_argument",
            "user: unknown field",
        ),
        // PUT|DELETE /cart/item/{lineId}/marking
        bad(
            "PUT",
            "/item/999/marking",
            Some(json!({"type": 1, "text": "hi"})),
            n404,
            "unknown_line",
            "no line 999",
        ),
        bad(
            "PUT",
            &format!("/item/{line}/marking"),
            Some(json!({"type": "gift", "text": "hi"})),
            i400,
            "invalid_argument",
            "type: invalid type",
        ),
        bad(
            "PUT",
            &format!("/item/{line}/marking"),
            Some(json!({"type": 1})),
            i400,
            "invalid_argument",
            "missing field text",
        ),
        bad(
            "DELETE",
            "/item/999/marking",
            None,
            n404,
            "unknown_line",
            "no line 999",
        ),
    ];
    // An oversize body is refused on every mutation route, DELETEs included.
    let huge = format!(r#"{{"sku":"{}","quantity":1}}"#, "x".repeat(70 * 1024));
    for (method, path) in [
        ("POST", ""),
        ("PUT", ""),
        ("GET", "/add/TEST-SKU-123"),
        ("POST", "/add"),
        ("DELETE", &format!("/{line}")),
        ("POST", "/set"),
        ("POST", "/delivery"),
        ("DELETE", &format!("/delivery/{delivery}")),
        ("PUT", &format!("/delivery/{delivery}/pickupPoint")),
        ("PUT", "/voucher"),
        ("DELETE", "/voucher/1"),
        ("PUT", "/user"),
        ("PUT", &format!("/item/{line}/marking")),
        ("DELETE", &format!("/item/{line}/marking")),
    ] {
        cases.push(raw(method, path, &huge, 413, "payload_too_large", "limit"));
    }

    let v1 = reqwest::Client::new();
    let snapshot = || async {
        let resp = v1
            .get(stack.url(&format!("/v1/carts/{id}")))
            .send()
            .await
            .unwrap();
        let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
        (etag, resp.json::<Value>().await.unwrap())
    };
    let before = snapshot().await;
    for root in ["/cart".to_owned(), format!("/cart/byid/{id}")] {
        for case in &cases {
            let url = stack.url(&format!("{root}{}", case.path));
            let mut req = b.request(case.method.parse().unwrap(), &url);
            if let Some(body) = &case.body {
                req = req.header(CONTENT_TYPE, TEXT).body(body.clone());
            }
            let got = json(req.send().await.unwrap()).await;
            let what = format!(
                "{} {url} {:?}",
                case.method,
                case.body.as_deref().map(|b| &b[..b.len().min(80)])
            );
            assert_eq!(got.0, case.status, "{what}: {}", got.1);
            assert_error(&got, case.status, case.code, case.says);
        }
    }
    assert_eq!(
        snapshot().await,
        before,
        "a refused request changed the cart"
    );
}

/// Unknown routes and wrong methods are JSON too.
#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let Some(stack) = stack().await else { return };
    let plain = reqwest::Client::new();
    let got = json(plain.get(stack.url("/nope")).send().await.unwrap()).await;
    assert_error(&got, 404, "not_found", "/nope");
    let resp = plain.patch(stack.url("/cart")).send().await.unwrap();
    assert!(resp.headers()["allow"].to_str().unwrap().contains("POST"));
    assert_error(&json(resp).await, 405, "method_not_allowed", "PATCH");
    let got = json(plain.post(stack.url("/cart/push")).send().await.unwrap()).await;
    assert_error(&got, 501, "unimplemented", "push");
    let got = json(
        plain
            .get(stack.url("/cart/confirmation/o-1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 501, "unimplemented", "confirmation");
}
