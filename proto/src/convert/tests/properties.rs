//! Round trips of random domain values through the wire, prost bytes included.

use proptest::prelude::*;
use prost::Message;
use shared::TenantId;

use super::strategies;
use crate::cart::v1 as pb;
use crate::convert::{command_at, command_bytes, snapshot, state_from_snapshot};

proptest! {
    #[test]
    fn any_command_round_trips(c in strategies::command()) {
        prop_assert_eq!(command_at(&command_bytes(&c), "command").unwrap(), c);
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
}
