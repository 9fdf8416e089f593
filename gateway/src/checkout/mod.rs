//! Checkout routes of the storefront.
//!
//! `GET /cart/checkout` starts (or resumes) a checkout attempt on the cart, then waits a
//! bounded time (watching the cart) for the runner to create the provider order, and returns
//! the provider's order JSON with its `html_snippet`. A checkout already waiting for payment is
//! returned as is (no second attempt); a changed cart starts a new attempt, which the runner
//! turns into an update of the same provider order. When the provider is slow the reply is
//! `202` with `Retry-After`: asking again resumes the wait.
//!
//! `POST /cart/push` is the provider's push callback: it is recorded in `WORKFLOW_COMMANDS`
//! (the runner acknowledges the order and confirms it on the cart) and answered at once.
//! `GET /cart/confirmation/{orderId}` returns the provider's confirmation snippet.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cart_domain::ids::{CartId, KeyField, TenantId};
use cart_domain::{CartState, CheckoutStatus, Command};
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use proto::runner::admin::v1 as rpb;
use serde::{Deserialize, Serialize};
use shared::headers::RequestContext;
use shared::provider_order::{MerchantData, OrderLine, paid_order};
use shared::workflow::{AttemptIds, PUSH_KIND, PushReceived, PushSource};
use shared::{ApiError, ErrorCode};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics as m;
use crate::request::context::Ctx;
use crate::request::json::JsonBody;
use crate::request::params::Params;
use crate::request::params::QueryParams;
use crate::schema::ErrorBody;
use crate::state::AppState;
use crate::storefront::cart_ref::StoreCart;
use crate::storefront::handlers::TAG;
use crate::upstream::aggregate::{Exec, decode_state};
use crate::upstream::services::{Services, request};

/// Routes that are not per cart (the per-cart `/cart/checkout` is in the storefront router).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(confirmation))
        .routes(routes!(push))
        .routes(routes!(validation))
}

/// The provider waits 3 s for the validation callback; answer well inside it.
const VALIDATION_DEADLINE: Duration = Duration::from_millis(2_500);

/// Reply while the provider order is still being created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    status: &'static str,
    attempt_id: String,
    /// Ask again after this many seconds (the same request resumes the wait).
    retry_after: u64,
}

/// Start (or resume) checkout and return the provider's order with its `html_snippet`.
#[utoipa::path(get, path = "/cart/checkout", tag = TAG,
    responses(
        (status = 200, description = "The provider order (Klarna Checkout v3 JSON, with html_snippet)", body = serde_json::Value),
        (status = 202, description = "The provider order is being created; ask again", body = Pending),
        (status = 409, description = "Empty cart, or the order is already placed", body = ErrorBody),
        (status = 502, description = "The payment provider refused the checkout; the cart is usable again", body = ErrorBody),
        (status = 503, description = "The runner or the aggregate is unavailable", body = ErrorBody)))]
pub async fn checkout(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
) -> Result<Response, ApiError> {
    if !s.services.runner.is_configured() {
        return Err(s.services.runner.not_configured());
    }
    if cart.is_new() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "cannot check out an empty cart",
        ));
    }
    let state = s.upstream.state(&ctx, &cart.id).await?;
    if let Some(order) = &state.cart.order {
        return Err(ApiError::new(
            ErrorCode::CartLocked,
            format!(
                "the order is already placed (reference {}); see /cart/confirmation/{}",
                order.order_reference, order.provider_order_id
            ),
        ));
    }
    let attempt = match &state.cart.checkout {
        // Waiting for payment or being created: continue with it, do not start another.
        Some(c)
            if matches!(
                c.status,
                CheckoutStatus::OrderCreated | CheckoutStatus::Started
            ) =>
        {
            c.attempt_id.clone()
        }
        _ => {
            let attempt = uuid::Uuid::now_v7().to_string();
            let command = Command::StartCheckout {
                attempt_id: attempt.clone(),
                country: None,
            };
            let ids = AttemptIds {
                tenant: ctx.tenant.as_str(),
                cart_id: cart.id.as_str(),
                attempt_id: &attempt,
            };
            let exec = Exec::new(ids.start_command_id());
            s.execute(&ctx, &cart.id, exec, command).await?;
            attempt
        }
    };
    let reply = match wait_for_provider(&s, &ctx, &cart, &attempt).await? {
        Some(Outcome::Created) => {
            let record = checkout_record(&s.services, &ctx, &cart, &attempt).await?;
            provider_order(record.order)?
        }
        Some(Outcome::Failed { code, reason }) => {
            return Err(ApiError::new(
                ErrorCode::CheckoutFailed,
                format!(
                    "the payment provider refused the checkout ({code}): {reason}; the cart can be changed and checked out again"
                ),
            ));
        }
        None => {
            let secs = 1;
            let mut resp = (
                StatusCode::ACCEPTED,
                Json(Pending {
                    status: "pending",
                    attempt_id: attempt,
                    retry_after: secs,
                }),
            )
                .into_response();
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, secs.into());
            resp
        }
    };
    Ok(s.cookies.attach(&cart, reply))
}

enum Outcome {
    Created,
    Failed { code: String, reason: String },
}

fn outcome(state: &CartState, attempt: &str) -> Option<Outcome> {
    match &state.cart.checkout {
        Some(c) if c.attempt_id == attempt => match &c.status {
            CheckoutStatus::OrderCreated | CheckoutStatus::Completed => Some(Outcome::Created),
            CheckoutStatus::Failed { code, reason } => Some(Outcome::Failed {
                code: code.clone(),
                reason: reason.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Watch the cart until the runner fed back the provider's answer for `attempt`, or the wait
/// runs out (`None`).
async fn wait_for_provider(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
    attempt: &str,
) -> Result<Option<Outcome>, ApiError> {
    let mut updates = s.upstream.watch(ctx, &cart.id).await?;
    let deadline = tokio::time::Instant::now() + s.cfg.checkout_wait();
    loop {
        let next = match tokio::time::timeout_at(deadline, updates.next()).await {
            Err(_) | Ok(None) => return Ok(None),
            Ok(Some(Err(status))) => return Err(ApiError::from_status(&status)),
            Ok(Some(Ok(snapshot))) => snapshot,
        };
        if let Some(o) = outcome(&decode_state(next)?, attempt) {
            return Ok(Some(o));
        }
    }
}

async fn checkout_record(
    services: &Services,
    ctx: &RequestContext,
    cart: &StoreCart,
    attempt: &str,
) -> Result<rpb::CheckoutRecord, ApiError> {
    let body = rpb::GetCheckoutRequest {
        tenant: ctx.tenant.to_string(),
        cart_id: cart.id.to_string(),
        attempt_id: attempt.to_owned(),
    };
    services
        .runner
        .read("runner.get_checkout", ctx, |ch, md| {
            let body = body.clone();
            async move { Services::checkout(ch).get_checkout(request(md, body)).await }
        })
        .await
}

/// The provider's order JSON (as the storefront client expects it), falling back to the
/// fields the runner recorded.
fn provider_order(order: Option<rpb::ProviderOrder>) -> Result<Response, ApiError> {
    let order = order.ok_or_else(|| ApiError::internal("the runner recorded no provider order"))?;
    let body = serde_json::from_str::<serde_json::Value>(&order.raw_json)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| {
            serde_json::json!({
                "order_id": order.order_id,
                "status": order.status,
                "html_snippet": order.html_snippet,
                "order_amount": order.order_amount,
                "purchase_currency": order.purchase_currency,
            })
        });
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPath {
    order_id: String,
}

/// The order confirmation (the provider's confirmation `html_snippet`) of a placed order of
/// the shopper's cart (the `cartid` cookie).
#[utoipa::path(get, path = "/cart/confirmation/{orderId}", tag = TAG,
    params(("orderId" = String, Path, description = "Provider order id")),
    responses(
        (status = 200, description = "The provider order (Klarna Checkout v3 JSON, with html_snippet)", body = serde_json::Value),
        (status = 404, description = "No such order for this cart (the `cartid` cookie's)", body = ErrorBody),
        (status = 503, description = "The runner or the provider is unavailable", body = ErrorBody)))]
pub async fn confirmation(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    cart: StoreCart,
    Params(p): Params<OrderPath>,
) -> Result<Response, ApiError> {
    KeyField::ProviderOrderId.check("orderId", &p.order_id)?;
    if !s.services.runner.is_configured() {
        return Err(s.services.runner.not_configured());
    }
    // Only the shopper's own order: its id alone shows in redirect URLs and logs, and the
    // order holds the shopper's addresses.
    if cart.is_new() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "no such order for this cart",
        ));
    }
    let body = rpb::GetConfirmationRequest {
        tenant: ctx.tenant.to_string(),
        order_id: p.order_id,
        cart_id: cart.id.to_string(),
    };
    let order = s
        .services
        .runner
        .read("runner.get_confirmation", &ctx, |ch, md| {
            let body = body.clone();
            async move {
                Services::checkout(ch)
                    .get_confirmation(request(md, body))
                    .await
            }
        })
        .await?;
    provider_order(Some(order))
}

/// Query of the push callback, as the runner registers it with the provider
/// (`/cart/push?tenant={tenant}&klarna_order_id={checkout.order.id}`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PushQuery {
    /// Tenant of the order.
    tenant: Option<String>,
    /// The provider order id.
    klarna_order_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushAccepted {
    received: bool,
}

/// The payment provider's push callback: a hint that an order changed. Every push is recorded
/// durably for the runner, which reads the order from the provider and acts on its state
/// (places a paid order whose payment matches the cart, acknowledges it). Needs no API key:
/// the provider cannot send one, and a push is never trusted: a forged or early one changes
/// nothing and blocks nothing (pushes are not de-duplicated before their order was read).
#[utoipa::path(post, path = "/cart/push", tag = TAG,
    params(PushQuery),
    responses(
        (status = 200, description = "Recorded", body = PushAccepted),
        (status = 400, description = "Bad tenant or order id", body = ErrorBody),
        (status = 503, description = "Could not be recorded; the provider retries", body = ErrorBody)))]
pub async fn push(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<PushQuery>,
) -> Result<Response, ApiError> {
    let tenant = match q.tenant.as_deref() {
        Some(t) => TenantId::parse(t)?,
        None => s.auth.resolve(&headers)?.tenant,
    };
    KeyField::ProviderOrderId.check("klarna_order_id", &q.klarna_order_id)?;
    let ctx = RequestContext::from_http_for_tenant(&headers, tenant.clone());
    let js = s.services.js.as_ref().ok_or_else(|| {
        ApiError::unavailable("this gateway has no NATS connection to record pushes")
    })?;
    let subject = shared::subjects::workflow_command(&tenant, PUSH_KIND, &q.klarna_order_id)?;
    let record = PushReceived {
        tenant: tenant.to_string(),
        provider_order_id: q.klarna_order_id.clone(),
        received_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        source: PushSource::Provider,
    };
    // No Nats-Msg-Id: every push is kept and acted on; de-duplication happens where the
    // effect happens (the cart confirms one order once).
    let mut h = async_nats::HeaderMap::new();
    shared::spans::downstream(&ctx).to_nats_headers(&mut h);
    let payload = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    let publish = async {
        js.publish_with_headers(subject, h, payload.into())
            .await?
            .await
            .map_err(async_nats::Error::from)
    };
    match tokio::time::timeout(Duration::from_secs(5), publish).await {
        Ok(Ok(_)) => Ok(Json(PushAccepted { received: true }).into_response()),
        Ok(Err(e)) => Err(ApiError::unavailable(format!(
            "could not record the push: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            ErrorCode::Timeout,
            "recording the push timed out",
        )),
    }
}

/// Query of the validation callback, as the runner registers it with the provider
/// (`/cart/validation?tenant={tenant}&klarna_order_id={checkout.order.id}`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ValidationQuery {
    /// Tenant of the order.
    tenant: Option<String>,
    /// The provider order id (also read from the body's `order_id`).
    klarna_order_id: Option<String>,
}

/// The provider order as the provider posts it to the validation callback (Klarna Checkout
/// v3 order JSON; the fields the check reads, others are ignored).
#[derive(Debug, Deserialize)]
pub struct ValidationOrder {
    #[serde(default)]
    order_id: Option<String>,
    order_amount: i64,
    purchase_currency: String,
    #[serde(default)]
    order_lines: Vec<OrderLine>,
    #[serde(default)]
    merchant_data: Option<String>,
}

/// The payment provider's validation callback, asked before it completes a purchase: `200`
/// when the order charges exactly what the cart's checkout attempt holds and the cart still
/// holds it; otherwise `303` to the storefront's checkout page
/// (`GATEWAY_CHECKOUT_PAGE_URL?klarna_order_id=..&error=<reason>`), which makes the provider
/// refuse the purchase. A purchase that completes anyway (a change in the instant between
/// the two) is caught when the paid order comes back: it is never placed silently.
#[utoipa::path(post, path = "/cart/validation", tag = TAG,
    params(ValidationQuery),
    request_body(content = serde_json::Value, description = "The provider order (Klarna Checkout v3 JSON)"),
    responses(
        (status = 200, description = "The cart matches the order: the purchase may complete", body = serde_json::Value),
        (status = 303, description = "The cart no longer matches: the purchase is refused; Location is the checkout page"),
        (status = 400, description = "The order names no cart of this platform", body = ErrorBody),
        (status = 503, description = "The cart could not be read in time (the provider refuses the purchase)", body = ErrorBody)))]
pub async fn validation(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<ValidationQuery>,
    JsonBody(order): JsonBody<ValidationOrder>,
) -> Result<Response, ApiError> {
    let tenant = match q.tenant.as_deref() {
        Some(t) => TenantId::parse(t)?,
        None => s.auth.resolve(&headers)?.tenant,
    };
    let order_id = order
        .order_id
        .as_deref()
        .or(q.klarna_order_id.as_deref())
        .ok_or_else(|| ApiError::invalid("order_id is required"))?;
    KeyField::ProviderOrderId.check("order_id", order_id)?;
    let merchant = MerchantData::parse(order.merchant_data.as_deref())
        .ok_or_else(|| ApiError::invalid("merchant_data does not name a cart of this platform"))?;
    let order_tenant = TenantId::parse(&merchant.tenant)?;
    let cart_id = CartId::parse(&merchant.cart_id)?;
    let paid = paid_order(
        &merchant,
        order.order_amount,
        &order.purchase_currency,
        &order.order_lines,
    );
    paid.validate()?;
    let checked = if order_tenant != tenant {
        Err(cart_domain::PaymentMismatch {
            code: "foreign_tenant",
            reason: format!("the order belongs to tenant {order_tenant}, not {tenant}"),
        })
    } else {
        let ctx = RequestContext::from_http_for_tenant(&headers, tenant.clone());
        let state = tokio::time::timeout(VALIDATION_DEADLINE, s.upstream.state(&ctx, &cart_id))
            .await
            .map_err(|_| {
                ApiError::new(ErrorCode::Timeout, "the cart could not be read in time")
            })??;
        state.cart.check_paid(order_id, &paid).map(|_| ())
    };
    match checked {
        Ok(()) => {
            metrics::counter!(m::CHECKOUT_VALIDATIONS, "result" => "approved", "reason" => "none")
                .increment(1);
            Ok(Json(serde_json::json!({"valid": true})).into_response())
        }
        Err(mismatch) => {
            metrics::counter!(m::CHECKOUT_VALIDATIONS, "result" => "refused", "reason" => mismatch.code)
                .increment(1);
            tracing::warn!(
                %tenant,
                cart = %cart_id,
                order = order_id,
                code = mismatch.code,
                reason = %mismatch.reason,
                "validation callback: purchase refused"
            );
            let mut location = s.cfg.checkout_page_url.clone();
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str(&format!(
                "klarna_order_id={order_id}&error={}",
                mismatch.code
            ));
            // The reason stays in the log: the caller is anonymous.
            let mut resp = (
                StatusCode::SEE_OTHER,
                Json(serde_json::json!({"valid": false, "reason": mismatch.code})),
            )
                .into_response();
            resp.headers_mut().insert(
                http::header::LOCATION,
                http::HeaderValue::from_str(&location).map_err(|_| {
                    ApiError::internal("GATEWAY_CHECKOUT_PAGE_URL is not a valid header value")
                })?,
            );
            Ok(resp)
        }
    }
}
