//! The audit trail of the admin API: one log line (target `audit`) for every admin request,
//! allowed or refused, with who made it, what it asked for and what came of it.
//!
//! "Who" is the credential that authorised it: `admin-token` (the one `GATEWAY_ADMIN_TOKEN`),
//! or `unauthenticated` when the bearer token was missing or wrong. The token itself never
//! appears; the request and correlation ids tie the line to the request log.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use shared::headers::{CORRELATION_ID, REQUEST_ID};

/// Middleware around the API: requests under `/admin/` are recorded, others pass untouched.
pub async fn record(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/admin/") {
        return next.run(req).await;
    }
    let method = req.method().clone();
    // The path and query (a drain's wait, a dead-letter filter), clipped.
    let action = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let action: String = action.chars().take(256).collect();
    // Read before the await: a borrow of the request (its body is not `Sync`) must not live
    // across it.
    let (request_id, correlation_id) = {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .chars()
                .take(128)
                .collect::<String>()
        };
        (header(REQUEST_ID), header(CORRELATION_ID))
    };
    let response = next.run(req).await;
    let status = response.status();
    let who = if status == StatusCode::UNAUTHORIZED {
        "unauthenticated"
    } else {
        "admin-token"
    };
    let result = if status.is_success() {
        "ok"
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        "denied"
    } else {
        "failed"
    };
    tracing::info!(
        target: "audit",
        who,
        %method,
        action,
        status = status.as_u16(),
        result,
        request_id,
        correlation_id,
        "admin action"
    );
    response
}
