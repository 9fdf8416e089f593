//! Validated identifiers. Every id that crosses a process boundary is parsed here once, so the
//! rest of the code can rely on it being a safe NATS subject token / KV key / header value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// An identifier failed validation. Names the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}, got {value:?}")]
pub struct IdError {
    pub field: &'static str,
    pub rule: &'static str,
    pub value: String,
}

impl IdError {
    pub fn new(field: &'static str, rule: &'static str, value: impl Into<String>) -> Self {
        let mut value = value.into();
        if value.len() > 80 {
            let mut cut = 80;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push('…');
        }
        Self { field, rule, value }
    }
}

/// Longest token any subject or KV key is built with. NATS closes a connection whose control
/// line (the subject and its sizes) passes 4 KiB, and with it every request in flight on it,
/// so no value from outside may ever reach a subject unbounded.
pub const MAX_TOKEN_LEN: usize = 128;

/// True when `s` is usable as one NATS subject token and one KV key segment: 1..=
/// [`MAX_TOKEN_LEN`] ASCII letters, digits, `-` and `_` (so no `.`, `*`, `>`, whitespace or
/// control characters).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A value from a client or the payment provider that names something outside the cart and
/// so becomes a KV key or subject token: the catalog keys (SKU, voucher code, delivery
/// provider), provider order ids and checkout attempt ids. Each has one rule, checked at the
/// HTTP edge and again at every gRPC boundary, before any NATS call is made with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    Sku,
    VoucherCode,
    DeliveryProvider,
    ProviderOrderId,
    AttemptId,
    /// The id of subscription details on a cart (chosen by the storefront, or generated).
    SubscriptionId,
}

impl KeyField {
    /// Longest SKU, voucher code, delivery provider or attempt id.
    pub const MAX_LEN: usize = 64;
    /// Longest provider order id (Klarna's are 36-character UUIDs).
    pub const MAX_ORDER_ID_LEN: usize = MAX_TOKEN_LEN;

    /// The field's name as clients spell it (JSON, query parameters).
    pub const fn name(self) -> &'static str {
        match self {
            KeyField::Sku => "sku",
            KeyField::VoucherCode => "code",
            KeyField::DeliveryProvider => "provider",
            KeyField::ProviderOrderId => "providerOrderId",
            KeyField::AttemptId => "attemptId",
            KeyField::SubscriptionId => "id",
        }
    }

    pub const fn max_len(self) -> usize {
        match self {
            KeyField::ProviderOrderId => Self::MAX_ORDER_ID_LEN,
            _ => Self::MAX_LEN,
        }
    }

    const fn rule(self) -> &'static str {
        match self {
            KeyField::ProviderOrderId => "must be 1..=128 characters of A-Z, a-z, 0-9, '-' or '_'",
            _ => "must be 1..=64 characters of A-Z, a-z, 0-9, '-' or '_'",
        }
    }

    /// `value` when it follows this field's rule; the error names the field (as `name`,
    /// e.g. `items[2].sku` or `klarna_order_id`) and shows at most 80 characters of the value.
    pub fn check<'a>(self, name: &'static str, value: &'a str) -> Result<&'a str, IdError> {
        if value.len() <= self.max_len() && is_token(value) {
            Ok(value)
        } else {
            Err(IdError::new(name, self.rule(), value))
        }
    }
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A tenant (one shop / brand). Lowercase letters, digits, `-`, `_`; 1..=63 characters,
    /// starting with a letter or digit. Used as a subject token and in KV keys.
    TenantId
);

impl TenantId {
    pub const MAX_LEN: usize = 63;
    /// The tenant used when the platform runs single-tenant and no `x-tenant-id` is given.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(s: &str) -> Result<Self, IdError> {
        const RULE: &str =
            "must be 1..=63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit";
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && s.as_bytes()[0].is_ascii_alphanumeric();
        checked(ok, "tenant", RULE, s).map(Self)
    }

    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

string_id!(
    /// A cart. Accepts go-cart-actor style numeric ids (`1720000000000000`) and any other
    /// 1..=64 character token of ASCII letters, digits, `-`, `_`.
    CartId
);

impl CartId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        const RULE: &str = "must be 1..=64 characters of A-Z, a-z, 0-9, '-' or '_'";
        checked(s.len() <= Self::MAX_LEN && is_token(s), "cart_id", RULE, s).map(Self)
    }

    /// A new cart id: digits only like go-cart-actor ids, made of a whole UUIDv7 printed in
    /// decimal (37 digits), so ids are time-ordered and globally unique across gateways
    /// without coordination.
    #[cfg(feature = "generate")]
    pub fn generate() -> Self {
        Self(Uuid::now_v7().as_u128().to_string())
    }
}

string_id!(
    /// Correlates everything one client request caused (HTTP, gRPC, NATS, provider calls).
    /// 1..=128 visible ASCII characters.
    CorrelationId
);

impl CorrelationId {
    pub const MAX_LEN: usize = 128;

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok =
            !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic());
        checked(
            ok,
            "correlation_id",
            "must be 1..=128 visible ASCII characters",
            s,
        )
        .map(Self)
    }

    #[cfg(feature = "generate")]
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }
}

string_id!(
    /// A W3C trace id: 32 lowercase hex digits, not all zero.
    TraceId
);

impl TraceId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        parse_hex_id(s, 32, "trace_id").map(Self)
    }

    #[cfg(feature = "generate")]
    pub fn generate() -> Self {
        Self(format!("{:032x}", random_nonzero_u128()))
    }
}

string_id!(
    /// A W3C span (parent) id: 16 lowercase hex digits, not all zero.
    SpanId
);

impl SpanId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        parse_hex_id(s, 16, "span_id").map(Self)
    }

    #[cfg(feature = "generate")]
    pub fn generate() -> Self {
        // Low 64 bits of a random (v4-style) u128; never zero.
        let v = (random_nonzero_u128() as u64).max(1);
        Self(format!("{v:016x}"))
    }
}

/// `s`, owned, when it passed its id's rule (`ok`); else the error naming `field` and `rule`.
fn checked(ok: bool, field: &'static str, rule: &'static str, s: &str) -> Result<String, IdError> {
    if ok {
        Ok(s.to_owned())
    } else {
        Err(IdError::new(field, rule, s))
    }
}

pub(crate) fn parse_hex_id(s: &str, len: usize, field: &'static str) -> Result<String, IdError> {
    let rule = if len == 32 {
        "must be 32 hex digits and not all zero"
    } else {
        "must be 16 hex digits and not all zero"
    };
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) || s.bytes().all(|b| b == b'0') {
        return Err(IdError::new(field, rule, s));
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(feature = "generate")]
fn random_nonzero_u128() -> u128 {
    loop {
        let v = Uuid::new_v4().as_u128();
        if v != 0 {
            return v;
        }
    }
}

/// The id of one command (one client request). UUIDv7 when minted here; any non-nil UUID is
/// accepted so ids derived from a client's `Idempotency-Key` or from a checkout attempt
/// (UUIDv5) are valid too. It is the `Nats-Msg-Id` of the event message the command produces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct CommandId(Uuid);

/// Its hyphenated lowercase text, written from a stack buffer (every event message carries
/// one; going through a `String` cost an allocation each).
impl Serialize for CommandId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Uuid::encode_buffer();
        s.serialize_str(self.0.hyphenated().encode_lower(&mut text))
    }
}

impl CommandId {
    /// Namespace for ids derived from other ids (idempotency keys, checkout attempts).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f0c_6a58_3b7e_4b1d_9a55_2f1e_8c3d_7a10);

    #[cfg(feature = "generate")]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        match Uuid::try_parse(s) {
            Ok(u) if !u.is_nil() => Ok(Self(u)),
            _ => Err(IdError::new(
                "command_id",
                "must be a non-nil UUID (e.g. a UUIDv7)",
                s,
            )),
        }
    }

    /// A deterministic id derived from `parts` (UUIDv5). The same parts always give the same
    /// id, which is what makes a redelivered effect or a repeated `Idempotency-Key` harmless.
    pub fn derived(parts: &[&str]) -> Self {
        let name = parts.join("\u{1f}");
        Self(Uuid::new_v5(&Self::NAMESPACE, name.as_bytes()))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn from_uuid(u: Uuid) -> Result<Self, IdError> {
        if u.is_nil() {
            Err(IdError::new(
                "command_id",
                "must be a non-nil UUID",
                u.to_string(),
            ))
        } else {
            Ok(Self(u))
        }
    }
}

#[cfg(feature = "generate")]
impl Default for CommandId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommandId({})", self.0)
    }
}

impl FromStr for CommandId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for CommandId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<CommandId> for String {
    fn from(c: CommandId) -> String {
        c.0.to_string()
    }
}

#[cfg(test)]
mod tests;
