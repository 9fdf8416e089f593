//! How events travel and are stored: an [`EventRecord`] (`{type, v, data}`) per event, inside
//! one [`EventMessage`] per accepted command, and why a record may not decode
//! ([`EventDecodeError`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Event;
use crate::ids::{CartId, CommandId, TenantId};

/// An event as stored: type name, version and JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(rename = "type")]
    pub event_type: String,
    pub v: u32,
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event {event_type} v{v} is newer than this build understands (v{current})")]
    FutureVersion {
        event_type: String,
        v: u32,
        current: u32,
    },
    #[error("event {event_type} v{v} is invalid: {reason}")]
    Invalid {
        event_type: String,
        v: u32,
        reason: String,
    },
}

/// One JetStream message on `cart.events.<tenant>.<cart_id>`: everything one accepted command
/// produced, so a commit is atomic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub cart_id: CartId,
    pub tenant: TenantId,
    pub command_id: CommandId,
    /// 1 for the cart's first message, then +1 per message.
    pub revision: u64,
    /// RFC 3339 time the command was decided.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: time::OffsetDateTime,
    pub events: Vec<EventRecord>,
    /// Set when the command came with an `Idempotency-Key` (its id is derived from the key):
    /// the fingerprint of the request. The cart keeps it with the outcome for the idempotency
    /// retention, so the same key with another request is refused by every gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_fingerprint: Option<String>,
    /// Set on a message without events that records the cart's refusal of a command: one sent
    /// with an `Idempotency-Key`, or one whose earlier attempt had an unknown outcome (a node
    /// may still be deciding it). A retry of it, or that slower node, gets this refusal
    /// instead of deciding the command again on a cart that changed since. A keyed request's
    /// fingerprint travels here rather than in `request_fingerprint`: a build that does not
    /// know this field reads the message as an unkeyed one that changed nothing, and decides a
    /// retry again as builds before it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
}

/// A command's refusal, as the cart keeps it (see [`EventMessage::refused`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The fingerprint of the refused request, when it came with an `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(flatten)]
    pub refusal: Refusal,
}

/// What a cart answered when it refused a command: the stable error code (a string, so a
/// code a newer build added still reads) and the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: String,
    pub message: String,
}

impl EventMessage {
    pub fn new(
        tenant: TenantId,
        cart_id: CartId,
        command_id: CommandId,
        revision: u64,
        occurred_at: time::OffsetDateTime,
        events: &[Event],
    ) -> Self {
        Self {
            cart_id,
            tenant,
            command_id,
            revision,
            occurred_at,
            events: events.iter().map(Event::encode).collect(),
            request_fingerprint: None,
            refused: None,
        }
    }

    /// The fingerprint of the keyed request this message answers (applied or refused).
    pub fn fingerprint(&self) -> Option<&str> {
        self.request_fingerprint
            .as_deref()
            .or(self.refused.as_ref().and_then(|r| r.fingerprint.as_deref()))
    }

    /// The value of the `cart-event-types` header: the event type names, comma-separated.
    pub fn event_types_header(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&e.event_type);
        }
        out
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Sized for a typical message up front: growing the buffer as it is written copied
        // it several times per append.
        let mut out = Vec::with_capacity(384 + 256 * self.events.len());
        serde_json::to_writer(&mut out, self).expect("event messages always serialize");
        out
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
