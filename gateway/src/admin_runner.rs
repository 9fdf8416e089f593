//! Admin routes for the checkout runner (`/admin/runner/...`), calling RunnerAdmin over gRPC.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
