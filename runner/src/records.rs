//! The runner's own durable records on NATS: effect intents in `WORKFLOW_COMMANDS`, results in
//! `WORKFLOW_EVENTS` (the last one per cart is the current checkout), and dead letters.

use async_nats::jetstream::{self, Message, message::PublishMessage, stream::DirectGetErrorKind};
use bytes::Bytes;
use shared::headers::RequestContext;
use shared::ids::TenantId;
use shared::nats::dead_letter::{self as dlq, Original};
use shared::subjects::{WORKFLOW_EVENTS_STREAM, workflow_command, workflow_event};
use shared::workflow::{CHECKOUT_KIND, CheckoutIntent, CheckoutResult, result_msg_id};

use crate::lanes::Disposition;
use crate::metrics as m;

#[derive(Clone)]
pub struct Records {
    js: jetstream::Context,
}

impl Records {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
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
        let stream = self.js.get_stream_no_info(WORKFLOW_EVENTS_STREAM).await?;
        match stream.direct_get_last_for_subject(subject).await {
            Ok(msg) => Ok(Some(serde_json::from_slice(&msg.payload)?)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Give up on `msg`, which `consumer` consumed from `stream`: keep it, with why, in
    /// `DEAD_LETTERS` and never redeliver it. If the dead letter cannot be written, the message
    /// is left for redelivery instead, so it is never dropped unrecorded.
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
        metrics::counter!(m::DEAD_LETTERS, "consumer" => consumer.to_owned()).increment(1);
        let original = Original {
            stream,
            subject: msg.subject.as_str(),
            sequence,
            delivered,
            headers: msg.headers.as_ref(),
        };
        match self
            .dead_letter(consumer, &original, msg.payload.clone(), reason)
            .await
        {
            Ok(()) => Disposition::Term,
            Err(e) => {
                tracing::error!(consumer, error = %e, "dead letter not written; leaving the message for redelivery");
                Disposition::nak(1)
            }
        }
    }

    async fn dead_letter(
        &self,
        consumer: &str,
        original: &Original<'_>,
        payload: Bytes,
        reason: &str,
    ) -> Result<(), async_nats::Error> {
        let subject = dlq::dead_letter_subject(consumer, original.subject)?;
        let headers = dlq::dead_letter_headers(consumer, original, reason);
        self.js
            .send_publish(
                subject,
                PublishMessage::build()
                    .payload(payload)
                    .headers(headers)
                    .message_id(dlq::dead_letter_msg_id(consumer, original.sequence)),
            )
            .await?
            .await?;
        Ok(())
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
