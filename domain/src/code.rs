//! The stable error codes: the machine-readable vocabulary every refusal is told in
//! (`{"error": "...", "code": "unknown_sku"}`). The string form is part of the public API. How
//! each code travels (HTTP status, gRPC code) is the edges' business (`shared::error`).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $variant:ident => $code:literal, $retry:literal, $doc:literal; )*) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( #[doc = $doc] $variant, )*
        }

        impl ErrorCode {
            /// Every code, for documentation and exhaustive tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub const fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// Whether sending the very same request again can succeed and cannot cause a
            /// second effect (commands carry a command id, so they qualify when the failure
            /// was transient).
            pub const fn retry_safe(self) -> bool {
                match self { $( ErrorCode::$variant => $retry, )* }
            }

            pub const fn description(self) -> &'static str {
                match self { $( ErrorCode::$variant => $doc, )* }
            }

            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $( $code => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    InvalidArgument => "invalid_argument", false,
        "The request is malformed or a field is invalid; the message names the field.";
    PayloadTooLarge => "payload_too_large", false,
        "The request body is larger than the configured limit.";
    Unauthenticated => "unauthenticated", false,
        "Missing or invalid credentials (admin bearer token or API key).";
    PermissionDenied => "permission_denied", false,
        "The credentials do not allow this (e.g. tenant header does not match the API key).";
    NotFound => "not_found", false,
        "The route or resource does not exist.";
    UnknownSku => "unknown_sku", false,
        "The SKU is not in the catalog.";
    UnknownLine => "unknown_line", false,
        "The cart has no line with that id.";
    UnknownDelivery => "unknown_delivery", false,
        "The cart has no delivery with that id, or the delivery provider is not configured.";
    UnknownVoucher => "unknown_voucher", false,
        "No voucher with that code exists, or the cart has no voucher with that id.";
    MethodNotAllowed => "method_not_allowed", false,
        "The route exists but not for this HTTP method.";
    VersionConflict => "version_conflict", true,
        "The cart changed concurrently; reload and retry.";
    PreconditionFailed => "precondition_failed", false,
        "If-Match / expected_version does not match the cart's current version.";
    IdempotencyKeyReused => "idempotency_key_reused", false,
        "This Idempotency-Key was already used on this cart for a different request; use a new key per request.";
    CartLocked => "cart_locked", false,
        "The order is placed; the cart can no longer change. Start a new cart.";
    InvalidState => "invalid_state", false,
        "The command does not fit the cart's state (e.g. checkout of an empty cart).";
    VoucherNotApplicable => "voucher_not_applicable", false,
        "The voucher is expired, already applied or the order is below its minimum.";
    LimitExceeded => "limit_exceeded", false,
        "A configured limit (lines per cart, deliveries, vouchers, batch size) would be exceeded.";
    NotOwner => "not_owner", true,
        "This aggregate node does not own the cart's shard; the owner's address is attached.";
    RateLimited => "rate_limited", true,
        "Too many requests; retry after the Retry-After interval.";
    CheckoutFailed => "checkout_failed", false,
        "The payment provider refused or failed the checkout; the cart is usable again.";
    Draining => "draining", true,
        "The node is shutting down; retry (another node takes over).";
    Unavailable => "unavailable", true,
        "A dependency (NATS, an upstream service) is unreachable; retry later.";
    Timeout => "timeout", true,
        "An upstream call did not finish within its deadline; the outcome is unknown, retry with the same id.";
    Unimplemented => "unimplemented", false,
        "The capability is not available in this deployment.";
    Internal => "internal", false,
        "An unexpected error; it is logged with the correlation id.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
