//! OpenAPI descriptions of the error replies. The carts, commands and mutation replies are
//! described by the `cart_domain` types that are serialized (their `ToSchema`, feature
//! `openapi`); errors are serialized by `shared::ApiError`, which knows nothing of utoipa.

#![allow(dead_code)] // fields exist to be described, never read

use utoipa::ToSchema;

/// `{"error": "...", "code": "..."}`: every error of every route.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    error: String,
    /// Stable code from the error table (`invalid_argument`, `unknown_sku`, `rate_limited`, ...).
    code: String,
}

/// Errors of routes that change a cart. Every body is `{"error", "code"}`.
#[derive(utoipa::IntoResponses)]
pub enum CommandErrors {
    /// Malformed JSON, an unknown or mistyped field, an invalid id or quantity, an internal
    /// command type (the message names the field).
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing or unknown API key (when API keys are configured).
    #[response(status = 401)]
    Unauthenticated(#[to_schema] ErrorBody),
    /// `x-tenant-id` does not match the API key's tenant.
    #[response(status = 403)]
    PermissionDenied(#[to_schema] ErrorBody),
    /// Unknown SKU, line, delivery (provider) or voucher (`unknown_sku`, `unknown_line`, ...).
    #[response(status = 404)]
    NotFound(#[to_schema] ErrorBody),
    /// The order is placed (`cart_locked`), the command does not fit the cart's state
    /// (`invalid_state`), or the cart kept changing concurrently (`version_conflict`).
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
    /// `If-Match` does not match the cart's version (`precondition_failed`).
    #[response(status = 412)]
    PreconditionFailed(#[to_schema] ErrorBody),
    /// The body is larger than `GATEWAY_BODY_LIMIT_BYTES`.
    #[response(status = 413)]
    PayloadTooLarge(#[to_schema] ErrorBody),
    /// A voucher does not apply, or a limit (lines, deliveries, batch size) would be exceeded.
    #[response(status = 422)]
    Unprocessable(#[to_schema] ErrorBody),
    /// Rate limited (per client or per cart); see `Retry-After`.
    #[response(status = 429)]
    RateLimited(#[to_schema] ErrorBody),
    /// No aggregate node reachable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
    /// The aggregate did not answer in time; the outcome is unknown, retry the same request.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorBody),
}

/// Errors of routes that only read.
#[derive(utoipa::IntoResponses)]
pub enum ReadErrors {
    /// An invalid cart id or tenant header.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Missing or unknown API key (when API keys are configured).
    #[response(status = 401)]
    Unauthenticated(#[to_schema] ErrorBody),
    /// `x-tenant-id` does not match the API key's tenant.
    #[response(status = 403)]
    PermissionDenied(#[to_schema] ErrorBody),
    /// Rate limited; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(#[to_schema] ErrorBody),
    /// No aggregate node reachable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
    /// The aggregate did not answer in time.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorBody),
}
