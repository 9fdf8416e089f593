//! Command conversions: one table row per variant, and the rejections.

use cart_domain::{AddItem, Command, Marking};
use prost::Message;
use shared::{CartId, CommandId, TenantId};

use super::pickup;
use crate::cart::v1 as pb;
use crate::cart::v1::command::Kind;
use crate::convert::{ConversionError, command_at, command_name};

fn item(sku: &str, store: Option<&str>) -> AddItem {
    AddItem {
        sku: sku.into(),
        quantity: 2,
        country: "se".into(),
        store_id: store.map(Into::into),
    }
}

/// One command per variant; [`variant`] makes the table fail to compile when a variant is
/// added to the domain, and `every_variant_is_in_the_table` fails when it is missing here.
fn commands() -> Vec<Command> {
    vec![
        Command::AddItem(item("A", Some("store-1"))),
        Command::AddItems {
            items: vec![item("A", None), item("B", Some("s"))],
        },
        Command::ChangeQuantity {
            line_id: 3,
            quantity: 7,
        },
        Command::RemoveItem { line_id: 4 },
        Command::SetItems {
            items: vec![item("C", None)],
        },
        Command::ClearCart,
        Command::AddDelivery {
            provider: "postnord".into(),
            line_ids: vec![1, 2],
        },
        Command::RemoveDelivery { delivery_id: 1 },
        Command::SetPickupPoint {
            delivery_id: 1,
            pickup_point: pickup(),
        },
        Command::ApplyVoucher {
            code: "SUMMER10".into(),
        },
        Command::RemoveVoucher { voucher_id: 2 },
        Command::SetUser {
            user_id: Some("u-1".into()),
        },
        Command::SetUser { user_id: None },
        Command::MergeCart {
            source_cart_id: CartId::parse("1720000000000000").unwrap(),
            items: vec![],
        },
        Command::SetMarking {
            line_id: 1,
            marking: Marking {
                kind: 2,
                text: "Grattis!".into(),
            },
        },
        Command::RemoveMarking { line_id: 1 },
        Command::StartCheckout {
            attempt_id: "att-1".into(),
            country: Some("se".into()),
        },
        Command::StartCheckout {
            attempt_id: "att-2".into(),
            country: None,
        },
        Command::RecordProviderOrder {
            attempt_id: "att-1".into(),
            provider_order_id: "kco-1".into(),
            status: "checkout_incomplete".into(),
        },
        Command::ConfirmOrder {
            provider_order_id: "kco-1".into(),
            order_reference: "R-1".into(),
            paid: cart_domain::PaidOrder {
                attempt_id: "att-1".into(),
                amount: 24_900,
                currency: "SEK".into(),
                lines_digest: "d".repeat(32),
            },
        },
        Command::FailCheckout {
            attempt_id: "att-1".into(),
            code: "provider_refused".into(),
            reason: "card declined".into(),
        },
        Command::CancelCheckout,
        Command::UpsertSubscriptionDetails {
            id: "sub-1".into(),
            offering_code: "5G".into(),
            signing_type: "bankid".into(),
            data: serde_json::json!({"msisdn": "0701234567"}),
        },
        Command::RemoveSubscriptionDetails { id: "sub-1".into() },
    ]
}

const VARIANTS: usize = 22;

fn variant(c: &Command) -> usize {
    match c {
        Command::AddItem(_) => 0,
        Command::AddItems { .. } => 1,
        Command::ChangeQuantity { .. } => 2,
        Command::RemoveItem { .. } => 3,
        Command::SetItems { .. } => 4,
        Command::ClearCart => 5,
        Command::AddDelivery { .. } => 6,
        Command::RemoveDelivery { .. } => 7,
        Command::SetPickupPoint { .. } => 8,
        Command::ApplyVoucher { .. } => 9,
        Command::RemoveVoucher { .. } => 10,
        Command::SetUser { .. } => 11,
        Command::MergeCart { .. } => 12,
        Command::SetMarking { .. } => 13,
        Command::RemoveMarking { .. } => 14,
        Command::StartCheckout { .. } => 15,
        Command::RecordProviderOrder { .. } => 16,
        Command::ConfirmOrder { .. } => 17,
        Command::FailCheckout { .. } => 18,
        Command::CancelCheckout => 19,
        Command::UpsertSubscriptionDetails { .. } => 20,
        Command::RemoveSubscriptionDetails { .. } => 21,
    }
}

#[test]
fn every_variant_is_in_the_table() {
    let mut seen = [false; VARIANTS];
    for c in commands() {
        seen[variant(&c)] = true;
    }
    assert!(seen.iter().all(|s| *s), "missing variants: {seen:?}");
}

#[test]
fn commands_round_trip() {
    for c in commands() {
        let wire = pb::Command::from(c.clone());
        assert_eq!(command_name(&wire), c.name());
        let bytes = wire.encode_to_vec();
        let decoded = pb::Command::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, wire, "{}", c.name());
        assert_eq!(Command::try_from(decoded).unwrap(), c);
    }
}
#[test]
fn request_constructors_use_the_ids_string_forms() {
    let tenant = TenantId::parse("t1").unwrap();
    let cart = CartId::parse("c1").unwrap();
    let id = CommandId::new();
    let r = pb::ExecuteRequest::new(&tenant, &cart, id, Some(3), Command::ClearCart);
    assert_eq!(
        (r.tenant.as_str(), r.cart_id.as_str(), r.expected_version),
        ("t1", "c1", Some(3))
    );
    assert_eq!(CommandId::parse(&r.command_id).unwrap(), id);
    assert_eq!(command_name(r.command.as_ref().unwrap()), "ClearCart");
    let b = pb::ExecuteBatchRequest::new(&tenant, &cart, id, None, commands());
    let back: Vec<Command> = b
        .commands
        .into_iter()
        .map(|c| Command::try_from(c).unwrap())
        .collect();
    assert_eq!(back, commands());
}

// ---- rejections ----

#[test]
fn missing_oneof_is_named() {
    let err = Command::try_from(pb::Command { kind: None }).unwrap_err();
    assert_eq!(err.to_string(), "command.kind is required");
    assert_eq!(err.path(), "command.kind");
    assert_eq!(command_name(&pb::Command { kind: None }), "Unknown");
}

#[test]
fn batch_errors_name_the_element() {
    let c = pb::Command {
        kind: Some(Kind::SetMarking(pb::SetMarking {
            line_id: 1,
            marking: None,
        })),
    };
    let err = command_at(c, "commands[3]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "commands[3].set_marking.marking is required"
    );
}

#[test]
fn invalid_merge_source_cart_id_carries_the_id_rule() {
    let c = pb::Command {
        kind: Some(Kind::MergeCart(pb::MergeCart {
            source_cart_id: "a.b".into(),
            items: vec![],
        })),
    };
    let err = Command::try_from(c).unwrap_err();
    let id_err = CartId::parse("a.b").unwrap_err();
    assert_eq!(
        err,
        ConversionError::InvalidId {
            path: "command.merge_cart.source_cart_id".into(),
            error: id_err.clone(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!("command.merge_cart.source_cart_id: {id_err}")
    );
}

#[test]
fn missing_nested_command_messages_are_named() {
    let pickup = pb::Command {
        kind: Some(Kind::SetPickupPoint(pb::SetPickupPoint {
            delivery_id: 1,
            pickup_point: None,
        })),
    };
    assert_eq!(
        Command::try_from(pickup).unwrap_err().to_string(),
        "command.set_pickup_point.pickup_point is required"
    );
    let marking = pb::Command {
        kind: Some(Kind::SetMarking(pb::SetMarking {
            line_id: 1,
            marking: None,
        })),
    };
    assert_eq!(
        Command::try_from(marking).unwrap_err().to_string(),
        "command.set_marking.marking is required"
    );
}
