//! Provider pushes: a push is only a hint. The gateway records every push it receives in
//! `WORKFLOW_COMMANDS` (`workflow.commands.<tenant>.push.<order id>`, no Msg-Id, so nothing is
//! dropped before its order was read), and the runner's reconciliation adds one for a checkout
//! that waited too long. For each, the runner reads the order from the provider and acts on
//! its state:
//!
//! - not ours, another tenant's, unknown to the provider, or not paid yet: nothing to do (a
//!   forged or early push changes nothing and blocks nothing; the real one comes later);
//! - paid: `ConfirmOrder` with what the provider charged, under a command id derived from
//!   tenant, cart and order, so every push of one order confirms it once. The cart places the
//!   order when the payment matches the checkout attempt and the cart; then the order is
//!   acknowledged with the provider and its outcome recorded (`placed`, on
//!   `workflow.events.<tenant>.order.<order id>`);
//! - paid but not matching: the cart records `OrderMismatched`; the order is **not**
//!   acknowledged (or is cancelled, `RUNNER_MISMATCH_ACTION=cancel`), its outcome is recorded
//!   (`mismatched`) and, the first time, counted (`cart_runner_payment_mismatches_total`,
//!   alerted) and logged as an error.
//!
//! A later push of a settled order (the provider pushes until it is acknowledged) finds its
//! outcome recorded and does nothing more.

use std::sync::Arc;

use async_nats::jetstream::Message;
use cart_domain::ids::{CartId, TenantId};
use cart_domain::{Cart, Command};
use futures::future::BoxFuture;
use proto::cart::v1 as pb;
use shared::headers::RequestContext;
use shared::provider_order::PAID_STATUS;
use shared::subjects::{RUNNER_PUSH_DURABLE, WORKFLOW_COMMANDS_STREAM, WorkflowSubject};
use shared::workflow::{CheckoutOutcome, CheckoutResult, PushReceived, confirm_command_id};
use tracing::Instrument;

use crate::checkout::is_transient;
use crate::config::MismatchAction;
use crate::lanes::{Disposition, Handler};
use crate::metrics as m;
use crate::provider::order::MerchantData;
use crate::provider::{Order, ProviderClient};
use crate::records::{Consumed, Records};
use crate::state::{ProviderHandle, Status};

pub struct Push {
    pub records: Records,
    pub provider: ProviderHandle,
    pub carts: cart_client::CartClient,
    pub status: Arc<Status>,
    pub mismatch_action: MismatchAction,
}

enum PushError {
    Retry(String),
    GiveUp(String),
}

/// The push consumer on `WORKFLOW_COMMANDS`.
const FROM: Consumed = Consumed {
    consumer: RUNNER_PUSH_DURABLE,
    stream: WORKFLOW_COMMANDS_STREAM,
};

impl Handler for Push {
    fn lane_key<'a>(&self, msg: &'a Message) -> &'a str {
        msg.subject.as_str()
    }

    fn handle<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            match self.confirm(msg).await {
                Ok(result) => {
                    metrics::counter!(m::PUSHES, "result" => result).increment(1);
                    self.status.completed();
                    Disposition::Ack
                }
                Err(PushError::Retry(reason)) if self.records.retries_left(delivered) => {
                    self.status.error(&reason);
                    tracing::warn!(subject = %msg.subject, %reason, "push not handled yet; will retry");
                    Disposition::nak(delivered)
                }
                Err(PushError::Retry(reason) | PushError::GiveUp(reason)) => {
                    metrics::counter!(m::PUSHES, "result" => "dead_letter").increment(1);
                    self.status.error(&reason);
                    self.records.give_up(FROM, msg, &reason).await
                }
            }
        })
    }

    fn retry_or_give_up<'a>(
        &'a self,
        msg: &'a Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Disposition> {
        Box::pin(self.records.retry_or_give_up(FROM, msg, reason))
    }
}

impl Push {
    async fn confirm(&self, msg: &Message) -> Result<&'static str, PushError> {
        let subject = WorkflowSubject::parse(msg.subject.as_str())
            .map_err(|e| PushError::GiveUp(format!("bad push subject: {e}")))?;
        let push: PushReceived = serde_json::from_slice(&msg.payload)
            .map_err(|e| PushError::GiveUp(format!("not a push record: {e}")))?;
        if push.tenant != subject.tenant.as_str() || push.provider_order_id != subject.id {
            return Err(PushError::GiveUp(
                "push record does not match its subject".into(),
            ));
        }
        let ctx = msg
            .headers
            .as_ref()
            .and_then(|h| RequestContext::from_nats_headers(h).ok())
            .unwrap_or_else(|| RequestContext::new(subject.tenant.clone()));
        let span = tracing::info_span!(
            "runner.push",
            order = %push.provider_order_id,
            source = ?push.source
        );
        shared::spans::continue_trace(&span, &ctx);
        self.confirm_order(&ctx, &push).instrument(span).await
    }

    async fn confirm_order(
        &self,
        ctx: &RequestContext,
        push: &PushReceived,
    ) -> Result<&'static str, PushError> {
        let order_id = push.provider_order_id.as_str();
        let provider = self.provider.current();
        let order = match provider.get_order(order_id, ctx).await {
            Ok(order) => order,
            Err(e) if e.is_not_found() => {
                tracing::warn!(
                    order = order_id,
                    "push for an order the provider does not know: ignored"
                );
                return Ok("unknown_order");
            }
            Err(e) if e.is_transient() => return Err(PushError::Retry(e.to_string())),
            Err(e) => return Err(PushError::GiveUp(format!("provider order {order_id}: {e}"))),
        };
        let Some(merchant) = order.merchant() else {
            tracing::warn!(
                order = order_id,
                "push for a provider order without our merchant data: ignored"
            );
            return Ok("foreign_order");
        };
        if merchant.tenant != push.tenant {
            // A forged push naming another tenant; the order's own pushes name its tenant.
            tracing::warn!(
                order = order_id,
                push_tenant = %push.tenant,
                order_tenant = %merchant.tenant,
                "push names another tenant than its order: ignored"
            );
            return Ok("foreign_tenant");
        }
        if order.status.as_deref() != Some(PAID_STATUS) {
            // Pushed before payment (or forged): nothing to place yet, and nothing is blocked.
            tracing::info!(order = order_id, status = ?order.status, "push for an unpaid order: nothing to do yet");
            return Ok("incomplete");
        }
        let (tenant, cart_id) = match (
            TenantId::parse(&merchant.tenant),
            CartId::parse(&merchant.cart_id),
        ) {
            (Ok(t), Ok(c)) => (t, c),
            _ => {
                return Err(PushError::GiveUp(format!(
                    "provider order {order_id} names no valid cart: {merchant:?}"
                )));
            }
        };
        let paid = order.paid(&merchant);
        let req = pb::ExecuteRequest {
            tenant: tenant.to_string(),
            cart_id: cart_id.to_string(),
            command_id: confirm_command_id(tenant.as_str(), cart_id.as_str(), order_id).to_string(),
            expected_version: None,
            command: proto::convert::command_bytes(&Command::ConfirmOrder {
                provider_order_id: order_id.to_owned(),
                order_reference: order
                    .klarna_reference
                    .clone()
                    .unwrap_or_else(|| order_id.to_owned()),
                paid,
            }),
            request_fingerprint: String::new(),
            render: pb::Render::Snapshot.into(),
        };
        let reply = match self.carts.execute(ctx, req).await {
            Ok(reply) => reply,
            Err(e) if is_transient(&e) => {
                return Err(PushError::Retry(format!("aggregate: {e}")));
            }
            Err(e) => {
                return Err(PushError::GiveUp(format!(
                    "the cart refused the paid order {order_id}: {e}"
                )));
            }
        };
        let cart = reply
            .cart
            .and_then(|c| proto::convert::state_from_snapshot(c).ok())
            .map(|(_, state)| state.cart)
            .ok_or_else(|| PushError::Retry("the aggregate sent no readable cart".into()))?;
        let outcome = Outcome {
            tenant: &tenant,
            cart: &cart,
            order_id,
            order: &order,
            merchant: &merchant,
            ctx,
        };
        let placed = cart
            .order
            .as_ref()
            .is_some_and(|o| o.provider_order_id == order_id);
        // A later push of an order already settled: the cart answered the same, and its
        // effects (acknowledge or cancel, record, count) were done by the first one.
        let settled = self
            .records
            .last_order_outcome(&tenant, order_id)
            .await
            .map_err(|e| PushError::Retry(format!("reading the order's outcome: {e}")))?
            .is_some();
        match (placed, settled) {
            (true, true) => Ok("already_placed"),
            (true, false) => self.placed(&provider, outcome).await.map(|()| "confirmed"),
            (false, true) => Ok("mismatch"),
            (false, false) => self
                .mismatched(&provider, outcome)
                .await
                .map(|()| "mismatch"),
        }
    }

    /// The order is placed: acknowledge it with the provider (so it stops pushing), then
    /// record it. A crash in between repeats both harmlessly.
    async fn placed(&self, provider: &ProviderClient, o: Outcome<'_>) -> Result<(), PushError> {
        provider
            .acknowledge(o.order_id, o.ctx)
            .await
            .map_err(|e| PushError::Retry(format!("acknowledge: {e}")))?;
        self.record(o, CheckoutOutcome::Placed, None)
            .await
            .map(|_| ())
    }

    /// The order was paid but cannot be placed: never acknowledged; cancelled when so
    /// configured; recorded, and counted and logged as an error when the record is its
    /// first.
    async fn mismatched(&self, provider: &ProviderClient, o: Outcome<'_>) -> Result<(), PushError> {
        let Some(mismatch) = o.cart.mismatch(o.order_id) else {
            return Err(PushError::GiveUp(format!(
                "the cart neither placed nor recorded the paid order {}",
                o.order_id
            )));
        };
        if self.mismatch_action == MismatchAction::Cancel {
            match provider.cancel(o.order_id, o.ctx).await {
                Ok(()) => tracing::warn!(
                    order = o.order_id,
                    "mismatched order cancelled with the provider"
                ),
                Err(e) if e.is_transient() => {
                    return Err(PushError::Retry(format!("cancel: {e}")));
                }
                // Already cancelled (a crash after the cancel), or no longer cancellable: an
                // operator sees the mismatch either way.
                Err(e) => {
                    tracing::warn!(order = o.order_id, error = %e, "the provider refused to cancel the mismatched order")
                }
            }
        }
        let reason = format!("{}: {}", mismatch.code, mismatch.reason);
        if self
            .record(o, CheckoutOutcome::Mismatched, Some(reason))
            .await?
        {
            metrics::counter!(m::PAYMENT_MISMATCHES, "reason" => mismatch.code.clone())
                .increment(1);
            tracing::error!(
                cart = %o.cart.id,
                order = o.order_id,
                code = %mismatch.code,
                reason = %mismatch.reason,
                action = ?self.mismatch_action,
                "a paid provider order does not match its cart: not placed, not acknowledged"
            );
        }
        Ok(())
    }

    /// Records the order's outcome; true when this is its first record.
    async fn record(
        &self,
        o: Outcome<'_>,
        outcome: CheckoutOutcome,
        failure: Option<String>,
    ) -> Result<bool, PushError> {
        let result = CheckoutResult {
            tenant: o.tenant.to_string(),
            cart_id: o.cart.id.to_string(),
            attempt_id: o.merchant.attempt_id.clone(),
            outcome,
            order: Some(o.order.clone().summary()),
            failure_code: failure
                .as_ref()
                .map(|_| cart_domain::PAYMENT_MISMATCH.to_owned()),
            failure_reason: failure,
            recorded_at: crate::state::now(),
        };
        let ctx = RequestContext {
            tenant: o.tenant.clone(),
            ..o.ctx.clone()
        };
        self.records
            .order_outcome(o.order_id, &result, &ctx)
            .await
            .map_err(|e| PushError::Retry(format!("recording the order's outcome: {e}")))
    }
}

/// A paid order and the cart it was confirmed on.
#[derive(Clone, Copy)]
struct Outcome<'a> {
    tenant: &'a TenantId,
    cart: &'a Cart,
    order_id: &'a str,
    order: &'a Order,
    merchant: &'a MerchantData,
    ctx: &'a RequestContext,
}
