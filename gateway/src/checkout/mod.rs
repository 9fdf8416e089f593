//! Checkout routes of the storefront.
//!
//! `GET /cart/checkout` starts (or resumes) a checkout attempt on the cart, then waits a
//! bounded time (watching the cart) for the runner to create the provider order, and returns
//! the provider's order JSON with its `html_snippet`. A checkout already waiting for payment is
//! returned as is (no second attempt); a changed cart starts a new attempt, which the runner
//! turns into an update of the same provider order. When the provider is slow the reply is
//! `202` with `Retry-After`: asking again resumes the wait.
//!
//! `POST /cart/push` and `POST /cart/validation` are the provider's callbacks ([`callbacks`]).
//! `GET /cart/confirmation/{orderId}` returns the provider's confirmation snippet of the
//! shopper's own order.

mod callbacks;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cart_domain::ids::KeyField;
use cart_domain::{CartState, CheckoutStatus, Command};
use futures::StreamExt;
use http::StatusCode;
use proto::runner::admin::v1 as rpb;
use serde::{Deserialize, Serialize};
use shared::headers::RequestContext;
use shared::workflow::AttemptIds;
use shared::{ApiError, ErrorCode};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::request::context::Ctx;
use crate::request::params::Params;
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
        .routes(routes!(callbacks::push))
        .routes(routes!(callbacks::validation))
}

/// What the checkout routes need first: a runner to ask, and a cart the shopper already has
/// (a fresh cookie has nothing to check out or confirm: `no_cart`).
fn known_cart(
    s: &AppState,
    cart: &StoreCart,
    no_cart: impl FnOnce() -> ApiError,
) -> Result<(), ApiError> {
    if !s.services.runner.is_configured() {
        return Err(s.services.runner.not_configured());
    }
    if cart.is_new() {
        return Err(no_cart());
    }
    Ok(())
}

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
    known_cart(&s, &cart, || {
        ApiError::new(ErrorCode::InvalidState, "cannot check out an empty cart")
    })?;
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
        // Waiting for payment, being created, or being paid: continue with it, do not start
        // another.
        Some(c)
            if matches!(
                c.status,
                CheckoutStatus::OrderCreated
                    | CheckoutStatus::Started
                    | CheckoutStatus::PaymentApproved { .. }
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
            CheckoutStatus::OrderCreated
            | CheckoutStatus::PaymentApproved { .. }
            | CheckoutStatus::Completed => Some(Outcome::Created),
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
            // The watch broke (a node restarted, the watcher fell behind): the attempt has
            // started all the same, so pending (202, ask again), not a 500 or a 429.
            Ok(Some(Err(status))) => {
                tracing::debug!(%status, "the cart's watch ended during the checkout wait");
                return Ok(None);
            }
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
    // Only the shopper's own order: its id alone shows in redirect URLs and logs, and the
    // order holds the shopper's addresses.
    known_cart(&s, &cart, || {
        ApiError::new(ErrorCode::NotFound, "no such order for this cart")
    })?;
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
