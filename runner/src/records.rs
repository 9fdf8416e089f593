//! The runner's own durable records on NATS: effect intents in `WORKFLOW_COMMANDS`, results in
//! `WORKFLOW_EVENTS` (the last one per cart is the current checkout), and dead letters.

use std::time::Duration;

use async_nats::jetstream::{self, Message, message::PublishMessage, stream::DirectGetErrorKind};
use bytes::Bytes;
use shared::headers::RequestContext;
use shared::ids::TenantId;
use shared::nats::dead_letter::{self as dlq, Original};
use shared::subjects::{
    WORKFLOW_COMMANDS_STREAM, WORKFLOW_EVENTS_STREAM, workflow_command, workflow_event,
};
use shared::workflow::{CHECKOUT_KIND, CheckoutIntent, CheckoutResult, result_msg_id};

use crate::lanes::Disposition;
use crate::metrics as m;

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
        consumer: &str,
        stream: &str,
        msg: &Message,
        reason: &str,
    ) -> Disposition {
        let delivered = msg.info().map_or(1, |i| i.delivered);
        if self.retries_left(delivered) {
            Disposition::nak(delivered)
        } else {
            self.give_up(consumer, stream, msg, reason).await
        }
    }

    /// Record the intent to perform an effect. The attempt id is the Msg-Id, so a redelivered
    /// event records it once.
    pub async fn intent(
        &self,
        intent: &CheckoutIntent,
        ctx: &RequestContext,
    ) -> Result<(), async_nats::Error> {
        let subject = workflow_command(&ctx.tenant, CHECKOUT_KIND, &intent.cart_id)?;
        self.publish(
            subject,
            &intent.attempt_id,
            serde_json::to_vec(intent)?,
            ctx,
        )
        .await
    }

    pub async fn result(
        &self,
        result: &CheckoutResult,
        ctx: &RequestContext,
    ) -> Result<(), async_nats::Error> {
        let subject = workflow_event(&ctx.tenant, CHECKOUT_KIND, &result.cart_id)?;
        self.publish(
            subject,
            &result_msg_id(&result.attempt_id),
            serde_json::to_vec(result)?,
            ctx,
        )
        .await
    }

    /// The last recorded checkout result of a cart, if any.
    pub async fn last_result(
        &self,
        tenant: &TenantId,
        cart_id: &str,
    ) -> Result<Option<CheckoutResult>, async_nats::Error> {
        let subject = workflow_event(tenant, CHECKOUT_KIND, cart_id)?;
        self.last(WORKFLOW_EVENTS_STREAM, subject).await
    }

    /// The last recorded checkout intent of a cart (the newest attempt started), if any.
    pub async fn last_intent(
        &self,
        tenant: &TenantId,
        cart_id: &str,
    ) -> Result<Option<CheckoutIntent>, async_nats::Error> {
        let subject = workflow_command(tenant, CHECKOUT_KIND, cart_id)?;
        self.last(WORKFLOW_COMMANDS_STREAM, subject).await
    }

    /// The last record on `subject` of `stream`, decoded.
    async fn last<T: serde::de::DeserializeOwned>(
        &self,
        stream: &str,
        subject: String,
    ) -> Result<Option<T>, async_nats::Error> {
        let stream = self.js.get_stream_no_info(stream).await?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(msg) => Ok(Some(serde_json::from_slice(&msg.payload)?)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Give up on `msg`, which `consumer` consumed from `stream`: keep it, with why, in
    /// `DEAD_LETTERS` and never redeliver it. If the dead letter cannot be written (after
    /// retries), the message is left for redelivery while it has deliveries left; on its last
    /// one it is lost to this consumer, and the error names where to read it back.
    pub async fn give_up(
        &self,
        consumer: &str,
        stream: &str,
        msg: &Message,
        reason: &str,
    ) -> Disposition {
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

    async fn publish(
        &self,
        subject: String,
        msg_id: &str,
        payload: Vec<u8>,
        ctx: &RequestContext,
    ) -> Result<(), async_nats::Error> {
        let mut h = async_nats::HeaderMap::new();
        shared::spans::downstream(ctx).to_nats_headers(&mut h);
        self.js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(Bytes::from(payload))
                    .headers(h)
                    .message_id(msg_id),
            )
            .await?
            .await?;
        Ok(())
    }
}
