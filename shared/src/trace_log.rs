//! `trace_id` and `span_id` in every JSON log line written inside a span, so a log search and
//! the trace backend find each other: copy a trace id from a log line into the tracing UI, or
//! a trace's id into the log search.
//!
//! The OpenTelemetry layer makes the entered span's context the current OpenTelemetry
//! [`Context`](opentelemetry::Context) (its "context activation"); [`WithTraceIds`] wraps the
//! JSON formatter and puts that context's ids first in the line. Outside any span (start-up,
//! background loops) the line is unchanged. The ids are there whether or not the trace is
//! sampled or exported: they always correlate the lines of one request.

use std::fmt;

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event formatter that adds `"trace_id"` and `"span_id"` to each line.
pub struct WithTraceIds<F>(F);

impl WithTraceIds<Format<Json>> {
    /// The JSON format the services log in: the current span's fields, no span list.
    pub fn json() -> Self {
        Self(
            tracing_subscriber::fmt::format()
                .json()
                .with_current_span(true)
                .with_span_list(false),
        )
    }
}

impl<S, F> FormatEvent<S, JsonFields> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    F: FormatEvent<S, JsonFields>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() || ctx.lookup_current().is_none() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                sc.trace_id(),
                sc.span_id()
            ),
            None => writer.write_str(&line),
        }
    }
}

/// Only the formatter's wrapping is tested here; `shared/tests/process.rs` checks the ids in
/// the lines `telemetry::init` writes.
#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::test_support::Captured;

    #[test]
    fn lines_inside_a_span_carry_its_ids_and_others_do_not() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let logs = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(WithTraceIds::json())
                    .with_writer(logs.clone()),
            )
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("request", cart = "c1");
            span.in_scope(|| {
                tracing::info!(n = 1, "inside");
                let cx = opentelemetry::Context::current();
                let sc = cx.span().span_context().clone();
                (sc.trace_id().to_string(), sc.span_id().to_string())
            })
        });
        let text = logs.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let line = |msg: &str| {
            lines
                .iter()
                .find(|v| v["fields"]["message"] == msg)
                .unwrap_or_else(|| panic!("no {msg:?} in {text}"))
        };
        let inside = line("inside");
        assert_eq!(inside["trace_id"], trace_id.as_str());
        assert_eq!(inside["span_id"], span_id.as_str());
        assert_eq!(inside["span"]["cart"], "c1");
        assert_eq!(inside["fields"]["n"], 1);
        assert_eq!(trace_id.len(), 32);
        let outside = line("outside");
        assert!(outside.get("trace_id").is_none(), "{outside}");
    }
}
