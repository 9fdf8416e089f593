//! W3C trace context (`traceparent` and `tracestate`) across HTTP, gRPC and NATS, read and
//! written by OpenTelemetry's global propagator only.
//!
//! Nothing in the platform parses a `traceparent` by hand. Each transport gets a small
//! [`Extractor`] / [`Injector`] over its header map ([`HttpHeaders`], which incoming gRPC
//! metadata is read as too, [`NatsHeaders`]), and the propagator decides what is valid: a
//! malformed value from a client is ignored (the request gets a new root span), never
//! forwarded, because only what the propagator writes back out ever travels on.
//!
//! [`TraceFields`] is the propagator's output kept as strings, so a trace can wait in a value
//! that outlives the request (a [`crate::RequestContext`] handed to a background task, a record
//! processed later) and be turned back into a parent [`Context`] there.

use std::sync::Once;

use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The W3C header carrying trace id, parent span id and the sampled flag.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor-specific trace data; travels with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// Installs the W3C trace-context propagator as the global one, once per process.
/// [`crate::telemetry::init`] calls it; [`extract`] and [`inject`] call it too, so tests and
/// tools that never initialise telemetry propagate the same way as the services.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| global::set_text_map_propagator(TraceContextPropagator::new()));
}

/// The context `carrier` names as parent (empty when it names none, or a malformed one).
pub fn extract(carrier: &dyn Extractor) -> Context {
    install();
    global::get_text_map_propagator(|p| p.extract(carrier))
}

/// Writes `cx`'s span context into `carrier` (nothing when `cx` has no valid span).
pub fn inject(cx: &Context, carrier: &mut dyn Injector) {
    install();
    global::get_text_map_propagator(|p| p.inject_context(cx, carrier));
}

/// The trace context the global propagator wrote: `traceparent` and `tracestate`, both absent
/// when there is no trace. Only [`TraceFields::of`] and [`TraceFields::extract`] make one, so
/// whatever it holds was validated and normalised by the propagator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TraceFields {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl TraceFields {
    /// The fields of `cx` (its span context), as they would go on the wire.
    pub fn of(cx: &Context) -> Self {
        let mut fields = Self::default();
        inject(cx, &mut fields);
        fields
    }

    /// The fields of an incoming carrier, validated: an invalid `traceparent` gives none.
    pub fn extract(carrier: &dyn Extractor) -> Self {
        Self::of(&extract(carrier))
    }

    /// The parent context these fields describe (empty when there are none).
    pub fn context(&self) -> Context {
        extract(self)
    }

    /// Writes the fields into `carrier` through the propagator.
    pub fn inject_into(&self, carrier: &mut dyn Injector) {
        if !self.is_empty() {
            inject(&self.context(), carrier);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }

    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id (32 lowercase hex digits), for logs and the NATS `trace-id` header.
    pub fn trace_id(&self) -> Option<String> {
        let cx = self.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// Whether the sender sampled this trace (its spans are exported).
    pub fn sampled(&self) -> bool {
        self.context().span().span_context().is_sampled()
    }
}

impl Extractor for TraceFields {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent(),
            TRACESTATE => self.tracestate(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|k| self.get(k).is_some())
            .collect()
    }
}

impl Injector for TraceFields {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            // An empty `tracestate` is the same as none.
            TRACESTATE => self.tracestate = Some(value).filter(|v| !v.is_empty()),
            _ => {}
        }
    }
}

/// HTTP headers as a carrier (incoming requests, outgoing provider calls).
pub struct HttpHeaders<'a>(pub &'a http::HeaderMap);
/// Outgoing HTTP headers as a carrier.
pub struct HttpHeadersMut<'a>(pub &'a mut http::HeaderMap);
/// Outgoing gRPC metadata as a carrier.
pub struct GrpcMetadataMut<'a>(pub &'a mut tonic::metadata::MetadataMap);
/// NATS message headers as a carrier (consumed messages).
pub struct NatsHeaders<'a>(pub &'a async_nats::HeaderMap);
/// Outgoing NATS message headers as a carrier.
pub struct NatsHeadersMut<'a>(pub &'a mut async_nats::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl Injector for HttpHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

impl Injector for GrpcMetadataMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

impl Extractor for NatsHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

impl Injector for NatsHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

#[cfg(test)]
mod tests;
