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
use shared::provider_order::PAID_STATUS;
use shared::workflow::{AttemptIds, CheckoutOutcome};
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
    /// What a storefront that shows any 2xx's `html_snippet` (as it shows the provider's)
    /// shows meanwhile: a notice, and a script that reloads the page after `retryAfter`.
    #[serde(rename = "html_snippet")]
    html_snippet: String,
}

/// Start (or resume) checkout and return the provider's order with its `html_snippet`.
#[utoipa::path(get, path = "/cart/checkout", tag = TAG,
    responses(
        (status = 200, description = "The provider order (Klarna Checkout v3 JSON, with html_snippet)", body = serde_json::Value),
        (status = 202, description = "The provider order is being created; ask again", body = Pending),
        (status = 409, description = "Empty cart, the order is already placed, or the cart kept changing while the checkout started", body = ErrorBody),
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
    let mut attempt = start_or_join(&s, &ctx, &cart).await?;
    let reply = match wait_for_provider(&s, &ctx, &cart, &mut attempt).await? {
        Some(Outcome::Created { order_id }) => {
            match attempt_order(&s, &ctx, &cart, &attempt, order_id).await? {
                Some(order) => provider_order(order),
                None => pending(attempt),
            }
        }
        Some(Outcome::Failed { code, reason }) => {
            return Err(ApiError::new(
                ErrorCode::CheckoutFailed,
                format!(
                    "the payment provider refused the checkout ({code}): {reason}; the cart can be changed and checked out again"
                ),
            ));
        }
        None => pending(attempt),
    };
    Ok(s.cookies.attach(&cart, reply))
}

/// `202` with `Retry-After`: the attempt is under way, asking again resumes the wait.
fn pending(attempt: String) -> Response {
    let secs = PENDING_RETRY_SECS;
    // The same for every pending reply: built once.
    static SNIPPET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{PENDING_NOTICE}<script>{}</script>",
            reload_script(PENDING_RETRY_SECS)
        )
    });
    let html_snippet = SNIPPET.clone();
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(Pending {
            status: "pending",
            attempt_id: attempt,
            retry_after: secs,
            html_snippet,
        }),
    )
        .into_response();
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, secs.into());
    resp
}

/// `Retry-After` of a pending reply, and its page's first reload.
const PENDING_RETRY_SECS: u64 = 1;

/// What the pending page shows.
const PENDING_NOTICE: &str =
    "<div class=\"cart-checkout-pending\">Preparing your checkout\u{2026}</div>";

/// The pending page's script: reload after `secs`, doubling the wait on each reload of the tab
/// within a minute of the last (at most 30 s), so a checkout that cannot progress (the runner
/// away) is not asked for every second for as long as the tab stays open.
fn reload_script(secs: u64) -> String {
    format!(
        "(function(){{var n=0,k='cart-checkout-pending',now=Date.now();try{{\
         var v=JSON.parse(sessionStorage.getItem(k)||'{{}}');\
         n=now-(v.t||0)<60000?(v.n||0)+1:0;\
         sessionStorage.setItem(k,JSON.stringify({{n:n,t:now}}))}}catch(e){{}}\
         setTimeout(function(){{window.location.reload()}},Math.min({}*Math.pow(2,n),30000))}})()",
        secs * 1000
    )
}

/// The provider order of an attempt the cart says has one: the runner's record of the attempt,
/// or else the order the cart names (`order_id`), read through the runner. The runner keeps
/// only a cart's last result, which need not be this attempt's: an approval can reach the cart
/// before the runner recorded the update it approved, and a result given up after the
/// approval names no order (the cart, holding still, refused it). `None` when neither has an
/// order yet (pending).
async fn attempt_order(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
    attempt: &str,
    order_id: Option<String>,
) -> Result<Option<rpb::ProviderOrder>, ApiError> {
    match checkout_record(&s.services, ctx, cart, attempt).await {
        Ok(rpb::CheckoutRecord {
            order: Some(order), ..
        }) => return Ok(Some(order)),
        Ok(_) => {}
        Err(e) if e.code == ErrorCode::NotFound => {}
        Err(e) => return Err(e),
    }
    match order_id {
        Some(id) => cart_order(s, ctx, cart, id).await.map(Some),
        None => Ok(None),
    }
}

/// The checkout attempt the shopper waits on: the cart's own if one is in progress, else one
/// started for the cart as it was read. The start expects the version read: of two tabs (or
/// two clicks) that read the same cart, one starts the attempt and the other's start is
/// refused, reads the cart again and joins that attempt (each started its own before, the
/// first superseded and its tab waiting out `checkout_wait` for nothing). A cart that changed
/// between the read and the start is read again.
async fn start_or_join(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
) -> Result<String, ApiError> {
    const READS: usize = 3;
    for _ in 0..READS {
        let state = s.upstream.state(ctx, &cart.id).await?;
        if let Some(order) = &state.cart.order {
            return Err(ApiError::new(
                ErrorCode::CartLocked,
                format!(
                    "the order is already placed (reference {}); see /cart/confirmation/{}",
                    order.order_reference, order.provider_order_id
                ),
            ));
        }
        if let Some(c) = state.cart.live_checkout() {
            return Ok(c.attempt_id.clone());
        }
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
        let exec = Exec {
            expected_version: Some(state.version),
            ..Exec::new(ids.start_command_id())
        };
        match s.execute(ctx, &cart.id, exec, command).await {
            Ok(_) => return Ok(attempt),
            // Changed since the read (a line added in another tab, the runner's answer to an
            // earlier attempt): read it again.
            Err(e) if e.code == ErrorCode::PreconditionFailed => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        ErrorCode::VersionConflict,
        format!("the cart changed {READS} times while its checkout started; try again"),
    ))
}

enum Outcome {
    /// The provider order exists; `order_id` is the cart's, once the cart knows it.
    Created {
        order_id: Option<String>,
    },
    Failed {
        code: String,
        reason: String,
    },
}

fn outcome(state: &CartState, attempt: &str) -> Option<Outcome> {
    match &state.cart.checkout {
        Some(c) if c.attempt_id == attempt => match &c.status {
            CheckoutStatus::OrderCreated
            | CheckoutStatus::PaymentApproved { .. }
            | CheckoutStatus::Completed => Some(Outcome::Created {
                order_id: state.cart.provider_order_id.clone(),
            }),
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
/// runs out (`None`). An attempt that a newer one superseded (the cart changed and was checked
/// out again elsewhere) is followed to the newer one: its order is the one of the cart as it
/// is now.
async fn wait_for_provider(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
    attempt: &mut String,
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
        let state = decode_state(next)?;
        if let Some(c) = state.cart.checkout.as_deref()
            && c.attempt_id != *attempt
            && c.earlier_attempts.contains(attempt)
        {
            *attempt = c.attempt_id.clone();
        }
        if let Some(o) = outcome(&state, attempt) {
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

/// The provider's order JSON as the storefront client expects it (it writes `html_snippet`
/// into the page), falling back to the fields the runner recorded. What is the merchant's
/// and not the shopper's stays out: `merchant_urls` (the validation URL carries the cart's
/// callback token) and `merchant_data` (our ids).
fn provider_order(order: rpb::ProviderOrder) -> Response {
    let mut body = match serde_json::from_str::<serde_json::Value>(&order.raw_json) {
        Ok(serde_json::Value::Object(body)) => body,
        _ => serde_json::Map::from_iter([
            ("order_id".into(), order.order_id.into()),
            ("status".into(), order.status.into()),
            ("order_amount".into(), order.order_amount.into()),
            ("purchase_currency".into(), order.purchase_currency.into()),
        ]),
    };
    body.remove("merchant_urls");
    body.remove("merchant_data");
    if !body
        .get("html_snippet")
        .is_some_and(serde_json::Value::is_string)
    {
        body.insert("html_snippet".into(), order.html_snippet.into());
    }
    Json(body).into_response()
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
        (status = 409, description = "The order is not paid, or was paid but not placed (it does not match the cart)", body = ErrorBody),
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
    let order = cart_order(&s, &ctx, &cart, p.order_id).await?;
    // Not a "thank you" for an order that is not the shopper's purchase: one paid that could
    // not be placed, or one not paid at all (its snippet is the payment form).
    if order.outcome == CheckoutOutcome::Mismatched.as_str() {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "this order was paid but not placed: it does not match the cart (the cart changed \
             while it was paid); the payment is not taken, and the cart can be checked out again",
        ));
    }
    let paid = order.outcome == CheckoutOutcome::Placed.as_str() || order.status == PAID_STATUS;
    if !paid {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "this order is not paid yet: finish the checkout first",
        ));
    }
    Ok(provider_order(order))
}

/// The provider's order `order_id` as it is now, through the runner, which answers it only
/// for an order of this cart.
async fn cart_order(
    s: &AppState,
    ctx: &RequestContext,
    cart: &StoreCart,
    order_id: String,
) -> Result<rpb::ProviderOrder, ApiError> {
    let body = rpb::GetConfirmationRequest {
        tenant: ctx.tenant.to_string(),
        order_id,
        cart_id: cart.id.to_string(),
    };
    s.services
        .runner
        .read("runner.get_confirmation", ctx, |ch, md| {
            let body = body.clone();
            async move {
                Services::checkout(ch)
                    .get_confirmation(request(md, body))
                    .await
            }
        })
        .await
}

#[cfg(test)]
mod tests;
