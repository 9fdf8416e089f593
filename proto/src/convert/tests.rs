//! Tests of the conversions, split by what they convert.

mod cart;
mod command;
mod properties;
mod strategies;

use cart_domain::cart::PickupPoint;
use shared::{ApiError, ErrorCode};

use cart_domain::Command;

use crate::cart::v1 as pb;

fn pickup() -> PickupPoint {
    PickupPoint {
        id: "pp-1".into(),
        name: Some("Ombud".into()),
        address: None,
        city: Some("Malmö".into()),
        zip: Some("211 20".into()),
        country: None,
    }
}

#[test]
fn errors_become_invalid_argument() {
    let err = Command::try_from(pb::Command { kind: None }).unwrap_err();
    let api = ApiError::from(err.clone());
    assert_eq!(api.code, ErrorCode::InvalidArgument);
    assert_eq!(api.message, "command.kind is required");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(ApiError::from_status(&status), api);
}
