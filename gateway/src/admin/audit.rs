//! The audit trail of the admin API: one log line (target `audit`) for every admin request,
//! allowed or refused, with who made it, what it asked for and what came of it.
//!
//! "Who" is the credential that authorised it: `admin-token` (the one `GATEWAY_ADMIN_TOKEN`)
//! once the [`super::Admin`] check passed, else `unauthenticated` (a missing or wrong token,
//! and a request refused before the check: rate-limited, a method the route does not have).
//! The token itself never appears; the request and correlation ids tie the line to the
//! request log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use shared::headers::{CORRELATION_ID, REQUEST_ID};

/// Set by [`super::Admin`] when the request's token passed: who the audit line names.
#[derive(Clone, Default)]
pub struct Authenticated(Arc<AtomicBool>);

impl Authenticated {
    pub fn passed(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Middleware around the API: requests under `/admin/` are recorded, others pass untouched.
pub async fn record(mut req: Request, next: Next) -> Response {
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
    let authenticated = Authenticated::default();
    req.extensions_mut().insert(authenticated.clone());
    let response = next.run(req).await;
    let status = response.status();
    let who = if authenticated.0.load(Ordering::Relaxed) {
        "admin-token"
    } else {
        "unauthenticated"
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
        // An extension method is the client's text: bounded like the action.
        method = %shared::error::cut(method.as_str(), 32),
        action,
        status = status.as_u16(),
        result,
        request_id,
        correlation_id,
        "admin action"
    );
    response
}
