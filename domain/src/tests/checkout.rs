//! The checkout lifecycle across several commands.

use super::*;
use crate::code::ErrorCode;

/// The provider's answer to `attempt`: its order `ko-1`, not paid yet.
fn order_created(attempt: &str) -> Command {
    record(attempt, "ko-1")
}

/// A cart of one item whose checkout attempt `a1` has started, then `then`.
fn checking_out(then: Vec<Command>) -> Cart {
    let mut commands = vec![Command::AddItem(add("TEST-SKU-123", 1)), checkout("a1")];
    commands.extend(then);
    given(commands)
}

fn apply_all(mut cart: Cart, cmd: Command) -> Cart {
    for e in when(&cart, cmd).unwrap() {
        cart = evolve(cart, &e);
    }
    cart
}

#[test]
fn happy_path_flags_follow_the_checkout() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 2)),
        delivery("standard", &[]),
    ]);
    assert!(!cart.payment_in_progress());

    let cart = apply_all(cart, checkout("a1"));
    assert!(cart.processing() && cart.payment_in_progress());
    assert_eq!(cart.payment_status.as_deref(), Some("pending"));

    let cart = apply_all(cart, order_created("a1"));
    assert!(!cart.processing() && cart.payment_in_progress());
    assert_eq!(cart.provider_order_id.as_deref(), Some("ko-1"));

    let paid = paid_for(&cart);
    let events = when(&cart, confirm_order("ko-1", "REF-9", paid.clone())).unwrap();
    let Event::OrderPlaced(placed) = &events[0] else {
        panic!("expected OrderPlaced, got {events:?}")
    };
    assert_eq!(
        (placed.total_amount, placed.attempt_id.as_deref()),
        (paid.amount, Some("a1")),
        "the order is what the attempt charged"
    );
    let cart = events.iter().fold(cart, evolve);
    let view = CartView::of(&cart);
    assert_eq!(view.order_reference.as_deref(), Some("REF-9"));
    assert_eq!(view.payment_status.as_deref(), Some("checkout_complete"));
    assert!(!view.payment_in_progress);
}

#[test]
fn checkout_started_carries_provider_lines_that_sum_to_the_total() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 2)),
        Command::AddItem(add("BOOK-1", 1)),
        delivery("standard", &[]),
        voucher("TEN"),
    ]);
    let events = when(&cart, checkout("a1")).unwrap();
    let Event::CheckoutStarted(s) = &events[0] else {
        panic!("expected CheckoutStarted")
    };
    let t = totals(&cart);
    assert_eq!(s.total_amount, t.total.inc_vat);
    assert_eq!(s.total_tax_amount, t.total.total_vat());
    assert_eq!(
        s.lines.iter().map(|l| l.total_amount).sum::<i64>(),
        s.total_amount
    );
    assert_eq!(
        s.lines.iter().map(|l| l.total_tax_amount).sum::<i64>(),
        s.total_tax_amount
    );
    let kinds: Vec<&str> = s.lines.iter().map(|l| l.kind.as_str()).collect();
    // Two item lines, one shipping fee, the voucher split over the two VAT rates.
    assert_eq!(
        kinds,
        [
            "physical",
            "physical",
            "shipping_fee",
            "discount",
            "discount"
        ]
    );
    assert_eq!((s.currency.as_str(), s.country.as_str()), ("SEK", "se"));
    assert_eq!(s.provider_order_id, None);
}

#[test]
fn reopened_checkout_reuses_the_provider_order() {
    let cart = checking_out(vec![
        order_created("a1"),
        Command::AddItem(add("BOOK-1", 1)),
    ]);
    assert!(
        !cart.payment_in_progress(),
        "the change re-opened the checkout"
    );
    assert_eq!(
        cart.checkout.as_ref().unwrap().status,
        CheckoutStatus::Reopened
    );
    let events = when(&cart, checkout("a2")).unwrap();
    let Event::CheckoutStarted(s) = &events[0] else {
        panic!()
    };
    assert_eq!(s.provider_order_id.as_deref(), Some("ko-1"));
    assert_eq!(s.lines.len(), 2);
}

#[test]
fn a_stale_attempt_result_is_recorded_without_reviving_it() {
    // Attempt a1's provider order arrives after the shopper changed the cart.
    let cart = checking_out(vec![cq(1, 2), order_created("a1")]);
    assert_eq!(cart.provider_order_id.as_deref(), Some("ko-1"));
    assert!(!cart.payment_in_progress());
}

#[test]
fn failed_checkout_leaves_the_cart_usable() {
    let cart = checking_out(vec![fail("a1", "provider_rejected", "declined")]);
    assert!(!cart.payment_in_progress());
    assert_eq!(cart.payment_status.as_deref(), Some("failed"));
    let cart = apply_all(cart, Command::AddItem(add("BOOK-1", 1)));
    assert_eq!(cart.lines.len(), 2);
    assert!(when(&cart, checkout("a2")).is_ok());
}

#[test]
fn cancelled_checkout_can_restart() {
    let cart = checking_out(vec![Command::CancelCheckout]);
    assert!(!cart.payment_in_progress());
    assert_eq!(
        when(&cart, Command::CancelCheckout).unwrap_err().code(),
        ErrorCode::InvalidState
    );
    assert_eq!(
        types(&when(&cart, checkout("a2")).unwrap()),
        ["CheckoutStarted"]
    );
}

/// The shopper checks out, changes the cart, then pays the provider order of the first
/// attempt (an old tab): the order is not placed, the mismatch is recorded once with a
/// reason, and the next checkout creates a fresh provider order.
#[test]
fn paying_an_attempt_the_cart_has_moved_past_is_a_mismatch_never_an_order() {
    let cart = given(vec![Command::AddItem(add("TEST-SKU-123", 2))]);
    let cart = apply_all(cart, checkout("a1"));
    let cart = apply_all(cart, order_created("a1"));
    let paid = paid_for(&cart);
    let cart = apply_all(cart, Command::AddItem(add("BOOK-1", 1)));
    assert_eq!(
        cart.checkout.as_ref().unwrap().status,
        CheckoutStatus::Reopened
    );
    let confirm = confirm_order("ko-1", "REF-1", paid);
    let events = when(&cart, confirm.clone()).unwrap();
    let [Event::OrderMismatched(m)] = events.as_slice() else {
        panic!("expected one OrderMismatched, got {events:?}")
    };
    assert_eq!(m.code, "cart_changed", "{m:?}");
    assert_eq!(m.paid_amount, 25000);
    let cart = events.iter().fold(cart, evolve);
    assert!(cart.order.is_none());
    assert!(!cart.payment_in_progress());
    assert_eq!(
        cart.provider_order_id, None,
        "a paid order cannot be updated"
    );
    assert_eq!(cart.payment_status.as_deref(), Some("payment_mismatch"));
    assert!(
        matches!(&cart.checkout.as_ref().unwrap().status, CheckoutStatus::Failed { code, .. } if code == "payment_mismatch")
    );
    // The provider pushes again: nothing new.
    assert_eq!(when(&cart, confirm).unwrap(), vec![]);
    // Checking out again starts a fresh provider order.
    let events = when(&cart, checkout("a2")).unwrap();
    let Event::CheckoutStarted(s) = &events[0] else {
        panic!("expected CheckoutStarted")
    };
    assert_eq!(s.provider_order_id, None);
}

/// An old result brought back by a redelivery, a full replay or a second runner records
/// nothing once it is settled: the paid-and-mismatched order (showing it again would leave the
/// cart unable to check out: the provider refuses to update a completed order), and an older
/// attempt's order once the current attempt has its own. (An ordered cart refuses every
/// command.)
#[test]
fn an_old_provider_order_result_never_comes_back_once_settled() {
    // Paid after the cart changed: a mismatch, the order is off the cart.
    let cart = apply_all(
        checking_out(vec![order_created("a1")]),
        Command::AddItem(add("BOOK-1", 1)),
    );
    let paid = paid_for(&cart);
    let cart = apply_all(cart, confirm_order("ko-1", "REF-1", paid));
    assert!(cart.mismatch("ko-1").is_some() && cart.provider_order_id.is_none());
    assert_eq!(when(&cart, order_created("a1")).unwrap(), vec![]);
    let events = when(&cart, checkout("a2")).unwrap();
    let Event::CheckoutStarted(s) = &events[0] else {
        panic!("expected CheckoutStarted")
    };
    assert_eq!(
        s.provider_order_id, None,
        "the next attempt makes a new order"
    );

    // a2 has its order ko-2; a result of a1 arriving now does not replace it.
    let cart = checking_out(vec![cq(1, 2), checkout("a2")]);
    let cart = apply_all(cart, record("a2", "ko-2"));
    assert_eq!(when(&cart, order_created("a1")).unwrap(), vec![]);
    assert_eq!(cart.provider_order_id.as_deref(), Some("ko-2"));
}

#[test]
fn a_payment_that_differs_from_the_attempt_is_a_mismatch_with_its_reason() {
    let cart = checking_out(vec![]);
    let good = paid_for(&cart);
    let cases = [
        (
            "ko-1",
            PaidOrder {
                amount: good.amount - 1,
                ..good.clone()
            },
            "amount_differs",
        ),
        (
            "ko-1",
            PaidOrder {
                currency: "EUR".into(),
                ..good.clone()
            },
            "amount_differs",
        ),
        (
            "ko-1",
            PaidOrder {
                lines_digest: "0".repeat(32),
                ..good.clone()
            },
            "lines_differ",
        ),
        (
            "ko-1",
            PaidOrder {
                attempt_id: "a0".into(),
                ..good.clone()
            },
            "attempt_changed",
        ),
    ];
    for (order, paid, code) in cases {
        let m = cart.check_paid(order, &paid).unwrap_err();
        assert_eq!(m.code, code, "{m:?}");
    }
    assert!(cart.check_paid("ko-1", &good).is_ok());
    // Once the cart records its provider order, another order id is refused.
    let recorded = apply_all(cart, order_created("a1"));
    assert_eq!(
        recorded.check_paid("ko-2", &good).unwrap_err().code,
        "order_differs"
    );
    let empty = Cart::new(cart_id());
    assert_eq!(
        empty.check_paid("ko-1", &good).unwrap_err().code,
        "no_checkout"
    );
}

/// A change that is undone before paying leaves the cart equal to what was paid: placed.
#[test]
fn a_cart_changed_back_to_the_attempt_is_placed() {
    let cart = checking_out(vec![]);
    let paid = paid_for(&cart);
    let cart = apply_all(cart, Command::AddItem(add("BOOK-1", 1)));
    let cart = apply_all(cart, Command::RemoveItem { line_id: 2 });
    let events = when(&cart, confirm_order("ko-1", "R", paid)).unwrap();
    assert_eq!(types(&events), ["OrderPlaced"]);
}

/// A voucher that expired while it sat on the cart is not charged for: it comes off in the
/// commit that starts the checkout, and the attempt's total is without it.
#[test]
fn a_voucher_expired_on_the_cart_comes_off_when_the_checkout_starts() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        voucher("SOON"),
    ]);
    assert_eq!(cart.vouchers.len(), 1);
    assert!(cart.vouchers[0].definition.expires_at.is_some());
    let cat = catalog();
    let now = ctx(&cat);
    let on_time = decide(&cart, checkout("a1"), &now).unwrap();
    assert_eq!(types(&on_time), ["CheckoutStarted"]);
    let later = Context {
        now: datetime!(2026-11-23 14:00 UTC),
        ..now
    };
    let events = decide(&cart, checkout("a1"), &later).unwrap();
    assert_eq!(types(&events), ["VoucherRemoved", "CheckoutStarted"]);
    let Event::CheckoutStarted(started) = &events[1] else {
        unreachable!()
    };
    let Event::CheckoutStarted(discounted) = &on_time[0] else {
        unreachable!()
    };
    assert_eq!(started.total_amount, discounted.total_amount + 1000);
    let after = events.iter().fold(cart.clone(), evolve);
    assert!(after.vouchers.is_empty());
}

/// `command` decided `secs` seconds after the tests' clock.
fn when_later(cart: &Cart, command: Command, secs: i64) -> Result<Vec<Event>, DomainError> {
    let cat = catalog();
    let mut ctx = ctx(&cat);
    ctx.now += time::Duration::seconds(secs);
    decide(cart, command, &ctx)
}

/// The provider asks to complete the purchase (its validation callback): approved when the
/// order matches the attempt and the cart. From then on the cart holds still for the purchase
/// (nothing that would make the paid order differ from it: no change to what is paid for, no
/// other attempt, no cancel) until the order is placed, or the hold runs out.
#[test]
fn an_approved_purchase_holds_the_cart_until_it_is_placed() {
    let cart = checking_out(vec![order_created("a1")]);
    let paid = paid_for(&cart);
    let approve = Command::ApprovePayment {
        provider_order_id: "ko-1".into(),
        paid: paid.clone(),
    };
    let held = apply_all(cart, approve.clone());
    assert!(matches!(
        held.checkout.as_ref().unwrap().status,
        CheckoutStatus::PaymentApproved { .. }
    ));
    assert!(held.payment_in_progress());
    assert_eq!(
        when(&held, approve).unwrap(),
        vec![],
        "asked again: nothing new"
    );
    for refused in [
        Command::AddItem(add("BOOK-1", 1)),
        Command::ClearCart,
        checkout("a2"),
        Command::CancelCheckout,
    ] {
        let name = refused.name();
        assert_eq!(
            when(&held, refused).unwrap_err().code(),
            ErrorCode::CartLocked,
            "{name}"
        );
    }
    // What is not paid for may change; the paid order is placed.
    let held = apply_all(held, set_user(Some("u-1")));
    let placed = apply_all(held.clone(), confirm_order("ko-1", "REF-1", paid));
    assert!(placed.order_placed());
    // With no order and no failure back, the hold runs out: the cart changes (and reopens).
    let later = when_later(
        &held,
        Command::AddItem(add("BOOK-1", 1)),
        crate::payment::PURCHASE_HOLD_SECS,
    )
    .unwrap();
    assert!(matches!(later[0], Event::CheckoutReopened(_)), "{later:?}");
}

/// A failure reported for an attempt whose purchase the provider approved comes from an
/// earlier call for it (a redelivered order update, refused because the shopper has completed
/// the order meanwhile): it does not end the hold, or the paid order could be superseded by a
/// new attempt before it comes back, and be charged but never placed. Once the hold runs out,
/// the failure ends the attempt as usual.
#[test]
fn a_failure_reported_while_the_purchase_is_held_does_not_end_it() {
    let cart = checking_out(vec![order_created("a1")]);
    let approve = Command::ApprovePayment {
        provider_order_id: "ko-1".into(),
        paid: paid_for(&cart),
    };
    let held = apply_all(cart, approve);
    let fail = Command::FailCheckout {
        attempt_id: "a1".into(),
        code: "READ_ONLY_ORDER".into(),
        reason: "the order is completed and cannot change".into(),
    };
    assert_eq!(
        when(&held, fail.clone()).unwrap_err().code(),
        ErrorCode::CartLocked
    );
    let later = when_later(&held, fail, crate::payment::PURCHASE_HOLD_SECS).unwrap();
    assert!(matches!(later[..], [Event::CheckoutFailed(_)]), "{later:?}");
}

/// An attempt id is started once per cart: the runner keys an attempt's result and its
/// feedback to the cart by the id, so an id used again after another attempt (a client's
/// choice on `/v1`) would be answered from the first use and the cart would wait for ever.
#[test]
fn an_attempt_id_is_not_started_again_after_another_attempt() {
    let cart = checking_out(vec![order_created("a1"), checkout("b")]);
    let err = when(&cart, checkout("a1")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
    assert!(err.to_string().contains("earlier checkout"), "{err}");
    assert_eq!(
        when(&cart, checkout("b")).unwrap(),
        vec![],
        "the current one again"
    );
    assert!(when(&cart, checkout("c")).is_ok());
    // Kept: the newest ones, a bounded number.
    let many = (0..20).map(|i| checkout(&format!("x{i}"))).collect();
    let cart = checking_out(many);
    let kept = &cart.checkout.as_ref().unwrap().earlier_attempts;
    assert_eq!(kept.len(), crate::cart::Checkout::EARLIER_ATTEMPTS_KEPT);
    assert_eq!(kept.last().map(String::as_str), Some("x18"));
}

/// A merge takes nothing from a cart that is ordered or being paid for (its lines would be
/// bought again); once an unfinished purchase's hold has run out, the lines go as usual.
#[test]
fn a_cart_ordered_or_being_paid_for_gives_no_lines_to_a_merge() {
    let cart = checking_out(vec![order_created("a1")]);
    let paid = paid_for(&cart);
    let now = ctx(&catalog()).now.unix_timestamp();
    let hold_over = now + crate::payment::PURCHASE_HOLD_SECS;
    assert_eq!(cart.lines_to_merge(now).unwrap().len(), 1, "not held yet");
    let approve = Command::ApprovePayment {
        provider_order_id: "ko-1".into(),
        paid: paid.clone(),
    };
    let held = apply_all(cart, approve);
    let refused = held.lines_to_merge(now).unwrap_err().to_string();
    assert!(refused.contains("is being paid for"), "{refused}");
    let merged = held.lines_to_merge(hold_over).unwrap();
    assert_eq!(
        (merged[0].sku.as_str(), merged[0].quantity),
        ("TEST-SKU-123", 1)
    );
    let placed = apply_all(held, confirm_order("ko-1", "REF-1", paid));
    let refused = placed.lines_to_merge(hold_over).unwrap_err().to_string();
    assert!(
        refused.contains("is ordered (reference REF-1)"),
        "{refused}"
    );
}

/// The validation callback is refused when the order no longer matches the cart, or its
/// checkout was cancelled: the provider then does not complete the purchase.
#[test]
fn a_purchase_is_not_approved_for_a_changed_cart_or_a_cancelled_checkout() {
    let cart = checking_out(vec![order_created("a1")]);
    let paid = paid_for(&cart);
    let approve = |cart: &Cart| {
        when(
            cart,
            Command::ApprovePayment {
                provider_order_id: "ko-1".into(),
                paid: paid.clone(),
            },
        )
    };
    for (then, refused) in [
        (Command::AddItem(add("BOOK-1", 1)), "cart_changed"),
        (Command::CancelCheckout, "checkout_closed"),
    ] {
        let err = approve(&apply_all(cart.clone(), then)).unwrap_err();
        assert!(
            matches!(err, DomainError::PaymentRefused { code, .. } if code == refused),
            "{refused}: {err:?}"
        );
    }
}
