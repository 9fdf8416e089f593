//! The OpenAPI 3 document, generated from the code: every route is registered through
//! `utoipa_axum` from its handler's `#[utoipa::path]`, so the router and the document cannot
//! drift apart. A handler served at more than one path (`/cart` and `/cart/`, the cookie and
//! `/cart/byid/{cartId}` variants) is registered once per path through [`alias`] / [`by_id`],
//! which rewrite the documented path together with the routed one.

use axum::Extension;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem, Paths};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, RefOr, Required};
use utoipa_axum::router::UtoipaMethodRouter;

use crate::state::AppState;
use crate::storefront::cart_ref::CART_ID_PARAM;

/// A handler with its documented path(s), as `utoipa_axum::routes!` returns it.
pub type Routes = UtoipaMethodRouter<AppState>;

use crate::request::context::COOKIE_ROOT;

/// Where the by-id twins of the cookie-based storefront routes live.
const BY_ID_ROOT: &str = "/cart/byid/{cartId}";

/// Title, version and description of the document.
pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Cart gateway")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Storefront API (go-cart-actor compatible, cookie `cartid`), versioned /v1 API, \
                     admin API and operational endpoints of the cart platform. Every error is \
                     `{\"error\": \"...\", \"code\": \"...\"}`.",
                ))
                .build(),
        )
        .build()
}

/// The same handler at `path` instead (e.g. `/cart` → `/cart/`); `suffix` keeps operation ids
/// unique.
pub fn alias(path: &str, routes: Routes, suffix: &str) -> Routes {
    rewrite(routes, |_| path.to_owned(), suffix, false)
}

/// The by-id twin of a cookie route: `/cart/...` → `/cart/byid/{cartId}/...`.
pub fn by_id(routes: Routes) -> Routes {
    rewrite(
        routes,
        |p| {
            let rest = p.strip_prefix(COOKIE_ROOT).unwrap_or(p);
            format!("{BY_ID_ROOT}{rest}")
        },
        "by_id",
        true,
    )
}

fn rewrite(
    (schemas, paths, method_router): Routes,
    to: impl Fn(&str) -> String,
    suffix: &str,
    cart_param: bool,
) -> Routes {
    let mut out = Paths::new();
    for (path, mut item) in paths.paths {
        for op in operations(&mut item) {
            op.operation_id = op.operation_id.take().map(|id| format!("{id}_{suffix}"));
        }
        if cart_param {
            let param = ParameterBuilder::new()
                .name(CART_ID_PARAM)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("Cart id (instead of the cartid cookie)"))
                .schema(Some(utoipa::openapi::schema::Object::with_type(
                    utoipa::openapi::schema::Type::String,
                )))
                .build();
            item.parameters
                .get_or_insert_with(Vec::new)
                .insert(0, RefOr::T(param));
        }
        out.paths.insert(to(&path), item);
    }
    (schemas, out, method_router)
}

/// Every operation of a path item.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document, serialized once at startup (every response shares these bytes).
#[derive(Clone)]
pub struct Document(pub Bytes);

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3 document of every route", content_type = "application/json")))]
pub async fn document(Extension(doc): Extension<Document>) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}
