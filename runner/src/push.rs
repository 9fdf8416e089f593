//! Provider push callbacks: the gateway records each push in `WORKFLOW_COMMANDS`
//! (`workflow.commands.<tenant>.push.<order id>`); the runner reads the order from the
//! provider, and when the shopper completed payment, acknowledges it (Order Management) and
//! confirms the order on the cart (`ConfirmOrder` → `OrderPlaced`). Duplicate pushes are
//! harmless: JetStream drops repeats inside its window, the command id is derived from the
//! order id, and the cart ignores a confirmation of the order it already placed.

use std::sync::Arc;

use async_nats::jetstream::Message;
use futures::future::BoxFuture;
use proto::cart::v1 as pb;
use shared::domain::Command;
use shared::headers::RequestContext;
use shared::ids::CommandId;
use shared::subjects::{RUNNER_PUSH_DURABLE, WORKFLOW_COMMANDS_STREAM, WorkflowSubject};
use shared::workflow::PushReceived;
use tracing::Instrument;

use crate::checkout::is_transient;
use crate::lanes::{Disposition, Handler};
use crate::metrics as m;
use crate::records::Records;
use crate::state::{ProviderHandle, Status};

pub struct Push {
    pub records: Records,
    pub provider: ProviderHandle,
    pub carts: aggregate::client::CartClient,
    pub status: Arc<Status>,
}

enum PushError {
    Retry(String),
    GiveUp(String),
}

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
                    self.records
                        .give_up(RUNNER_PUSH_DURABLE, WORKFLOW_COMMANDS_STREAM, msg, &reason)
                        .await
                }
            }
        })
    }

    fn retry_or_give_up<'a>(
        &'a self,
        msg: &'a Message,
        reason: &'a str,
    ) -> BoxFuture<'a, Disposition> {
        Box::pin(self.records.retry_or_give_up(
            RUNNER_PUSH_DURABLE,
            WORKFLOW_COMMANDS_STREAM,
            msg,
            reason,
        ))
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
        let span = tracing::info_span!("runner.push", order = %push.provider_order_id);
        shared::spans::continue_trace(&span, &ctx);
        self.confirm_order(&ctx, &push).instrument(span).await
    }

    async fn confirm_order(
        &self,
        ctx: &RequestContext,
        push: &PushReceived,
    ) -> Result<&'static str, PushError> {
        let provider = self.provider.current();
        let order = provider
            .get_order(&push.provider_order_id, ctx)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    PushError::Retry(e.to_string())
                } else {
                    PushError::GiveUp(format!("provider order {}: {e}", push.provider_order_id))
                }
            })?;
        let merchant = order.merchant().ok_or_else(|| {
            PushError::GiveUp("the provider order carries no merchant data".into())
        })?;
        if merchant.tenant != push.tenant {
            return Err(PushError::GiveUp(format!(
                "push for tenant {} names an order of tenant {}",
                push.tenant, merchant.tenant
            )));
        }
        if order.status.as_deref() != Some("checkout_complete") {
            // Pushed too early (the provider pushes again later): nothing to confirm yet.
            tracing::info!(order = %push.provider_order_id, status = ?order.status, "push for an incomplete order ignored");
            return Ok("incomplete");
        }
        provider
            .acknowledge(&push.provider_order_id, ctx)
            .await
            .map_err(|e| PushError::Retry(format!("acknowledge: {e}")))?;
        let req = pb::ExecuteRequest {
            tenant: push.tenant.clone(),
            cart_id: merchant.cart_id.clone(),
            command_id: CommandId::derived(&["push", &push.provider_order_id]).to_string(),
            expected_version: None,
            command: Some(
                Command::ConfirmOrder {
                    provider_order_id: push.provider_order_id.clone(),
                    order_reference: order
                        .klarna_reference
                        .clone()
                        .unwrap_or_else(|| push.provider_order_id.clone()),
                }
                .into(),
            ),
        };
        match self.carts.execute(ctx, req).await {
            Ok(_) => Ok("confirmed"),
            Err(e) if is_transient(&e) => Err(PushError::Retry(format!("aggregate: {e}"))),
            Err(e) => Err(PushError::GiveUp(format!(
                "the cart refused the order: {e}"
            ))),
        }
    }
}
