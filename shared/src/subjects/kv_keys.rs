//! KV keys of the `CART_SNAPSHOTS`, `CART_PLACEMENT`, `CART_NODES` and `CATALOG` buckets.
//!
//! KV keys become subject tokens under `$KV.<bucket>.`, so they follow the same rules as
//! subjects: every variable part is one validated token.

use std::fmt;

use super::{SubjectError, split_after, tok};
use cart_domain::ids::{CartId, TenantId};

/// `<tenant>.<cart_id>` in `CART_SNAPSHOTS`.
pub fn snapshot_key(tenant: &TenantId, cart_id: &CartId) -> String {
    [tenant.as_str(), cart_id.as_str()].join(".")
}

/// The inverse of [`snapshot_key`].
pub fn parse_snapshot_key(key: &str) -> Result<(TenantId, CartId), SubjectError> {
    const WHAT: &str = "snapshot key";
    let (t, c) = key
        .split_once('.')
        .ok_or_else(|| SubjectError::new(WHAT, key, "must be <tenant>.<cart_id>"))?;
    let tenant = TenantId::parse(t).map_err(|e| SubjectError::new(WHAT, key, e.to_string()))?;
    let cart = CartId::parse(c).map_err(|e| SubjectError::new(WHAT, key, e.to_string()))?;
    Ok((tenant, cart))
}

const SHARDS_PREFIX: &str = "shards";

/// `shards.<n>` in `CART_PLACEMENT`.
pub fn placement_key(shard: u32) -> String {
    format!("{SHARDS_PREFIX}.{shard}")
}

/// The inverse of [`placement_key`]. Only canonical decimal (`shards.7`, not `shards.07`), so
/// one shard has exactly one key.
pub fn parse_placement_key(key: &str) -> Result<u32, SubjectError> {
    const WHAT: &str = "placement key";
    let p = split_after(WHAT, key, SHARDS_PREFIX, 1)?;
    match p[0].parse::<u32>() {
        Ok(n) if n.to_string() == p[0] => Ok(n),
        _ => Err(SubjectError::new(WHAT, key, "shard must be a decimal u32")),
    }
}

/// `<node_id>` in `CART_NODES`.
pub fn node_key(node_id: &str) -> Result<String, SubjectError> {
    tok("node key", "node id", node_id)?;
    Ok(node_id.to_owned())
}

/// The inverse of [`node_key`] (validates the key is one token).
pub fn parse_node_key(key: &str) -> Result<&str, SubjectError> {
    tok("node key", "node id", key)?;
    Ok(key)
}

/// The kinds of entry in the `CATALOG` bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CatalogKey {
    /// `sku.<sku>`: a product.
    Sku(String),
    /// `delivery.<provider>`: a delivery option's price.
    Delivery(String),
    /// `voucher.<code>`: a voucher definition.
    Voucher(String),
}

impl CatalogKey {
    pub fn sku(sku: &str) -> Result<Self, SubjectError> {
        tok("catalog key", "sku", sku)?;
        Ok(Self::Sku(sku.to_owned()))
    }

    pub fn delivery(provider: &str) -> Result<Self, SubjectError> {
        tok("catalog key", "delivery provider", provider)?;
        Ok(Self::Delivery(provider.to_owned()))
    }

    pub fn voucher(code: &str) -> Result<Self, SubjectError> {
        tok("catalog key", "voucher code", code)?;
        Ok(Self::Voucher(code.to_owned()))
    }

    pub fn parse(key: &str) -> Result<Self, SubjectError> {
        let (kind, rest) = key.split_once('.').ok_or_else(|| {
            SubjectError::new(
                "catalog key",
                key,
                "must be sku.<sku>, delivery.<provider> or voucher.<code>",
            )
        })?;
        let parsed = match kind {
            "sku" => Self::sku(rest),
            "delivery" => Self::delivery(rest),
            "voucher" => Self::voucher(rest),
            _ => Err(SubjectError::new(
                "catalog key",
                key,
                "kind must be sku, delivery or voucher",
            )),
        };
        parsed.map_err(|e| SubjectError::new("catalog key", key, e.reason))
    }
}

impl CatalogKey {
    /// Its kind (the key's first token) and its value.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            CatalogKey::Sku(s) => ("sku", s),
            CatalogKey::Delivery(p) => ("delivery", p),
            CatalogKey::Voucher(c) => ("voucher", c),
        }
    }

    /// `<kind>.<value>`, in one allocation of its exact size (an SKU's is made per command).
    pub fn key(&self) -> String {
        let (kind, value) = self.parts();
        [kind, value].join(".")
    }
}

impl fmt::Display for CatalogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// `sku.<sku>` in `CATALOG`.
pub fn sku_key(sku: &str) -> Result<String, SubjectError> {
    CatalogKey::sku(sku).map(|k| k.key())
}

/// `delivery.<provider>` in `CATALOG`.
pub fn delivery_key(provider: &str) -> Result<String, SubjectError> {
    CatalogKey::delivery(provider).map(|k| k.key())
}

/// `voucher.<code>` in `CATALOG`.
pub fn voucher_key(code: &str) -> Result<String, SubjectError> {
    CatalogKey::voucher(code).map(|k| k.key())
}
