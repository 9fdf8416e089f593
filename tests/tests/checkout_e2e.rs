//! A storefront going from cart to placed order through the whole platform: nats-server,
//! aggregate, runner and gateway in-process, and the mock payment provider, whose push
//! callback reaches the gateway over HTTP exactly as the real provider's would.

use std::time::Duration;

use runner::provider::mock::{CompleteError, Faults};
use serde_json::{Value, json};
use shared::test_support::wait_until;
use tests::platform::{Platform, platform, platform_with};
use tests::requests::assert_error;
use tests::stack::{call, ok};

const ADMIN_TOKEN: &str = tests::platform::ADMIN_TOKEN;

/// A shopper's first checkout of a cart of two lines and a delivery.
struct FirstCheckout {
    /// The cart as it was filled, before the checkout.
    cart: Value,
    cart_id: String,
    /// The provider order the checkout answered with.
    order: Value,
    order_id: String,
}

/// The platform and a shopper whose cart has two lines and a delivery, checked out once
/// (`GET /cart/checkout` answered 200).
async fn checking_out() -> Option<(Platform, reqwest::Client, FirstCheckout)> {
    let p = platform().await?;
    let shopper = p.shopper();
    let cart = fill_cart(&p, &shopper).await;
    let (s, order) = checkout(&p, &shopper).await;
    assert_eq!(s, 200, "{order}");
    let first = FirstCheckout {
        cart_id: id(&cart),
        order_id: order_id(&order),
        cart,
        order,
    };
    Some((p, shopper, first))
}

fn id(cart: &Value) -> String {
    cart["id"].as_str().unwrap().to_owned()
}

/// The provider's id of an order.
fn order_id(order: &Value) -> String {
    order["order_id"].as_str().unwrap().to_owned()
}

/// Who the mock provider's order `order` was made for (tenant, cart, attempt).
fn made_for(p: &Platform, order: &str) -> shared::provider_order::MerchantData {
    p.mock.order(order).unwrap().merchant().unwrap()
}

/// How many checkout attempts the cart started, and how many provider orders were created
/// for it.
async fn attempts_and_orders(p: &Platform, cart_id: &str) -> (usize, u32) {
    (
        p.events_of_type(cart_id, "CheckoutStarted").await,
        p.mock.orders_for(cart_id),
    )
}

/// A shopper with a filled cart (its id) and a provider that answers after `delay_ms`.
async fn slow_provider(p: &Platform, delay_ms: u64) -> (reqwest::Client, String) {
    let shopper = p.shopper();
    let cart_id = id(&fill_cart(p, &shopper).await);
    p.mock.set_faults(Faults {
        delay_ms,
        ..Default::default()
    });
    (shopper, cart_id)
}

/// `GET /cart/checkout`: the status and the provider order (or the error).
async fn checkout(p: &Platform, shopper: &reqwest::Client) -> (u16, Value) {
    call(shopper.get(p.url("/cart/checkout"))).await
}

/// The provider completes `order` without asking the validation callback; waits until the
/// shopper's cart names the placed order.
async fn completed_unvalidated(p: &Platform, shopper: &reqwest::Client, order: &str) {
    assert_eq!(p.mock.complete_unvalidated(order).await.unwrap(), 200);
    p.until_cart(
        shopper,
        |c| !c["orderReference"].is_null(),
        "the paid order is placed",
    )
    .await;
}

/// A shopper with a cart of two lines and a delivery.
async fn fill_cart(p: &Platform, shopper: &reqwest::Client) -> Value {
    ok(shopper.get(p.url("/cart/add/TEST-SKU-123"))).await;
    ok(shopper
        .post(p.url("/cart"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(r#"{"sku":"TEST-SKU-456","quantity":2,"country":"se"}"#))
    .await;
    let reply = ok(shopper
        .post(p.url("/cart/delivery"))
        .json(&json!({"provider": "standard", "items": []})))
    .await;
    reply["result"].clone()
}

#[tokio::test]
async fn a_storefront_checks_out_pays_and_the_order_is_placed_once() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let FirstCheckout {
        cart,
        cart_id,
        order,
        order_id,
    } = first;
    assert!(order["html_snippet"].as_str().unwrap().contains(&order_id));
    assert_eq!(
        order["order_amount"], cart["totalPrice"]["incVat"],
        "the provider charges the cart's total"
    );
    assert_eq!(order["merchant_reference1"], cart_id.as_str());
    // The merchant's own fields stay with the merchant: the validation URL carries the cart's
    // callback token.
    assert!(order.get("merchant_urls").is_none(), "{order}");
    assert!(order.get("merchant_data").is_none(), "{order}");

    // Asking again (a page reload) resumes the same checkout: no second provider order.
    let again = ok(shopper.get(p.url("/cart/checkout"))).await;
    assert_eq!(again["order_id"], order_id.as_str());
    assert_eq!(p.mock.orders_for(&cart_id), 1);
    let now = p.cart(&shopper).await;
    assert_eq!(now["paymentInProgress"], true);

    // Not paid yet: no confirmation page (the order's snippet is its payment form).
    let got = call(shopper.get(p.url(&format!("/cart/confirmation/{order_id}")))).await;
    assert_error(&got, 409, "invalid_state", "not paid yet");

    // The shopper pays: the provider pushes to the gateway, the runner acknowledges the order
    // and confirms it on the cart.
    p.pay_and_wait_placed(&shopper, &order_id, "the order is placed")
        .await;
    let cart_now = p.cart(&shopper).await;
    assert_eq!(cart_now["paymentStatus"], "checkout_complete");
    assert_eq!(cart_now["paymentInProgress"], false);
    // The order is acknowledged with the provider right after it is placed.
    p.until_acknowledged(&order_id).await;

    // The confirmation page: the shopper's own order only. Its id alone (it shows in the
    // provider's redirect URLs) reads nothing, with no cart or with another cart.
    let conf = ok(shopper.get(p.url(&format!("/cart/confirmation/{order_id}")))).await;
    assert_eq!(conf["status"], "checkout_complete");
    let confirmation = p.url(&format!("/cart/confirmation/{order_id}"));
    let (s, err) = call(reqwest::Client::new().get(&confirmation)).await;
    assert_eq!((s, err["code"].as_str()), (404, Some("not_found")), "{err}");
    let (s, err) = call(
        reqwest::Client::new()
            .get(&confirmation)
            .header(http::header::COOKIE, "cartid=someone-else"),
    )
    .await;
    assert_eq!((s, err["code"].as_str()), (404, Some("not_found")), "{err}");

    // The provider pushes again (it retries until acknowledged): still one order.
    let push = p.url(&format!(
        "/cart/push?tenant=default&klarna_order_id={order_id}"
    ));
    ok(reqwest::Client::new().post(&push)).await;
    // Every push is recorded (a push is a hint, never dropped before its order was read);
    // the cart confirms the order once.
    let tenant = cart_domain::ids::TenantId::default_tenant();
    let push_subject =
        shared::subjects::workflow_command(&tenant, shared::workflow::PUSH_KIND, &order_id)
            .unwrap();
    let records = shared::test_support::subject_counts(
        &p.stack.js,
        shared::subjects::WORKFLOW_COMMANDS_STREAM,
        &push_subject,
    )
    .await;
    assert_eq!(records, vec![(push_subject, 2)], "both pushes recorded");
    p.settled().await;
    assert_eq!(p.orders_placed(&cart_id).await, 1, "one OrderPlaced");
    assert_eq!(p.mock.orders_for(&cart_id), 1);

    // The placed cart no longer changes: named by its id, a change is refused...
    let placed = p.url(&format!("/cart/byid/{cart_id}/add/TEST-SKU-AAA"));
    let got = call(reqwest::Client::new().get(&placed)).await;
    assert_error(&got, 409, "cart_locked", "the order is placed");
    // ... as is a change naming one of its lines through the cookie (the next cart has none) ...
    let reply = shopper
        .put(p.url("/cart"))
        .json(&json!({"id": 1, "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert!(!reply.headers().contains_key("set-cookie"));
    let got = (reply.status().as_u16(), reply.json().await.unwrap());
    assert_error(&got, 409, "cart_locked", "the order is placed");
    // ... and the shopper's next add (the cookie's cart) starts a new cart, whose cookie the
    // reply sets, instead of being refused for as long as the cookie lives.
    let reply = shopper
        .get(p.url("/cart/add/TEST-SKU-AAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.headers().contains_key("set-cookie"));
    let next: Value = reply.json().await.unwrap();
    assert_ne!(next["result"]["id"], cart_id.as_str());
    assert_eq!(next["result"]["items"].as_array().unwrap().len(), 1);
    assert!(next["result"]["orderReference"].is_null(), "{next}");
    assert_eq!(p.cart(&shopper).await["id"], next["result"]["id"]);
    let kept = ok(reqwest::Client::new().get(p.url(&format!("/cart/{cart_id}")))).await;
    assert_eq!(kept["orderReference"], cart_now["orderReference"]);
    assert_eq!(kept["items"], cart["items"], "the placed cart is as it was");
}

#[tokio::test]
async fn a_refused_checkout_is_a_clear_error_and_the_cart_stays_usable() {
    let Some(p) = platform().await else { return };
    p.mock.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    let shopper = p.shopper();
    fill_cart(&p, &shopper).await;
    let (s, err) = checkout(&p, &shopper).await;
    assert_eq!(s, 502, "{err}");
    assert_eq!(err["code"], "checkout_failed");
    assert!(err["error"].as_str().unwrap().contains("REJECTED"), "{err}");
    let cart = p.cart(&shopper).await;
    assert_eq!(cart["paymentInProgress"], false);
    assert_eq!(cart["paymentStatus"], "failed");

    // Still usable: change it and check out again once the provider accepts.
    ok(shopper.get(p.url("/cart/add/TEST-SKU-AAA"))).await;
    p.mock.set_faults(Faults::default());
    let order = ok(shopper.get(p.url("/cart/checkout"))).await;
    assert_eq!(
        order["order_lines"].as_array().unwrap().len(),
        4,
        "three items and the delivery"
    );
}

#[tokio::test]
async fn changing_the_cart_during_checkout_updates_the_same_provider_order() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let changed = ok(shopper.get(p.url("/cart/add/BOOK-NOVEL-01"))).await;
    assert_eq!(
        changed["result"]["paymentInProgress"], false,
        "the change re-opened the checkout"
    );
    let second = ok(shopper.get(p.url("/cart/checkout"))).await;
    assert_eq!(
        second["order_id"], first.order["order_id"],
        "the same provider order"
    );
    assert_eq!(
        second["order_amount"],
        changed["result"]["totalPrice"]["incVat"]
    );
    assert_eq!(p.mock.orders_for(&first.cart_id), 1);
    assert_eq!(p.mock.stats().orders, 1);
}

/// Four tabs of one shopper check out the same cart at once: they start one attempt, not four
/// (each tab's attempt once started, each superseding the one before, and the superseded tabs
/// waited out the checkout wait for a 202 that never resolved; now the tabs whose start finds
/// the cart changed read it again and join). All four get the one provider order, created
/// once and never updated.
#[tokio::test]
async fn tabs_checking_out_at_once_share_one_attempt_and_one_order() {
    let Some(p) = platform().await else { return };
    // The provider answers slowly, so every tab reads the cart before the first answer.
    let (shopper, cart_id) = slow_provider(&p, 300).await;
    let calls_before = p.mock.stats().api_requests;
    let tabs: Vec<(u16, Value)> =
        futures::future::join_all((0..4).map(|_| checkout(&p, &shopper))).await;
    for (status, body) in &tabs {
        assert_eq!(*status, 200, "every tab gets the order: {tabs:?}");
        assert_eq!(body["order_id"], tabs[0].1["order_id"], "{tabs:?}");
    }
    assert_eq!(attempts_and_orders(&p, &cart_id).await, (1, 1));
    assert_eq!(
        p.mock.stats().api_requests - calls_before,
        1,
        "one create, no update"
    );
}

/// A tab waits on its attempt while the shopper changes the cart in another tab and checks out
/// there: the waiting tab follows the newer attempt and gets the cart's order as it is now
/// (it waited out the checkout wait for a 202 of an attempt that could no longer finish).
#[tokio::test]
async fn a_tab_waiting_on_a_superseded_attempt_gets_the_newer_order() {
    let Some(p) = platform().await else { return };
    // Slow enough that the other tab's change lands before the first attempt's order does,
    // with a wide margin (the change is one request after the start is seen).
    let (shopper, cart_id) = slow_provider(&p, 1_500).await;
    let other_tab = async {
        wait_until(
            || async { p.events_of_type(&cart_id, "CheckoutStarted").await == 1 },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let changed = ok(shopper.get(p.url("/cart/add/BOOK-NOVEL-01"))).await;
        (changed, checkout(&p, &shopper).await)
    };
    let (first_tab, (changed, second_tab)) = tokio::join!(checkout(&p, &shopper), other_tab);
    assert_eq!(second_tab.0, 200, "{second_tab:?}");
    assert_eq!(first_tab.0, 200, "the first tab follows: {first_tab:?}");
    assert_eq!(first_tab.1["order_id"], second_tab.1["order_id"]);
    assert_eq!(
        first_tab.1["order_amount"], changed["result"]["totalPrice"]["incVat"],
        "the order of the changed cart"
    );
    assert_eq!(attempts_and_orders(&p, &cart_id).await, (2, 1));
}

/// The runner keeps only a cart's last checkout result, and it need not name the cart's order:
/// an attempt given up after its purchase was approved (the cart, holding still, refused the
/// failure), or another attempt's result. `GET /cart/checkout` on the cart being paid answers
/// the cart's order all the same (it answered 500 and 404: a blank checkout page).
#[tokio::test]
async fn checking_out_a_cart_being_paid_answers_its_order_whatever_the_runner_recorded_last() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    p.mock.validate(&first.order_id).await.expect("approved");
    let attempt = made_for(&p, &first.order_id).attempt_id;
    let tenant = shared::TenantId::default_tenant();
    let subject =
        shared::subjects::workflow_event(&tenant, shared::workflow::CHECKOUT_KIND, &first.cart_id)
            .unwrap();
    for (attempt_id, what) in [
        (attempt.as_str(), "the attempt given up after the approval"),
        ("an-older-attempt", "another attempt's result"),
    ] {
        let given_up = shared::workflow::CheckoutResult {
            tenant: tenant.to_string(),
            cart_id: first.cart_id.clone(),
            attempt_id: attempt_id.to_owned(),
            outcome: shared::workflow::CheckoutOutcome::Failed,
            order: None,
            failure_code: Some("provider_unavailable".into()),
            failure_reason: Some("no answer".into()),
            recorded_at: "2026-12-06T12:00:00Z".into(),
        };
        p.stack
            .js
            .publish(
                subject.clone(),
                serde_json::to_vec(&given_up).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let (s, order) = checkout(&p, &shopper).await;
        assert_eq!(s, 200, "{what}: {order}");
        assert_eq!(order_id(&order), first.order_id, "{what}");
    }
}

/// A provider slower than the gateway's checkout wait: `202` with `Retry-After` and a snippet
/// a storefront can show (the October client writes any 2xx's `html_snippet` into the page:
/// without one it showed "undefined"); asking again resumes the same attempt and gets its
/// order.
#[tokio::test]
async fn a_slow_provider_gets_the_shopper_a_pending_page_that_resumes() {
    let Some(p) = platform_with(|gw| gw.checkout_wait_ms = 100).await else {
        return;
    };
    let (shopper, cart_id) = slow_provider(&p, 1_000).await;
    let reply = shopper.get(p.url("/cart/checkout")).send().await.unwrap();
    assert_eq!(reply.status(), 202);
    assert_eq!(reply.headers()["retry-after"], "1");
    let pending: Value = reply.json().await.unwrap();
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["retryAfter"], 1, "{pending}");
    let snippet = pending["html_snippet"].as_str().expect("a snippet");
    assert!(snippet.contains("location.reload()"), "{snippet}");
    let attempt = pending["attemptId"].as_str().unwrap();

    p.mock.set_faults(Faults::default());
    // Asked again as the snippet's reload would: each ask waits up to the checkout wait.
    let mut asks = 0;
    let order = loop {
        let (s, body) = checkout(&p, &shopper).await;
        if s == 200 {
            break body;
        }
        assert_eq!(
            (s, body["attemptId"].as_str()),
            (202, Some(attempt)),
            "{body}"
        );
        asks += 1;
        assert!(asks < 100, "the order never came");
    };
    assert_eq!(made_for(&p, &order_id(&order)).attempt_id, attempt);
    assert_eq!(attempts_and_orders(&p, &cart_id).await, (1, 1));
}

/// The updated order is paid: the provider asks its validation callback (with the URL the
/// update carried), approves, and the order is placed with the changed cart's total.
#[tokio::test]
async fn an_order_updated_for_a_changed_cart_can_be_paid() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    ok(shopper.get(p.url("/cart/add/BOOK-NOVEL-01"))).await;
    let second = ok(shopper.get(p.url("/cart/checkout"))).await;
    assert_eq!(
        second["order_id"], first.order["order_id"],
        "updated, not another"
    );
    p.pay_and_wait_placed(&shopper, &first.order_id, "the updated order is placed")
        .await;
    p.settled().await;
    assert_eq!(p.orders_placed(&first.cart_id).await, 1);
}

/// The provider forgot the cart's order (it expired unpaid, or the provider's store was
/// reset). The next checkout gets an order of its own instead of failing on the forgotten
/// one for ever, and it can be paid.
#[tokio::test]
async fn a_checkout_whose_order_the_provider_forgot_gets_another() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    assert!(p.mock.expire(&first.order_id));
    ok(shopper.get(p.url("/cart/add/BOOK-NOVEL-01"))).await;
    let (s, second) = checkout(&p, &shopper).await;
    assert_eq!(s, 200, "{second}");
    let second = order_id(&second);
    assert_ne!(second, first.order_id, "a new order");
    p.pay_and_wait_placed(&shopper, &second, "the new order is placed")
        .await;
    p.settled().await;
    assert_eq!(p.orders_placed(&first.cart_id).await, 1);
}

#[tokio::test]
async fn runner_admin_routes_need_the_admin_token() {
    let Some(p) = platform().await else { return };
    let http = reqwest::Client::new();
    let status = p.url("/admin/runner/status");
    let (s, err) = call(http.get(&status)).await;
    assert_eq!((s, err["code"].as_str()), (401, Some("unauthenticated")));
    let (s, _) = call(http.get(&status).bearer_auth("wrong")).await;
    assert_eq!(s, 401);
    let st = ok(http.get(&status).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(st["draining"], false);
    // The platform's one runner takes the checkout lease and says so.
    wait_until(
        || async { ok(http.get(&status).bearer_auth(ADMIN_TOKEN)).await["leaseHeld"] == true },
        Duration::from_secs(30),
    )
    .await
    .expect("the runner holds the lease");
    assert!(
        st["providerBaseUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    let (s, _) = call(http.post(p.url("/admin/runner/reload"))).await;
    assert_eq!(s, 401);
    let drained = ok(http
        .post(p.url("/admin/runner/drain?waitSeconds=5"))
        .bearer_auth(ADMIN_TOKEN))
    .await;
    assert_eq!(
        (drained["draining"].as_bool(), drained["idle"].as_bool()),
        (Some(true), Some(true))
    );
    let (s, err) = call(
        http.post(p.url("/admin/runner/drain?waitSeconds=lots"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(
        (s, err["code"].as_str()),
        (400, Some("invalid_argument")),
        "{err}"
    );
}

/// A forged push, sent before payment for the shopper's real order (its id is in the
/// checkout JSON), once for the right tenant and once for another, blocks nothing: pushes are
/// hints, every one is read, and the provider's real push after payment places the order.
#[tokio::test]
async fn forged_and_early_pushes_do_not_stop_the_paid_order_from_being_placed() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let order_id = first.order_id;

    let attacker = reqwest::Client::new();
    for tenant in ["default", "evil"] {
        let forged = p.url(&format!(
            "/cart/push?tenant={tenant}&klarna_order_id={order_id}"
        ));
        let (s, reply) = call(attacker.post(&forged)).await;
        assert_eq!(s, 200, "a push is accepted whoever sends it: {reply}");
    }
    p.settled().await;
    let now = p.cart(&shopper).await;
    assert!(
        now["orderReference"].is_null(),
        "nothing placed unpaid: {now}"
    );

    // The shopper pays; the provider's own push arrives and the order is placed.
    p.pay_and_wait_placed(
        &shopper,
        &order_id,
        "the paid order is placed despite the forged pushes",
    )
    .await;
    p.until_acknowledged(&order_id).await;
    assert_eq!(p.orders_placed(&first.cart_id).await, 1);
}

/// The shopper checks out (provider order for the first total), adds an item (the cart now
/// totals more) and completes the old provider order: the provider's validation callback
/// refuses the purchase; if it completes anyway (the race between the two), the order is
/// recorded as a mismatch, never placed and never acknowledged. A new checkout charges the new
/// total and is placed.
/// The provider's validation approves the purchase; before the paid order comes back the
/// shopper (another tab, a storefront page) changes the cart. The change is refused while the
/// purchase completes, so the paid order still matches the cart and is placed, not left paid
/// and unplaced as a mismatch.
#[tokio::test]
async fn a_cart_holds_still_between_an_approved_purchase_and_its_order() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let (cart_id, order) = (first.cart_id, first.order_id);
    p.mock.validate(&order).await.expect("approved");
    for change in ["/cart/add/BOOK-NOVEL-01", "/cart/checkout"] {
        let (s, err) = call(shopper.get(p.url(change))).await;
        if change == "/cart/checkout" {
            // Checking out again resumes the attempt being paid: its order, no new attempt.
            assert_eq!(s, 200, "{err}");
            assert_eq!(order_id(&err), order);
            continue;
        }
        assert_eq!(
            (s, err["code"].as_str()),
            (409, Some("cart_locked")),
            "{change}: {err}"
        );
    }
    completed_unvalidated(&p, &shopper, &order).await;
    p.settled().await;
    assert_eq!(p.orders_placed(&cart_id).await, 1);
    assert_eq!(p.events_of_type(&cart_id, "OrderMismatched").await, 0);
}

/// Someone who is not the provider posts the validation callback of a shopper's order, with
/// the order exactly as the provider would (the worst case: they know it all), but without
/// the URL the runner gave the provider: no token, or a token of their own. It is refused
/// before the cart is asked, so the cart does not hold still for a purchase nobody makes.
#[tokio::test]
async fn a_forged_validation_callback_is_refused_and_holds_nothing() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let order = p.mock.order(&first.order_id).expect("the provider's order");
    let merchant = order.merchant().expect("merchant data");
    let url = |token: &str| {
        p.url(&format!(
            "/cart/validation?tenant=default&klarna_order_id={}{token}",
            first.order_id
        ))
    };
    // The token of another cart (an attacker's own, had they the key's output for it).
    let other_cart = shared::provider_order::MerchantData {
        cart_id: "another-cart".into(),
        ..merchant.clone()
    }
    .callback_token(&tests::platform::VALIDATION_KEY.into());
    let other_key = merchant.callback_token(&"not-the-key".into());
    let tokens = [
        String::new(),
        "&token=".to_owned(),
        format!("&token={other_cart}"),
        format!("&token={other_key}"),
        format!("&token={}", "f".repeat(5_000)),
    ];
    for token in &tokens {
        let (s, err) = call(p.shopper().post(url(token)).json(&order)).await;
        assert_eq!(
            (s, err["code"].as_str()),
            (403, Some("permission_denied")),
            "{}: {err}",
            &token[..token.len().min(40)]
        );
    }
    assert_eq!(p.events_of_type(&first.cart_id, "PaymentApproved").await, 0);
    let (s, cart) = call(shopper.get(p.url("/cart/add/BOOK-NOVEL-01"))).await;
    assert_eq!(s, 200, "the cart does not hold still: {cart}");
    // The provider's own call carries the token the runner gave it.
    let validation = order.merchant_urls.unwrap().validation.unwrap();
    assert!(validation.contains("&token="), "{validation}");
}

/// The validation callback decides on the cart as it is each time it is asked, never from an
/// earlier answer for the same order. Before, its command id was fixed per order and attempt,
/// so a second ask was a duplicate of the first approval, answered "approved" without a
/// decision: also after the attempt had ended and the cart had changed (the hold ran out),
/// when that purchase would charge the old contents and never be placed. Here the later ask
/// comes after the order was placed, which the cart refuses to approve again.
#[tokio::test]
async fn each_validation_is_decided_on_the_cart_as_it_is_then() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let order = first.order_id;
    p.mock.validate(&order).await.expect("approved");
    completed_unvalidated(&p, &shopper, &order).await;
    let refused = p.mock.validate(&order).await.unwrap_err();
    assert!(
        matches!(&refused, CompleteError::Refused(_)),
        "a placed cart approves nothing: {refused}"
    );
}

#[tokio::test]
async fn paying_the_old_amount_after_the_cart_changed_never_places_an_order() {
    let Some((p, shopper, first)) = checking_out().await else {
        return;
    };
    let (cart_id, old_order) = (first.cart_id, first.order_id);
    let old_amount = first.order["order_amount"].as_i64().unwrap();
    let changed = ok(shopper.get(p.url("/cart/add/BOOK-NOVEL-01"))).await;
    let new_amount = changed["result"]["totalPrice"]["incVat"].as_i64().unwrap();
    assert_ne!(old_amount, new_amount);

    // The provider asks the validation callback before completing: refused.
    let refused = p.mock.complete(&old_order).await.unwrap_err();
    assert!(
        matches!(&refused, CompleteError::Refused(why) if why.contains("cart_changed")),
        "{refused}"
    );
    assert_eq!(
        p.mock.order(&old_order).unwrap().status.as_deref(),
        Some("checkout_incomplete"),
        "the purchase did not complete"
    );

    // The purchase completes anyway: the paid order is recorded as a mismatch.
    assert_eq!(p.mock.complete_unvalidated(&old_order).await.unwrap(), 200);
    p.until_cart(
        &shopper,
        |c| c["paymentStatus"] == "payment_mismatch",
        "the mismatch is visible on the cart",
    )
    .await;
    p.settled().await;
    let now = p.cart(&shopper).await;
    assert!(now["orderReference"].is_null(), "never placed: {now}");
    assert_eq!(
        now["totalPrice"]["incVat"], new_amount,
        "the cart is intact"
    );
    assert!(
        !p.mock.stats().acknowledged.contains(&old_order),
        "never acknowledged"
    );
    assert_eq!(p.orders_placed(&cart_id).await, 0);
    assert_eq!(p.events_of_type(&cart_id, "OrderMismatched").await, 1);
    // Its confirmation page is no "thank you": paid, not placed.
    let got = call(shopper.get(p.url(&format!("/cart/confirmation/{old_order}")))).await;
    assert_error(&got, 409, "invalid_state", "paid but not placed");

    // Checking out again creates a new provider order for the new total; paying it places it.
    let second = ok(shopper.get(p.url("/cart/checkout"))).await;
    let new_order = order_id(&second);
    assert_ne!(new_order, old_order);
    assert_eq!(second["order_amount"], new_amount);
    p.pay_and_wait_placed(&shopper, &new_order, "the new order is placed")
        .await;
    assert_eq!(p.orders_placed(&cart_id).await, 1);
}

/// `attemptId` is the client's choice on `/v1`: the same one on two carts and on another
/// tenant gives each cart its own provider order (before, the second cart stayed
/// `processing` and the other tenant got the first tenant's order).
#[tokio::test]
async fn a_client_chosen_attempt_id_never_collides_across_carts_or_tenants() {
    let Some(p) = platform().await else { return };
    let http = reqwest::Client::new();
    let mut orders = Vec::new();
    for (tenant, cart) in [
        ("default", "attempt-x"),
        ("default", "attempt-y"),
        ("other", "attempt-x"),
    ] {
        let (s, reply) = call(
            http.post(p.url(&format!("/v1/carts/{cart}/commands")))
                .header("x-tenant-id", tenant)
                .json(&json!({"commands": [
                    {"type": "AddItem", "sku": "TEST-SKU-123", "quantity": 1},
                    {"type": "StartCheckout", "attemptId": "checkout-1"}
                ]})),
        )
        .await;
        assert_eq!(s, 200, "{tenant}/{cart}: {reply}");
        let (s, order) = call(
            http.get(p.url(&format!("/cart/byid/{cart}/checkout")))
                .header("x-tenant-id", tenant),
        )
        .await;
        assert_eq!(s, 200, "{tenant}/{cart} gets its provider order: {order}");
        let merchant = made_for(&p, &order_id(&order));
        assert_eq!(
            (merchant.tenant.as_str(), merchant.cart_id.as_str()),
            (tenant, cart),
            "the order names its own cart and tenant"
        );
        orders.push(order_id(&order));
    }
    orders.sort();
    orders.dedup();
    assert_eq!(orders.len(), 3, "three carts, three provider orders");
    assert_eq!(p.mock.orders_for("checkout-1"), 3);
}
