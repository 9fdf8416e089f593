//! Behaviour every route shares, as layers around the whole router: the edge (request context
//! and ids, so even a panic's 500 carries `x-correlation-id`; metrics; JSON 405/413 instead of
//! axum's empty or plain-text ones), panics turned into JSON 500s, and the body limit; unknown
//! paths get a JSON 404.

use std::any::Any;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::Route;
use futures::future::BoxFuture;
use http::{HeaderValue, Method, StatusCode};
use shared::{ApiError, ErrorCode};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument as _;

use crate::metrics as m;
use crate::request::context::{self, Auth};
use crate::request::json::too_large;

/// Wraps `router` (already given its state) in the shared edge layers. CORS, when origins
/// are allowed, is outermost: a browser's preflight is answered before tenant rules and rate
/// limits, which it could not satisfy (it carries no credentials).
pub fn apply(
    router: Router,
    auth: Arc<Auth>,
    body_limit: usize,
    cors_origins: &[HeaderValue],
) -> Router {
    // A path no route has; under `/admin/` still an admin request, audited like the others
    // (the audit runs here, on unmatched requests only, not on every request's path).
    let unmatched =
        axum::routing::any(not_found).layer(axum::middleware::from_fn(crate::admin::audit::record));
    let router = router
        .fallback_service(unmatched)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(Edge::layer(auth, body_limit));
    if cors_origins.is_empty() {
        return router;
    }
    router.layer(cors(cors_origins))
}

/// Cross-origin calls from `origins`, with the `cartid` cookie: the methods and headers the
/// APIs use, and the response headers a client needs to read (versions, ids, retry hints).
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION, RETRY_AFTER};
    use http::{HeaderName, Method};
    let name = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            CONTENT_TYPE,
            IF_MATCH,
            IF_NONE_MATCH,
            name("idempotency-key"),
            name(shared::headers::API_KEY),
            name(shared::headers::TENANT_ID),
            name(shared::headers::CORRELATION_ID),
            name(shared::headers::TRACEPARENT),
            name(shared::headers::TRACESTATE),
        ])
        .expose_headers([
            ETAG,
            LOCATION,
            RETRY_AFTER,
            name(shared::headers::CORRELATION_ID),
            name(shared::headers::REQUEST_ID),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no route for {} {}; see /openapi.json",
            req.method(),
            shared::error::clip(req.uri().path())
        ),
    )
}

/// One layer for what every request gets at the edge (each layer of its own costs a service
/// and a future per request): its request context, ids and span ([`context::begin`], and
/// [`context::Attached::finish`] on the response, errors included); a declared body over the
/// limit refused before anything reads it (also on routes that ignore their body; a chunked
/// one fails in the JSON extractor when it passes the limit); axum's empty 405 given our JSON
/// body; and the request counted by route template and status, a panic's 500 too.
///
/// A tower service rather than `axum::middleware::from_fn`, which per request also clones and
/// boxes the inner route behind a `Next` (measured with cart-bench: the gateway's three layers
/// as `from_fn` cost ~7 % of the `http` mode's requests per second).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    auth: Arc<Auth>,
    body_limit: usize,
    series: Arc<m::RequestSeries>,
}

impl Edge<()> {
    pub fn layer(
        auth: Arc<Auth>,
        body_limit: usize,
    ) -> impl tower::Layer<Route, Service = Edge<Route>> + Clone {
        let series = Arc::new(m::RequestSeries::default());
        tower::layer::layer_fn(move |inner| Edge {
            inner,
            auth: auth.clone(),
            body_limit,
            series: series.clone(),
        })
    }
}

impl<S> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let attached = context::begin(&self.auth, &mut req);
        let span = attached.span.clone();
        let method = req.method().clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        let series = self.series.clone();
        let done = move |resp: Response| {
            let mut resp = json_method_not_allowed(resp, &method, route.as_ref());
            let route = route.as_ref().map(MatchedPath::as_str);
            series.record(&method, route, resp.status(), started);
            attached.finish(&mut resp);
            resp
        };
        if declares_over(&req, self.body_limit) {
            let resp = too_large(Some(self.body_limit)).into_response();
            return Box::pin(std::future::ready(Ok(done(resp))));
        }
        let answer = span.in_scope(|| self.inner.call(req));
        Box::pin(async move {
            let Ok(resp) = answer.instrument(span).await;
            Ok(done(resp))
        })
    }
}

fn declares_over(req: &Request, limit: usize) -> bool {
    req.headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64)
}

/// `resp`, or, when it is axum's empty 405, our JSON error. It names the route's template
/// (`/cart/add/{sku}`), not the path, so no client value is echoed and nothing of the request
/// is kept for this rare case. axum adds the `Allow` header after the route's layers have
/// run, so it is on the response but not readable here.
fn json_method_not_allowed(
    resp: Response,
    method: &Method,
    route: Option<&MatchedPath>,
) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(http::header::CONTENT_TYPE)
    {
        return resp;
    }
    let route = route.map_or("this path", MatchedPath::as_str);
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {route}; the Allow header lists the methods that are"),
    )
    .into_response()
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    tracing::error!(panic = %detail, "handler panicked");
    metrics::counter!(m::PANICS).increment(1);
    ApiError::internal(
        "an unexpected error occurred; it is logged with the x-correlation-id of this response",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use std::collections::HashMap;
    use tower::ServiceExt;

    use crate::request::json::JsonBody;

    async fn boom() -> &'static str {
        panic!("kaboom")
    }

    fn app() -> Router {
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/echo", post(|body: String| async move { body }))
            .route("/item/{id}", post(|| async { "ok" }))
            .route(
                "/json",
                post(|JsonBody(v): JsonBody<serde_json::Value>| async move { v.to_string() }),
            );
        apply(
            router,
            Arc::new(Auth::new(None, HashMap::new(), "")),
            16,
            &[],
        )
    }

    async fn call(req: Request<Body>) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let resp = app().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body).unwrap(),
        )
    }

    #[tokio::test]
    async fn edge_errors_are_json_and_carry_the_correlation_id() {
        let (status, headers, body) =
            call(Request::get("/boom").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["code"], "internal");
        assert!(headers.contains_key(shared::headers::CORRELATION_ID));

        let (status, _, body) = call(Request::get("/nope").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "not_found");

        let (status, headers, body) =
            call(Request::delete("/echo").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["code"], "method_not_allowed");
        assert_eq!(headers[http::header::ALLOW], "POST");
        assert_eq!(
            body["error"],
            "DELETE is not allowed on /echo; the Allow header lists the methods that are"
        );
        // The route's template, not the client's value.
        let long = "v".repeat(5000);
        let (status, _, body) = call(
            Request::get(format!("/item/{long}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            body["error"],
            "GET is not allowed on /item/{id}; the Allow header lists the methods that are"
        );

        let big = "x".repeat(17);
        let (status, _, body) = call(
            Request::post("/echo")
                .header("content-length", "17")
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["code"], "payload_too_large");

        // A body without Content-Length (chunked) hits the limit while being read.
        let chunks = futures::stream::iter(
            ["{\"a\":", "\"0123456789abcdef\"}"].map(Ok::<_, std::io::Error>),
        );
        let (status, _, body) = call(
            Request::post("/json")
                .body(Body::from_stream(chunks))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["code"], "payload_too_large");

        let (status, headers, _) = call(
            Request::get("/nope")
                .header(shared::headers::CORRELATION_ID, "abc-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers[shared::headers::CORRELATION_ID], "abc-1");
    }
}
