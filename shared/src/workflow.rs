//! Payloads of the workflow streams, a public contract like the cart events:
//!
//! - `workflow.commands.<tenant>.checkout.<cart_id>` (Msg-Id = attempt id): the runner's
//!   record of an effect it is about to perform ([`CheckoutIntent`]).
//! - `workflow.events.<tenant>.checkout.<cart_id>` (Msg-Id = `result-<attempt id>`): what the
//!   provider said ([`CheckoutResult`]); the last message per cart is the current checkout.
//! - `workflow.commands.<tenant>.push.<provider_order_id>` (Msg-Id = `push-<order id>`): a
//!   provider push callback received by the gateway, for the runner to act on ([`PushReceived`]).

use serde::{Deserialize, Serialize};

/// The `<kind>` token of checkout subjects.
pub const CHECKOUT_KIND: &str = "checkout";
/// The `<kind>` token of push subjects.
pub const PUSH_KIND: &str = "push";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutAction {
    /// No provider order exists for the cart yet.
    Create,
    /// The cart already has a provider order: replace its lines and amounts.
    Update,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutIntent {
    pub tenant: String,
    pub cart_id: String,
    pub attempt_id: String,
    pub action: CheckoutAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_order_id: Option<String>,
    pub total_amount: i64,
    pub currency: String,
    /// Stream sequence of the `CheckoutStarted` message this intent comes from.
    pub source_sequence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutOutcome {
    Created,
    Updated,
    Failed,
}

/// The provider order as the gateway needs it (the full provider JSON is kept in `raw`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderOrderSummary {
    pub order_id: String,
    pub status: String,
    #[serde(default)]
    pub html_snippet: String,
    pub order_amount: i64,
    pub purchase_currency: String,
    #[serde(default)]
    pub raw: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutResult {
    pub tenant: String,
    pub cart_id: String,
    pub attempt_id: String,
    pub outcome: CheckoutOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ProviderOrderSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// RFC 3339.
    pub recorded_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReceived {
    pub tenant: String,
    pub provider_order_id: String,
    /// RFC 3339.
    pub received_at: String,
}

/// `Nats-Msg-Id` of a checkout result.
pub fn result_msg_id(attempt_id: &str) -> String {
    format!("result-{attempt_id}")
}

/// `Nats-Msg-Id` of a push (duplicate pushes inside the window are dropped by JetStream).
pub fn push_msg_id(provider_order_id: &str) -> String {
    format!("push-{provider_order_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let r = CheckoutResult {
            tenant: "t".into(),
            cart_id: "c".into(),
            attempt_id: "a".into(),
            outcome: CheckoutOutcome::Failed,
            order: None,
            failure_code: Some("REJECTED".into()),
            failure_reason: Some("no".into()),
            recorded_at: "2026-11-23T12:00:00Z".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "failed");
        assert!(v.get("order").is_none());
        assert_eq!(serde_json::from_value::<CheckoutResult>(v).unwrap(), r);
        assert_eq!(result_msg_id("a1"), "result-a1");
        assert_eq!(push_msg_id("o1"), "push-o1");
        let i: CheckoutIntent = serde_json::from_value(serde_json::json!({
            "tenant": "t", "cart_id": "c", "attempt_id": "a", "action": "update",
            "provider_order_id": "o", "total_amount": 1, "currency": "SEK", "source_sequence": 9
        }))
        .unwrap();
        assert_eq!(i.action, CheckoutAction::Update);
    }
}
