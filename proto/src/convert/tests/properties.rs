//! Round trips of random domain values, through prost bytes too.

use cart_domain::Command;
use cart_domain::cart::{Cart, Checkout};
use proptest::prelude::*;
use prost::Message;
use shared::TenantId;

use super::strategies;
use crate::cart::v1 as pb;
use crate::convert::{command_name, snapshot, state_from_snapshot};

proptest! {
    #[test]
    fn any_command_round_trips(c in strategies::command()) {
        let wire = pb::Command::from(c.clone());
        prop_assert_eq!(command_name(&wire), c.name());
        let decoded = pb::Command::decode(wire.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(&decoded, &wire);
        prop_assert_eq!(Command::try_from(decoded).unwrap(), c);
    }

    #[test]
    fn any_cart_round_trips(cart in strategies::cart()) {
        let wire = pb::Cart::from(&cart);
        let decoded = pb::Cart::decode(wire.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(&decoded, &wire);
        prop_assert_eq!(Cart::try_from(decoded).unwrap(), cart);
    }

    #[test]
    fn any_snapshot_round_trips(state in strategies::state(), tenant in "[a-z0-9][a-z0-9_-]{0,62}") {
        let tenant = TenantId::parse(&tenant).unwrap();
        let wire = snapshot(&tenant, &state);
        let decoded = pb::CartSnapshot::decode(wire.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(&decoded, &wire);
        let (back_tenant, back) = state_from_snapshot(decoded).unwrap();
        prop_assert_eq!(back_tenant, tenant);
        prop_assert_eq!(back, state);
    }

    #[test]
    fn any_checkout_round_trips(c in strategies::checkout()) {
        prop_assert_eq!(Checkout::try_from(pb::Checkout::from(&c)).unwrap(), c);
    }
}
