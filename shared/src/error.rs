//! The error-code table: one enum of stable codes, each mapped once to an HTTP status, a gRPC
//! code and whether retrying the same request is safe. Every service turns its errors into an
//! [`ApiError`] (`{"error": "...", "code": "..."}` on the wire) through this table, and the
//! gateway turns a gRPC `Status` back into the same code, so a client sees one vocabulary.

use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

pub use cart_domain::ErrorCode;

/// gRPC metadata key that carries the stable error code next to a `Status`.
pub const GRPC_ERROR_CODE_KEY: &str = "x-error-code";
/// gRPC metadata key on a `not_owner` status: the gRPC address of the shard's owner.
pub const GRPC_OWNER_ADDR_KEY: &str = "x-owner-addr";
/// gRPC metadata key: seconds after which a retry makes sense (rate limits, unavailability).
pub const GRPC_RETRY_AFTER_KEY: &str = "retry-after";
/// gRPC metadata key on a `permission_denied` status refusing the calling *service* (its TLS
/// identity, [`crate::grpc_tls::Caller::require`]): the name it presented.
pub const GRPC_DENIED_CALLER_KEY: &str = "x-denied-caller";

/// How each code travels: its HTTP status and its gRPC code (one row a code; the match is
/// exhaustive, so a new code cannot be forgotten here).
pub const fn transport(code: ErrorCode) -> (StatusCode, tonic::Code) {
    use ErrorCode as E;
    use tonic::Code as G;
    match code {
        E::InvalidArgument => (StatusCode::BAD_REQUEST, G::InvalidArgument),
        E::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, G::InvalidArgument),
        E::Unauthenticated => (StatusCode::UNAUTHORIZED, G::Unauthenticated),
        E::PermissionDenied => (StatusCode::FORBIDDEN, G::PermissionDenied),
        E::NotFound => (StatusCode::NOT_FOUND, G::NotFound),
        E::UnknownSku => (StatusCode::NOT_FOUND, G::NotFound),
        E::UnknownLine => (StatusCode::NOT_FOUND, G::NotFound),
        E::UnknownDelivery => (StatusCode::NOT_FOUND, G::NotFound),
        E::UnknownVoucher => (StatusCode::NOT_FOUND, G::NotFound),
        E::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, G::Unimplemented),
        E::VersionConflict => (StatusCode::CONFLICT, G::Aborted),
        E::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, G::FailedPrecondition),
        E::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, G::FailedPrecondition),
        E::CartLocked => (StatusCode::CONFLICT, G::FailedPrecondition),
        E::InvalidState => (StatusCode::CONFLICT, G::FailedPrecondition),
        E::VoucherNotApplicable => (StatusCode::UNPROCESSABLE_ENTITY, G::FailedPrecondition),
        E::LimitExceeded => (StatusCode::UNPROCESSABLE_ENTITY, G::FailedPrecondition),
        E::NotOwner => (StatusCode::MISDIRECTED_REQUEST, G::FailedPrecondition),
        E::RateLimited => (StatusCode::TOO_MANY_REQUESTS, G::ResourceExhausted),
        E::CheckoutFailed => (StatusCode::BAD_GATEWAY, G::Unavailable),
        E::Draining => (StatusCode::SERVICE_UNAVAILABLE, G::Unavailable),
        E::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, G::Unavailable),
        E::Timeout => (StatusCode::GATEWAY_TIMEOUT, G::DeadlineExceeded),
        E::Unimplemented => (StatusCode::NOT_IMPLEMENTED, G::Unimplemented),
        E::Internal => (StatusCode::INTERNAL_SERVER_ERROR, G::Internal),
    }
}

/// The HTTP status a code is answered with.
pub const fn http_status(code: ErrorCode) -> StatusCode {
    transport(code).0
}

/// The gRPC code a code is answered with.
pub const fn grpc_code(code: ErrorCode) -> tonic::Code {
    transport(code).1
}

/// The code a bare gRPC status maps to when it carries no `x-error-code` metadata.
pub fn from_grpc_code(code: tonic::Code) -> ErrorCode {
    use tonic::Code as C;
    match code {
        C::InvalidArgument | C::OutOfRange => ErrorCode::InvalidArgument,
        C::Unauthenticated => ErrorCode::Unauthenticated,
        C::PermissionDenied => ErrorCode::PermissionDenied,
        C::NotFound => ErrorCode::NotFound,
        C::Aborted | C::AlreadyExists => ErrorCode::VersionConflict,
        C::FailedPrecondition => ErrorCode::InvalidState,
        C::ResourceExhausted => ErrorCode::RateLimited,
        C::Unavailable => ErrorCode::Unavailable,
        C::DeadlineExceeded | C::Cancelled => ErrorCode::Timeout,
        C::Unimplemented => ErrorCode::Unimplemented,
        C::Ok | C::Unknown | C::Internal | C::DataLoss => ErrorCode::Internal,
    }
}

/// An error as every edge shows it: `{"error": "<what went wrong and what to do>", "code":
/// "<stable code>"}`, plus transport extras that are not part of the JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(rename = "error")]
    pub message: String,
    pub code: ErrorCode,
    /// For `not_owner`: the owner's gRPC address.
    #[serde(skip)]
    pub owner_addr: Option<String>,
    /// For retryable codes: how long the client should wait.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// Longest quoted value an error message shows (a client's 5 KB value is not echoed back).
const MAX_QUOTED: usize = 80;

/// `message` with every `"quoted"` or `` `quoted` `` part longer than [`MAX_QUOTED`]
/// characters cut short: an error names what was wrong and shows enough of the value to
/// recognise it, never all of it. Every [`ApiError`] message goes through it; call it directly
/// only on text that reaches a client otherwise.
pub fn clip_quoted(message: String) -> String {
    if message.len() <= 2 * MAX_QUOTED {
        return message;
    }
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message.as_str();
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        // The closing quote, skipping escaped ones.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => {
                    close = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = close.unwrap_or(rest.len());
        let quoted = &rest[..end];
        if quoted.chars().count() > MAX_QUOTED {
            out.extend(quoted.chars().take(MAX_QUOTED));
            out.push('…');
        } else {
            out.push_str(quoted);
        }
        match close {
            Some(i) => {
                out.push(quote);
                rest = &rest[i + 1..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            message: clip_quoted(message.into()),
            code,
            owner_addr: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn not_owner(owner_addr: impl Into<String>) -> Self {
        let owner_addr = owner_addr.into();
        Self {
            message: format!("this node does not own the cart's shard; owner is at {owner_addr}"),
            code: ErrorCode::NotOwner,
            owner_addr: Some(owner_addr),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// The gRPC form: status code from the table, the stable code and extras in metadata.
    pub fn to_status(&self) -> tonic::Status {
        let mut status = tonic::Status::new(grpc_code(self.code), self.message.clone());
        let md = status.metadata_mut();
        md.insert(
            GRPC_ERROR_CODE_KEY,
            tonic::metadata::MetadataValue::from_static(self.code.as_str()),
        );
        if let Some(addr) = &self.owner_addr
            && let Ok(v) = addr.parse()
        {
            md.insert(GRPC_OWNER_ADDR_KEY, v);
        }
        if let Some(after) = self.retry_after
            && let Ok(v) = after.as_secs().max(1).to_string().parse()
        {
            md.insert(GRPC_RETRY_AFTER_KEY, v);
        }
        status
    }

    /// The inverse of [`ApiError::to_status`]; a status from elsewhere maps by its gRPC code.
    pub fn from_status(status: &tonic::Status) -> Self {
        let md = status.metadata();
        let code = md
            .get(GRPC_ERROR_CODE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse)
            .unwrap_or_else(|| from_grpc_code(status.code()));
        let message = if status.message().is_empty() {
            code.description().to_owned()
        } else {
            status.message().to_owned()
        };
        Self {
            message,
            code,
            owner_addr: md
                .get(GRPC_OWNER_ADDR_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            retry_after: md
                .get(GRPC_RETRY_AFTER_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs),
        }
    }

    /// What a call to one of our gRPC services (`peer`: "aggregate node", "projection", ...)
    /// failed with. A status carrying our error code came from the service and keeps it; one
    /// without came from the transport (connection refused or reset, HTTP/2 error, deadline):
    /// the service may be gone, and since the calls are safe to repeat, that is `unavailable`
    /// (or `timeout`), not `internal`.
    ///
    /// A service that refused the caller's identity is a deployment error (certificates), not
    /// something the end user did or can fix: it is logged here and answered `internal`, so a
    /// shopper never sees a 403 naming the services.
    pub fn from_upstream(peer: &str, status: &tonic::Status) -> Self {
        if let Some(who) = status.metadata().get(GRPC_DENIED_CALLER_KEY) {
            let who = who.to_str().unwrap_or("?");
            tracing::error!(
                peer,
                caller = who,
                reason = status.message(),
                "the {peer} refused this service's TLS identity: check GRPC_TLS_CERT_FILE"
            );
            return Self::internal(format!(
                "the {peer} refused this service (a deployment error, logged)"
            ));
        }
        if status.metadata().get(GRPC_ERROR_CODE_KEY).is_some() {
            return Self::from_status(status);
        }
        match status.code() {
            tonic::Code::DeadlineExceeded => {
                Self::new(ErrorCode::Timeout, format!("the {peer} timed out"))
            }
            tonic::Code::Unknown
            | tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::Internal => {
                Self::unavailable(format!("the {peer} is unreachable: {}", status.message()))
            }
            _ => Self::from_status(status),
        }
    }

    /// The JSON body, `{"error": ..., "code": ...}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.message, "code": self.code })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<&ApiError> for cart_domain::MutationError {
    fn from(e: &ApiError) -> Self {
        cart_domain::MutationError {
            message: e.message.clone(),
            code: e.code.as_str().to_owned(),
            status_code: e.status().as_u16(),
        }
    }
}

impl From<cart_domain::DomainError> for ApiError {
    fn from(e: cart_domain::DomainError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<cart_domain::ids::IdError> for ApiError {
    fn from(e: cart_domain::ids::IdError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, axum::Json(self.body())).into_response();
        let retry_after = self.retry_after.or(match self.code {
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Draining => {
                Some(Duration::from_secs(1))
            }
            ErrorCode::Timeout => Some(Duration::from_secs(1)),
            _ => None,
        });
        if let Some(after) = retry_after {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_refusing_the_callers_identity_is_not_passed_on_as_the_users_fault() {
        let refused = crate::grpc_tls::Caller::named("projection")
            .require("Execute", &["gateway", "runner"])
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        let e = ApiError::from_upstream("aggregate node", &refused);
        assert_eq!(e.code, ErrorCode::Internal, "{e}");
        assert!(!e.message.contains("projection"), "{e}");
        // A refusal of the request itself (another tenant) still reaches the user as it is.
        let tenant = tonic::Status::from(ApiError::new(
            ErrorCode::PermissionDenied,
            "tenant \"a\" does not match the x-tenant-id header",
        ));
        assert_eq!(
            ApiError::from_upstream("projection", &tenant).code,
            ErrorCode::PermissionDenied
        );
    }

    #[test]
    fn long_quoted_values_are_cut_short_in_messages() {
        let long = "A".repeat(5000);
        let e = ApiError::invalid(format!(
            "quantity: invalid type: string \"{long}\", expected u32"
        ));
        assert!(e.message.len() < 200, "{}", e.message);
        assert!(
            e.message
                .starts_with("quantity: invalid type: string \"AAAA")
        );
        assert!(e.message.ends_with("…\", expected u32"), "{}", e.message);
        let short = "sku \"NOPE\" is not in the catalog";
        assert_eq!(ApiError::invalid(short).message, short);
        let escaped = format!(
            "got \"{}\\\"{}\" and \"x\"",
            "b".repeat(100),
            "c".repeat(100)
        );
        let clipped = ApiError::invalid(escaped).message;
        assert!(clipped.ends_with("…\" and \"x\""), "{clipped}");
        let field = clip_quoted(format!("unknown field `{long}`, expected `sku`"));
        assert!(
            field.len() < 150 && field.ends_with("…`, expected `sku`"),
            "{field}"
        );
    }

    #[test]
    fn every_code_round_trips_and_is_documented() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
            assert!(!code.description().is_empty());
            assert_ne!(grpc_code(code), tonic::Code::Ok);
            assert!(http_status(code).as_u16() >= 400);
        }
    }

    #[test]
    fn table_rows() {
        let rows = [
            (
                ErrorCode::InvalidArgument,
                400,
                tonic::Code::InvalidArgument,
                false,
            ),
            (
                ErrorCode::PayloadTooLarge,
                413,
                tonic::Code::InvalidArgument,
                false,
            ),
            (
                ErrorCode::Unauthenticated,
                401,
                tonic::Code::Unauthenticated,
                false,
            ),
            (
                ErrorCode::PermissionDenied,
                403,
                tonic::Code::PermissionDenied,
                false,
            ),
            (ErrorCode::VersionConflict, 409, tonic::Code::Aborted, true),
            (
                ErrorCode::PreconditionFailed,
                412,
                tonic::Code::FailedPrecondition,
                false,
            ),
            (
                ErrorCode::CartLocked,
                409,
                tonic::Code::FailedPrecondition,
                false,
            ),
            (
                ErrorCode::RateLimited,
                429,
                tonic::Code::ResourceExhausted,
                true,
            ),
            (ErrorCode::Unavailable, 503, tonic::Code::Unavailable, true),
            (ErrorCode::Timeout, 504, tonic::Code::DeadlineExceeded, true),
            (ErrorCode::Internal, 500, tonic::Code::Internal, false),
        ];
        for (code, http, grpc, retry) in rows {
            assert_eq!(http_status(code).as_u16(), http, "{code}");
            assert_eq!(grpc_code(code), grpc, "{code}");
            assert_eq!(code.retry_safe(), retry, "{code}");
        }
    }

    #[test]
    fn a_refused_mutation_tells_the_storefront_its_code_and_http_status() {
        let e = ApiError::from(cart_domain::DomainError::UnknownLine(9));
        let m = cart_domain::MutationError::from(&e);
        assert_eq!(
            (m.message.as_str(), m.code.as_str(), m.status_code),
            ("the cart has no line 9", "unknown_line", 404)
        );
    }

    #[test]
    fn status_round_trip_keeps_code_and_extras() {
        for &code in ErrorCode::ALL {
            let e = ApiError::new(code, "boom");
            let back = ApiError::from_status(&e.to_status());
            assert_eq!(back, e);
        }
        let e = ApiError::not_owner("10.0.0.2:50051").with_retry_after(Duration::from_secs(3));
        let back = ApiError::from_status(&e.to_status());
        assert_eq!(back.owner_addr.as_deref(), Some("10.0.0.2:50051"));
        assert_eq!(back.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(back.code, ErrorCode::NotOwner);
    }

    #[test]
    fn foreign_status_maps_by_grpc_code() {
        let e = ApiError::from_status(&tonic::Status::unavailable(""));
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(!e.message.is_empty());
        let e = ApiError::from_status(&tonic::Status::deadline_exceeded("slow"));
        assert_eq!(e.code, ErrorCode::Timeout);
    }

    #[test]
    fn upstream_transport_failures_are_unavailable_but_service_errors_keep_their_code() {
        // From the transport (no code of ours): the peer is unreachable, try again or elsewhere.
        let e = ApiError::from_upstream("projection", &tonic::Status::internal("h2 reset"));
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(
            e.message.contains("projection is unreachable: h2 reset"),
            "{e}"
        );
        let e = ApiError::from_upstream("runner", &tonic::Status::deadline_exceeded(""));
        assert_eq!(e.code, ErrorCode::Timeout);
        // From the service: its own code, even `internal`.
        let sent = ApiError::new(ErrorCode::Internal, "bug").to_status();
        assert_eq!(
            ApiError::from_upstream("runner", &sent).code,
            ErrorCode::Internal
        );
        let sent = ApiError::invalid("bad sku").to_status();
        assert_eq!(
            ApiError::from_upstream("runner", &sent).code,
            ErrorCode::InvalidArgument
        );
    }

    #[tokio::test]
    async fn http_response_is_json_with_retry_after() {
        let resp = ApiError::new(ErrorCode::RateLimited, "slow down").into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "slow down", "code": "rate_limited"})
        );
    }
}
