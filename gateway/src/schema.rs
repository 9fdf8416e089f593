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

/// Declares an error-reply set for `responses(...)`: one variant per status, each answering an
/// [`ErrorBody`] described by the variant's doc comment.
macro_rules! error_replies {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$doc:meta])* $status:literal => $variant:ident,)+
    }) => {
        $(#[$meta])*
        #[derive(utoipa::IntoResponses)]
        $vis enum $name {
            $($(#[$doc])* #[response(status = $status)] $variant(#[to_schema] $crate::schema::ErrorBody),)+
        }
    };
}
pub(crate) use error_replies;

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

error_replies! {
    /// What every tenant route may answer about its API key and tenant header.
    pub enum AuthErrors {
        /// Missing or unknown API key (when API keys are configured).
        401 => Unauthenticated,
        /// `x-tenant-id` does not match the API key's tenant; or a storefront key on a
        /// listing or report, which take a back-office key.
        403 => PermissionDenied,
    }
}

error_replies! {
    /// The rate limit of a route that only reads.
    pub enum ReadRateLimited {
        /// Rate limited; see `Retry-After`.
        429 => RateLimited,
    }
}

/// What a tenant route that only reads may answer about its caller: [`AuthErrors`] and its
/// rate limit.
pub type CallerErrors = Both<AuthErrors, ReadRateLimited>;

/// Errors of routes that change a cart. Every body is `{"error", "code"}`.
pub type CommandErrors = Both<AuthErrors, CommandFailures>;

error_replies! {
    /// The [`CommandErrors`] other than [`AuthErrors`].
    pub enum CommandFailures {
        /// Malformed JSON, an unknown or mistyped field, an invalid id or quantity, an internal
        /// command type (the message names the field).
        400 => BadRequest,
        /// Unknown SKU, line, delivery (provider) or voucher (`unknown_sku`, `unknown_line`, ...).
        404 => NotFound,
        /// The order is placed (`cart_locked`), the command does not fit the cart's state
        /// (`invalid_state`), or the cart kept changing concurrently (`version_conflict`).
        409 => Conflict,
        /// `If-Match` does not match the cart's version (`precondition_failed`).
        412 => PreconditionFailed,
        /// The body is larger than `GATEWAY_BODY_LIMIT_BYTES`.
        413 => PayloadTooLarge,
        /// A voucher does not apply, or a limit (lines, deliveries, batch size) would be exceeded.
        422 => Unprocessable,
        /// Rate limited (per client or per cart); see `Retry-After`.
        429 => RateLimited,
        /// No aggregate node reachable; see `Retry-After`.
        503 => Unavailable,
        /// The aggregate did not answer in time: the change may have been stored. Send it again
        /// as it is only with the same `Idempotency-Key`; otherwise read the cart first.
        504 => Timeout,
    }
}

/// Errors of routes that only read. Every body is `{"error", "code"}`.
pub type ReadErrors = Both<CallerErrors, ReadFailures>;

error_replies! {
    /// The [`ReadErrors`] other than [`CallerErrors`].
    pub enum ReadFailures {
        /// An invalid cart id or tenant header.
        400 => BadRequest,
        /// No aggregate node reachable; see `Retry-After`.
        503 => Unavailable,
        /// The aggregate did not answer in time.
        504 => Timeout,
    }
}

/// Errors of `POST /v1/carts`, which reaches no service: its caller's, and its body's.
pub type CreateErrors = Both<CallerErrors, CreateFailures>;

error_replies! {
    /// The [`CreateErrors`] other than [`CallerErrors`].
    pub enum CreateFailures {
        /// A body other than none or `{}` (the message names what was sent).
        400 => BadRequest,
        /// The body is larger than `GATEWAY_BODY_LIMIT_BYTES`.
        413 => PayloadTooLarge,
    }
}
