//! The storefront client's own contract, in two versions of the public `slask-finder-ui`
//! repository: `src/lib/datalayer/cart-api.ts` and `src/lib/types.ts` at commit 87d93df
//! (October 2025) and at aef5944 (December 2025, whose checkout moved to another service).
//!
//! Each version's types are mirrored below as Rust types that accept exactly what the
//! TypeScript declares: a required field must be there with its type (`number` is `f64`), an
//! optional one (`x?: T`) may be absent; fields the client does not declare are ignored, as
//! they are at run time. Then every call of that version's `cart-api.ts` is made against the
//! gateway as the browser makes it: the same paths (trailing slash or none), the same bodies as
//! `JSON.stringify` writes them, sent as `fetch` sends a string (`text/plain;charset=UTF-8`),
//! with the `cartid` cookie; and every reply is read as the client's type.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tests::platform::{Platform, platform};

/// A field the client types as `string` but reads only through `Number(..)` or not at all
/// (October's `CartItem.itemId`, typed `string // maybe`, and `CartDelivery.id`). go-cart-actor
/// and this gateway send numbers, which the client's code handles.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code)]
enum Loose {
    Text(String),
    Number(f64),
}

// The mirrors' fields exist to be type-checked by deserialization; most are never read.
#[allow(dead_code)]
mod october {
    //! `types.ts` at 87d93df.
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartPrice {
        pub ex_vat: f64,
        pub inc_vat: f64,
        pub vat: BTreeMap<String, f64>,
    }

    #[derive(Debug, Deserialize)]
    pub struct CartDelivery {
        pub id: Loose,
        pub provider: String,
        pub items: Vec<f64>,
        pub price: CartPrice,
    }

    #[derive(Debug, Deserialize)]
    pub struct ApplyResult {
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(default)]
        pub error: Option<Value>,
        pub mutation: serde_json::Map<String, Value>,
    }

    #[derive(Debug, Deserialize)]
    pub struct CartMutationResult<T> {
        pub result: Option<T>,
        pub mutations: Option<Vec<ApplyResult>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Cart {
        pub id: String,
        pub items: Vec<CartItem>,
        pub deliveries: Vec<CartDelivery>,
        pub processing: bool,
        pub payment_in_progress: bool,
        #[serde(default)]
        pub order_reference: Option<String>,
        #[serde(default)]
        pub payment_status: Option<String>,
        pub total_price: CartPrice,
        pub total_discount: CartPrice,
        pub vouchers: Vec<Voucher>,
    }

    /// `MiniCart.tsx` renders `{voucher.discount}`: a number, or React refuses it.
    #[derive(Debug, Deserialize)]
    pub struct Voucher {
        pub id: f64,
        pub code: String,
        pub discount: f64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartItemMeta {
        pub image: String,
        pub name: String,
        #[serde(default)]
        pub outlet: Option<String>,
        #[serde(default)]
        pub seller_id: Option<String>,
        #[serde(default)]
        pub seller_name: Option<String>,
        #[serde(default)]
        pub brand: Option<String>,
        #[serde(default)]
        pub category: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartItem {
        pub id: f64,
        pub item_id: Loose,
        pub meta: CartItemMeta,
        #[serde(default)]
        pub org_price: Option<CartPrice>,
        pub price: CartPrice,
        pub qty: f64,
        pub sku: String,
        pub stock: f64,
        pub tax: f64,
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(default)]
        pub store_id: Option<String>,
    }

    /// `type Checkout = { html_snippet: string }` (checkout and confirmation).
    #[derive(Debug, Deserialize)]
    pub struct Checkout {
        pub html_snippet: String,
    }
}

#[allow(dead_code)]
mod december {
    //! `types.ts` at aef5944.
    use super::*;

    pub use super::october::CartPrice;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PickupPoint {
        #[serde(default)]
        pub delivery_id: Option<f64>,
        pub id: String,
        #[serde(default)]
        pub name: Option<String>,
        #[serde(default)]
        pub address: Option<String>,
        #[serde(default)]
        pub city: Option<String>,
        #[serde(default)]
        pub zip: Option<String>,
        #[serde(default)]
        pub country: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartDelivery {
        pub id: f64,
        pub provider: String,
        pub price: CartPrice,
        pub items: Vec<f64>,
        #[serde(default)]
        pub pickup_point: Option<PickupPoint>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ApplyError {
        pub message: String,
        pub code: String,
        pub status_code: f64,
    }

    #[derive(Debug, Deserialize)]
    pub struct ApplyResult {
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(default)]
        pub error: Option<ApplyError>,
        pub mutation: serde_json::Map<String, Value>,
    }

    #[derive(Debug, Deserialize)]
    pub struct MutationResult<T> {
        pub result: Option<T>,
        pub mutations: Option<Vec<ApplyResult>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Cart {
        pub id: String,
        pub items: Vec<CartItem>,
        pub total_price: CartPrice,
        /// A number here (the VAT of the total).
        pub total_tax: f64,
        pub total_discount: CartPrice,
        pub deliveries: Vec<CartDelivery>,
        pub processing: bool,
        pub payment_in_progress: bool,
        #[serde(default)]
        pub order_reference: Option<String>,
        #[serde(default)]
        pub payment_status: Option<String>,
        pub vouchers: Vec<Voucher>,
        #[serde(default)]
        pub subscription_details: Option<BTreeMap<String, SubscriptionDetails>>,
        #[serde(default)]
        pub user_id: Option<String>,
    }

    /// The mini cart strikes through a voucher that is on the cart but not `applied`.
    #[derive(Debug, Deserialize)]
    pub struct Voucher {
        pub id: f64,
        pub code: String,
        pub value: f64,
        pub description: String,
        pub applied: bool,
        pub rules: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartItemMeta {
        pub name: String,
        #[serde(default)]
        pub brand: Option<String>,
        #[serde(default)]
        pub category: Option<String>,
        #[serde(default)]
        pub seller_id: Option<String>,
        #[serde(default)]
        pub seller_name: Option<String>,
        pub image: String,
        #[serde(default)]
        pub outlet: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Marking {
        #[serde(rename = "type")]
        pub kind: f64,
        pub text: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartItem {
        pub id: f64,
        pub item_id: f64,
        #[serde(default)]
        pub parent_id: Option<f64>,
        pub sku: String,
        pub price: CartPrice,
        #[serde(default)]
        pub total_price: Option<CartPrice>,
        #[serde(default)]
        pub org_price: Option<CartPrice>,
        pub stock: f64,
        pub qty: f64,
        #[serde(default)]
        pub discount: Option<CartPrice>,
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(default)]
        pub store_id: Option<String>,
        pub meta: CartItemMeta,
        #[serde(default)]
        pub marking: Option<Marking>,
        #[serde(default)]
        pub subscription_details_id: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct SubscriptionDetails {
        pub id: String,
        pub offering_code: String,
        pub signing_type: String,
        pub data: serde_json::Map<String, Value>,
    }
}

/// One browser: a cookie jar and `fetch` as `cart-api.ts` calls it.
struct Browser<'a> {
    p: &'a Platform,
    http: reqwest::Client,
}

impl Browser<'_> {
    /// `fetch(url, {method, body})`: a string body goes as `text/plain;charset=UTF-8`. Returns
    /// the status and the reply read as `T` (the client's type); panics naming the call when
    /// the reply does not fit it.
    async fn fetch<T: DeserializeOwned>(
        &self,
        call: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> T {
        let mut req = self.http.request(method, self.p.url(path));
        if let Some(b) = body {
            req = req
                .header("content-type", "text/plain;charset=UTF-8")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{call}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{call}: the reply does not fit the client's type: {e}\n{text}")
        })
    }
}

fn result<T>(call: &str, r: october::CartMutationResult<T>) -> T {
    assert!(r.mutations.is_some_and(|m| m.len() == 1), "{call}");
    r.result.unwrap_or_else(|| panic!("{call}: no result"))
}

fn result_dec<T>(call: &str, r: december::MutationResult<T>) -> T {
    let mutations = r.mutations.unwrap_or_default();
    assert!(
        mutations.len() == 1 && mutations[0].error.is_none(),
        "{call}: {mutations:?}"
    );
    r.result.unwrap_or_else(|| panic!("{call}: no result"))
}

/// Every call of the October client, checkout and confirmation included.
#[tokio::test]
async fn the_october_2025_client_reads_every_reply_as_its_own_types() {
    use october::*;
    let Some(p) = platform().await else { return };
    let b = Browser {
        p: &p,
        http: p.shopper(),
    };
    let cart: Cart = b.fetch("getCart", Method::GET, "/cart/", None).await;
    assert!(cart.items.is_empty());
    let r: CartMutationResult<Cart> = b
        .fetch(
            "addToCart",
            Method::POST,
            "/cart/",
            Some(r#"{"sku":"TEST-SKU-123","quantity":1,"country":"se"}"#),
        )
        .await;
    let cart = result("addToCart", r);
    assert_eq!(cart.items.len(), 1);
    let r: CartMutationResult<Cart> = b
        .fetch(
            "addToCartMultiple",
            Method::POST,
            "/cart/add",
            Some(
                r#"{"items":[{"sku":"TEST-SKU-456","quantity":2},{"sku":"BOOK-NOVEL-01","quantity":1}],"country":"se"}"#,
            ),
        )
        .await;
    let cart = result("addToCartMultiple", r);
    assert_eq!(cart.items.len(), 3);
    let r: CartMutationResult<Cart> = b
        .fetch(
            "changeQuantity",
            Method::PUT,
            "/cart/",
            Some(r#"{"id":1,"quantity":3}"#),
        )
        .await;
    assert_eq!(result("changeQuantity", r).items[0].qty, 3.0);
    // The crash of the issue: a voucher's discount must be a number.
    let r: CartMutationResult<Cart> = b
        .fetch(
            "addVoucher",
            Method::PUT,
            "/cart/voucher",
            Some(r#"{"code":"WELCOME10","country":"se"}"#),
        )
        .await;
    let cart = result("addVoucher", r);
    let voucher = &cart.vouchers[0];
    assert!(voucher.discount > 0.0, "{voucher:?}");
    assert_eq!(voucher.discount, cart.total_discount.inc_vat);
    let r: CartMutationResult<Cart> = b
        .fetch(
            "removeVoucher",
            Method::DELETE,
            &format!("/cart/voucher/{}", voucher.id),
            Some(r#"{"country":"se"}"#),
        )
        .await;
    assert!(result("removeVoucher", r).vouchers.is_empty());
    let r: CartMutationResult<Cart> = b
        .fetch("removeFromCart", Method::DELETE, "/cart/3", None)
        .await;
    let cart = result("removeFromCart", r);
    assert_eq!(cart.items.len(), 2);
    let by_id: Cart = b
        .fetch(
            "getCartById",
            Method::GET,
            &format!("/cart/{}", cart.id),
            None,
        )
        .await;
    assert_eq!(by_id.total_price.inc_vat, cart.total_price.inc_vat);

    let checkout: Checkout = b
        .fetch("getCheckout", Method::GET, "/cart/checkout", None)
        .await;
    let order_id = checkout
        .html_snippet
        .split("data-order-id=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the snippet names its order")
        .to_owned();
    p.mock.complete(&order_id).await.unwrap();
    let confirmation: Checkout = b
        .fetch(
            "getConfirmation",
            Method::GET,
            &format!("/cart/confirmation/{order_id}"),
            None,
        )
        .await;
    assert!(confirmation.html_snippet.contains("checkout_complete"));
    // The paid order is placed; the client reads the placed cart as its own type too.
    shared::test_support::wait_until(
        || async {
            let after: Cart = b.fetch("getCart", Method::GET, "/cart/", None).await;
            after.order_reference.is_some()
        },
        tests::stack::WAIT,
    )
    .await
    .expect("the order is placed");
}

/// Every cart call of the December client (its checkout lives in another service).
#[tokio::test]
async fn the_december_2025_client_reads_every_reply_as_its_own_types() {
    use december::*;
    let Some(p) = platform().await else { return };
    let b = Browser {
        p: &p,
        http: p.shopper(),
    };
    let cart: Cart = b.fetch("getCart", Method::GET, "/cart", None).await;
    assert_eq!(cart.total_tax, 0.0);
    let r: MutationResult<Cart> = b
        .fetch(
            "addToCart",
            Method::POST,
            "/cart",
            Some(r#"{"sku":"TEST-SKU-123","quantity":1,"country":"se"}"#),
        )
        .await;
    let cart = result_dec("addToCart", r);
    assert!(cart.total_tax > 0.0, "totalTax is the VAT: {cart:?}");
    let r: MutationResult<Cart> = b
        .fetch(
            "setUserId",
            Method::PUT,
            "/cart/user",
            Some(r#"{"userId":"user-42"}"#),
        )
        .await;
    assert_eq!(
        result_dec("setUserId", r).user_id.as_deref(),
        Some("user-42")
    );
    // A voucher whose minimum order is not met stays on the cart, not applied, saying why...
    let r: MutationResult<Cart> = b
        .fetch(
            "addVoucher",
            Method::PUT,
            "/cart/voucher",
            Some(r#"{"code":"FIFTYOFF","country":"se"}"#),
        )
        .await;
    let cart = result_dec("addVoucher", r);
    let voucher = &cart.vouchers[0];
    assert!(
        !voucher.applied && voucher.value == 0.0 && !voucher.rules.is_empty(),
        "{voucher:?}"
    );
    assert!(voucher.rules[0].contains("at least"), "{voucher:?}");
    assert!(!voucher.description.is_empty());
    // ... and applies as soon as the cart qualifies.
    let r: MutationResult<Cart> = b
        .fetch(
            "addToCartMultiple",
            Method::POST,
            "/cart/add",
            Some(r#"{"items":[{"sku":"HOME-THROW-02","quantity":2}],"country":"se"}"#),
        )
        .await;
    let cart = result_dec("addToCartMultiple", r);
    let voucher = &cart.vouchers[0];
    assert!(
        voucher.applied && voucher.value > 0.0 && voucher.rules.is_empty(),
        "{voucher:?}"
    );
    let r: MutationResult<Cart> = b
        .fetch(
            "changeQuantity",
            Method::PUT,
            "/cart",
            Some(r#"{"id":1,"quantity":2}"#),
        )
        .await;
    assert_eq!(result_dec("changeQuantity", r).items[0].qty, 2.0);
    let r: MutationResult<Cart> = b
        .fetch(
            "upsertSubscriptionDetails",
            Method::PUT,
            "/cart/subscription-details",
            Some(
                r#"{"offeringCode":"5G-UNLIMITED","signingType":"bankid","data":{"msisdn":"0701234567"}}"#,
            ),
        )
        .await;
    let cart = result_dec("upsertSubscriptionDetails", r);
    let details = cart.subscription_details.expect("subscription details");
    let (id, first) = details.iter().next().unwrap();
    assert_eq!(
        (first.id.as_str(), first.offering_code.as_str()),
        (id.as_str(), "5G-UNLIMITED")
    );
    // The same request again (a retry after a lost reply) is the same entry, not a second.
    let r: MutationResult<Cart> = b
        .fetch(
            "upsertSubscriptionDetails",
            Method::PUT,
            "/cart/subscription-details",
            Some(
                r#"{"offeringCode":"5G-UNLIMITED","signingType":"bankid","data":{"msisdn":"0701234567"}}"#,
            ),
        )
        .await;
    let again = result_dec("upsertSubscriptionDetails", r)
        .subscription_details
        .unwrap();
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        vec![id],
        "a retry adds nothing"
    );
    let body =
        format!(r#"{{"id":"{id}","offeringCode":"5G-PLUS","signingType":"bankid","data":{{}}}}"#);
    let r: MutationResult<Cart> = b
        .fetch(
            "upsertSubscriptionDetails",
            Method::PUT,
            "/cart/subscription-details",
            Some(&body),
        )
        .await;
    let details = result_dec("upsertSubscriptionDetails", r)
        .subscription_details
        .unwrap();
    assert_eq!(details.len(), 1, "upserted by id");
    assert_eq!(details[id].offering_code, "5G-PLUS");
    let r: MutationResult<Cart> = b
        .fetch(
            "removeSubscriptionDetails",
            Method::DELETE,
            &format!("/cart/subscription-details/{id}"),
            None,
        )
        .await;
    let left = result_dec("removeSubscriptionDetails", r).subscription_details;
    assert!(
        left.as_ref().is_none_or(|d| d.is_empty()),
        "removed: {left:?}"
    );
    let r: MutationResult<Cart> = b
        .fetch(
            "addToCartBySku",
            Method::GET,
            "/cart/add/BOOK-NOVEL-01",
            None,
        )
        .await;
    let cart = result_dec("addToCartBySku", r);
    let line = cart.items.last().unwrap().id;
    let r: MutationResult<Cart> = b
        .fetch(
            "setItemMarking",
            Method::PUT,
            &format!("/cart/item/{line}/marking"),
            Some(r#"{"type":1,"marking":"Happy birthday"}"#),
        )
        .await;
    let cart = result_dec("setItemMarking", r);
    let marking = cart.items.last().unwrap().marking.as_ref().unwrap();
    assert_eq!(
        (marking.kind, marking.text.as_str()),
        (1.0, "Happy birthday")
    );
    let r: MutationResult<Cart> = b
        .fetch(
            "removeItemMarking",
            Method::DELETE,
            &format!("/cart/item/{line}/marking"),
            None,
        )
        .await;
    assert!(
        result_dec("removeItemMarking", r)
            .items
            .last()
            .unwrap()
            .marking
            .is_none()
    );
    let voucher_id = cart.vouchers[0].id;
    let r: MutationResult<Cart> = b
        .fetch(
            "removeVoucher",
            Method::DELETE,
            &format!("/cart/voucher/{voucher_id}"),
            Some(r#"{"country":"se"}"#),
        )
        .await;
    assert!(result_dec("removeVoucher", r).vouchers.is_empty());
    let r: MutationResult<Cart> = b
        .fetch(
            "removeFromCart",
            Method::DELETE,
            &format!("/cart/{line}"),
            None,
        )
        .await;
    let cart = result_dec("removeFromCart", r);
    let by_id: Cart = b
        .fetch(
            "getCartById",
            Method::GET,
            &format!("/cart/{}", cart.id),
            None,
        )
        .await;
    assert_eq!(by_id.total_tax, cart.total_tax);
}
