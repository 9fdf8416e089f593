//! Joining the spans each service exports into one trace per request: the W3C trace context
//! travels with every request (HTTP → gRPC metadata → NATS headers → provider HTTP), read and
//! written by the global propagator ([`crate::propagation`]).
//!
//! A service makes its span for a request a child of the caller's context ([`continue_trace`],
//! or [`follow`] for a carrier read directly) and sends [`downstream`] contexts on, which name
//! the span that is current, so the next service's spans nest under it. Without a caller
//! context the span is a root and the sampler decides whether the trace is recorded; an
//! unsampled decision travels on (flags `00`) so the next services drop their spans too.

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::headers::RequestContext;
use crate::propagation::{HttpHeaders, TraceFields, extract};

/// Make `span` a child of the caller's span named by `ctx.trace` (no-op without one).
pub fn continue_trace(span: &tracing::Span, ctx: &RequestContext) {
    follow(span, &ctx.trace.context());
}

/// Make `span` a child of `parent` (as returned by [`crate::propagation::extract`]) when it
/// names a valid span; otherwise `span` stays a root (or the child of the current span).
pub fn follow(span: &tracing::Span, parent: &opentelemetry::Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
        let _ = span.set_parent(parent.clone());
    }
}

/// The span of one incoming gRPC call (every server built by
/// [`crate::grpc_tls::GrpcTls::server_builder`]): `grpc` with the method's path, the child of
/// the caller's span named in the metadata. The handler's own spans nest under it.
pub fn grpc_server_span(req: &http::Request<()>) -> tracing::Span {
    grpc_span(req.uri().path(), &HttpHeaders(req.headers()))
}

/// The span of one call on a multiplexed stream (`CartService.ExecuteStream`), as
/// [`grpc_server_span`] for a unary call: `grpc` with the method the call stands for, the child
/// of the caller's span named in the call's own metadata map (the call runs in a task of its
/// own, outside the stream's span).
pub fn stream_call_span(rpc: &str, md: &crate::headers::CallMetadata) -> tracing::Span {
    grpc_span(rpc, md)
}

fn grpc_span(rpc: &str, carrier: &dyn opentelemetry::propagation::Extractor) -> tracing::Span {
    let span = tracing::info_span!("grpc", rpc = %rpc);
    follow(&span, &extract(carrier));
    span
}

/// The context to send to the next hop: `ctx` with the current span as the parent. When no
/// span is current (or no OpenTelemetry layer is installed) the caller's context goes on as is.
pub fn downstream(ctx: &RequestContext) -> RequestContext {
    let current = tracing::Span::current().context();
    if !current.span().span_context().is_valid() {
        return ctx.clone();
    }
    RequestContext {
        trace: TraceFields::of(&current),
        ..ctx.clone()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::headers::{TRACEPARENT, TRACESTATE};
    use cart_domain::ids::TenantId;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn incoming(tp: &str) -> RequestContext {
        let mut h = http::HeaderMap::new();
        h.insert(TRACEPARENT, tp.parse().unwrap());
        h.insert(TRACESTATE, "vendor=x".parse().unwrap());
        RequestContext {
            trace: TraceFields::extract(&HttpHeaders(&h)),
            ..RequestContext::new(TenantId::parse("t").unwrap())
        }
    }

    fn with_otel(f: impl FnOnce()) {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn spans_join_the_incoming_trace_and_downstream_names_the_current_span() {
        with_otel(|| {
            let ctx = incoming(TP);
            let span = tracing::info_span!("request");
            continue_trace(&span, &ctx);
            let _entered = span.enter();
            let sent = downstream(&ctx);
            assert_eq!(sent.trace.trace_id(), ctx.trace.trace_id(), "same trace");
            let own = span.context().span().span_context().span_id().to_string();
            let tp = sent.trace.traceparent().unwrap();
            assert!(tp.contains(&own), "our span is the parent: {tp}");
            assert!(tp.ends_with("-01"), "still sampled: {tp}");
            assert_eq!(sent.trace.tracestate(), Some("vendor=x"), "tracestate kept");
            assert_eq!(
                (sent.tenant, sent.correlation_id),
                (ctx.tenant, ctx.correlation_id)
            );
        });
    }

    #[test]
    fn without_a_parent_the_sampler_decides_and_the_decision_travels() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::AlwaysOff,
            )))
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let ctx = RequestContext::new(TenantId::parse("t").unwrap());
            let span = tracing::info_span!("request");
            continue_trace(&span, &ctx);
            let sent = span.in_scope(|| downstream(&ctx));
            let tp = sent.trace.traceparent().expect("a root still has ids");
            assert!(tp.ends_with("-00"), "the sampler said no: {tp}");
            assert!(!sent.trace.sampled());

            // A sampled parent wins over the root sampler (parent-based).
            let ctx = incoming(TP);
            let span = tracing::info_span!("request");
            continue_trace(&span, &ctx);
            let sent = span.in_scope(|| downstream(&ctx));
            assert!(sent.trace.sampled());
        });
    }

    #[tokio::test]
    async fn without_an_exporter_the_callers_context_goes_on() {
        let ctx = incoming(TP);
        let span = tracing::info_span!("request");
        continue_trace(&span, &ctx);
        let sent = async { downstream(&ctx) }.instrument(span).await;
        assert_eq!(sent.trace, ctx.trace);
    }
}
