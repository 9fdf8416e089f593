//! Cart and snapshot conversions, and the rejections.

use std::sync::Arc;

use cart_domain::cart::{
    AppliedVoucher, Cart, Checkout, CheckoutStatus, Delivery, Line, LineProduct, Marking,
    PlacedOrder,
};
use cart_domain::catalog::VoucherKind;
use cart_domain::{CartState, RecentCommand, TaxRate, intern};
use shared::{CartId, CommandId, TenantId};

use super::pickup;
use crate::cart::v1 as pb;
use crate::cart::v1::applied_voucher::Discount;
use crate::convert::{ConversionError, snapshot, state_from_snapshot};

fn product(name: &str) -> LineProduct {
    LineProduct {
        sku: "SKU-1".into(),
        item_id: 42,
        name: name.into(),
        unit_price: 12_500,
        org_price: Some(15_000),
        tax_rate: TaxRate(2500),
        currency: "SEK".into(),
        stock: 3,
        item_type: "product".into(),
        image: Some("https://img/1.jpg".into()),
        brand: None,
        category: Some("shoes".into()),
        seller_id: None,
        seller_name: None,
        outlet: None,
    }
}

fn sample_cart() -> Cart {
    let mut cart = Cart::new(CartId::parse("cart-1").unwrap());
    cart.currency = Some("SEK".into());
    cart.lines = vec![
        Line {
            id: 1,
            quantity: 2,
            product: intern::share(product("Sko")),
            store_id: Some("store-1".into()),
            country: "se".into(),
            marking: Some(Box::new(Marking {
                kind: 1,
                text: "Hej".into(),
            })),
        },
        Line {
            id: 2,
            quantity: 1,
            product: intern::share(product("Sko")),
            store_id: None,
            country: "se".into(),
            marking: None,
        },
    ];
    cart.deliveries = vec![
        Delivery {
            id: 1,
            provider: "postnord".into(),
            line_ids: vec![1],
            price: 4900,
            tax_rate: TaxRate(2500),
            pickup_point: Some(pickup()),
        },
        Delivery {
            id: 2,
            provider: "home".into(),
            line_ids: vec![2],
            price: 0,
            tax_rate: TaxRate(0),
            pickup_point: None,
        },
    ];
    cart.vouchers = vec![
        AppliedVoucher {
            id: 1,
            code: "TEN".into(),
            discount: VoucherKind::Fixed { amount: 1000 },
            min_order: 0,
            description: Some("10 kr off".into()),
            expires_at: Some(time::macros::datetime!(2030-01-01 00:00:00.5 UTC)),
        },
        AppliedVoucher {
            id: 2,
            code: "PCT".into(),
            discount: VoucherKind::Percent { basis_points: 1000 },
            min_order: 5000,
            description: None,
            expires_at: None,
        },
    ];
    cart.user_id = Some("u-1".into());
    cart.checkout = Some(Box::new(Checkout {
        attempt_id: "att-1".into(),
        amount: 24_900,
        currency: "SEK".into(),
        lines_digest: "d".repeat(32),
        status: CheckoutStatus::Failed {
            code: "provider_refused".into(),
            reason: "declined".into(),
        },
    }));
    cart.provider_order_id = Some("kco-1".into());
    cart.payment_status = Some("failed".into());
    cart.order = Some(Box::new(PlacedOrder {
        provider_order_id: "kco-1".into(),
        order_reference: "R-1".into(),
    }));
    cart.next_line_id = 3;
    cart.next_delivery_id = 3;
    cart.next_voucher_id = 3;
    cart
}

#[test]
fn cart_round_trips_and_shares_products() {
    let cart = sample_cart();
    let wire = pb::Cart::from(&cart);
    assert_eq!(
        wire.vouchers[1].discount,
        Some(Discount::PercentBasisPoints(1000))
    );
    assert_eq!(
        wire.checkout.as_ref().unwrap().failure_code,
        "provider_refused"
    );
    let back = Cart::try_from(wire).unwrap();
    assert_eq!(back, cart);
    assert!(Arc::ptr_eq(&back.lines[0].product, &back.lines[1].product));
    assert!(Arc::ptr_eq(&back.lines[0].product, &cart.lines[0].product));
    assert_eq!(Cart::try_from(pb::Cart::from(cart.clone())).unwrap(), cart);
}

#[test]
fn every_checkout_status_round_trips() {
    let statuses = [
        CheckoutStatus::Started,
        CheckoutStatus::OrderCreated,
        CheckoutStatus::Failed {
            code: "c".into(),
            reason: "r".into(),
        },
        CheckoutStatus::Cancelled,
        CheckoutStatus::Reopened,
        CheckoutStatus::Completed,
    ];
    for status in statuses {
        let c = Checkout {
            attempt_id: "a".into(),
            status,
            amount: 1,
            currency: "SEK".into(),
            lines_digest: "x".into(),
        };
        let wire = pb::Checkout::from(&c);
        assert_ne!(wire.status, pb::CheckoutStatus::Unspecified as i32);
        assert_eq!(Checkout::try_from(wire).unwrap(), c);
    }
}

#[test]
fn failure_fields_are_ignored_unless_failed() {
    let wire = pb::Checkout {
        attempt_id: "a".into(),
        status: pb::CheckoutStatus::Started.into(),
        failure_code: "stale".into(),
        failure_reason: "stale".into(),
        ..Default::default()
    };
    assert_eq!(
        Checkout::try_from(wire).unwrap().status,
        CheckoutStatus::Started
    );
}

#[test]
fn snapshot_round_trip_drops_recent() {
    let tenant = TenantId::parse("shop-1").unwrap();
    let mut state = CartState::new(CartId::parse("cart-1").unwrap());
    state.cart = sample_cart();
    state.version = 17;
    state.revision = 5;
    state.recent.push_back(RecentCommand {
        command_id: CommandId::new(),
        version: 17,
        revision: 5,
    });
    let wire = snapshot(&tenant, &state);
    assert_eq!(
        (wire.tenant.as_str(), wire.version, wire.revision),
        ("shop-1", 17, 5)
    );
    let (back_tenant, back) = state_from_snapshot(wire).unwrap();
    assert_eq!(back_tenant, tenant);
    assert!(back.recent.is_empty());
    state.recent.clear();
    assert_eq!(back, state);
}

#[test]
fn missing_nested_cart_messages_are_named() {
    let mut cart = pb::Cart::from(&sample_cart());
    cart.lines[1].product = None;
    assert_eq!(
        Cart::try_from(cart).unwrap_err().to_string(),
        "cart.lines[1].product is required"
    );
    let mut cart = pb::Cart::from(&sample_cart());
    cart.vouchers[0].discount = None;
    assert_eq!(
        Cart::try_from(cart).unwrap_err().path(),
        "cart.vouchers[0].discount"
    );
    let snap = pb::CartSnapshot {
        tenant: "t1".into(),
        version: 1,
        revision: 1,
        cart: None,
        rendered: Vec::new(),
    };
    assert_eq!(
        state_from_snapshot(snap).unwrap_err().to_string(),
        "snapshot.cart is required"
    );
}

#[test]
fn unknown_and_unspecified_enum_values_are_rejected() {
    let mut cart = pb::Cart::from(&sample_cart());
    cart.checkout.as_mut().unwrap().status = 99;
    let err = Cart::try_from(cart).unwrap_err();
    assert_eq!(
        err,
        ConversionError::UnknownEnumValue {
            path: "cart.checkout.status".into(),
            enum_name: "cart.v1.CheckoutStatus",
            value: 99,
        }
    );
    assert_eq!(
        err.to_string(),
        "cart.checkout.status: 99 is not a known cart.v1.CheckoutStatus value"
    );

    let mut cart = pb::Cart::from(&sample_cart());
    cart.checkout.as_mut().unwrap().status = pb::CheckoutStatus::Unspecified.into();
    assert_eq!(
        Cart::try_from(cart).unwrap_err().to_string(),
        "cart.checkout.status must be set, got CHECKOUT_STATUS_UNSPECIFIED"
    );
}

#[test]
fn invalid_ids_in_state_are_rejected() {
    let mut cart = pb::Cart::from(&sample_cart());
    cart.id = String::new();
    assert_eq!(Cart::try_from(cart).unwrap_err().path(), "cart.id");
    let mut snap = snapshot(
        &TenantId::parse("t1").unwrap(),
        &CartState::new(CartId::parse("c1").unwrap()),
    );
    snap.tenant = "Not A Tenant".into();
    let err = state_from_snapshot(snap).unwrap_err();
    assert_eq!(err.path(), "snapshot.tenant");
    assert!(
        err.to_string()
            .starts_with("snapshot.tenant: tenant must be"),
        "{err}"
    );
}
