//! Command conversions: every command of [`Command::examples`] (one per type) round trip, and
//! the rejections.

use cart_domain::Command;
use prost::Message;
use shared::{CartId, CommandId, TenantId};

use crate::cart::v1 as pb;
use crate::cart::v1::command::Kind;
use crate::convert::{ConversionError, command_at, command_name};

#[test]
fn commands_round_trip() {
    for c in Command::examples() {
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
    let b = pb::ExecuteBatchRequest::new(&tenant, &cart, id, None, Command::examples());
    let back: Vec<Command> = b
        .commands
        .into_iter()
        .map(|c| Command::try_from(c).unwrap())
        .collect();
    assert_eq!(back, Command::examples());
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
