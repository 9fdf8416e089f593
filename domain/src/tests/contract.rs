//! The JSON contracts: the storefront's cart shape, the mutation reply and the event wire
//! format. A failure here means a public contract changed.

use serde_json::{Value, json};
use time::macros::datetime;

use super::*;
use crate::code::ErrorCode;
use crate::ids::{CommandId, TenantId};

fn sample_cart() -> Cart {
    given(vec![
        Command::AddItem(add("TEST-SKU-123", 2)),
        Command::AddItem(AddItem {
            store_id: Some("store-7".into()),
            ..add("BOOK-1", 1)
        }),
        delivery("standard", &[1]),
        // Unset fields are left out of the JSON.
        set_pickup(
            1,
            PickupPoint {
                address: None,
                zip: None,
                country: None,
                ..pickup("PUP123")
            },
        ),
        voucher("FIFTY"),
        set_user(Some("user-1")),
        marking(2, 1, "For Ada"),
    ])
}

#[test]
fn cart_json_is_the_v1_shape() {
    let v = serde_json::to_value(CartView::of(&sample_cart())).unwrap();
    // Items: 2 × 125.00 at 25 % and 224.00 at 6 %; delivery 49.00 at 25 %; voucher 50.00
    // split 250:224 over the two rates (26.37 kr at 25 % → 5.27 VAT, 23.63 kr at 6 % → 1.34 VAT).
    let expected = json!({
        "id": "1720000000000000",
        "items": [
            {"id": 1, "itemId": 12500, "sku": "TEST-SKU-123", "qty": 2,
             "price": {"exVat": 10000, "incVat": 12500, "vat": {"25": 2500}},
             "totalPrice": {"exVat": 20000, "incVat": 25000, "vat": {"25": 5000}},
             "tax": 2500, "stock": 10, "type": "product",
             "meta": {"name": "Product TEST-SKU-123", "image": "https://img.example/TEST-SKU-123.jpg"}},
            {"id": 2, "itemId": 22400, "sku": "BOOK-1", "qty": 1,
             "price": {"exVat": 21132, "incVat": 22400, "vat": {"6": 1268}},
             "totalPrice": {"exVat": 21132, "incVat": 22400, "vat": {"6": 1268}},
             "tax": 600, "stock": 10, "type": "product", "storeId": "store-7",
             "meta": {"name": "Product BOOK-1", "image": "https://img.example/BOOK-1.jpg"},
             "marking": {"type": 1, "text": "For Ada"}}
        ],
        "deliveries": [
            {"id": 1, "provider": "standard", "items": [1],
             "price": {"exVat": 3920, "incVat": 4900, "vat": {"25": 980}},
             "pickupPoint": {"id": "PUP123", "name": "Locker 5", "city": "Stockholm"}}
        ],
        "vouchers": [
            {"id": 1, "code": "FIFTY", "value": 5000,
             "discount": {"exVat": 4339, "incVat": 5000, "vat": {"6": 134, "25": 527}},
             "description": "50.00 SEK off", "applied": true, "rules": []}
        ],
        "totalPrice": {"exVat": 40713, "incVat": 47300, "vat": {"6": 1134, "25": 5453}},
        "totalDiscount": {"exVat": 4339, "incVat": 5000, "vat": {"6": 134, "25": 527}},
        "totalTax": {"exVat": 0, "incVat": 6587, "vat": {"6": 1134, "25": 5453}},
        "processing": false,
        "paymentInProgress": false,
        "userId": "user-1",
        "currency": "SEK"
    });
    assert_eq!(v, expected, "{}", serde_json::to_string_pretty(&v).unwrap());
    let back: CartView = serde_json::from_value(v).unwrap();
    assert_eq!(back, CartView::of(&sample_cart()));

    // The storefront shape differs in exactly two places: numbers where the storefront
    // client's types declare numbers.
    let mut storefront = expected;
    storefront["totalTax"] = json!(6587);
    storefront["vouchers"][0]["discount"] = json!(5000);
    let got = serde_json::to_value(StorefrontCart::storefront(&sample_cart())).unwrap();
    assert_eq!(
        got,
        storefront,
        "{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

/// A voucher whose minimum order is not met stays on the cart, not applied, naming what is
/// missing; it applies as soon as the cart qualifies and stops when it no longer does.
#[test]
fn a_voucher_waits_on_the_cart_until_its_rules_are_met() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        voucher("BIG"),
    ]);
    let v = serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap();
    assert_eq!(
        v["vouchers"],
        json!([{"id": 1, "code": "BIG", "value": 0, "discount": 0,
                "description": "10.00 SEK off", "applied": false,
                "rules": ["min_order: the items must total at least 1000.00 SEK, they total 125.00 SEK"]}])
    );
    assert_eq!(v["totalPrice"]["incVat"], 12_500);
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        voucher("BIG"),
        cq(1, 8),
    ]);
    let v = serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap();
    assert_eq!(
        (
            v["vouchers"][0]["applied"].clone(),
            v["vouchers"][0]["value"].clone()
        ),
        (json!(true), json!(1000))
    );
    assert_eq!(v["vouchers"][0]["rules"], json!([]));
    assert_eq!(v["totalPrice"]["incVat"], 8 * 12_500 - 1000);
    // Back below the minimum: it stops applying, and says why again.
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-123", 8)),
        voucher("BIG"),
        cq(1, 7),
    ]);
    let v = serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap();
    assert_eq!(v["vouchers"][0]["applied"], json!(false));
    assert_eq!(v["vouchers"][0]["value"], json!(0));
    assert_eq!(v["totalPrice"]["incVat"], 7 * 12_500);
}

/// A voucher whose rules are met but that has nothing left to take off (an earlier voucher
/// took the whole items total) is not shown as applied, and says why.
#[test]
fn a_voucher_with_nothing_left_to_discount_is_not_applied() {
    let cart = given(vec![
        Command::AddItem(add("TEST-SKU-456", 1)),
        voucher("TWOHUNDRED"),
        voucher("TEN"),
    ]);
    let v = serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap();
    assert_eq!(v["vouchers"][0]["applied"], json!(true));
    assert_eq!(v["vouchers"][0]["value"], json!(9990));
    assert_eq!(
        (
            v["vouchers"][1]["applied"].clone(),
            v["vouchers"][1]["value"].clone()
        ),
        (json!(false), json!(0))
    );
    assert_eq!(
        v["vouchers"][1]["rules"],
        json!(["discount: the items are already fully discounted"])
    );
}

#[test]
fn subscription_details_are_keyed_by_id() {
    let cart = given(vec![
        subscription(
            "sub-1",
            "5G-PLAN",
            "bankid",
            json!({"msisdn": "0701234567"}),
        ),
        subscription("sub-1", "5G-PLAN-PLUS", "bankid", json!({})),
        subscription("sub-2", "TV", "none", json!({"box": true})),
        Command::RemoveSubscriptionDetails { id: "sub-2".into() },
    ]);
    let v = serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap();
    assert_eq!(
        v["subscriptionDetails"],
        json!({"sub-1": {"id": "sub-1", "offeringCode": "5G-PLAN-PLUS",
                         "signingType": "bankid", "data": {}}})
    );
}

#[test]
fn empty_cart_json() {
    let v = serde_json::to_value(CartView::of(&Cart::new(cart_id()))).unwrap();
    assert_eq!(
        v,
        json!({
            "id": "1720000000000000", "items": [], "deliveries": [], "vouchers": [],
            "totalPrice": {"exVat": 0, "incVat": 0, "vat": {}},
            "totalDiscount": {"exVat": 0, "incVat": 0, "vat": {}},
            "totalTax": {"exVat": 0, "incVat": 0, "vat": {}},
            "processing": false, "paymentInProgress": false
        })
    );
}

#[test]
fn mutation_reply_shape() {
    let err = MutationError {
        message: "the cart has no line 9".into(),
        code: ErrorCode::UnknownLine.as_str().into(),
        status_code: 404,
    };
    let reply = MutationReply {
        result: CartView::of(&Cart::new(cart_id())),
        mutations: vec![MutationOutcome {
            kind: "ChangeQuantity".into(),
            error: Some(err),
            mutation: json!({"id": 9, "quantity": 2}),
        }],
    };
    let v = serde_json::to_value(&reply).unwrap();
    assert_eq!(
        v["mutations"],
        json!([{"type": "ChangeQuantity",
                "error": {"message": "the cart has no line 9", "code": "unknown_line", "statusCode": 404},
                "mutation": {"id": 9, "quantity": 2}}])
    );
    assert_eq!(v["result"]["id"], "1720000000000000");
}

#[test]
fn event_message_wire_format() {
    let events = when(
        &Cart::new(cart_id()),
        Command::AddItem(add("TEST-SKU-123", 1)),
    )
    .unwrap();
    let id = CommandId::parse("0190f3f4-7d7a-7cc1-8f0e-1a2b3c4d5e6f").unwrap();
    let msg = EventMessage::new(
        TenantId::parse("default").unwrap(),
        cart_id(),
        id,
        1,
        datetime!(2026-11-23 12:00 UTC),
        &events,
    );
    let v: serde_json::Value = serde_json::from_slice(&msg.to_json()).unwrap();
    assert_eq!(
        v,
        json!({
            "cart_id": "1720000000000000", "tenant": "default",
            "command_id": "0190f3f4-7d7a-7cc1-8f0e-1a2b3c4d5e6f", "revision": 1,
            "occurred_at": "2026-11-23T12:00:00Z",
            "events": [{"type": "ItemAdded", "v": 2, "data": {
                "line_id": 1, "sku": "TEST-SKU-123", "item_id": 12500, "quantity": 1,
                "unit_price": 12500, "tax_rate": 2500, "currency": "SEK", "stock": 10,
                "item_type": "product", "country": "se", "name": "Product TEST-SKU-123",
                "image": "https://img.example/TEST-SKU-123.jpg"}}]
        })
    );
    assert_eq!(msg.event_types_header(), "ItemAdded");
    assert_eq!(EventMessage::from_json(&msg.to_json()).unwrap(), msg);
}

#[test]
fn decoding_is_tolerant_and_versioned() {
    // Unknown fields are ignored.
    let rec: EventRecord = serde_json::from_value(json!(
        {"type": "ItemQuantityChanged", "v": 1, "data": {"line_id": 1, "quantity": 2, "new_field": true}}
    ))
    .unwrap();
    assert_eq!(
        Event::decode(&rec).unwrap(),
        Event::ItemQuantityChanged(event::ItemQuantityChanged {
            line_id: 1,
            quantity: 2
        })
    );
    // Unknown types are a distinct error.
    let rec: EventRecord =
        serde_json::from_value(json!({"type": "GiftWrapped", "v": 1, "data": {}})).unwrap();
    assert_eq!(
        Event::decode(&rec),
        Err(EventDecodeError::UnknownType("GiftWrapped".into()))
    );
    // Versions newer than this build are refused, not misread.
    let rec: EventRecord =
        serde_json::from_value(json!({"type": "ItemRemoved", "v": 9, "data": {"line_id": 1}}))
            .unwrap();
    assert!(matches!(
        Event::decode(&rec),
        Err(EventDecodeError::FutureVersion {
            v: 9,
            current: 1,
            ..
        })
    ));
    // Old versions are upcast: ItemAdded v1 had `price` and `tax` (percent), no currency.
    let rec: EventRecord = serde_json::from_value(json!({"type": "ItemAdded", "v": 1, "data": {
        "line_id": 3, "sku": "OLD-1", "quantity": 2, "price": 9900, "tax": 25, "name": "Old"}}))
    .unwrap();
    let Event::ItemAdded(e) = Event::decode(&rec).unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            e.product.unit_price,
            e.product.tax_rate,
            e.product.currency.as_str()
        ),
        (9900, TaxRate(2500), "SEK")
    );
    // A percentage written as a decimal or a string is the same rate; anything that is not a
    // percentage fails to decode instead of becoming 0 % (or 2,500 %) VAT.
    let v1 = |tax: Value| -> Result<Event, EventDecodeError> {
        let rec: EventRecord = serde_json::from_value(json!({"type": "ItemAdded", "v": 1,
            "data": {"line_id": 3, "sku": "OLD-1", "quantity": 2, "price": 9900, "tax": tax,
            "name": "Old"}}))
        .unwrap();
        Event::decode(&rec)
    };
    for (tax, rate) in [(json!(25.0), 2500), (json!("12.5"), 1250), (json!(6), 600)] {
        let Ok(Event::ItemAdded(e)) = v1(tax.clone()) else {
            panic!("{tax} decodes")
        };
        assert_eq!(e.product.tax_rate, TaxRate(rate), "{tax}");
    }
    for tax in [
        json!(2500),
        json!(-1),
        json!("25%"),
        json!(null),
        json!([25]),
    ] {
        let err = v1(tax.clone()).expect_err("not a percentage").to_string();
        assert!(err.contains("VAT percentage"), "{tax}: {err}");
    }
    // Bad data names the type and the problem.
    let rec: EventRecord =
        serde_json::from_value(json!({"type": "ItemRemoved", "v": 1, "data": {}})).unwrap();
    let err = Event::decode(&rec).unwrap_err().to_string();
    assert!(
        err.contains("ItemRemoved v1 is invalid") && err.contains("line_id"),
        "{err}"
    );
}

#[test]
fn every_event_type_round_trips_through_json() {
    let cart = sample_cart();
    let mut all: Vec<Event> = Vec::new();
    let mut c = Cart::new(cart_id());
    for cmd in [
        Command::AddItem(add("TEST-SKU-123", 2)),
        cq(1, 3),
        Command::AddItem(add("BOOK-1", 1)),
        Command::RemoveItem { line_id: 2 },
        delivery("standard", &[]),
        set_pickup(
            1,
            PickupPoint {
                id: "P".into(),
                name: None,
                address: None,
                city: None,
                zip: None,
                country: None,
            },
        ),
        Command::RemoveDelivery { delivery_id: 1 },
        voucher("TEN"),
        Command::RemoveVoucher { voucher_id: 1 },
        set_user(Some("u")),
        Command::MergeCart {
            source_cart_id: CartId::parse("anon").unwrap(),
            items: vec![add("FOOD-1", 1)],
        },
        marking(1, 2, "x"),
        Command::RemoveMarking { line_id: 1 },
        subscription("s1", "PLAN", "bankid", json!({"k": 1})),
        Command::RemoveSubscriptionDetails { id: "s1".into() },
        Command::StartCheckout {
            attempt_id: "a1".into(),
            country: Some("SE".into()),
        },
        Command::CancelCheckout,
        checkout("a2"),
        fail("a2", "c", "r"),
        checkout("a3"),
        Command::ClearCart,
        Command::AddItem(add("FOOD-1", 1)),
        checkout("a4"),
        record("a4", "ko"),
    ] {
        for e in when(&c, cmd).unwrap() {
            c = evolve(c, &e);
            all.push(e);
        }
    }
    // The provider asks to complete the purchase (approved: the cart holds still), then the
    // paid order is placed; another paid order for the placed cart is a mismatch.
    let paid = paid_for(&c);
    let approve = Command::ApprovePayment {
        provider_order_id: "ko".into(),
        paid: paid.clone(),
    };
    for e in when(&c, approve).unwrap() {
        c = evolve(c, &e);
        all.push(e);
    }
    for order in ["ko", "ko-2"] {
        let confirm = confirm_order(order, "R", paid.clone());
        for e in when(&c, confirm).unwrap() {
            c = evolve(c, &e);
            all.push(e);
        }
    }
    // Every command's example, decided against a cart with line 1 and delivery 1: a new
    // command's events are exercised here through its entry in `Command::examples()`.
    let ready = given(vec![
        Command::AddItem(add("TEST-SKU-123", 1)),
        delivery("standard", &[]),
    ]);
    for cmd in Command::examples() {
        all.extend(when(&ready, cmd).unwrap_or_default());
    }
    let seen: std::collections::BTreeSet<&str> = all.iter().map(Event::type_name).collect();
    let known: std::collections::BTreeSet<&str> = Event::TYPES.iter().map(|t| t.0).collect();
    assert_eq!(
        seen, known,
        "every event type is exercised: a new command's example in Command::examples() must apply to a cart with line 1 and delivery 1"
    );
    for e in &all {
        let wire = serde_json::to_string(&e.encode()).unwrap();
        let back = Event::decode(&serde_json::from_str(&wire).unwrap()).unwrap();
        assert_eq!(&back, e);
    }
    assert!(cart.lines.len() == 2);
}

/// The voucher's fields are the catalog's definition, flattened: a `VoucherApplied` written
/// before that (and the cart state built from it) reads and writes the same JSON.
#[test]
fn a_stored_voucher_keeps_its_json_fields() {
    let data = json!({
        "voucher_id": 2, "code": "TEN", "discount": {"kind": "percent", "basis_points": 1000},
        "min_order": 30000, "description": "10 % off", "expires_at": "2027-01-01T00:00:00Z"});
    let rec: EventRecord =
        serde_json::from_value(json!({"type": "VoucherApplied", "v": 1, "data": data})).unwrap();
    let event = Event::decode(&rec).unwrap();
    let Event::VoucherApplied(e) = &event else {
        panic!("{event:?}")
    };
    assert_eq!(
        (
            e.voucher_id,
            e.definition.code.as_str(),
            e.definition.min_order
        ),
        (2, "TEN", 30000)
    );
    assert_eq!(serde_json::to_value(event.encode()).unwrap()["data"], data);
    let mut cart = sample_cart();
    cart.vouchers.clear();
    crate::cart::apply(&mut cart, &event);
    let mut stored = data.clone();
    let id = stored
        .as_object_mut()
        .unwrap()
        .remove("voucher_id")
        .unwrap();
    stored["id"] = id;
    assert_eq!(serde_json::to_value(&cart.vouchers[0]).unwrap(), stored);
    let back: crate::cart::AppliedVoucher = serde_json::from_value(stored.clone()).unwrap();
    assert_eq!(back, cart.vouchers[0]);

    // A field a newer build adds is skipped, as before (the catalog's own definition refuses
    // unknown fields; flattened, it only sees its own).
    let mut newer = data.clone();
    newer["stacks_with"] = json!(["FREESHIP"]);
    let rec: EventRecord =
        serde_json::from_value(json!({"type": "VoucherApplied", "v": 1, "data": newer})).unwrap();
    assert_eq!(Event::decode(&rec).unwrap(), event);
    stored["stacks_with"] = json!(["FREESHIP"]);
    let back: crate::cart::AppliedVoucher = serde_json::from_value(stored).unwrap();
    assert_eq!(back, cart.vouchers[0]);
}

/// `meta.image` is a string in both client versions' types: a product without an image shows
/// an empty one, never a missing field.
#[test]
fn an_item_without_an_image_has_an_empty_one() {
    let cart = given(vec![Command::AddItem(add("NOIMAGE-1", 1))]);
    for v in [
        serde_json::to_value(CartView::of(&cart)).unwrap(),
        serde_json::to_value(StorefrontCart::storefront(&cart)).unwrap(),
    ] {
        assert_eq!(v["items"][0]["meta"]["image"], json!(""), "{v}");
    }
}

/// Every variant serde knows (its "expected one of" list, derived from the enum itself), so
/// a new command cannot be missed by a hand-written list.
fn every_command_type() -> Vec<String> {
    let err = serde_json::from_value::<Command>(json!({"type": "NoSuchCommand"})).unwrap_err();
    let msg = err.to_string();
    let list = msg
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("serde's message changed: {msg}"))
        .1;
    list.split(", ")
        .map(|t| t.trim_matches(|c: char| c == '`' || c.is_whitespace()))
        .map(|t| t.split('`').next().unwrap_or(t).to_owned())
        .collect()
}

#[test]
fn examples_cover_every_command_type() {
    let types: std::collections::BTreeSet<String> = every_command_type().into_iter().collect();
    let examples: std::collections::BTreeSet<String> = Command::examples()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(
        types, examples,
        "Command::examples() must hold every command type serde knows (left), so every edge's contract test sees it"
    );
}

#[test]
fn every_example_round_trips_through_its_json_form_and_is_valid() {
    for c in Command::examples() {
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["type"], c.name(), "{v}");
        assert_eq!(serde_json::from_value::<Command>(v).unwrap(), c);
        c.validate().unwrap_or_else(|e| panic!("{}: {e}", c.name()));
    }
}
