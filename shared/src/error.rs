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
/// gRPC metadata key (and HTTP header) on a refusal the cart kept and answers again (a retry of
/// a refused request).
pub const REPLAYED_KEY: &str = "idempotent-replayed";
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

/// Whether `status` carries one of our codes (`x-error-code`): a service's own answer, not
/// one the transport made.
pub fn carries_code(status: &tonic::Status) -> bool {
    status.metadata().get(GRPC_ERROR_CODE_KEY).is_some()
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
    /// The stored answer to an earlier try of the same keyed request (`Idempotent-Replayed`).
    #[serde(skip)]
    pub replayed: bool,
}

/// Longest quoted value an error message shows (a client's 5 KB value is not echoed back).
const MAX_QUOTED: usize = 80;

/// Longest error message in characters, whatever it quotes: what is left is cut with `…`.
const MAX_MESSAGE: usize = 600;

/// `value` (a client's text: a key, a path) as an error message shows it: at most
/// [`MAX_QUOTED`] characters, then `…`.
pub fn clip(value: &str) -> std::borrow::Cow<'_, str> {
    cut(value, MAX_QUOTED)
}

/// `value` cut to `max` characters, with `…` when anything was left out.
pub fn cut(value: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &value[..at]).into(),
        None => value.into(),
    }
}

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
        out.push_str(&clip(&rest[..end]));
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

/// `message` cut to [`MAX_MESSAGE`] characters: a last bound for text a message takes from a
/// client unquoted.
fn bounded(message: String) -> String {
    match cut(&message, MAX_MESSAGE) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(short) => short,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            message: bounded(clip_quoted(message.into())),
            code,
            owner_addr: None,
            retry_after: None,
            replayed: false,
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
            replayed: false,
        }
    }

    /// This refusal, marked as the stored answer to an earlier try of the same request.
    pub fn replayed(mut self) -> Self {
        self.replayed = true;
        self
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
        if self.replayed {
            md.insert(
                REPLAYED_KEY,
                tonic::metadata::MetadataValue::from_static("true"),
            );
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
            replayed: md.get(REPLAYED_KEY).is_some(),
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
        if carries_code(status) {
            return Self::from_status(status);
        }
        match status.code() {
            tonic::Code::DeadlineExceeded => {
                Self::new(ErrorCode::Timeout, format!("the {peer} timed out"))
            }
            // The peer gave up on a call it had (tonic's own deadline: "Timeout expired"):
            // what it did with it is unknown, not "unreachable".
            tonic::Code::Cancelled => Self::outcome_unknown(format!(
                "the {peer} gave up on the call ({})",
                status.message()
            )),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Internal => {
                Self::unavailable(format!("the {peer} is unreachable: {}", status.message()))
            }
            _ => Self::from_status(status),
        }
    }

    /// A command whose outcome is unknown (`what` happened after it was sent): `timeout`,
    /// never `unavailable`, which a client resends as a new command.
    pub fn outcome_unknown(what: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::Timeout,
            format!("{what}; it may have been applied"),
        )
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
        if self.replayed {
            resp.headers_mut()
                .insert(REPLAYED_KEY, HeaderValue::from_static("true"));
        }
        resp
    }
}

#[cfg(test)]
mod tests;
