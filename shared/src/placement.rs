//! Which aggregate node serves a cart.
//!
//! A cart maps to a fixed shard (`fnv1a64("<tenant>/<cart_id>") % shard_count`), and a shard
//! to a node by rendezvous (highest-random-weight) hashing over the live, non-draining nodes.
//! Rendezvous hashing needs no ring or table: every gateway and node computes the same owner
//! from the same node list, and when a node joins or leaves only the shards that must move do
//! (those won by the new node, or owned by the departed one). The owners computed here are the
//! intended ones; the authoritative record is `CART_PLACEMENT`, written with CAS and an epoch.

use serde::{Deserialize, Serialize};

use cart_domain::ids::{CartId, TenantId};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Standard 64-bit FNV-1a. Chosen for the cart → shard map because it is trivial to
/// re-implement in any language (tools, other clients) and stable forever.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_on(FNV_OFFSET, bytes)
}

/// FNV-1a of `bytes` continued from the hash `h` of what came before them.
fn fnv1a64_on(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The shard of a cart: `fnv1a64("<tenant>/<cart_id>") % shard_count`. The tenant is part of
/// the key so equal cart ids of different tenants spread independently.
///
/// # Panics
/// When `shard_count` is 0 (a configuration error caught at startup).
pub fn shard_for(tenant: &TenantId, cart_id: &CartId, shard_count: u32) -> u32 {
    assert!(shard_count > 0, "shard_count must be at least 1");
    // Hashed piece by piece: every call routes by it, and building the key cost an allocation.
    let h = fnv1a64_on(fnv1a64(tenant.as_str().as_bytes()), b"/");
    let h = fnv1a64_on(h, cart_id.as_str().as_bytes());
    (h % u64::from(shard_count)) as u32
}

/// SplitMix64's finaliser: a bijective mixer with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous weight of `node` for `shard`:
/// `mix64(fnv1a64(node) ^ mix64(shard ^ 0x9e3779b97f4a7c15))`.
///
/// FNV alone is a poor weight: its last bytes barely affect the high bits, so nodes named
/// `node-1`, `node-2`, ... would win shards in lopsided proportions. Mixing the shard number
/// and then the combination with SplitMix64's finaliser makes every (node, shard) weight look
/// independent and uniform, which is what gives each of N nodes ~1/N of the shards.
pub fn rendezvous_weight(node: &str, shard: u32) -> u64 {
    mix64(fnv1a64(node.as_bytes()) ^ mix64(u64::from(shard) ^ 0x9e37_79b9_7f4a_7c15))
}

/// The node with the highest weight for `shard`, or `None` when there are no nodes. Ties (of
/// 64-bit weights, practically never) go to the greater node id, so the answer never depends
/// on the order of `nodes`.
pub fn rendezvous_owner<'a>(
    shard: u32,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    nodes
        .into_iter()
        .map(|n| (rendezvous_weight(n, shard), n))
        .max()
        .map(|(_, n)| n)
}

/// The value at `shards.<n>` in `CART_PLACEMENT`: the owning node and a fencing epoch that
/// grows on every ownership change, so a stale owner can tell it was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardOwner {
    pub node: String,
    pub epoch: u64,
}

/// The value at `<node_id>` in `CART_NODES`. The entry expiring (bucket TTL) is how the
/// others learn a node died; `draining` is how a node announces a planned exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Where gateways and other nodes reach this node's gRPC server (`host:port`).
    pub grpc_addr: String,
    /// RFC 3339 start time; distinguishes a restarted node from its previous life.
    pub started_at: String,
    pub draining: bool,
}

impl NodeInfo {
    /// A fresh, non-draining entry started at `started_at`.
    pub fn new(grpc_addr: impl Into<String>, started_at: time::OffsetDateTime) -> Self {
        Self {
            grpc_addr: grpc_addr.into(),
            started_at: started_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| started_at.unix_timestamp().to_string()),
            draining: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SHARDS: u32 = 1024;

    fn owners(nodes: &[&str]) -> Vec<String> {
        (0..SHARDS)
            .map(|s| {
                rendezvous_owner(s, nodes.iter().copied())
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn fnv1a64_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn shard_for_is_fnv_of_tenant_slash_cart() {
        let t = TenantId::parse("acme").unwrap();
        let c = CartId::parse("1720000000000000").unwrap();
        let expected = (fnv1a64(b"acme/1720000000000000") % 64) as u32;
        assert_eq!(shard_for(&t, &c, 64), expected);
        assert_eq!(shard_for(&t, &c, 1), 0);
        let other = TenantId::parse("other").unwrap();
        let differs = (0..50).any(|i| {
            let c = CartId::parse(&format!("cart-{i}")).unwrap();
            shard_for(&t, &c, 1024) != shard_for(&other, &c, 1024)
        });
        assert!(differs, "the tenant must be part of the key");
    }

    #[test]
    fn no_nodes_no_owner_and_order_does_not_matter() {
        assert_eq!(rendezvous_owner(3, std::iter::empty()), None);
        for s in 0..100 {
            assert_eq!(
                rendezvous_owner(s, ["a", "b", "c"]),
                rendezvous_owner(s, ["c", "a", "b"])
            );
        }
    }

    #[test]
    fn four_nodes_share_1024_shards_evenly() {
        let nodes = ["node-1", "node-2", "node-3", "node-4"];
        let mut count: HashMap<String, u32> = HashMap::new();
        for o in owners(&nodes) {
            *count.entry(o).or_default() += 1;
        }
        for n in nodes {
            let share = f64::from(count[n]) / f64::from(SHARDS);
            assert!(
                (0.20..=0.30).contains(&share),
                "{n} got {share:.3} ({count:?})"
            );
        }
    }

    #[test]
    fn adding_a_fourth_node_moves_about_a_quarter_all_to_it() {
        let before = owners(&["node-1", "node-2", "node-3"]);
        let after = owners(&["node-1", "node-2", "node-3", "node-4"]);
        let moved: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        for &i in &moved {
            assert_eq!(after[i], "node-4", "shard {i} moved between old nodes");
        }
        let share = moved.len() as f64 / f64::from(SHARDS);
        assert!((0.20..=0.30).contains(&share), "moved {share:.3}");
    }

    #[test]
    fn removing_a_node_moves_only_its_shards() {
        let before = owners(&["node-1", "node-2", "node-3", "node-4"]);
        let after = owners(&["node-1", "node-2", "node-4"]);
        for i in 0..before.len() {
            if before[i] != "node-3" {
                assert_eq!(
                    before[i], after[i],
                    "shard {i} moved although its owner stayed"
                );
            } else {
                assert_ne!(after[i], "node-3");
            }
        }
    }

    #[test]
    fn kv_values_are_snake_case_json() {
        let owner = ShardOwner {
            node: "node-1".into(),
            epoch: 7,
        };
        let json = serde_json::to_value(&owner).unwrap();
        assert_eq!(json, serde_json::json!({"node": "node-1", "epoch": 7}));
        assert_eq!(serde_json::from_value::<ShardOwner>(json).unwrap(), owner);

        let started = time::macros::datetime!(2025-01-02 03:04:05 UTC);
        let info = NodeInfo::new("10.0.0.1:50051", started);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "grpc_addr": "10.0.0.1:50051",
                "started_at": "2025-01-02T03:04:05Z",
                "draining": false
            })
        );
        // Unknown fields from newer writers are ignored.
        let mut newer = json.clone();
        newer["zone"] = "eu-north-1a".into();
        assert_eq!(serde_json::from_value::<NodeInfo>(newer).unwrap(), info);
    }
}
