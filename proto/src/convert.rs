//! The one place where gRPC messages and `cart_domain` types convert.
//!
//! - Domain → proto is infallible (`From`): every domain value has a wire form.
//! - Proto → domain is fallible (`TryFrom`, [`ConversionError`]): the wire allows what the domain
//!   cannot hold (a missing oneof or nested message, an unknown enum value from a newer peer, an
//!   id that is not a valid subject token). The error names the field path, e.g.
//!   `command.merge_cart.source_cart_id: cart_id must be ...`, and maps to `invalid_argument`.
//!
//! Conversion only checks what the domain types need to exist; business rules (quantity
//! bounds, text lengths, known SKUs) stay in `cart_domain::decide`, so a rule has one home.

mod cart;
mod command;

use std::fmt;

use cart_domain::CartState;
use shared::{ApiError, IdError, TenantId};

use crate::cart::v1 as pb;

pub use command::{command_at, command_name};

/// A proto message the domain cannot represent. `path` is the dotted field path from the root
/// message (`command.add_item.sku`, `snapshot.cart.lines[2].product`), so a caller can fix
/// exactly that field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// A oneof or a nested message the domain needs is absent.
    #[error("{path} is required")]
    Missing { path: String },
    /// An enum number this build does not know, typically sent by a peer on a newer API.
    #[error("{path}: {value} is not a known {enum_name} value")]
    UnknownEnumValue {
        path: String,
        enum_name: &'static str,
        value: i32,
    },
    /// The enum's zero value, which proto3 sends when the field was never set.
    #[error("{path} must be set, got {name}")]
    Unspecified { path: String, name: &'static str },
    /// An identifier that failed validation; the message is the id's own rule.
    #[error("{path}: {error}")]
    InvalidId { path: String, error: IdError },
    /// A field that carries JSON as text holds no valid JSON.
    #[error("{path}: not valid JSON: {reason}")]
    InvalidJson { path: String, reason: String },
    /// A time that is not RFC 3339.
    #[error("{path}: not an RFC 3339 time: {reason}")]
    InvalidTime { path: String, reason: String },
}

impl ConversionError {
    /// `field` is absent. Public so services report a missing top-level message (e.g. an
    /// `ExecuteRequest` without `command`) in the same words as a missing nested one.
    pub fn missing(field: impl Into<String>) -> Self {
        Self::Missing { path: field.into() }
    }

    pub(crate) fn invalid_id(field: &str, error: IdError) -> Self {
        Self::InvalidId {
            path: field.to_owned(),
            error,
        }
    }

    /// The dotted path of the offending field.
    pub fn path(&self) -> &str {
        match self {
            Self::Missing { path }
            | Self::UnknownEnumValue { path, .. }
            | Self::Unspecified { path, .. }
            | Self::InvalidId { path, .. }
            | Self::InvalidJson { path, .. }
            | Self::InvalidTime { path, .. } => path,
        }
    }

    /// The same error one level further out: `at("command")` turns `add_item.sku` into
    /// `command.add_item.sku`. Paths are built only on the error path, so a successful
    /// conversion allocates nothing for them.
    pub fn at(mut self, segment: impl fmt::Display) -> Self {
        let path = match &mut self {
            Self::Missing { path }
            | Self::UnknownEnumValue { path, .. }
            | Self::Unspecified { path, .. }
            | Self::InvalidId { path, .. }
            | Self::InvalidJson { path, .. }
            | Self::InvalidTime { path, .. } => path,
        };
        *path = format!("{segment}.{path}");
        self
    }
}

impl From<ConversionError> for ApiError {
    fn from(e: ConversionError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

/// Lets a tonic handler use `?` on a conversion; the status carries the stable
/// `invalid_argument` code like every other [`ApiError`].
impl From<ConversionError> for tonic::Status {
    fn from(e: ConversionError) -> Self {
        ApiError::from(e).into()
    }
}

/// The JSON value in a text field (empty text: an empty object).
fn json_field(text: &str, field: &str) -> Result<serde_json::Value, ConversionError> {
    if text.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| ConversionError::InvalidJson {
        path: field.to_owned(),
        reason: e.to_string(),
    })
}

/// `Some(v)` or a [`ConversionError::Missing`] naming `field`.
fn required<T>(value: Option<T>, field: &str) -> Result<T, ConversionError> {
    value.ok_or_else(|| ConversionError::missing(field))
}

/// The wire form of a cart's state as the aggregate serves it. `state.recent` (the last
/// command ids, used to answer retries) is internal to the aggregate and not sent.
pub fn snapshot(tenant: &TenantId, state: &CartState) -> pb::CartSnapshot {
    pb::CartSnapshot {
        tenant: tenant.to_string(),
        version: state.version,
        revision: state.revision,
        cart: Some((&state.cart).into()),
        rendered: Vec::new(),
    }
}

/// The cart as a caller asked for it ([`pb::Render`]): the full [`snapshot`], or only the
/// rendered form (the storefront JSON), made here once instead of decoded and re-encoded by
/// the caller. An unknown render value is the snapshot (an older peer's default).
pub fn rendered(tenant: &TenantId, state: &CartState, render: i32) -> pb::CartSnapshot {
    match pb::Render::try_from(render) {
        Ok(pb::Render::StorefrontJson) => pb::CartSnapshot {
            tenant: tenant.to_string(),
            version: state.version,
            revision: state.revision,
            cart: None,
            rendered: storefront_json(&state.cart),
        },
        _ => snapshot(tenant, state),
    }
}

/// The storefront API's cart JSON: exactly what the gateway's `Json(StorefrontCart)` sends.
pub fn storefront_json(cart: &cart_domain::Cart) -> Vec<u8> {
    serde_json::to_vec(&cart_domain::StorefrontCart::storefront(cart))
        .expect("a cart view always serialises")
}

/// The inverse of [`snapshot`]. The returned state's `recent` and `keyed` lists are always
/// empty, because the snapshot does not carry them: such a state is for reading and display,
/// not for deciding retries (the aggregate rebuilds them from its own store). Errors are
/// rooted at `snapshot`.
pub fn state_from_snapshot(
    snapshot: pb::CartSnapshot,
) -> Result<(TenantId, CartState), ConversionError> {
    let tenant = TenantId::parse(&snapshot.tenant)
        .map_err(|e| ConversionError::invalid_id("snapshot.tenant", e))?;
    let cart = required(snapshot.cart, "cart")
        .and_then(|c| cart::decode(c).map_err(|e| e.at("cart")))
        .map_err(|e| e.at("snapshot"))?;
    Ok((
        tenant,
        CartState {
            cart,
            version: snapshot.version,
            revision: snapshot.revision,
            recent: Default::default(),
            keyed: Vec::new(),
        },
    ))
}

#[cfg(test)]
mod tests;
