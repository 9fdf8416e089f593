//! The versioned API: carts by id with `ETag` / `If-Match` / `If-None-Match`, commands with
//! `Idempotency-Key`, live updates as server-sent events, and each cart's history of accepted
//! commands.

pub mod command_body;
pub mod events;
pub mod execute;
pub mod history;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cart_domain::{CartPrice, CartView, MutationReply};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use shared::{ApiError, CartId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::command_body::CommandsRequest;
use self::execute::{etag, none_match};
use crate::request::context::Ctx;
use crate::request::json::{JsonBody, NoBody};
use crate::request::params::Params;
use crate::schema::{CommandErrors, CreateErrors, ReadErrors};
use crate::state::AppState;
use crate::upstream::aggregate::VersionedCart;

pub const TAG: &str = "v1";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_cart))
        .routes(routes!(get_cart))
        .routes(routes!(run_commands))
        .routes(routes!(events::events))
        .routes(routes!(history::history))
}

#[derive(Deserialize)]
pub struct CartPath {
    id: String,
}

impl CartPath {
    pub fn cart(&self) -> Result<CartId, ApiError> {
        Ok(CartId::parse(&self.id)?)
    }
}

/// A new cart id and its (empty) cart. Nothing is stored until the first command; the request
/// takes no body ([`NoBody`]): a cart's lines are sent as its commands.
#[utoipa::path(post, path = "/v1/carts", tag = TAG,
    responses(
        (status = 201, description = "Created", body = CartView<CartPrice>,
            headers(("location" = String, description = "/v1/carts/{id}"), ("etag" = String, description = "\"0\""))),
        CreateErrors))]
pub async fn create_cart(Ctx(_ctx): Ctx, _: NoBody) -> Response {
    let id = CartId::generate();
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v1/carts/{id}")),
            (header::ETAG, "\"0\"".to_owned()),
        ],
        Json(VersionedCart::empty(&id).v1()),
    )
        .into_response()
}

/// The cart, with its version as `ETag`; `If-None-Match` with that version gives 304.
#[utoipa::path(get, path = "/v1/carts/{id}", tag = TAG, operation_id = "v1_get_cart",
    params(("id" = String, Path, description = "Cart id"),
        ("if-none-match" = Option<String>, Header, description = "A version from ETag")),
    responses(
        (status = 200, description = "The cart", body = CartView<CartPrice>,
            headers(("etag" = String, description = "The cart's version, e.g. \"7\""))),
        (status = 304, description = "Unchanged since the given version"),
        ReadErrors))]
pub async fn get_cart(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Params(p): Params<CartPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snap = s.upstream.get(&ctx, &p.cart()?).await?;
    let tag = etag(snap.version);
    if none_match(&headers, snap.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    Ok(([(header::ETAG, tag)], Json(snap.v1())).into_response())
}

/// Run one command or a list. `Idempotency-Key` makes a retry return the original outcome;
/// `If-Match` makes the change conditional on the cart's version.
#[utoipa::path(post, path = "/v1/carts/{id}/commands", tag = TAG,
    params(("id" = String, Path, description = "Cart id"),
        ("idempotency-key" = Option<String>, Header, description = "Client key; a retry with the same key and body returns the original response"),
        ("if-match" = Option<String>, Header, description = "Expected version (from ETag); mismatch is 412")),
    request_body = CommandsRequest,
    responses(
        (status = 200, description = "The cart after the commands; one outcome per command",
            body = MutationReply<CartPrice>, headers(("etag" = String, description = "The cart's new version"))),
        CommandErrors))]
pub async fn run_commands(
    State(s): State<AppState>,
    Ctx(ctx): Ctx,
    Params(p): Params<CartPath>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    execute::commands(&s, &ctx, &p.cart()?, &headers, body).await
}
