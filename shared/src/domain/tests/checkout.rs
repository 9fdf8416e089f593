//! The checkout lifecycle across several commands.

use super::*;
use crate::error::ErrorCode;

fn start(attempt: &str) -> Command {
    Command::StartCheckout {
        attempt_id: attempt.into(),
        country: None,
    }
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
        Command::AddDelivery {
            provider: "standard".into(),
            line_ids: vec![],
        },
    ]);
    assert!(!cart.payment_in_progress());

    let cart = apply_all(cart, start("a1"));
    assert!(cart.processing() && cart.payment_in_progress());
    assert_eq!(cart.payment_status.as_deref(), Some("pending"));

    let cart = apply_all(
        cart,
        Command::RecordProviderOrder {
            attempt_id: "a1".into(),
            provider_order_id: "ko-1".into(),
            status: "checkout_incomplete".into(),
        },
    );
    assert!(!cart.processing() && cart.payment_in_progress());
    assert_eq!(cart.provider_order_id.as_deref(), Some("ko-1"));

    let cart = apply_all(
        cart,
        Command::ConfirmOrder {
            provider_order_id: "ko-1".into(),
            order_reference: "REF-9".into(),
        },
    );
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
        Command::AddDelivery {
            provider: "standard".into(),
            line_ids: vec![],
        },
        Command::ApplyVoucher { code: "TEN".into() },
    ]);
    let events = when(&cart, start("a1")).unwrap();
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
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        start("a1"),
        Command::RecordProviderOrder {
            attempt_id: "a1".into(),
            provider_order_id: "ko-1".into(),
            status: "checkout_incomplete".into(),
        },
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
    let events = when(&cart, start("a2")).unwrap();
    let Event::CheckoutStarted(s) = &events[0] else {
        panic!()
    };
    assert_eq!(s.provider_order_id.as_deref(), Some("ko-1"));
    assert_eq!(s.lines.len(), 2);
}

#[test]
fn a_stale_attempt_result_is_recorded_without_reviving_it() {
    // Attempt a1's provider order arrives after the shopper changed the cart.
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        start("a1"),
        Command::ChangeQuantity {
            line_id: 1,
            quantity: 2,
        },
        Command::RecordProviderOrder {
            attempt_id: "a1".into(),
            provider_order_id: "ko-1".into(),
            status: "checkout_incomplete".into(),
        },
    ]);
    assert_eq!(cart.provider_order_id.as_deref(), Some("ko-1"));
    assert!(!cart.payment_in_progress());
}

#[test]
fn failed_checkout_leaves_the_cart_usable() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        start("a1"),
        Command::FailCheckout {
            attempt_id: "a1".into(),
            code: "provider_rejected".into(),
            reason: "declined".into(),
        },
    ]);
    assert!(!cart.payment_in_progress());
    assert_eq!(cart.payment_status.as_deref(), Some("failed"));
    let cart = apply_all(cart, Command::AddItem(add("BOOK-1", 1)));
    assert_eq!(cart.lines.len(), 2);
    assert!(when(&cart, start("a2")).is_ok());
}

#[test]
fn cancelled_checkout_can_restart() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        start("a1"),
        Command::CancelCheckout,
    ]);
    assert!(!cart.payment_in_progress());
    assert_eq!(
        when(&cart, Command::CancelCheckout).unwrap_err().code(),
        ErrorCode::InvalidState
    );
    assert_eq!(
        types(&when(&cart, start("a2")).unwrap()),
        ["CheckoutStarted"]
    );
}
