//! The storefront client's own contract, in two versions of the public `slask-finder-ui`
//! repository: `src/lib/datalayer/cart-api.ts` and `src/lib/types.ts` at commit 87d93df
//! (October 2025) and at aef5944 (December 2025, whose checkout moved to another service).
//!
//! Each version's types are mirrored below as Rust types that accept exactly what the
//! TypeScript declares: a required field must be there with its type (`number` is `f64`), an
//! optional one (`x?: T`) is an `Option`, which serde reads as `None` when absent; fields the client does not declare are ignored, as
//! they are at run time. Then every call of that version's `cart-api.ts` is made against the
//! gateway as the browser makes it: the same paths (trailing slash or none), the same bodies as
//! `JSON.stringify` writes them, sent as `fetch` sends a string (`text/plain;charset=UTF-8`),
//! with the `cartid` cookie; and every reply is read as the client's type.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tests::platform::{Platform, platform, platform_with};

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

/// A mutation's reply in both versions (`CartMutationResult` in October, `MutationResult` in
/// December), whose `ApplyResult` types its `error` as `E`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct MutationResult<T, E> {
    result: Option<T>,
    mutations: Option<Vec<ApplyResult<E>>>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ApplyResult<E> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "Option::default")]
    error: Option<E>,
    mutation: serde_json::Map<String, Value>,
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

    /// `error?: any`.
    pub type CartMutationResult<T> = super::MutationResult<T, Value>;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Cart {
        pub id: String,
        pub items: Vec<CartItem>,
        pub deliveries: Vec<CartDelivery>,
        pub processing: bool,
        pub payment_in_progress: bool,
        pub order_reference: Option<String>,
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
        pub outlet: Option<String>,
        pub seller_id: Option<String>,
        pub seller_name: Option<String>,
        pub brand: Option<String>,
        pub category: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartItem {
        pub id: f64,
        pub item_id: Loose,
        pub meta: CartItemMeta,
        pub org_price: Option<CartPrice>,
        pub price: CartPrice,
        pub qty: f64,
        pub sku: String,
        pub stock: f64,
        pub tax: f64,
        #[serde(rename = "type")]
        pub kind: String,
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

    /// Unchanged since October (`CartItemMeta` only lists its fields in another order).
    pub use super::october::{CartItemMeta, CartPrice};

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PickupPoint {
        pub delivery_id: Option<f64>,
        pub id: String,
        pub name: Option<String>,
        pub address: Option<String>,
        pub city: Option<String>,
        pub zip: Option<String>,
        pub country: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct CartDelivery {
        pub id: f64,
        pub provider: String,
        pub price: CartPrice,
        pub items: Vec<f64>,
        pub pickup_point: Option<PickupPoint>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ApplyError {
        pub message: String,
        pub code: String,
        pub status_code: f64,
    }

    /// `error?: ApplyError`.
    pub type MutationResult<T> = super::MutationResult<T, ApplyError>;

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
        pub order_reference: Option<String>,
        pub payment_status: Option<String>,
        pub vouchers: Vec<Voucher>,
        pub subscription_details: Option<BTreeMap<String, SubscriptionDetails>>,
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
        pub parent_id: Option<f64>,
        pub sku: String,
        pub price: CartPrice,
        pub total_price: Option<CartPrice>,
        pub org_price: Option<CartPrice>,
        pub stock: f64,
        pub qty: f64,
        pub discount: Option<CartPrice>,
        #[serde(rename = "type")]
        pub kind: String,
        pub store_id: Option<String>,
        pub meta: CartItemMeta,
        pub marking: Option<Marking>,
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

/// What the two versions of `cart-api.ts` do differently in the calls both make.
trait Version {
    /// The version's `Cart`.
    type Cart: DeserializeOwned;
    /// The version's mutation reply around a `Cart`.
    type Reply: DeserializeOwned;
    /// The cart's path as the version writes it (October's with a trailing slash).
    const CART: &'static str;
    /// The cart of a reply that applied exactly one mutation; panics naming `call` otherwise.
    fn applied(call: &str, reply: Self::Reply) -> Self::Cart;
}

struct October;

impl Version for October {
    type Cart = october::Cart;
    type Reply = october::CartMutationResult<october::Cart>;
    const CART: &'static str = "/cart/";

    fn applied(call: &str, r: Self::Reply) -> october::Cart {
        assert!(r.mutations.is_some_and(|m| m.len() == 1), "{call}");
        r.result.unwrap_or_else(|| panic!("{call}: no result"))
    }
}

struct December;

impl Version for December {
    type Cart = december::Cart;
    type Reply = december::MutationResult<december::Cart>;
    const CART: &'static str = "/cart";

    fn applied(call: &str, r: Self::Reply) -> december::Cart {
        let mutations = r.mutations.unwrap_or_default();
        assert!(
            mutations.len() == 1 && mutations[0].error.is_none(),
            "{call}: {mutations:?}"
        );
        r.result.unwrap_or_else(|| panic!("{call}: no result"))
    }
}

/// One browser running version `V` of the client: a cookie jar and `fetch` as `cart-api.ts`
/// calls it, with one method per call of the client (named as in `cart-api.ts`), sending the
/// body that call's `JSON.stringify` writes.
struct Browser<'a, V> {
    p: &'a Platform,
    http: reqwest::Client,
    version: PhantomData<V>,
}

impl<'a, V: Version> Browser<'a, V> {
    fn new(p: &'a Platform) -> Self {
        Browser {
            p,
            http: p.shopper(),
            version: PhantomData,
        }
    }

    /// `fetch(url, {method, body})`: a string body goes as `text/plain;charset=UTF-8`. Returns
    /// the reply read as `T` (the client's type); panics naming the call when the status is not
    /// a success or the reply does not fit the type.
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

    /// A call that changes the cart: the cart of its reply, which applied one mutation.
    async fn mutate(&self, call: &str, method: Method, path: &str, body: Option<&str>) -> V::Cart {
        let reply: V::Reply = self.fetch(call, method, path, body).await;
        V::applied(call, reply)
    }

    async fn get_cart(&self) -> V::Cart {
        self.fetch("getCart", Method::GET, V::CART, None).await
    }

    async fn get_cart_by_id(&self, id: &str) -> V::Cart {
        let path = format!("/cart/{id}");
        self.fetch("getCartById", Method::GET, &path, None).await
    }

    async fn add_to_cart(&self, sku: &str, quantity: u32) -> V::Cart {
        let body = format!(r#"{{"sku":"{sku}","quantity":{quantity},"country":"se"}}"#);
        self.mutate("addToCart", Method::POST, V::CART, Some(&body))
            .await
    }

    /// The mini cart's "add" of a related product: `addToCart({ ...item, quantity: 1 })`
    /// posts the whole catalogue item (its `id`, `title`, `values`, `stock`, ...), `country`
    /// added.
    async fn add_related_to_cart(&self, sku: &str) -> V::Cart {
        let body = format!(
            r#"{{"id":1017,"title":"A related book","img":"/img/1017.jpg","bp":"Paperback",
            "values":{{"2":"Books","4":24900,"10":"Books"}},"stock":{{"store-1":"5"}},
            "buyable":true,"buyableInStore":false,"advertisingText":"","badgeUrl":"",
            "presaleDate":"","releaseDate":"","restock":"","saleStatus":"","url":"/p/1017",
            "sku":"{sku}","quantity":1,"country":"se"}}"#
        );
        self.mutate("addToCart", Method::POST, V::CART, Some(&body))
            .await
    }

    async fn add_to_cart_multiple(&self, items: &[(&str, u32)]) -> V::Cart {
        let items: Vec<String> = items
            .iter()
            .map(|(sku, quantity)| format!(r#"{{"sku":"{sku}","quantity":{quantity}}}"#))
            .collect();
        let body = format!(r#"{{"items":[{}],"country":"se"}}"#, items.join(","));
        self.mutate("addToCartMultiple", Method::POST, "/cart/add", Some(&body))
            .await
    }

    async fn change_quantity(&self, id: f64, quantity: u32) -> V::Cart {
        let body = format!(r#"{{"id":{id},"quantity":{quantity}}}"#);
        self.mutate("changeQuantity", Method::PUT, V::CART, Some(&body))
            .await
    }

    async fn add_voucher(&self, code: &str) -> V::Cart {
        let body = format!(r#"{{"code":"{code}","country":"se"}}"#);
        self.mutate("addVoucher", Method::PUT, "/cart/voucher", Some(&body))
            .await
    }

    async fn remove_voucher(&self, id: f64) -> V::Cart {
        let path = format!("/cart/voucher/{id}");
        self.mutate(
            "removeVoucher",
            Method::DELETE,
            &path,
            Some(r#"{"country":"se"}"#),
        )
        .await
    }

    async fn remove_from_cart(&self, id: f64) -> V::Cart {
        let path = format!("/cart/{id}");
        self.mutate("removeFromCart", Method::DELETE, &path, None)
            .await
    }
}

/// The calls only the December client makes.
impl Browser<'_, December> {
    async fn set_user_id(&self, user_id: &str) -> december::Cart {
        let body = format!(r#"{{"userId":"{user_id}"}}"#);
        self.mutate("setUserId", Method::PUT, "/cart/user", Some(&body))
            .await
    }

    async fn upsert_subscription_details(&self, body: &str) -> december::Cart {
        let call = "upsertSubscriptionDetails";
        self.mutate(call, Method::PUT, "/cart/subscription-details", Some(body))
            .await
    }

    async fn remove_subscription_details(&self, id: &str) -> december::Cart {
        let path = format!("/cart/subscription-details/{id}");
        self.mutate("removeSubscriptionDetails", Method::DELETE, &path, None)
            .await
    }

    async fn add_to_cart_by_sku(&self, sku: &str) -> december::Cart {
        let path = format!("/cart/add/{sku}");
        self.mutate("addToCartBySku", Method::GET, &path, None)
            .await
    }

    async fn set_item_marking(&self, id: f64, kind: u32, marking: &str) -> december::Cart {
        let path = format!("/cart/item/{id}/marking");
        let body = format!(r#"{{"type":{kind},"marking":"{marking}"}}"#);
        self.mutate("setItemMarking", Method::PUT, &path, Some(&body))
            .await
    }

    async fn remove_item_marking(&self, id: f64) -> december::Cart {
        let path = format!("/cart/item/{id}/marking");
        self.mutate("removeItemMarking", Method::DELETE, &path, None)
            .await
    }
}

/// Every call of the October client, checkout and confirmation included.
#[tokio::test]
async fn the_october_2025_client_reads_every_reply_as_its_own_types() {
    use october::*;
    let Some(p) = platform().await else { return };
    let b = Browser::<October>::new(&p);
    assert!(b.get_cart().await.items.is_empty());
    let cart = b.add_to_cart("TEST-SKU-123", 1).await;
    assert_eq!(cart.items.len(), 1);
    let cart = b
        .add_to_cart_multiple(&[("TEST-SKU-456", 2), ("BOOK-NOVEL-01", 1)])
        .await;
    assert_eq!(cart.items.len(), 3);
    let cart = b.add_related_to_cart("BOOK-NOVEL-01").await;
    assert_eq!(cart.items.len(), 3, "one more of a line it has");
    assert_eq!(cart.items[2].qty, 2.0);
    assert_eq!(b.change_quantity(1.0, 3).await.items[0].qty, 3.0);
    // The crash of the issue: a voucher's discount must be a number.
    let cart = b.add_voucher("WELCOME10").await;
    let voucher = &cart.vouchers[0];
    assert!(voucher.discount > 0.0, "{voucher:?}");
    assert_eq!(voucher.discount, cart.total_discount.inc_vat);
    assert!(b.remove_voucher(voucher.id).await.vouchers.is_empty());
    let cart = b.remove_from_cart(3.0).await;
    assert_eq!(cart.items.len(), 2);
    let by_id = b.get_cart_by_id(&cart.id).await;
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
        || async { b.get_cart().await.order_reference.is_some() },
        tests::stack::WAIT,
    )
    .await
    .expect("the order is placed");
}

/// The same subscription details, as a retry after a lost reply sends them again.
const SUBSCRIPTION: &str =
    r#"{"offeringCode":"5G-UNLIMITED","signingType":"bankid","data":{"msisdn":"0701234567"}}"#;

/// With API keys, as deployed: the browser client sends no `x-api-key`, so its calls are the
/// storefront tenant's (`GATEWAY_STOREFRONT_TENANT`); they were all 401 and the shop had no
/// cart. Everything but the storefront routes still needs a key.
#[tokio::test]
async fn the_browser_client_needs_no_key_where_the_gateway_has_a_storefront_tenant() {
    let Some(p) = platform_with(|c| {
        c.api_keys = "page-key=default".into();
        c.storefront_tenant = "default".into();
    })
    .await
    else {
        return;
    };
    let b = Browser::<October>::new(&p);
    let cart = b.add_to_cart("TEST-SKU-123", 1).await;
    assert_eq!(b.get_cart().await.id, cart.id);
    let keyless =
        tests::stack::call(reqwest::Client::new().get(p.url(&format!("/v1/carts/{}", cart.id))))
            .await;
    tests::requests::assert_error(&keyless, 401, "unauthenticated", "x-api-key");
    let keyed = reqwest::Client::new()
        .get(p.url(&format!("/v1/carts/{}", cart.id)))
        .header("x-api-key", "page-key");
    assert_eq!(tests::stack::ok(keyed).await["id"], cart.id.as_str());
}

/// Every cart call of the December client (its checkout lives in another service).
#[tokio::test]
async fn the_december_2025_client_reads_every_reply_as_its_own_types() {
    let Some(p) = platform().await else { return };
    let b = Browser::<December>::new(&p);
    assert_eq!(b.get_cart().await.total_tax, 0.0);
    let cart = b.add_to_cart("TEST-SKU-123", 1).await;
    assert!(cart.total_tax > 0.0, "totalTax is the VAT: {cart:?}");
    let cart = b.set_user_id("user-42").await;
    assert_eq!(cart.user_id.as_deref(), Some("user-42"));
    // A voucher whose minimum order is not met stays on the cart, not applied, saying why...
    let cart = b.add_voucher("FIFTYOFF").await;
    let voucher = &cart.vouchers[0];
    assert!(
        !voucher.applied && voucher.value == 0.0 && !voucher.rules.is_empty(),
        "{voucher:?}"
    );
    assert!(voucher.rules[0].contains("at least"), "{voucher:?}");
    assert!(!voucher.description.is_empty());
    // ... and applies as soon as the cart qualifies.
    let cart = b.add_to_cart_multiple(&[("HOME-THROW-02", 2)]).await;
    let voucher = &cart.vouchers[0];
    assert!(
        voucher.applied && voucher.value > 0.0 && voucher.rules.is_empty(),
        "{voucher:?}"
    );
    assert_eq!(b.change_quantity(1.0, 2).await.items[0].qty, 2.0);
    let cart = b.upsert_subscription_details(SUBSCRIPTION).await;
    let details = cart.subscription_details.expect("subscription details");
    let (id, first) = details.iter().next().unwrap();
    assert_eq!(
        (first.id.as_str(), first.offering_code.as_str()),
        (id.as_str(), "5G-UNLIMITED")
    );
    // The same request again (a retry after a lost reply) is the same entry, not a second.
    let again = b.upsert_subscription_details(SUBSCRIPTION).await;
    let again = again.subscription_details.unwrap();
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        vec![id],
        "a retry adds nothing"
    );
    let body =
        format!(r#"{{"id":"{id}","offeringCode":"5G-PLUS","signingType":"bankid","data":{{}}}}"#);
    let details = b.upsert_subscription_details(&body).await;
    let details = details.subscription_details.unwrap();
    assert_eq!(details.len(), 1, "upserted by id");
    assert_eq!(details[id].offering_code, "5G-PLUS");
    let left = b.remove_subscription_details(id).await.subscription_details;
    assert!(
        left.as_ref().is_none_or(|d| d.is_empty()),
        "removed: {left:?}"
    );
    let cart = b.add_to_cart_by_sku("BOOK-NOVEL-01").await;
    let line = cart.items.last().unwrap().id;
    let cart = b.set_item_marking(line, 1, "Happy birthday").await;
    let marking = cart.items.last().unwrap().marking.as_ref().unwrap();
    assert_eq!(
        (marking.kind, marking.text.as_str()),
        (1.0, "Happy birthday")
    );
    let unmarked = b.remove_item_marking(line).await;
    assert!(unmarked.items.last().unwrap().marking.is_none());
    assert!(
        b.remove_voucher(cart.vouchers[0].id)
            .await
            .vouchers
            .is_empty()
    );
    let cart = b.remove_from_cart(line).await;
    let by_id = b.get_cart_by_id(&cart.id).await;
    assert_eq!(by_id.total_tax, cart.total_tax);
}
