//! The one place where the routers of every module are merged into the gateway's app.

use axum::middleware::from_fn;
use axum::{Extension, Router};
use bytes::Bytes;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin::{self, audit};
use crate::openapi::{self, Document};
use crate::request::layers;
use crate::request::rate_limit::ClientLimit;
use crate::state::AppState;
use crate::{checkout, ops, queries, storefront, v1};

/// Every route of the gateway with its OpenAPI document.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    // Client rate limits cover the API, not the probes and the document.
    let limit = ClientLimit {
        limits: state.limits.clone(),
        auth: state.auth.clone(),
    };
    let shop = OpenApiRouter::new()
        .merge(storefront::router())
        .merge(checkout::router())
        .merge(v1::router())
        .merge(queries::router())
        .layer(limit.clone());
    // Every admin request leaves an audit line (who, what, result), also one the rate limit
    // refused.
    let admin = OpenApiRouter::new()
        .merge(admin::router())
        .merge(admin::runner::router())
        .merge(admin::dead_letters::router())
        .merge(admin::history::router())
        .layer(limit)
        .layer(from_fn(audit::record));
    OpenApiRouter::with_openapi(openapi::base())
        .merge(shop)
        .merge(admin)
        .merge(ops::router())
        .routes(routes!(openapi::document))
}

/// The gateway as an axum app (tests can `oneshot` it).
pub fn app(state: AppState) -> Router {
    let (router, mut doc) = routes(&state).split_for_parts();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            admin::SECURITY,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    let json = doc.to_json().expect("the OpenAPI document serializes");
    let router = router
        .layer(Extension(Document(Bytes::from(json))))
        .with_state(state.clone());
    layers::apply(
        router,
        state.auth.clone(),
        state.cfg.body_limit_bytes,
        &state.cors_origins,
    )
}
