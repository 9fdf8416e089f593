//! Tracing in the mock provider, so a checkout's trace shows the provider's side too: each
//! request it serves is a `provider.mock` span joined to the caller's trace (the runner's
//! provider call, or whoever pays an order through `/__mock/...` with a `traceparent`), and the
//! calls it makes back to the merchant (validation, push) carry that span's context, as a
//! provider propagating W3C trace context would. The real provider's pushes come without one:
//! then the gateway starts a new trace.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Middleware: the request runs in a span that is the child of its `traceparent`.
pub async fn span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "provider.mock",
        method = %req.method(),
        path = %req.uri().path()
    );
    let parent = shared::propagation::extract(&shared::propagation::HttpHeaders(req.headers()));
    shared::spans::follow(&span, &parent);
    next.run(req).instrument(span).await
}

/// The current span's trace context, as headers for a call back to the merchant.
pub fn headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let cx = tracing::Span::current().context();
    shared::propagation::inject(&cx, &mut shared::propagation::HttpHeadersMut(&mut headers));
    headers
}
