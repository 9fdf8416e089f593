//! The running service's admin path on its HTTP port: `POST /admin/rebuild` starts an online
//! rebuild in the background, `GET /admin/rebuild` shows its progress. Both need
//! `Authorization: Bearer <PROJECTION_ADMIN_TOKEN>`; without a configured token the admin API
//! is off (deny by default).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use shared::secret::Secret;
use shared::{ApiError, ErrorCode};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ops::rebuild::{Live, Rebuild};

pub const REBUILD_PATH: &str = "/admin/rebuild";

#[derive(Clone)]
pub struct AdminState {
    pub token: Secret,
    pub rebuild: Rebuild,
    pub live: Live,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(REBUILD_PATH, get(progress).post(start))
        .with_state(state)
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.token.is_empty() {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "the admin API is disabled: set PROJECTION_ADMIN_TOKEN to enable it",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !state.token.matches(given) {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "missing or wrong bearer token",
        ));
    }
    Ok(())
}

async fn progress(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e.into_response();
    }
    axum::Json(s.live.shared.rebuild.view()).into_response()
}

async fn start(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e.into_response();
    }
    if s.live.shared.rebuild.is_running() {
        return ApiError::new(ErrorCode::InvalidState, "a rebuild is already running")
            .into_response();
    }
    let (rebuild, live, shutdown) = (s.rebuild.clone(), s.live.clone(), s.shutdown.clone());
    s.tracker.spawn(async move {
        tokio::select! {
            // The outcome is logged and shown by GET /admin/rebuild.
            _ = rebuild.online(&live) => {}
            () = shutdown.cancelled() => {
                tracing::warn!("shutdown interrupted a rebuild; the old database stays in place");
            }
        }
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(s.live.shared.rebuild.view()),
    )
        .into_response()
}
