//! Tests of the wire forms: every command and any cart cross unchanged, and what the domain
//! cannot hold is refused with the field's path.

mod properties;
mod strategies;

use cart_domain::Command;
use prost::Message;
use shared::{ApiError, CartId, CommandId, ErrorCode, TenantId};

use crate::cart::v1 as pb;
use crate::convert::{ConversionError, command_at, rendered, snapshot, state_from_snapshot};

/// Every command type, through prost bytes and back: a command added to the domain crosses
/// the wire without a change here.
#[test]
fn every_command_crosses_the_wire() {
    let tenant = TenantId::parse("t1").unwrap();
    let cart = CartId::parse("c1").unwrap();
    for c in Command::examples() {
        let req = pb::ExecuteRequest::new(&tenant, &cart, CommandId::new(), None, &c);
        let wire = pb::ExecuteRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            command_at(&wire.command, "command").unwrap(),
            c,
            "{}",
            c.name()
        );
    }
    let batch = pb::ExecuteBatchRequest::new(
        &tenant,
        &cart,
        CommandId::new(),
        Some(3),
        &Command::examples(),
    );
    assert_eq!(batch.commands.len(), Command::examples().len());
}

#[test]
fn what_the_domain_cannot_hold_is_refused_with_its_path() {
    assert_eq!(
        command_at(b"", "commands[2]").unwrap_err(),
        ConversionError::missing("commands[2]")
    );
    // A type from a newer peer, an unknown field, a wrong value, an invalid id.
    for (bad, says) in [
        (r#"{"type":"Teleport"}"#, "unknown variant `Teleport`"),
        (
            r#"{"type":"RemoveItem","lineId":1,"x":2}"#,
            "unknown field `x`",
        ),
        (r#"{"type":"RemoveItem","lineId":-1}"#, "expected u32"),
        (
            r#"{"type":"MergeCart","sourceCartId":"a.b"}"#,
            "cart_id must be",
        ),
        ("not json", "expected ident"),
    ] {
        let e = command_at(bad.as_bytes(), "commands[1]").unwrap_err();
        assert_eq!(e.path(), "commands[1]");
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
    let state = cart_domain::CartState::new(CartId::parse("c1").unwrap());
    let mut snap = snapshot(&TenantId::parse("t1").unwrap(), &state);
    snap.cart = b"{\"lines\": 3}".to_vec();
    let e = state_from_snapshot(snap.clone()).unwrap_err();
    assert_eq!(e.path(), "snapshot.cart");
    snap.cart.clear();
    assert_eq!(
        state_from_snapshot(snap.clone()).unwrap_err(),
        ConversionError::missing("snapshot.cart")
    );
    snap.tenant = "a b".into();
    assert_eq!(
        state_from_snapshot(snap).unwrap_err().path(),
        "snapshot.tenant"
    );
}

#[test]
fn errors_become_invalid_argument() {
    let err = command_at(b"", "command").unwrap_err();
    let api = ApiError::from(err.clone());
    assert_eq!(api.code, ErrorCode::InvalidArgument);
    assert_eq!(api.message, "command is required");
    let status = tonic::Status::from(err.at("batch"));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        ApiError::from_status(&status).message,
        "batch.command is required"
    );
}

/// Each render asked for carries what it names and nothing else; a value from a newer peer is
/// the snapshot.
#[test]
fn a_reply_carries_the_render_it_was_asked_for() {
    let tenant = TenantId::parse("t1").unwrap();
    let mut state = cart_domain::CartState::new(CartId::parse("c1").unwrap());
    state.version = 7;
    let full = rendered(&tenant, &state, pb::Render::Snapshot.into());
    assert!(!full.cart.is_empty() && full.rendered.is_empty());
    let json = rendered(&tenant, &state, pb::Render::StorefrontJson.into());
    assert!(json.cart.is_empty() && !json.rendered.is_empty());
    let none = rendered(&tenant, &state, pb::Render::None.into());
    assert!(none.cart.is_empty() && none.rendered.is_empty());
    for snap in [&full, &json, &none] {
        assert_eq!((snap.tenant.as_str(), snap.version), ("t1", 7));
    }
    assert_eq!(rendered(&tenant, &state, 99), full);
}
