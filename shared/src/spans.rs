//! Joining the spans each service exports to the W3C trace context that travels with every
//! request (HTTP `traceparent` → gRPC metadata → NATS headers → provider HTTP), so one checkout
//! is one trace in the collector.
//!
//! A service makes its span for a request a child of the incoming `traceparent`
//! ([`continue_trace`]) and sends [`downstream`] contexts on, which carry the id of the span that
//! is current, so the next service's spans nest under it. Without an OTLP exporter both are
//! cheap no-ops (no OpenTelemetry layer is installed): the `traceparent` values still travel
//! and keep correlating logs.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::headers::RequestContext;
use crate::trace::Traceparent;

/// Make `span` a child of the caller's span named by `ctx.traceparent`.
pub fn continue_trace(span: &tracing::Span, ctx: &RequestContext) {
    let tp = &ctx.traceparent;
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(tp.trace_id().as_str()),
        SpanId::from_hex(tp.span_id().as_str()),
    ) else {
        return;
    };
    let flags = if tp.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The context to send to the next hop: the current span as parent when spans are exported,
/// else a fresh child of `ctx`'s trace (same trace id, new span id).
pub fn downstream(ctx: &RequestContext) -> RequestContext {
    let current = tracing::Span::current().context();
    let sc = current.span().span_context().clone();
    if sc.is_valid() {
        let value = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        );
        if let Ok(traceparent) = Traceparent::parse(&value) {
            return RequestContext {
                traceparent,
                ..ctx.clone()
            };
        }
    }
    ctx.child()
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use cart_domain::ids::TenantId;

    #[test]
    fn spans_join_the_incoming_trace_and_downstream_names_the_current_span() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let ctx = RequestContext::new(TenantId::parse("t").unwrap());
            let span = tracing::info_span!("request");
            continue_trace(&span, &ctx);
            let _entered = span.enter();
            let sent = downstream(&ctx);
            assert_eq!(
                sent.traceparent.trace_id(),
                ctx.traceparent.trace_id(),
                "same trace"
            );
            assert_ne!(
                sent.traceparent.span_id(),
                ctx.traceparent.span_id(),
                "our span is the parent"
            );
            let own = span.context().span().span_context().span_id().to_string();
            assert_eq!(sent.traceparent.span_id().as_str(), own);
            assert_eq!(
                (sent.tenant, sent.correlation_id),
                (ctx.tenant, ctx.correlation_id)
            );
        });
    }

    #[tokio::test]
    async fn without_an_exporter_downstream_still_continues_the_trace() {
        let ctx = RequestContext::new(TenantId::parse("t").unwrap());
        let span = tracing::info_span!("request");
        continue_trace(&span, &ctx);
        let sent = async { downstream(&ctx) }.instrument(span).await;
        assert_eq!(sent.traceparent.trace_id(), ctx.traceparent.trace_id());
        assert_ne!(sent.traceparent.span_id(), ctx.traceparent.span_id());
    }
}
