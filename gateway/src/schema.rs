//! OpenAPI descriptions of the error replies. The carts, commands and mutation replies are
//! described by the `cart_domain` types that are serialized (their `ToSchema`, feature
//! `openapi`); errors are serialized by `shared::ApiError`, which knows nothing of utoipa.

#![allow(dead_code)] // fields exist to be described, never read

use std::collections::BTreeMap;
use std::marker::PhantomData;

use utoipa::openapi::{RefOr, Response};
use utoipa::{IntoResponses, ToSchema};

/// `{"error": "...", "code": "..."}`: every error of every route.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    error: String,
    /// Stable code from the error table (`invalid_argument`, `unknown_sku`, `rate_limited`, ...).
    code: String,
}

/// The responses of `A` and of `B` together: the errors of a route made of both sets (their
/// statuses do not overlap).
pub struct Both<A, B>(PhantomData<(A, B)>);

impl<A: IntoResponses, B: IntoResponses> IntoResponses for Both<A, B> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = A::responses();
        all.extend(B::responses());
        all
    }
}

/// What every tenant route may answer about its API key and tenant header.
#[derive(utoipa::IntoResponses)]
pub enum AuthErrors {
    /// Missing or unknown API key (when API keys are configured).
    #[response(status = 401)]
    Unauthenticated(#[to_schema] ErrorBody),
    /// `x-tenant-id` does not match the API key's tenant.
    #[response(status = 403)]
    PermissionDenied(#[to_schema] ErrorBody),
}

/// The rate limit of a route that only reads.
#[derive(utoipa::IntoResponses)]
pub enum ReadRateLimited {
    /// Rate limited; see `Retry-After`.
    #[response(status = 429)]
    RateLimited(#[to_schema] ErrorBody),
}

/// What a tenant route that only reads may answer about its caller: [`AuthErrors`] and its
/// rate limit.
pub type CallerErrors = Both<AuthErrors, ReadRateLimited>;

/// Errors of routes that change a cart. Every body is `{"error", "code"}`.
pub type CommandErrors = Both<AuthErrors, CommandFailures>;

/// The [`CommandErrors`] other than [`AuthErrors`].
#[derive(utoipa::IntoResponses)]
pub enum CommandFailures {
    /// Malformed JSON, an unknown or mistyped field, an invalid id or quantity, an internal
    /// command type (the message names the field).
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
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

/// Errors of routes that only read. Every body is `{"error", "code"}`.
pub type ReadErrors = Both<CallerErrors, ReadFailures>;

/// The [`ReadErrors`] other than [`CallerErrors`].
#[derive(utoipa::IntoResponses)]
pub enum ReadFailures {
    /// An invalid cart id or tenant header.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No aggregate node reachable; see `Retry-After`.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
    /// The aggregate did not answer in time.
    #[response(status = 504)]
    Timeout(#[to_schema] ErrorBody),
}
