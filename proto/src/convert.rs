//! Where gRPC messages meet `cart_domain`.
//!
//! Commands and carts cross the wire as the domain's own JSON, in `bytes` fields: a command as
//! `cart_domain::Command` (`{"type": "AddItem", "sku": ..}`, the form `/v1` accepts), a cart as
//! `cart_domain::Cart` (the form `CART_SNAPSHOTS` stores). A command or a cart field is
//! therefore written once, in the domain, and no mapping here changes when one is added.
//!
//! Decoding only checks what the domain types need to exist (serde's rules, ids that are
//! valid subject tokens); business rules (quantity bounds, text lengths, known SKUs) stay in
//! `cart_domain::decide`, so a rule has one home.

use std::fmt;

use cart_domain::{Cart, CartState, Command, StorefrontCart};
use shared::{ApiError, CartId, CommandId, IdError, TenantId};

use crate::cart::v1 as pb;

/// A message the domain cannot represent. `path` names the field from the root message
/// (`command`, `commands[3]`, `snapshot.tenant`), so a caller can fix exactly that field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConversionError {
    /// A field the domain needs is absent (an empty `bytes` field counts as absent).
    #[error("{path} is required")]
    Missing { path: String },
    /// An identifier that failed validation; the message is the id's own rule.
    #[error("{path}: {error}")]
    InvalidId { path: String, error: IdError },
    /// A JSON field the domain type does not accept; `reason` is serde's, which names the
    /// unknown type or field, the missing field or the wrong value, and where in the text.
    #[error("{path}: {reason}")]
    InvalidJson { path: String, reason: String },
}

impl ConversionError {
    /// `field` is absent. Public so services report a missing top-level message in the same
    /// words as a missing field.
    pub fn missing(field: impl Into<String>) -> Self {
        Self::Missing { path: field.into() }
    }

    /// The path of the offending field.
    pub fn path(&self) -> &str {
        match self {
            Self::Missing { path }
            | Self::InvalidId { path, .. }
            | Self::InvalidJson { path, .. } => path,
        }
    }

    /// The same error one level further out: `at("snapshot")` turns `cart` into
    /// `snapshot.cart`.
    pub fn at(mut self, segment: impl fmt::Display) -> Self {
        let path = match &mut self {
            Self::Missing { path }
            | Self::InvalidId { path, .. }
            | Self::InvalidJson { path, .. } => path,
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

/// The wire form of a command.
pub fn command_bytes(command: &Command) -> Vec<u8> {
    serde_json::to_vec(command).expect("a command always serialises")
}

/// The command in `bytes`, with errors rooted at `field` (`command`, `commands[3]`), so
/// `ExecuteBatch` says which command of the batch was wrong. A type this build does not know
/// (sent by a newer peer) is refused here, as `invalid_argument`.
pub fn command_at(bytes: &[u8], field: &str) -> Result<Command, ConversionError> {
    if bytes.is_empty() {
        return Err(ConversionError::missing(field));
    }
    serde_json::from_slice(bytes).map_err(|e| ConversionError::InvalidJson {
        path: field.to_owned(),
        reason: e.to_string(),
    })
}

/// The wire form of a cart's state as the aggregate serves it. `state.recent` (the last
/// command ids, used to answer retries) is internal to the aggregate and not sent.
pub fn snapshot(tenant: &TenantId, state: &CartState) -> pb::CartSnapshot {
    rendered(tenant, state, pb::Render::Snapshot.into())
}

/// The cart as a caller asked for it ([`pb::Render`]): the full [`snapshot`], only the
/// rendered form (the storefront JSON, made here once instead of decoded and re-encoded by the
/// caller), or nothing but the version. An unknown render value is the snapshot (an older
/// peer's default).
pub fn rendered(tenant: &TenantId, state: &CartState, render: i32) -> pb::CartSnapshot {
    let (cart, rendered) = match pb::Render::try_from(render) {
        Ok(pb::Render::None) => (Vec::new(), Vec::new()),
        Ok(pb::Render::StorefrontJson) => (Vec::new(), storefront_json(&state.cart)),
        Ok(pb::Render::Snapshot) | Err(_) => {
            let mut json = Vec::with_capacity(json_size_hint(&state.cart));
            serde_json::to_writer(&mut json, &state.cart).expect("a cart always serialises");
            (json, Vec::new())
        }
    };
    pb::CartSnapshot {
        tenant: tenant.to_string(),
        version: state.version,
        revision: state.revision,
        cart,
        rendered,
    }
}

/// The storefront API's cart JSON: exactly what the gateway's `Json(StorefrontCart)` sends.
pub fn storefront_json(cart: &Cart) -> Vec<u8> {
    let mut json = Vec::with_capacity(json_size_hint(cart));
    serde_json::to_writer(&mut json, &StorefrontCart::storefront(cart))
        .expect("a cart view always serialises");
    json
}

/// Room for a cart's JSON, so that writing it does not grow (and copy) the buffer again and
/// again: about what a cart and each line take, generously.
fn json_size_hint(cart: &Cart) -> usize {
    1024 + 512 * cart.lines.len()
}

/// The inverse of [`snapshot`]. The returned state's `recent` and `keyed` lists are always
/// empty, because the snapshot does not carry them: such a state is for reading and display,
/// not for deciding retries (the aggregate rebuilds them from its own store). Errors are
/// rooted at `snapshot`.
pub fn state_from_snapshot(
    snapshot: pb::CartSnapshot,
) -> Result<(TenantId, CartState), ConversionError> {
    let tenant = TenantId::parse(&snapshot.tenant).map_err(|error| ConversionError::InvalidId {
        path: "snapshot.tenant".into(),
        error,
    })?;
    if snapshot.cart.is_empty() {
        return Err(ConversionError::missing("snapshot.cart"));
    }
    let cart: Cart =
        serde_json::from_slice(&snapshot.cart).map_err(|e| ConversionError::InvalidJson {
            path: "snapshot.cart".into(),
            reason: e.to_string(),
        })?;
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

/// Requests built from typed ids, so a caller cannot put an unvalidated string on the wire.
impl pb::ExecuteRequest {
    pub fn new(
        tenant: &TenantId,
        cart_id: &CartId,
        command_id: CommandId,
        expected_version: Option<u64>,
        command: &Command,
    ) -> Self {
        pb::ExecuteRequest {
            tenant: tenant.to_string(),
            cart_id: cart_id.to_string(),
            command_id: command_id.to_string(),
            expected_version,
            command: command_bytes(command),
            request_fingerprint: String::new(),
            render: pb::Render::Snapshot.into(),
        }
    }

    /// The fingerprint of the client request whose `Idempotency-Key` the command id is
    /// derived from.
    pub fn keyed(mut self, fingerprint: Option<&str>) -> Self {
        self.request_fingerprint = fingerprint.unwrap_or_default().to_owned();
        self
    }

    /// Asks for the cart in `render` instead of the full snapshot.
    pub fn rendered(mut self, render: pb::Render) -> Self {
        self.render = render.into();
        self
    }
}

/// See [`pb::ExecuteRequest::new`]; the commands are applied atomically, in order.
impl pb::ExecuteBatchRequest {
    pub fn new(
        tenant: &TenantId,
        cart_id: &CartId,
        command_id: CommandId,
        expected_version: Option<u64>,
        commands: &[Command],
    ) -> Self {
        pb::ExecuteBatchRequest {
            tenant: tenant.to_string(),
            cart_id: cart_id.to_string(),
            command_id: command_id.to_string(),
            expected_version,
            commands: commands.iter().map(command_bytes).collect(),
            request_fingerprint: String::new(),
        }
    }

    /// See [`pb::ExecuteRequest::keyed`].
    pub fn keyed(mut self, fingerprint: Option<&str>) -> Self {
        self.request_fingerprint = fingerprint.unwrap_or_default().to_owned();
        self
    }
}

#[cfg(test)]
mod tests;
