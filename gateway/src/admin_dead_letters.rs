//! Admin routes for dead letters (`/admin/dead-letters`), served by the projection.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
