//! The payment provider's callbacks: the push (an order changed: recorded for the runner) and
//! the validation (may this purchase complete: checked against the cart and, when it matches,
//! recorded on it so that the cart holds still until the paid order comes back).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cart_domain::Command;
use cart_domain::ids::{CartId, KeyField, TenantId};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use shared::headers::RequestContext;
use shared::provider_order::{MerchantData, OrderLine, paid_order};
use shared::workflow::{PUSH_KIND, PushReceived, PushSource};
use shared::{ApiError, ErrorCode};
use utoipa::{IntoParams, ToSchema};

use crate::metrics as m;
use crate::request::json::JsonBody;
use crate::request::params::QueryParams;
use crate::schema::ErrorBody;
use crate::state::AppState;
use crate::storefront::handlers::TAG;
use crate::upstream::aggregate::Exec;

/// The provider waits 3 s for the validation callback; answer well inside it.
const VALIDATION_DEADLINE: Duration = Duration::from_millis(2_500);

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
/// What forged pushes can cost is bounded per tenant (`GATEWAY_PUSH_RATE_PER_SEC`, 429 beyond
/// it, which the provider retries).
#[utoipa::path(post, path = "/cart/push", tag = TAG,
    params(PushQuery),
    responses(
        (status = 200, description = "Recorded", body = PushAccepted),
        (status = 400, description = "Bad tenant or order id", body = ErrorBody),
        (status = 429, description = "Too many pushes for this tenant; the provider retries", body = ErrorBody),
        (status = 503, description = "Could not be recorded; the provider retries", body = ErrorBody)))]
pub async fn push(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<PushQuery>,
) -> Result<Response, ApiError> {
    let tenant = callback_tenant(&s, &headers, q.tenant.as_deref())?;
    KeyField::ProviderOrderId.check("klarna_order_id", &q.klarna_order_id)?;
    // After the checks: a malformed push neither counts nor records.
    s.limits
        .check_push(tenant.as_str(), s.auth.is_known_tenant(&tenant))?;
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

/// The tenant a provider callback is for: the `tenant` its URL names (the runner registers
/// it), or else the API key's.
fn callback_tenant(
    s: &AppState,
    headers: &HeaderMap,
    named: Option<&str>,
) -> Result<TenantId, ApiError> {
    match named {
        Some(t) => Ok(TenantId::parse(t)?),
        None => Ok(s.auth.resolve(headers)?.tenant),
    }
}

/// Asks the cart to approve the purchase of `order_id` (`ApprovePayment`): the cart checks the
/// order against its attempt and its lines ([`cart_domain::Cart::check_paid`]), fenced like any
/// command, and from then on holds still for the purchase. A refusal is named by the same check
/// on the cart as it is now (or `checkout_closed` when that passes: the attempt has ended); an
/// error (the cart could not be reached) answers the provider, which refuses the purchase too.
async fn approve(
    s: &AppState,
    ctx: &RequestContext,
    cart: &CartId,
    order_id: &str,
    paid: &cart_domain::PaidOrder,
) -> Result<Result<(), cart_domain::PaymentMismatch>, ApiError> {
    let command = Command::ApprovePayment {
        provider_order_id: order_id.to_owned(),
        paid: paid.clone(),
    };
    // A new id for every ask: an approval answers for the cart as it is now, never from the
    // cart's recent commands (a fixed id made an ask after the attempt had failed and the cart
    // had changed a duplicate of the first, approved without a decision). Asking again is
    // safe: an approval still holding decides to nothing, a concurrent one is fenced.
    let id = cart_domain::ids::CommandId::new();
    match s.upstream.execute(ctx, cart, Exec::new(id), command).await {
        Ok(_) => Ok(Ok(())),
        Err(e) if matches!(e.code, ErrorCode::InvalidState | ErrorCode::CartLocked) => {
            let state = s.upstream.state(ctx, cart).await?;
            let mismatch = state.cart.check_paid(order_id, paid).err();
            Ok(Err(mismatch.unwrap_or(cart_domain::PaymentMismatch {
                code: "checkout_closed",
                reason: e.message,
            })))
        }
        Err(e) => Err(e),
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
    /// The cart's token, which the runner put in the URL it gave the provider
    /// (required with `GATEWAY_VALIDATION_KEY`).
    token: Option<String>,
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
/// refuse the purchase. An approval is recorded on the cart (`ApprovePayment`), which then
/// holds still until the paid order comes back (or `PURCHASE_HOLD_SECS`): a change in between
/// is refused with `409 cart_locked`, so the paid order matches the cart it is placed on.
/// With `GATEWAY_VALIDATION_KEY` the URL's `token` must be the order's cart's (`403`
/// otherwise, before the cart is asked: the provider then refuses the purchase).
#[utoipa::path(post, path = "/cart/validation", tag = TAG,
    params(ValidationQuery),
    request_body(content = serde_json::Value, description = "The provider order (Klarna Checkout v3 JSON)"),
    responses(
        (status = 200, description = "The cart matches the order: the purchase may complete", body = serde_json::Value),
        (status = 303, description = "The cart no longer matches: the purchase is refused; Location is the checkout page"),
        (status = 400, description = "The order names no cart of this platform", body = ErrorBody),
        (status = 403, description = "The token is missing or not the order's (GATEWAY_VALIDATION_KEY)", body = ErrorBody),
        (status = 503, description = "The cart could not be read in time (the provider refuses the purchase)", body = ErrorBody)))]
pub async fn validation(
    State(s): State<AppState>,
    headers: HeaderMap,
    QueryParams(q): QueryParams<ValidationQuery>,
    JsonBody(order): JsonBody<ValidationOrder>,
) -> Result<Response, ApiError> {
    let tenant = callback_tenant(&s, &headers, q.tenant.as_deref())?;
    let order_id = order
        .order_id
        .as_deref()
        .or(q.klarna_order_id.as_deref())
        .ok_or_else(|| ApiError::invalid("order_id is required"))?;
    KeyField::ProviderOrderId.check("order_id", order_id)?;
    let merchant = MerchantData::parse(order.merchant_data.as_deref())
        .ok_or_else(|| ApiError::invalid("merchant_data does not name a cart of this platform"))?;
    // Before the cart is asked: a caller without the URL the provider was given (a forged
    // callback) would otherwise hold a shopper's cart.
    if !s.auth.callback_allowed(&merchant, q.token.as_deref()) {
        metrics::counter!(m::CHECKOUT_VALIDATIONS, "result" => "unauthenticated", "reason" => "token")
            .increment(1);
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "the validation callback's token does not match its order's cart",
        ));
    }
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
        // One deadline for the whole answer: the provider waits 3 s.
        let approved = approve(&s, &ctx, &cart_id, order_id, &paid);
        tokio::time::timeout(VALIDATION_DEADLINE, approved)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Timeout, "the cart did not answer in time"))??
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
