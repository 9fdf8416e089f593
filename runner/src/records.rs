//! The runner's own durable records on NATS: effect intents in `WORKFLOW_COMMANDS`, results in
//! `WORKFLOW_EVENTS` (the last one per cart is the current checkout), and dead letters.

use async_nats::jetstream::{self, message::PublishMessage, stream::DirectGetErrorKind};
use bytes::Bytes;
use shared::headers::{
    self, DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ORIGINAL_SEQUENCE, DLQ_ORIGINAL_STREAM,
    DLQ_ORIGINAL_SUBJECT, DLQ_REASON, RequestContext,
};
use shared::ids::{CartId, TenantId};
use shared::subjects::{WORKFLOW_EVENTS_STREAM, dead_letter, workflow_command, workflow_event};
use shared::workflow::{CHECKOUT_KIND, CheckoutIntent, CheckoutResult, result_msg_id};

/// Where a dead-lettered message came from.
#[derive(Debug, Clone, Copy)]
pub struct Original<'a> {
    pub stream: &'a str,
    pub subject: &'a str,
    pub sequence: u64,
    pub delivered: i64,
}

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

    /// Give up on a message: keep it, with why, in `DEAD_LETTERS`.
    pub async fn dead_letter(
        &self,
        consumer: &str,
        tenant: &TenantId,
        cart_id: &CartId,
        original: Original<'_>,
        payload: Bytes,
        reason: &str,
    ) -> Result<(), async_nats::Error> {
        let Original {
            stream: original_stream,
            subject: original_subject,
            sequence: original_sequence,
            delivered,
        } = original;
        let subject = dead_letter(consumer, tenant, cart_id)?;
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            DLQ_REASON,
            reason.chars().take(500).collect::<String>().as_str(),
        );
        h.insert(DLQ_ORIGINAL_SUBJECT, original_subject);
        h.insert(
            DLQ_ORIGINAL_SEQUENCE,
            original_sequence.to_string().as_str(),
        );
        h.insert(DLQ_ORIGINAL_STREAM, original_stream);
        h.insert(DLQ_DELIVERIES, delivered.to_string().as_str());
        h.insert(DLQ_CONSUMER, consumer);
        h.insert(
            headers::NATS_MSG_ID,
            format!("{consumer}-{original_sequence}").as_str(),
        );
        self.js
            .send_publish(subject, PublishMessage::build().payload(payload).headers(h))
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
