//! The runner's own durable records on NATS: effect intents in `WORKFLOW_COMMANDS`, results in
//! `WORKFLOW_EVENTS` (the last one per cart is the current checkout), and dead letters.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;

use async_nats::jetstream::{self, Message, message::PublishMessage, stream::RawMessageErrorKind};
use bytes::Bytes;
use cart_domain::ids::TenantId;
use shared::headers::RequestContext;
use shared::nats::dead_letter::{self as dlq, Original};
use shared::subjects::{
    SubjectError, WORKFLOW_COMMANDS_STREAM, WORKFLOW_EVENTS_STREAM, WorkflowStream,
    workflow_command, workflow_event, workflow_kind_filter,
};
use shared::workflow::{
    AttemptIds, CHECKOUT_KIND, CheckoutIntent, CheckoutOutcome, CheckoutResult, ORDER_KIND,
    PUSH_KIND, PushReceived, order_result_msg_id,
};

use crate::lanes::Disposition;
use crate::metrics as m;

/// A record of one checkout attempt (its intent, its result): the ids derived from it.
pub trait Attempt {
    fn attempt(&self) -> AttemptIds<'_>;
}

/// `Attempt` for records that carry the attempt's `tenant`, `cart_id` and `attempt_id`.
macro_rules! impl_attempt {
    ($($record:ty),*) => {$(
        impl Attempt for $record {
            fn attempt(&self) -> AttemptIds<'_> {
                AttemptIds {
                    tenant: &self.tenant,
                    cart_id: &self.cart_id,
                    attempt_id: &self.attempt_id,
                }
            }
        }
    )*};
}

impl_attempt!(CheckoutIntent, CheckoutResult);

/// A record of a checkout attempt kept per cart, the last one the cart's current: the intent
/// (a workflow command) or the result (a workflow event).
pub trait CheckoutRecord: Attempt + serde::Serialize + serde::de::DeserializeOwned {
    /// The workflow stream the record is kept in.
    const STREAM: WorkflowStream;
    /// The record's Msg-Id, derived from tenant, cart and attempt.
    fn msg_id(&self) -> String;
}

impl CheckoutRecord for CheckoutIntent {
    const STREAM: WorkflowStream = WorkflowStream::Commands;
    fn msg_id(&self) -> String {
        self.attempt().intent_msg_id()
    }
}

impl CheckoutRecord for CheckoutResult {
    const STREAM: WorkflowStream = WorkflowStream::Events;
    fn msg_id(&self) -> String {
        self.attempt().result_msg_id()
    }
}

/// The stream and the subject of the checkout records `R` of `cart_id`.
fn checkout_subject<R: CheckoutRecord>(
    tenant: &TenantId,
    cart_id: &str,
) -> Result<(&'static str, String), SubjectError> {
    Ok(match R::STREAM {
        WorkflowStream::Commands => (
            WORKFLOW_COMMANDS_STREAM,
            workflow_command(tenant, CHECKOUT_KIND, cart_id)?,
        ),
        WorkflowStream::Events => (
            WORKFLOW_EVENTS_STREAM,
            workflow_event(tenant, CHECKOUT_KIND, cart_id)?,
        ),
    })
}

/// Where a message came from: the durable consumer that took it and the stream it read.
#[derive(Debug, Clone, Copy)]
pub struct Consumed {
    pub consumer: &'static str,
    pub stream: &'static str,
}

#[derive(Clone)]
pub struct Records {
    js: jetstream::Context,
    /// Deliveries of a message (the consumers' `max_deliver`).
    max_deliver: i64,
    /// Longest wait for `DEAD_LETTERS` to acknowledge one attempt to write a dead letter.
    dlq_timeout: Duration,
}

impl Records {
    pub fn new(js: jetstream::Context, max_deliver: i64, dlq_timeout: Duration) -> Self {
        Self {
            js,
            max_deliver,
            dlq_timeout,
        }
    }

    /// Whether a message on its `delivered`th delivery will be delivered again if nak'd.
    pub fn retries_left(&self, delivered: i64) -> bool {
        delivered < self.max_deliver
    }

    /// `msg` could not be handled this time: redeliver it later while it has deliveries
    /// left, give up on it (see [`Records::give_up`]) on its last.
    pub async fn retry_or_give_up(
        &self,
        from: Consumed,
        msg: &Message,
        reason: &str,
    ) -> Disposition {
        let delivered = msg.info().map_or(1, |i| i.delivered);
        if self.retries_left(delivered) {
            Disposition::nak(delivered)
        } else {
            self.give_up(from, msg, reason).await
        }
    }

    /// Record a checkout attempt's intent (before the effect) or the provider's answer to it
    /// (the cart's current checkout) on its cart's subject. The Msg-Id is derived from tenant,
    /// cart and attempt, so a redelivered event records each once.
    pub async fn record_checkout<R: CheckoutRecord>(
        &self,
        record: &R,
        ctx: &RequestContext,
    ) -> Result<(), async_nats::Error> {
        let (_, subject) = checkout_subject::<R>(&ctx.tenant, record.attempt().cart_id)?;
        self.publish(subject, Some(&record.msg_id()), record, ctx)
            .await
            .map(|_| ())
    }

    /// Record what became of a paid provider order (`placed` or `mismatched`). True when
    /// this is the first record of it.
    pub async fn order_outcome(
        &self,
        order_id: &str,
        result: &CheckoutResult,
        ctx: &RequestContext,
    ) -> Result<bool, async_nats::Error> {
        let subject = workflow_event(&ctx.tenant, ORDER_KIND, order_id)?;
        let msg_id = order_result_msg_id(&result.tenant, &result.cart_id, order_id, result.outcome);
        self.publish(subject, Some(&msg_id), result, ctx).await
    }

    /// The recorded outcome of a paid provider order, if any.
    pub async fn last_order_outcome(
        &self,
        tenant: &TenantId,
        order_id: &str,
    ) -> Result<Option<CheckoutResult>, async_nats::Error> {
        let subject = workflow_event(tenant, ORDER_KIND, order_id)?;
        self.last(WORKFLOW_EVENTS_STREAM, subject).await
    }
    /// Ask the push handler to read a provider order again (reconciliation). Like a push it
    /// carries no Msg-Id: every one is acted on.
    pub async fn reconcile(&self, push: &PushReceived) -> Result<(), async_nats::Error> {
        let tenant = TenantId::parse(&push.tenant)?;
        let subject = workflow_command(&tenant, PUSH_KIND, &push.provider_order_id)?;
        let ctx = RequestContext::new(tenant);
        self.publish(subject, None, push, &ctx).await.map(|_| ())
    }

    /// The provider orders that may be waiting for payment: every order a checkout result
    /// since `since` names (`created`, `updated`, or a `failed` update) with no recorded
    /// outcome, with the time of its newest result. Every such order, not only each cart's
    /// last: an order paid while its push was lost stays unplaced even when a later attempt of
    /// the cart failed (its update of the completed order is refused).
    pub async fn waiting_since(
        &self,
        since: time::OffsetDateTime,
    ) -> Result<Vec<(CheckoutResult, time::OffsetDateTime)>, async_nats::Error> {
        let stream = self.js.get_stream_no_info(WORKFLOW_EVENTS_STREAM).await?;
        let mut consumer = stream
            .create_consumer(pull::Config {
                filter_subjects: vec![
                    workflow_kind_filter(WorkflowStream::Events, CHECKOUT_KIND)?,
                    workflow_kind_filter(WorkflowStream::Events, ORDER_KIND)?,
                ],
                deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await?;
        let mut left = consumer.info().await?.num_pending;
        let name = consumer.cached_info().name.clone();
        let mut last: HashMap<(String, String), (CheckoutResult, time::OffsetDateTime)> =
            HashMap::new();
        let mut settled: HashSet<(String, String)> = HashSet::new();
        while left > 0 {
            let batch = consumer
                .fetch()
                .max_messages(left.min(512) as usize)
                .expires(self.dlq_timeout)
                .messages()
                .await?;
            let mut got = 0;
            let mut batch = std::pin::pin!(batch);
            while let Some(msg) = batch.next().await {
                let msg = msg?;
                got += 1;
                let published = msg
                    .info()
                    .map(|i| i.published)
                    .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
                match serde_json::from_slice::<CheckoutResult>(&msg.payload) {
                    Ok(r) if r.outcome.awaits_payment() || r.outcome == CheckoutOutcome::Failed => {
                        if let Some(order) = &r.order {
                            let key = (r.tenant.clone(), order.order_id.clone());
                            last.insert(key, (r, published));
                        }
                    }
                    Ok(r) => {
                        if let Some(order) = &r.order {
                            settled.insert((r.tenant.clone(), order.order_id.clone()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(subject = %msg.subject, error = %e, "unreadable checkout result skipped");
                    }
                }
            }
            if got == 0 {
                // An empty fetch with messages still pending (a slow leader, an election) is a
                // scan cut short: a pass built on it would count as done and skip orders.
                let pending = consumer.info().await?.num_pending;
                if pending > 0 {
                    let _ = stream.delete_consumer(&name).await;
                    return Err(format!(
                        "reading the checkout results stopped with {pending} still to read"
                    )
                    .into());
                }
                break;
            }
            left = left.saturating_sub(got);
        }
        let _ = stream.delete_consumer(&name).await;
        Ok(last
            .into_iter()
            .filter(|(order, _)| !settled.contains(order))
            .map(|(_, waiting)| waiting)
            .collect())
    }

    /// The last checkout record `R` of a cart, if any: its newest result (the attempt that
    /// decides) or its newest intent (the attempt last started).
    pub async fn last_checkout<R: CheckoutRecord>(
        &self,
        tenant: &TenantId,
        cart_id: &str,
    ) -> Result<Option<R>, async_nats::Error> {
        let (stream, subject) = checkout_subject::<R>(tenant, cart_id)?;
        self.last(stream, subject).await
    }

    /// The last record on `subject` of `stream`, decoded, as the stream's leader holds it.
    /// What the runner does next depends on it (call the provider or not, for which order),
    /// so it is never read with a direct get, which a replica that has not stored the last
    /// acknowledged record yet may answer.
    async fn last<T: serde::de::DeserializeOwned>(
        &self,
        stream: &str,
        subject: String,
    ) -> Result<Option<T>, async_nats::Error> {
        let stream = self.js.get_stream_no_info(stream).await?;
        match stream
            .raw_message_builder()
            .last_by_subject(subject)
            .send()
            .await
        {
            Ok(msg) => Ok(Some(serde_json::from_slice(&msg.payload)?)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Give up on `msg`, consumed as `from` says: keep it, with why, in `DEAD_LETTERS` and
    /// never redeliver it. If the dead letter cannot be written (after retries), the message
    /// is left for redelivery while it has deliveries left; on its last one it is lost to this
    /// consumer, and the error names where to read it back.
    pub async fn give_up(&self, from: Consumed, msg: &Message, reason: &str) -> Disposition {
        let Consumed { consumer, stream } = from;
        let (sequence, delivered) = msg
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 0));
        tracing::error!(consumer, subject = %msg.subject, sequence, %reason, "giving up on a message");
        let original = Original {
            stream,
            subject: msg.subject.as_str(),
            sequence,
            delivered,
            headers: msg.headers.as_ref(),
        };
        let payload = msg.payload.clone();
        match dlq::publish(
            &self.js,
            consumer,
            &original,
            payload,
            reason,
            self.dlq_timeout,
        )
        .await
        {
            Ok(_) => {
                metrics::counter!(m::DEAD_LETTERS, "consumer" => consumer.to_owned()).increment(1);
                Disposition::Term
            }
            Err(e) if self.retries_left(delivered) => {
                tracing::error!(consumer, error = %e, "dead letter not written; leaving the message for redelivery");
                Disposition::nak(delivered)
            }
            Err(e) => {
                tracing::error!(consumer, error = %e, stream, sequence, "dead letter not written on the last delivery: the message is not handled; read it back from its stream at this sequence");
                metrics::counter!(m::DEAD_LETTERS_LOST, "consumer" => consumer.to_owned())
                    .increment(1);
                Disposition::Term
            }
        }
    }

    /// Publishes `record` as JSON and waits for the ack; true when the stream stored it (not a
    /// duplicate).
    async fn publish(
        &self,
        subject: String,
        msg_id: Option<&str>,
        record: &impl serde::Serialize,
        ctx: &RequestContext,
    ) -> Result<bool, async_nats::Error> {
        let payload = serde_json::to_vec(record)?;
        let mut h = async_nats::HeaderMap::new();
        shared::spans::downstream(ctx).to_nats_headers(&mut h);
        let mut msg = PublishMessage::build()
            .payload(Bytes::from(payload))
            .headers(h);
        if let Some(id) = msg_id {
            msg = msg.message_id(id);
        }
        let ack = self.js.send_publish(subject, msg).await?.await?;
        Ok(!ack.duplicate)
    }
}
