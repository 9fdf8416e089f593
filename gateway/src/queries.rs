//! Query routes served by the projection's `QueryService` (carts by user, abandoned carts, SKU
//! demand, orders) join the API here once the projection crate exposes its client: this
//! router is merged with the others in `app`, so adding a route is adding it below.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// No query routes yet.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
