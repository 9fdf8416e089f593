//! Given / when / then for every cart command, including each rejection.

use super::*;
use crate::code::ErrorCode;

enum Then {
    Events(&'static [&'static str]),
    Rejected(ErrorCode, &'static str),
}
use Then::*;

/// The provider reports `order` paid for attempt `a1` of [`one_line`].
fn confirm(order: &str) -> Command {
    confirm_order(
        order,
        "REF-1",
        paid_for(&given(with(one_line(), [checkout("a1")]))),
    )
}

fn one_line() -> Vec<Command> {
    vec![Command::AddItem(add("TEST-SKU-123", 1))]
}

fn two_lines() -> Vec<Command> {
    vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        Command::AddItem(add("TEST-SKU-456", 2)),
    ]
}

fn placed() -> Vec<Command> {
    let mut c = one_line();
    c.extend([checkout("a1"), record("a1", "ko-1"), confirm("ko-1")]);
    c
}

fn with(mut base: Vec<Command>, more: impl IntoIterator<Item = Command>) -> Vec<Command> {
    base.extend(more);
    base
}

#[test]
fn every_command_accepts_and_rejects_as_specified() {
    let long = "x".repeat(201);
    let cases: Vec<(&str, Vec<Command>, Command, Then)> = vec![
        // AddItem
        (
            "add new sku",
            vec![],
            Command::AddItem(add("TEST-SKU-123", 2)),
            Events(&["ItemAdded"]),
        ),
        (
            "add same sku raises quantity",
            one_line(),
            Command::AddItem(add("TEST-SKU-123", 2)),
            Events(&["ItemQuantityChanged"]),
        ),
        (
            "add same sku other store is a new line",
            one_line(),
            Command::AddItem(AddItem {
                store_id: Some("store-7".into()),
                ..add("TEST-SKU-123", 1)
            }),
            Events(&["ItemAdded"]),
        ),
        (
            "add zero",
            vec![],
            Command::AddItem(add("TEST-SKU-123", 0)),
            Rejected(
                ErrorCode::InvalidArgument,
                "quantity must be 1..=999, got 0",
            ),
        ),
        (
            "add too many",
            vec![],
            Command::AddItem(add("TEST-SKU-123", 1000)),
            Rejected(
                ErrorCode::InvalidArgument,
                "quantity must be 1..=999, got 1000",
            ),
        ),
        (
            "add beyond max in total",
            one_line(),
            Command::AddItem(add("TEST-SKU-123", 999)),
            Rejected(ErrorCode::InvalidArgument, "got 1000"),
        ),
        (
            "add unknown sku",
            vec![],
            Command::AddItem(add("NOPE", 1)),
            Rejected(ErrorCode::UnknownSku, "\"NOPE\" is not in the catalog"),
        ),
        (
            "add bad country",
            vec![],
            Command::AddItem(AddItem {
                country: "sweden".into(),
                ..add("TEST-SKU-123", 1)
            }),
            Rejected(ErrorCode::InvalidArgument, "country must be a two-letter"),
        ),
        (
            "add other currency",
            one_line(),
            Command::AddItem(add("EURO-1", 1)),
            Rejected(
                ErrorCode::InvalidState,
                "priced in SEK, but EURO-1 is priced in EUR",
            ),
        ),
        (
            "add bad store id",
            vec![],
            Command::AddItem(AddItem {
                store_id: Some(" ".into()),
                ..add("TEST-SKU-123", 1)
            }),
            Rejected(ErrorCode::InvalidArgument, "storeId"),
        ),
        // AddItems
        (
            "add items",
            vec![],
            Command::AddItems {
                items: vec![
                    add("TEST-SKU-123", 1),
                    add("BOOK-1", 1),
                    add("TEST-SKU-123", 2),
                ],
            },
            Events(&["ItemAdded", "ItemAdded", "ItemQuantityChanged"]),
        ),
        (
            "add items empty",
            vec![],
            Command::AddItems { items: vec![] },
            Rejected(ErrorCode::InvalidArgument, "items must not be empty"),
        ),
        (
            "add items one bad rejects all",
            vec![],
            Command::AddItems {
                items: vec![add("TEST-SKU-123", 1), add("NOPE", 1)],
            },
            Rejected(ErrorCode::UnknownSku, "NOPE"),
        ),
        // ChangeQuantity
        (
            "change quantity",
            one_line(),
            cq(1, 3),
            Events(&["ItemQuantityChanged"]),
        ),
        (
            "change to same quantity is a no-op",
            one_line(),
            cq(1, 1),
            Events(&[]),
        ),
        (
            "change unknown line",
            one_line(),
            cq(9, 3),
            Rejected(ErrorCode::UnknownLine, "no line 9"),
        ),
        (
            "change to zero",
            one_line(),
            cq(1, 0),
            Rejected(ErrorCode::InvalidArgument, "got 0"),
        ),
        (
            "change to huge",
            one_line(),
            cq(1, 5000),
            Rejected(ErrorCode::InvalidArgument, "got 5000"),
        ),
        // RemoveItem
        (
            "remove",
            one_line(),
            Command::RemoveItem { line_id: 1 },
            Events(&["ItemRemoved"]),
        ),
        (
            "remove last line of a delivery drops the delivery",
            with(one_line(), [delivery("standard", &[])]),
            Command::RemoveItem { line_id: 1 },
            Events(&["ItemRemoved", "DeliveryRemoved"]),
        ),
        (
            "remove unknown",
            one_line(),
            Command::RemoveItem { line_id: 2 },
            Rejected(ErrorCode::UnknownLine, "no line 2"),
        ),
        // SetItems
        (
            "set items replaces",
            two_lines(),
            Command::SetItems {
                items: vec![add("BOOK-1", 1)],
            },
            Events(&["CartCleared", "ItemAdded"]),
        ),
        (
            "set items on empty",
            vec![],
            Command::SetItems {
                items: vec![add("BOOK-1", 1)],
            },
            Events(&["ItemAdded"]),
        ),
        (
            "set items bad",
            two_lines(),
            Command::SetItems {
                items: vec![add("BOOK-1", 0)],
            },
            Rejected(ErrorCode::InvalidArgument, "got 0"),
        ),
        // ClearCart
        (
            "clear",
            two_lines(),
            Command::ClearCart,
            Events(&["CartCleared"]),
        ),
        (
            "clear empty is a no-op",
            vec![],
            Command::ClearCart,
            Events(&[]),
        ),
        // AddDelivery
        (
            "delivery for all free lines",
            two_lines(),
            delivery("standard", &[]),
            Events(&["DeliveryAdded"]),
        ),
        (
            "delivery for given lines",
            two_lines(),
            delivery("express", &[2]),
            Events(&["DeliveryAdded"]),
        ),
        (
            "delivery unknown provider",
            two_lines(),
            delivery("pigeon", &[]),
            Rejected(ErrorCode::UnknownDelivery, "\"pigeon\""),
        ),
        (
            "delivery unknown line",
            two_lines(),
            delivery("standard", &[7]),
            Rejected(ErrorCode::UnknownLine, "no line 7"),
        ),
        (
            "delivery line already delivered",
            with(two_lines(), [delivery("standard", &[1])]),
            delivery("express", &[1]),
            Rejected(
                ErrorCode::InvalidState,
                "line 1 already belongs to delivery 1",
            ),
        ),
        (
            "delivery with no free lines",
            with(two_lines(), [delivery("standard", &[])]),
            delivery("express", &[]),
            Rejected(ErrorCode::InvalidState, "every line already has a delivery"),
        ),
        (
            "delivery on empty cart",
            vec![],
            delivery("standard", &[]),
            Rejected(ErrorCode::InvalidState, "cart is empty"),
        ),
        // RemoveDelivery
        (
            "remove delivery",
            with(two_lines(), [delivery("standard", &[])]),
            Command::RemoveDelivery { delivery_id: 1 },
            Events(&["DeliveryRemoved"]),
        ),
        (
            "remove unknown delivery",
            two_lines(),
            Command::RemoveDelivery { delivery_id: 1 },
            Rejected(ErrorCode::UnknownDelivery, "no delivery 1"),
        ),
        // SetPickupPoint
        (
            "pickup point",
            with(two_lines(), [delivery("standard", &[])]),
            set_pickup(1, pickup("PUP123")),
            Events(&["PickupPointSet"]),
        ),
        (
            "same pickup point is a no-op",
            with(
                two_lines(),
                [delivery("standard", &[]), set_pickup(1, pickup("PUP123"))],
            ),
            set_pickup(1, pickup("PUP123")),
            Events(&[]),
        ),
        (
            "pickup point unknown delivery",
            two_lines(),
            set_pickup(3, pickup("P")),
            Rejected(ErrorCode::UnknownDelivery, "no delivery 3"),
        ),
        (
            "pickup point empty id",
            with(two_lines(), [delivery("standard", &[])]),
            set_pickup(1, pickup("")),
            Rejected(ErrorCode::InvalidArgument, "pickupPoint.id"),
        ),
        // ApplyVoucher
        (
            "voucher",
            one_line(),
            voucher("ten"),
            Events(&["VoucherApplied"]),
        ),
        (
            "voucher unknown",
            one_line(),
            voucher("FREE"),
            Rejected(ErrorCode::UnknownVoucher, "\"FREE\""),
        ),
        (
            "voucher expired",
            one_line(),
            voucher("OLD"),
            Rejected(ErrorCode::VoucherNotApplicable, "expired"),
        ),
        (
            "voucher below its minimum stays on the cart, not applied",
            one_line(),
            voucher("BIG"),
            Events(&["VoucherApplied"]),
        ),
        (
            "voucher twice",
            with(one_line(), [voucher("TEN")]),
            voucher("ten"),
            Rejected(ErrorCode::VoucherNotApplicable, "already applied"),
        ),
        // RemoveVoucher
        (
            "remove voucher",
            with(one_line(), [voucher("TEN")]),
            Command::RemoveVoucher { voucher_id: 1 },
            Events(&["VoucherRemoved"]),
        ),
        (
            "remove unknown voucher",
            one_line(),
            Command::RemoveVoucher { voucher_id: 1 },
            Rejected(ErrorCode::UnknownVoucher, "no voucher 1"),
        ),
        // SetUser
        (
            "set user",
            vec![],
            set_user(Some("user-1")),
            Events(&["UserSet"]),
        ),
        (
            "same user is a no-op",
            vec![set_user(Some("u"))],
            set_user(Some("u")),
            Events(&[]),
        ),
        (
            "clear user",
            vec![set_user(Some("u"))],
            set_user(None),
            Events(&["UserSet"]),
        ),
        (
            "user too long",
            vec![],
            set_user(Some(&long)),
            Rejected(ErrorCode::InvalidArgument, "userId must be 1..=200"),
        ),
        // MergeCart
        (
            "merge sums by sku",
            one_line(),
            Command::MergeCart {
                source_cart_id: CartId::parse("anon-1").unwrap(),
                items: vec![add("TEST-SKU-123", 2), add("BOOK-1", 1), add("GONE", 1)],
            },
            Events(&["ItemQuantityChanged", "ItemAdded", "CartMerged"]),
        ),
        (
            "merge into itself",
            one_line(),
            Command::MergeCart {
                source_cart_id: cart_id(),
                items: vec![],
            },
            Rejected(
                ErrorCode::InvalidArgument,
                "sourceCartId must be a different cart",
            ),
        ),
        (
            "merge over quantity limit",
            one_line(),
            Command::MergeCart {
                source_cart_id: CartId::parse("anon-1").unwrap(),
                items: vec![add("TEST-SKU-123", 999)],
            },
            Rejected(ErrorCode::InvalidArgument, "got 1000"),
        ),
        // Markings
        (
            "set marking",
            one_line(),
            marking(1, 1, "Happy birthday"),
            Events(&["MarkingSet"]),
        ),
        (
            "marking unknown line",
            one_line(),
            marking(4, 1, "x"),
            Rejected(ErrorCode::UnknownLine, "no line 4"),
        ),
        (
            "marking too long",
            one_line(),
            marking(1, 1, &long),
            Rejected(ErrorCode::InvalidArgument, "marking.text"),
        ),
        (
            "remove marking",
            with(one_line(), [marking(1, 0, "x")]),
            Command::RemoveMarking { line_id: 1 },
            Events(&["MarkingRemoved"]),
        ),
        (
            "remove absent marking is a no-op",
            one_line(),
            Command::RemoveMarking { line_id: 1 },
            Events(&[]),
        ),
        (
            "remove marking unknown line",
            one_line(),
            Command::RemoveMarking { line_id: 2 },
            Rejected(ErrorCode::UnknownLine, "no line 2"),
        ),
        // Checkout
        (
            "start checkout",
            one_line(),
            checkout("a1"),
            Events(&["CheckoutStarted"]),
        ),
        (
            "start same attempt again is a no-op",
            with(one_line(), [checkout("a1")]),
            checkout("a1"),
            Events(&[]),
        ),
        (
            "start checkout of empty cart",
            vec![],
            checkout("a1"),
            Rejected(ErrorCode::InvalidState, "empty cart"),
        ),
        (
            "record provider order",
            with(one_line(), [checkout("a1")]),
            record("a1", "ko-1"),
            Events(&["ProviderOrderRecorded"]),
        ),
        (
            "record again is a no-op",
            with(one_line(), [checkout("a1"), record("a1", "ko-1")]),
            record("a1", "ko-1"),
            Events(&[]),
        ),
        (
            "fail checkout",
            with(one_line(), [checkout("a1")]),
            fail("a1", "declined", "card"),
            Events(&["CheckoutFailed"]),
        ),
        (
            "fail stale attempt is a no-op",
            with(one_line(), [checkout("a1"), checkout("a2")]),
            fail("a1", "x", "y"),
            Events(&[]),
        ),
        (
            "cancel checkout",
            with(one_line(), [checkout("a1")]),
            Command::CancelCheckout,
            Events(&["CheckoutCancelled"]),
        ),
        (
            "cancel without checkout",
            one_line(),
            Command::CancelCheckout,
            Rejected(ErrorCode::InvalidState, "no checkout is in progress"),
        ),
        (
            "confirm order",
            with(one_line(), [checkout("a1"), record("a1", "ko-1")]),
            confirm("ko-1"),
            Events(&["OrderPlaced"]),
        ),
        (
            "confirm another order than the cart's",
            with(one_line(), [checkout("a1"), record("a1", "ko-1")]),
            confirm("ko-2"),
            Events(&["OrderMismatched"]),
        ),
        (
            "confirm before the provider order was recorded (push first)",
            with(one_line(), [checkout("a1")]),
            confirm("ko-1"),
            Events(&["OrderPlaced"]),
        ),
        (
            "confirm after the cart changed",
            with(one_line(), [checkout("a1"), record("a1", "ko-1"), cq(1, 2)]),
            confirm("ko-1"),
            Events(&["OrderMismatched"]),
        ),
        (
            "confirm an older attempt",
            with(
                one_line(),
                [
                    checkout("a1"),
                    record("a1", "ko-1"),
                    cq(1, 2),
                    checkout("a2"),
                ],
            ),
            confirm("ko-1"),
            Events(&["OrderMismatched"]),
        ),
        (
            "confirm without checkout",
            one_line(),
            confirm("ko-1"),
            Events(&["OrderMismatched"]),
        ),
        (
            "confirm a mismatched order again is a no-op",
            with(
                one_line(),
                [
                    checkout("a1"),
                    record("a1", "ko-1"),
                    cq(1, 2),
                    confirm("ko-1"),
                ],
            ),
            confirm("ko-1"),
            Events(&[]),
        ),
        // Re-open on change during checkout
        (
            "change during checkout re-opens",
            with(one_line(), [checkout("a1"), record("a1", "ko-1")]),
            cq(1, 2),
            Events(&["CheckoutReopened", "ItemQuantityChanged"]),
        ),
        (
            "set user during checkout does not re-open",
            with(one_line(), [checkout("a1")]),
            set_user(Some("u")),
            Events(&["UserSet"]),
        ),
        // Placed order locks the cart
        (
            "add after order placed",
            placed(),
            Command::AddItem(add("BOOK-1", 1)),
            Rejected(ErrorCode::CartLocked, "order is placed (reference REF-1)"),
        ),
        (
            "clear after order placed",
            placed(),
            Command::ClearCart,
            Rejected(ErrorCode::CartLocked, "can no longer change"),
        ),
        (
            "checkout after order placed",
            placed(),
            checkout("a2"),
            Rejected(ErrorCode::CartLocked, "can no longer change"),
        ),
        (
            "duplicate confirm is a no-op",
            placed(),
            confirm("ko-1"),
            Events(&[]),
        ),
        (
            "late provider record is a no-op",
            placed(),
            record("a1", "ko-1"),
            Events(&[]),
        ),
        (
            "late failure is a no-op",
            placed(),
            fail("a1", "x", "y"),
            Events(&[]),
        ),
        (
            "subscription details need an offering code",
            vec![],
            subscription("s1", " ", "bankid", serde_json::json!({})),
            Rejected(ErrorCode::InvalidArgument, "offeringCode"),
        ),
        (
            "subscription details data is an object",
            vec![],
            subscription("s1", "PLAN", "bankid", serde_json::json!([1, 2])),
            Rejected(ErrorCode::InvalidArgument, "data must be a JSON object"),
        ),
        (
            "subscription details data is bounded",
            vec![],
            subscription(
                "s1",
                "PLAN",
                "bankid",
                serde_json::json!({"x": "y".repeat(5000)}),
            ),
            Rejected(ErrorCode::InvalidArgument, "at most 4096 bytes"),
        ),
        (
            "subscription details data nests at most 16 levels",
            vec![],
            subscription(
                "s1",
                "PLAN",
                "bankid",
                (0..17).fold(serde_json::json!(1), |v, _| serde_json::json!({ "a": v })),
            ),
            Rejected(ErrorCode::InvalidArgument, "at most 16 levels, got 17"),
        ),
        (
            "subscription details data 16 levels deep is kept",
            vec![],
            subscription(
                "s1",
                "PLAN",
                "bankid",
                (0..16).fold(serde_json::json!([]), |v, _| serde_json::json!({ "a": v }))["a"]
                    .clone(),
            ),
            Events(&["SubscriptionDetailsUpserted"]),
        ),
        (
            "the same subscription details again change nothing",
            vec![subscription("s1", "PLAN", "bankid", serde_json::json!({}))],
            subscription("s1", "PLAN", "bankid", serde_json::json!({})),
            Events(&[]),
        ),
        (
            "remove unknown subscription details",
            vec![],
            Command::RemoveSubscriptionDetails { id: "nope".into() },
            Rejected(ErrorCode::NotFound, "no subscription details"),
        ),
        (
            "subscription details during checkout do not re-open it",
            with(one_line(), [checkout("a1")]),
            subscription("s1", "PLAN", "bankid", serde_json::json!({})),
            Events(&["SubscriptionDetailsUpserted"]),
        ),
        (
            "confirm another order after placed is recorded",
            placed(),
            confirm("ko-9"),
            Events(&["OrderMismatched"]),
        ),
        (
            "that order again is a no-op",
            with(placed(), [confirm("ko-9")]),
            confirm("ko-9"),
            Events(&[]),
        ),
    ];

    let mut failures = Vec::new();
    for (name, given_cmds, cmd, then) in cases {
        let cart = given(given_cmds);
        let got = when(&cart, cmd);
        match (&then, &got) {
            (Events(want), Ok(events)) if types(events) == *want => {}
            (Rejected(code, msg), Err(e)) if e.code() == *code && e.to_string().contains(msg) => {}
            _ => failures.push(format!(
                "{name}: got {:?}",
                got.map(|e| types(&e))
                    .map_err(|e| (e.code(), e.to_string()))
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn line_ids_are_small_integers_and_never_reused() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        Command::AddItem(add("TEST-SKU-456", 1)),
        Command::RemoveItem { line_id: 2 },
        Command::AddItem(add("BOOK-1", 1)),
    ]);
    let ids: Vec<u32> = cart.lines.iter().map(|l| l.id).collect();
    assert_eq!(ids, vec![1, 3]);
}

#[test]
fn a_cleared_or_replaced_cart_numbers_lines_from_one_again() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        Command::AddItem(add("TEST-SKU-456", 1)),
        Command::AddItem(add("BOOK-1", 1)),
        delivery("standard", &[]),
        Command::SetItems {
            items: vec![add("FOOD-1", 1), add("TEST-SKU-123", 2)],
        },
    ]);
    let ids: Vec<u32> = cart.lines.iter().map(|l| l.id).collect();
    assert_eq!(ids, vec![1, 2]);
    // The go-cart-actor walkthrough's next step: a delivery for lines 1 and 2.
    let events = when(&cart, delivery("standard", &[1, 2])).unwrap();
    assert!(
        matches!(&events[0], Event::DeliveryAdded(d) if d.delivery_id == 1 && d.line_ids == [1, 2])
    );
}

#[test]
fn add_records_catalog_facts_in_the_event() {
    let events = when(&Cart::new(cart_id()), Command::AddItem(add("BOOK-1", 2))).unwrap();
    let Event::ItemAdded(e) = &events[0] else {
        panic!("expected ItemAdded")
    };
    assert_eq!((e.line_id, e.quantity, e.product.unit_price), (1, 2, 22400));
    assert_eq!(e.product.tax_rate, TaxRate(600));
    assert_eq!(
        (e.product.currency.as_str(), e.country.as_str()),
        ("SEK", "se")
    );
    assert_eq!(e.product.name, "Product BOOK-1");
}

#[test]
fn delivery_price_comes_from_the_pricing_config() {
    let cart = given(two_lines());
    let mut cat = catalog();
    std::sync::Arc::make_mut(cat.deliveries.get_mut("standard").unwrap()).price = 2900;
    let events = decide(&cart, delivery("standard", &[]), &ctx(&cat)).unwrap();
    let Event::DeliveryAdded(d) = &events[0] else {
        panic!()
    };
    assert_eq!((d.price, d.line_ids.clone()), (2900, vec![1, 2]));
}

#[test]
fn line_limit() {
    let mut cat = catalog();
    for i in 0..3 {
        let p = product(&format!("L{i}"), 100, 2500);
        cat.products.insert(p.sku.clone(), p.into());
    }
    let mut c = ctx(&cat);
    c.limits.max_lines = 2;
    let mut cart = Cart::new(cart_id());
    for sku in ["L0", "L1"] {
        for e in decide(&cart, Command::AddItem(add(sku, 1)), &c).unwrap() {
            cart = evolve(cart, &e);
        }
    }
    let err = decide(&cart, Command::AddItem(add("L2", 1)), &c).unwrap_err();
    assert_eq!(err.code(), ErrorCode::LimitExceeded);
    assert_eq!(err.to_string(), "a cart holds at most 2 lines");
    // Raising the quantity of an existing line is still fine at the limit.
    assert!(decide(&cart, Command::AddItem(add("L1", 1)), &c).is_ok());
}

#[test]
fn delivery_and_voucher_limits() {
    let cat = catalog();
    let mut c = ctx(&cat);
    c.limits.max_deliveries = 1;
    c.limits.max_vouchers = 1;
    let cart = given(with(
        two_lines(),
        [delivery("standard", &[1]), voucher("TEN")],
    ));
    assert_eq!(
        decide(&cart, delivery("express", &[2]), &c)
            .unwrap_err()
            .code(),
        ErrorCode::LimitExceeded
    );
    assert_eq!(
        decide(&cart, voucher("FIFTY"), &c).unwrap_err().code(),
        ErrorCode::LimitExceeded
    );
}

#[test]
fn merge_records_skipped_skus() {
    let cart = given(one_line());
    let events = when(
        &cart,
        Command::MergeCart {
            source_cart_id: CartId::parse("anon").unwrap(),
            items: vec![add("GONE", 1)],
        },
    )
    .unwrap();
    assert_eq!(
        events.last(),
        Some(&Event::CartMerged(event::CartMerged {
            source_cart_id: "anon".into(),
            skipped_skus: vec!["GONE".into()],
        }))
    );
}
