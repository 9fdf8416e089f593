//! gRPC: `runner.admin.v1.RunnerAdmin` (drain, status, reload) and `CheckoutQuery` (the
//! gateway's reads of checkout results and provider confirmations).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use cart_domain::ids::{CartId, TenantId};
use proto::runner::admin::v1 as pb;
use shared::grpc_tls::names::{ADMIN, GATEWAY};
use shared::headers::RequestContext;
use shared::workflow::{CheckoutResult, ProviderOrderSummary};
use shared::{ApiError, ErrorCode};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::provider::ProviderClient;
use crate::records::Records;
use crate::state::{ProviderHandle, Status as RunnerStatus};

pub use crate::provider::ReloadSource;

#[derive(Clone)]
pub struct Admin {
    pub status: Arc<RunnerStatus>,
    pub provider: ProviderHandle,
    pub reload: ReloadSource,
    pub stop_fetching: CancellationToken,
    pub checkout_consumer: PullConsumer,
    /// The lease by this runner's clock: a status says whether it is the active runner.
    pub lease: crate::lease::Validity,
}

#[tonic::async_trait]
impl pb::runner_admin_server::RunnerAdmin for Admin {
    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        shared::grpc_tls::authorize(&req, "RunnerAdmin.Drain", &[GATEWAY, ADMIN])?;
        self.status.set_draining();
        self.stop_fetching.cancel();
        let wait = Duration::from_secs(u64::from(req.get_ref().wait_seconds.min(300)));
        let idle = self.status.wait_idle(wait).await;
        Ok(Response::new(pb::DrainResponse {
            draining: true,
            idle,
            in_flight: self.status.in_flight(),
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        shared::grpc_tls::authorize(&req, "RunnerAdmin.Status", &[GATEWAY, ADMIN])?;
        let lag =
            match tokio::time::timeout(Duration::from_secs(2), self.checkout_consumer.get_info())
                .await
            {
                Ok(Ok(info)) => info.num_pending + info.num_ack_pending as u64,
                _ => 0,
            };
        let (last_error, last_error_at) = self.status.last_error().unwrap_or_default();
        Ok(Response::new(pb::StatusResponse {
            draining: self.status.is_draining(),
            in_flight: self.status.in_flight(),
            consumer_lag: lag,
            last_error,
            last_error_at,
            effects_completed: self.status.completed_count(),
            provider_base_url: self.provider.current().config().base_url.clone(),
            // As `/ready` judges it: taken, and not run out by this runner's clock.
            lease_held: self.status.is_active() && self.lease.holds(),
        }))
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        shared::grpc_tls::authorize(&req, "RunnerAdmin.Reload", &[GATEWAY, ADMIN])?;
        let cfg =
            (self.reload)().map_err(|e| ApiError::invalid(format!("provider config: {e}")))?;
        let client =
            ProviderClient::new(cfg.clone()).map_err(|e| ApiError::internal(e.to_string()))?;
        let generation = self.provider.replace(client);
        tracing::info!(base_url = %cfg.base_url, generation, "provider configuration reloaded");
        Ok(Response::new(pb::ReloadResponse {
            provider_base_url: cfg.base_url,
            generation,
        }))
    }
}

#[derive(Clone)]
pub struct Query {
    pub records: Records,
    pub provider: ProviderHandle,
}

#[tonic::async_trait]
impl pb::checkout_query_server::CheckoutQuery for Query {
    async fn get_checkout(
        &self,
        req: Request<pb::GetCheckoutRequest>,
    ) -> Result<Response<pb::CheckoutRecord>, Status> {
        shared::grpc_tls::authorize(&req, "CheckoutQuery.GetCheckout", &[GATEWAY])?;
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant).map_err(ApiError::from)?;
        let cart = CartId::parse(&r.cart_id).map_err(ApiError::from)?;
        let result = self
            .records
            .last_checkout::<CheckoutResult>(&tenant, cart.as_str())
            .await
            .map_err(|e| ApiError::unavailable(format!("reading checkout results: {e}")))?
            .filter(|res| r.attempt_id.is_empty() || res.attempt_id == r.attempt_id)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    "no checkout result for this cart (attempt) yet",
                )
            })?;
        Ok(Response::new(pb::CheckoutRecord {
            tenant: result.tenant,
            cart_id: result.cart_id,
            attempt_id: result.attempt_id,
            outcome: result.outcome.as_str().into(),
            order: result.order.map(provider_order),
            failure_code: result.failure_code.unwrap_or_default(),
            failure_reason: result.failure_reason.unwrap_or_default(),
        }))
    }

    async fn get_confirmation(
        &self,
        req: Request<pb::GetConfirmationRequest>,
    ) -> Result<Response<pb::ProviderOrder>, Status> {
        shared::grpc_tls::authorize(&req, "CheckoutQuery.GetConfirmation", &[GATEWAY])?;
        let ctx = RequestContext::from_grpc_metadata(req.metadata()).ok();
        let r = req.into_inner();
        let tenant = TenantId::parse(&r.tenant).map_err(ApiError::from)?;
        cart_domain::ids::KeyField::ProviderOrderId
            .check("order_id", &r.order_id)
            .map_err(ApiError::from)?;
        let cart = CartId::parse(&r.cart_id).map_err(ApiError::from)?;
        let ctx = ctx.unwrap_or_else(|| RequestContext::new(tenant.clone()));
        let order = self
            .provider
            .current()
            .get_order(&r.order_id, &ctx)
            .await
            .map_err(|e| match e {
                crate::provider::ProviderError::Permanent { status: 404, .. } => {
                    ApiError::new(ErrorCode::NotFound, "no such order")
                }
                e if e.is_transient() => ApiError::unavailable(e.to_string()),
                e => ApiError::new(ErrorCode::CheckoutFailed, e.to_string()),
            })?;
        // Orders of other tenants and other carts look like missing ones.
        let made_for = order.merchant().map(|m| (m.tenant, m.cart_id));
        if made_for != Some((tenant.to_string(), cart.to_string())) {
            return Err(ApiError::new(ErrorCode::NotFound, "no such order").into());
        }
        let outcome = self
            .records
            .last_order_outcome(&tenant, &r.order_id)
            .await
            .map_err(|e| ApiError::unavailable(format!("reading the order's outcome: {e}")))?
            .map(|res| res.outcome.as_str().to_owned())
            .unwrap_or_default();
        Ok(Response::new(pb::ProviderOrder {
            outcome,
            ..provider_order(order.summary())
        }))
    }
}

/// A provider order as `CheckoutQuery` returns it (in a checkout record, or alone).
fn provider_order(o: ProviderOrderSummary) -> pb::ProviderOrder {
    pb::ProviderOrder {
        order_id: o.order_id,
        status: o.status,
        html_snippet: o.html_snippet,
        order_amount: o.order_amount,
        purchase_currency: o.purchase_currency,
        raw_json: o.raw.to_string(),
        outcome: String::new(),
    }
}
