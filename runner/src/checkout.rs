//! Checkout effects with outbox semantics.
//!
//! The cart's `CheckoutStarted` event is the durable intent. For each one the runner:
//! 1. looks for a recorded result of this attempt (a redelivery after a crash) and, if there is
//!    one, only feeds it back;
//! 2. records the intent in `WORKFLOW_COMMANDS` (Msg-Id derived from tenant, cart and attempt);
//! 3. updates the cart's existing provider order, or creates one with an idempotency key
//!    derived from tenant, cart and attempt (a create repeated after a crash returns the first
//!    order; the same attempt id on another cart or tenant never does);
//! 4. records the result in `WORKFLOW_EVENTS`;
//! 5. feeds it back to the cart (`RecordProviderOrder` / `FailCheckout`) with a command id
//!    derived likewise, so a repeat is a no-op.
//!
//! Only then is the event acked. A crash anywhere repeats steps safely: at most one provider
//! order per attempt, and none is lost.

use std::sync::Arc;

use async_nats::jetstream::Message;
use cart_domain::{Command, Event, EventMessage, event::CheckoutStarted};
use futures::future::BoxFuture;
use proto::cart::v1 as pb;
use shared::headers::{self, RequestContext};
use shared::subjects::{CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE};
use shared::workflow::{CheckoutAction, CheckoutIntent, CheckoutOutcome, CheckoutResult};
use shared::{ApiError, ErrorCode};
use tracing::Instrument;

use crate::config::MerchantConfig;
use crate::hooks::Hooks;
use crate::lanes::{Disposition, Handler};
use crate::metrics as m;
use crate::provider::order::{MerchantData, Order, order_for};
use crate::records::{Attempt, Consumed, Records};
use crate::state::{ProviderHandle, Status};

pub struct Checkout {
    pub records: Records,
    pub provider: ProviderHandle,
    pub carts: cart_client::CartClient,
    pub merchant: MerchantConfig,
    pub status: Arc<Status>,
    /// The lease by this runner's clock, asked right before each provider call.
    pub lease: crate::lease::Validity,
    pub hooks: Hooks,
    /// Purchases the carts approved, for the reconciler to read their orders in time.
    pub approvals: crate::reconcile::Approvals,
}

/// Why an effect could not finish this time.
#[derive(Debug, thiserror::Error)]
enum EffectError {
    /// Retry later (NATS, the aggregate or the provider is unavailable).
    #[error("{0}")]
    Transient(String),
    /// The lease ran out before the provider call: the runner that holds it now makes it.
    #[error("the lease ran out before the provider call")]
    LeaseLapsed,
}

impl From<async_nats::Error> for EffectError {
    fn from(e: async_nats::Error) -> Self {
        EffectError::Transient(format!("NATS: {e}"))
    }
}

const STARTED: &str = "CheckoutStarted";
const APPROVED: &str = "PaymentApproved";

impl Handler for Checkout {
    fn wants(&self, msg: &Message) -> bool {
        let wanted = may_start_a_checkout(msg.headers.as_ref());
        if !wanted {
            metrics::counter!(m::SKIPPED).increment(1);
        }
        wanted
    }

    fn lane_key<'a>(&self, msg: &'a Message) -> &'a str {
        // The subject names the cart: one cart's effects always run in one lane, in order.
        msg.subject.as_str()
    }

    fn handle<'a>(&'a self, msg: &'a Message) -> BoxFuture<'a, Disposition> {
        Box::pin(self.handle_message(msg))
    }

    fn retry_or_give_up<'a>(
        &'a self,
        msg: &'a Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Disposition> {
        Box::pin(async move {
            let delivered = msg.info().map_or(1, |i| i.delivered);
            if self.records.retries_left(delivered) {
                return Disposition::nak(delivered);
            }
            // The last delivery: a checkout it starts is failed too, as after the last retry.
            let started = EventMessage::from_json(&msg.payload)
                .ok()
                .and_then(|envelope| {
                    let record = envelope
                        .events
                        .iter()
                        .rev()
                        .find(|r| r.event_type == STARTED)?;
                    match Event::decode(record) {
                        Ok(Event::CheckoutStarted(s)) => Some((envelope, s)),
                        _ => None,
                    }
                });
            match started {
                Some((envelope, started)) => {
                    let ctx = context(msg, &envelope);
                    self.fail_and_give_up(msg, &ctx, &envelope, &started, "internal_error", reason)
                        .await
                }
                None => self.give_up(msg, reason).await,
            }
        })
    }
}

/// The request context of `msg` (from its headers, else a fresh one for its tenant).
fn context(msg: &Message, envelope: &EventMessage) -> RequestContext {
    msg.headers
        .as_ref()
        .and_then(|h| RequestContext::from_nats_headers(h).ok())
        .unwrap_or_else(|| RequestContext::new(envelope.tenant.clone()))
}

/// Whether an event message may hold a `CheckoutStarted` or a `PaymentApproved`, by its
/// headers. Without a `cart-event-types` header only the payload tells: the handler decodes
/// it.
fn may_start_a_checkout(headers: Option<&async_nats::HeaderMap>) -> bool {
    match headers {
        Some(h) if h.get(headers::CART_EVENT_TYPES).is_some() => {
            headers::event_types(h).any(|t| t == STARTED || t == APPROVED)
        }
        _ => true,
    }
}

/// The checkout consumer on `CART_EVENTS`.
const FROM: Consumed = Consumed {
    consumer: RUNNER_CHECKOUT_DURABLE,
    stream: CART_EVENTS_STREAM,
};

impl Checkout {
    /// Keep `msg` in `DEAD_LETTERS` and never redeliver it.
    async fn give_up(&self, msg: &Message, reason: &str) -> Disposition {
        self.records.give_up(FROM, msg, reason).await
    }

    async fn handle_message(&self, msg: &Message) -> Disposition {
        let (delivered, sequence) = msg
            .info()
            .map(|i| (i.delivered, i.stream_sequence))
            .unwrap_or((1, 0));
        let envelope = match EventMessage::from_json(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .give_up(msg, &format!("not an event message: {e}"))
                    .await;
            }
        };
        for record in envelope.events.iter().filter(|r| r.event_type == APPROVED) {
            match Event::decode(record) {
                Ok(Event::PaymentApproved(a)) => self.approvals.note(
                    envelope.tenant.as_str(),
                    &a.provider_order_id,
                    a.approved_at,
                ),
                // Only a schedule depends on it: the order is read again all the same.
                decoded => tracing::warn!(
                    cart = %envelope.cart_id,
                    error = ?decoded.err(),
                    "a PaymentApproved that does not decode"
                ),
            }
        }
        // The records name their types: only the last CheckoutStarted is decoded.
        let Some(record) = envelope
            .events
            .iter()
            .rev()
            .find(|r| r.event_type == STARTED)
        else {
            // Not a checkout (known only now when the message had no `cart-event-types`).
            metrics::counter!(m::SKIPPED).increment(1);
            return Disposition::Ack;
        };
        let started = match Event::decode(record) {
            Ok(Event::CheckoutStarted(s)) => s,
            decoded => {
                let why = decoded
                    .err()
                    .map_or("another event".into(), |e| e.to_string());
                return self
                    .give_up(msg, &format!("CheckoutStarted does not decode: {why}"))
                    .await;
            }
        };
        let ctx = context(msg, &envelope);
        let span = tracing::info_span!(
            "runner.checkout",
            cart = %envelope.cart_id,
            attempt = %started.attempt_id,
            delivered
        );
        shared::spans::continue_trace(&span, &ctx);
        match self
            .attempt(&ctx, &envelope, &started, sequence)
            .instrument(span)
            .await
        {
            Ok(()) => {
                self.status.completed();
                Disposition::Ack
            }
            Err(EffectError::Transient(reason)) => {
                self.status.error(&reason);
                tracing::warn!(attempt = %started.attempt_id, delivered, %reason, "checkout effect failed; will retry");
                if self.records.retries_left(delivered) {
                    return Disposition::nak(delivered);
                }
                let code = "provider_unavailable";
                self.fail_and_give_up(msg, &ctx, &envelope, &started, code, &reason)
                    .await
            }
            Err(EffectError::LeaseLapsed) => {
                tracing::warn!(attempt = %started.attempt_id, "the lease ran out before the provider call: handed back");
                crate::lanes::HAND_BACK
            }
        }
    }

    /// Out of retries: fail the checkout (so the shopper is not left waiting), then keep `msg`
    /// in `DEAD_LETTERS`.
    async fn fail_and_give_up(
        &self,
        msg: &Message,
        ctx: &RequestContext,
        envelope: &EventMessage,
        started: &CheckoutStarted,
        code: &str,
        reason: &str,
    ) -> Disposition {
        let failed = self.failure(envelope, started, code, reason);
        if let Err(e) = self.finish(ctx, &failed).await {
            // The cart would wait for this attempt for ever (`processing`): kept, and tried
            // again, until the cart has been told (the server redelivers without limit).
            tracing::error!(error = %e, "could not fail the checkout after the last retry; trying again");
            let delivered = msg.info().map_or(1, |i| i.delivered);
            return Disposition::nak(delivered);
        }
        self.give_up(msg, reason).await
    }

    async fn attempt(
        &self,
        ctx: &RequestContext,
        envelope: &EventMessage,
        started: &CheckoutStarted,
        sequence: u64,
    ) -> Result<(), EffectError> {
        let cart = envelope.cart_id.as_str();
        let last = self
            .records
            .last_checkout::<CheckoutResult>(&envelope.tenant, cart)
            .await?;
        if let Some(done) = last.as_ref().filter(|r| r.attempt_id == started.attempt_id) {
            metrics::counter!(m::DUPLICATES_SKIPPED).increment(1);
            // Its result again, in case the first feedback never reached the cart. What became
            // of a paid order is recorded on the order's subject, not here: the cart itself
            // ignores the result of an order that was paid and not placed.
            return self.feed_back(ctx, done).await;
        }
        if let Some(newer) = self
            .records
            .last_checkout::<CheckoutIntent>(&envelope.tenant, cart)
            .await?
            .filter(|i| i.source_sequence > sequence && i.attempt_id != started.attempt_id)
        {
            // A replay (a re-created consumer) or a late redelivery of an attempt the cart has
            // moved past: calling the provider for it would create an order the newer attempt
            // does not know of, or overwrite the newer attempt's. Checked whether or not any
            // attempt has a result yet (a newer one may still be waiting for the provider).
            tracing::info!(stale = %started.attempt_id, newer = %newer.attempt_id, "skipping a checkout attempt older than the cart's newest");
            metrics::counter!(m::DUPLICATES_SKIPPED).increment(1);
            return Ok(());
        }
        // The cart's open provider order, to update instead of creating another (the cart's
        // own, or one created for an earlier attempt whose result the cart has not recorded).
        // A paid one (placed or mismatched) can no longer change: the cart forgets it, and so
        // does this.
        let mut existing = started.provider_order_id.clone();
        if existing.is_none()
            && let Some(order) = last
                .filter(|r| r.outcome.awaits_payment())
                .and_then(|r| r.order.map(|o| o.order_id))
            && self
                .records
                .last_order_outcome(&envelope.tenant, &order)
                .await?
                .is_none()
        {
            existing = Some(order);
        }
        let intent = CheckoutIntent {
            tenant: envelope.tenant.to_string(),
            cart_id: cart.to_owned(),
            attempt_id: started.attempt_id.clone(),
            action: if existing.is_some() {
                CheckoutAction::Update
            } else {
                CheckoutAction::Create
            },
            provider_order_id: existing.clone(),
            total_amount: started.total_amount,
            currency: started.currency.clone(),
            source_sequence: sequence,
        };
        self.records.record_checkout(&intent, ctx).await?;

        let ids = intent.attempt();
        let provider = self.provider.current();
        let merchant = MerchantData {
            tenant: envelope.tenant.to_string(),
            cart_id: cart.to_owned(),
            attempt_id: started.attempt_id.clone(),
        };
        let order = order_for(
            &merchant,
            started,
            self.merchant.urls(&merchant),
            &provider.config().locale,
        );
        if let Some(hook) = &self.hooks.before_provider_call {
            hook(started.attempt_id.clone()).await;
        }
        // The point of no return: a runner that got here after its lease ran out (a freeze,
        // a stall) leaves the call to the runner that holds the lease now.
        if !self.lease.holds() {
            return Err(EffectError::LeaseLapsed);
        }
        // Tried again only while the lease is this runner's: the client's retries outlast
        // the lease's time to live, and a standby that took over makes its own calls.
        let holds = || self.lease.holds();
        let create = || async {
            provider
                .create_order(&order, &ids.provider_idempotency_key(), ctx, &holds)
                .await
                .map(|o| (CheckoutOutcome::Created, o))
        };
        let called = match &existing {
            Some(id) => match provider.update_order(id, &order, ctx, &holds).await {
                Ok(o) => Ok((CheckoutOutcome::Updated, o)),
                // The provider forgot the cart's order (expired unpaid; a paid one is kept):
                // every update of it would fail from now on, so this attempt gets its own.
                Err(e) if e.is_not_found() => {
                    tracing::warn!(order = %id, attempt = %started.attempt_id, "the provider no longer knows the cart's order; creating another");
                    create().await
                }
                Err(e) => Err(e),
            },
            None => create().await,
        };
        if let Some(hook) = &self.hooks.after_provider_call {
            hook(started.attempt_id.clone()).await;
        }
        let result = match called {
            Ok((outcome, order)) => self.success(envelope, started, outcome, order),
            Err(e) if e.is_transient() => return Err(EffectError::Transient(e.to_string())),
            Err(e) => self.failure(envelope, started, &e.code(), &e.to_string()),
        };
        self.finish(ctx, &result).await
    }

    /// Record the result, then tell the cart.
    async fn finish(
        &self,
        ctx: &RequestContext,
        result: &CheckoutResult,
    ) -> Result<(), EffectError> {
        self.records.record_checkout(result, ctx).await?;
        metrics::counter!(m::CHECKOUTS, "outcome" => result.outcome.as_str()).increment(1);
        if let Some(code) = &result.failure_code {
            metrics::counter!(m::CHECKOUT_FAILURES, "reason" => code.clone()).increment(1);
        }
        self.feed_back(ctx, result).await
    }

    async fn feed_back(&self, ctx: &RequestContext, r: &CheckoutResult) -> Result<(), EffectError> {
        let (kind, command) = match (&r.outcome, &r.order) {
            (CheckoutOutcome::Created | CheckoutOutcome::Updated, Some(order)) => (
                "record",
                Command::RecordProviderOrder {
                    attempt_id: r.attempt_id.clone(),
                    provider_order_id: order.order_id.clone(),
                    status: order.status.clone(),
                },
            ),
            _ => (
                "fail",
                Command::FailCheckout {
                    attempt_id: r.attempt_id.clone(),
                    code: r
                        .failure_code
                        .clone()
                        .unwrap_or_else(|| "checkout_failed".into()),
                    reason: r.failure_reason.clone().unwrap_or_default(),
                },
            ),
        };
        let ids = r.attempt();
        let req = pb::ExecuteRequest {
            tenant: r.tenant.clone(),
            cart_id: r.cart_id.clone(),
            command_id: ids.feedback_command_id(kind).to_string(),
            expected_version: None,
            command: proto::convert::command_bytes(&command),
            request_fingerprint: String::new(),
            // Only whether the cart took it matters here.
            render: pb::Render::None.into(),
        };
        match self.carts.execute(ctx, req).await {
            Ok(_) => Ok(()),
            Err(e) if is_transient(&e) => Err(EffectError::Transient(format!("aggregate: {e}"))),
            // The cart refused (e.g. it was cleared meanwhile): nothing more to do for it.
            Err(e) => {
                tracing::warn!(cart = %r.cart_id, attempt = %r.attempt_id, error = %e, "the cart refused the checkout result");
                Ok(())
            }
        }
    }

    fn success(
        &self,
        envelope: &EventMessage,
        started: &CheckoutStarted,
        outcome: CheckoutOutcome,
        order: Order,
    ) -> CheckoutResult {
        CheckoutResult {
            tenant: envelope.tenant.to_string(),
            cart_id: envelope.cart_id.to_string(),
            attempt_id: started.attempt_id.clone(),
            outcome,
            order: Some(order.summary()),
            failure_code: None,
            failure_reason: None,
            recorded_at: crate::state::now(),
        }
    }

    fn failure(
        &self,
        envelope: &EventMessage,
        started: &CheckoutStarted,
        code: &str,
        reason: &str,
    ) -> CheckoutResult {
        CheckoutResult {
            tenant: envelope.tenant.to_string(),
            cart_id: envelope.cart_id.to_string(),
            attempt_id: started.attempt_id.clone(),
            outcome: CheckoutOutcome::Failed,
            order: None,
            failure_code: Some(code.to_owned()),
            failure_reason: Some(reason.to_owned()),
            recorded_at: crate::state::now(),
        }
    }
}

/// Whether an aggregate's answer to a checkout result or a paid order is worth asking again
/// (redelivered, dead-lettered after the last try) rather than the cart's final word. Only the
/// cart's own refusals are final; a refused identity, a node of an older build or a bug on the
/// aggregate's side would otherwise drop a result about money with a log line.
pub fn is_transient(e: &ApiError) -> bool {
    matches!(
        e.code,
        ErrorCode::Unavailable
            | ErrorCode::Timeout
            | ErrorCode::Draining
            | ErrorCode::VersionConflict
            | ErrorCode::NotOwner
            | ErrorCode::RateLimited
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::Unimplemented
            | ErrorCode::Internal
    )
}

#[cfg(test)]
mod tests;
