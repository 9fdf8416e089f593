//! Payloads of the workflow streams, a public contract like the cart events:
//!
//! - `workflow.commands.<tenant>.checkout.<cart_id>` (Msg-Id derived from tenant, cart and
//!   attempt): the runner's record of an effect it is about to perform ([`CheckoutIntent`]).
//! - `workflow.events.<tenant>.checkout.<cart_id>` (Msg-Id derived likewise): what the provider
//!   said about each attempt ([`CheckoutResult`] `created`, `updated` or `failed`); the last
//!   message per cart is the cart's current checkout.
//! - `workflow.events.<tenant>.order.<provider_order_id>` (Msg-Id derived from tenant, cart,
//!   order and outcome): what became of a paid provider order ([`CheckoutResult`] `placed` or
//!   `mismatched`), once per order; kept apart so a late push of an old order never hides the
//!   cart's current checkout.
//! - `workflow.commands.<tenant>.push.<provider_order_id>` (no Msg-Id: every push is kept): a
//!   provider push callback received by the gateway, or a reconciliation of a checkout that
//!   waited too long, for the runner to act on ([`PushReceived`]). A push is only a hint: the
//!   runner reads the provider order and acts on its state.
//!
//! Attempt ids may be chosen by clients (`/v1` `StartCheckout`), so the same one can appear on
//! several carts and tenants: every id derived from an attempt ([`AttemptIds`]) or a provider
//! order ([`confirm_command_id`]) carries the tenant and the cart as well.

use serde::{Deserialize, Serialize};

use cart_domain::ids::CommandId;

/// The `<kind>` token of checkout subjects.
pub const CHECKOUT_KIND: &str = "checkout";
/// The `<kind>` token of push subjects.
pub const PUSH_KIND: &str = "push";
/// The `<kind>` token of paid-order outcome subjects.
pub const ORDER_KIND: &str = "order";

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
    /// The paid provider order is placed on the cart (and acknowledged with the provider).
    Placed,
    /// A provider order was paid but does not match the cart (`failure_code` says why); it is
    /// left unacknowledged or cancelled.
    Mismatched,
}

impl CheckoutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutOutcome::Created => "created",
            CheckoutOutcome::Updated => "updated",
            CheckoutOutcome::Failed => "failed",
            CheckoutOutcome::Placed => "placed",
            CheckoutOutcome::Mismatched => "mismatched",
        }
    }

    /// A provider order exists and waits for the shopper to pay.
    pub fn awaits_payment(self) -> bool {
        matches!(self, CheckoutOutcome::Created | CheckoutOutcome::Updated)
    }
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

/// Where a push record comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushSource {
    /// The provider's push callback, through the gateway.
    #[default]
    Provider,
    /// The runner's reconciliation of a checkout that waited too long for a push.
    Reconcile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushReceived {
    pub tenant: String,
    pub provider_order_id: String,
    /// RFC 3339.
    pub received_at: String,
    #[serde(default)]
    pub source: PushSource,
}

/// The ids derived from one checkout attempt of one cart.
#[derive(Debug, Clone, Copy)]
pub struct AttemptIds<'a> {
    pub tenant: &'a str,
    pub cart_id: &'a str,
    pub attempt_id: &'a str,
}

impl AttemptIds<'_> {
    fn derive(&self, what: &str) -> CommandId {
        CommandId::derived(&[what, self.tenant, self.cart_id, self.attempt_id])
    }

    /// Command id of the `StartCheckout` that begins the attempt (the gateway's).
    pub fn start_command_id(&self) -> CommandId {
        self.derive("checkout-start")
    }

    /// Command id of the runner feeding the provider's answer back (`kind`: `record` or
    /// `fail`).
    pub fn feedback_command_id(&self, kind: &str) -> CommandId {
        CommandId::derived(&[
            "checkout-feedback",
            kind,
            self.tenant,
            self.cart_id,
            self.attempt_id,
        ])
    }

    /// `Nats-Msg-Id` of the runner's intent record.
    pub fn intent_msg_id(&self) -> String {
        format!("intent-{}", self.derive("checkout-intent"))
    }

    /// `Nats-Msg-Id` of the provider's answer to the attempt.
    pub fn result_msg_id(&self) -> String {
        format!("result-{}", self.derive("checkout-result"))
    }

    /// `Klarna-Idempotency-Key` of the provider order create: a repeated create (after a
    /// crash) returns the first order, and no other cart or tenant can ever get it.
    pub fn provider_idempotency_key(&self) -> String {
        self.derive("provider-create").to_string()
    }
}

/// Command id of `ConfirmOrder` for a paid provider order: every push and reconciliation of
/// the same order confirms it with the same id.
pub fn confirm_command_id(tenant: &str, cart_id: &str, provider_order_id: &str) -> CommandId {
    CommandId::derived(&["order-confirm", tenant, cart_id, provider_order_id])
}

/// `Nats-Msg-Id` of the final result of a paid provider order (`placed` or `mismatched`).
pub fn order_result_msg_id(
    tenant: &str,
    cart_id: &str,
    provider_order_id: &str,
    outcome: CheckoutOutcome,
) -> String {
    let id = CommandId::derived(&[
        "order-result",
        outcome.as_str(),
        tenant,
        cart_id,
        provider_order_id,
    ]);
    format!("{}-{id}", outcome.as_str())
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
        let p: PushReceived = serde_json::from_value(serde_json::json!({
            "tenant": "t", "provider_order_id": "o", "received_at": "2026-11-23T12:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            p.source,
            PushSource::Provider,
            "older records came from the provider"
        );
        let i: CheckoutIntent = serde_json::from_value(serde_json::json!({
            "tenant": "t", "cart_id": "c", "attempt_id": "a", "action": "update",
            "provider_order_id": "o", "total_amount": 1, "currency": "SEK", "source_sequence": 9
        }))
        .unwrap();
        assert_eq!(i.action, CheckoutAction::Update);
    }

    /// The same client-chosen attempt id on two carts or two tenants never shares a command
    /// id, message id or provider idempotency key.
    #[test]
    fn attempt_ids_are_namespaced_by_tenant_and_cart() {
        let a = AttemptIds {
            tenant: "default",
            cart_id: "x",
            attempt_id: "checkout-1",
        };
        let other_cart = AttemptIds { cart_id: "y", ..a };
        let other_tenant = AttemptIds {
            tenant: "evil",
            ..a
        };
        for b in [other_cart, other_tenant] {
            assert_ne!(a.start_command_id(), b.start_command_id());
            assert_ne!(
                a.feedback_command_id("record"),
                b.feedback_command_id("record")
            );
            assert_ne!(a.intent_msg_id(), b.intent_msg_id());
            assert_ne!(a.result_msg_id(), b.result_msg_id());
            assert_ne!(a.provider_idempotency_key(), b.provider_idempotency_key());
        }
        assert_ne!(
            a.feedback_command_id("record"),
            a.feedback_command_id("fail")
        );
        assert_ne!(
            confirm_command_id("default", "x", "o1"),
            confirm_command_id("evil", "x", "o1")
        );
        assert_ne!(
            order_result_msg_id("t", "c", "o", CheckoutOutcome::Placed),
            order_result_msg_id("t", "c", "o", CheckoutOutcome::Mismatched)
        );
    }
}
