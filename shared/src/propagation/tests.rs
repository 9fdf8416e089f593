use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TS: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn http(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

#[test]
fn traceparent_and_tracestate_cross_every_transport() {
    let fields = TraceFields::extract(&HttpHeaders(&http(&[(TRACEPARENT, TP), (TRACESTATE, TS)])));
    assert_eq!(fields.traceparent(), Some(TP));
    assert_eq!(fields.tracestate(), Some(TS));
    assert_eq!(
        fields.trace_id().as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(fields.sampled());

    let mut md = tonic::metadata::MetadataMap::new();
    fields.inject_into(&mut GrpcMetadataMut(&mut md));
    let from_grpc = TraceFields::extract(&HttpHeaders(md.as_ref()));
    assert_eq!(from_grpc, fields);

    let mut nats = async_nats::HeaderMap::new();
    from_grpc.inject_into(&mut NatsHeadersMut(&mut nats));
    let from_nats = TraceFields::extract(&NatsHeaders(&nats));
    assert_eq!(from_nats, fields);

    let mut out = http::HeaderMap::new();
    from_nats.inject_into(&mut HttpHeadersMut(&mut out));
    assert_eq!(out[TRACEPARENT], TP);
    assert_eq!(out[TRACESTATE], TS);
}

#[test]
fn malformed_values_never_travel_on() {
    let bad = [
        "nonsense",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ];
    for value in bad {
        let fields = TraceFields::extract(&HttpHeaders(&http(&[
            (TRACEPARENT, value),
            (TRACESTATE, TS),
        ])));
        assert!(fields.is_empty(), "{value} was accepted: {fields:?}");
        let mut out = http::HeaderMap::new();
        fields.inject_into(&mut HttpHeadersMut(&mut out));
        assert!(out.is_empty(), "{value} leaked: {out:?}");
    }
    // A malformed tracestate is dropped; the traceparent still counts.
    let fields = TraceFields::extract(&HttpHeaders(&http(&[
        (TRACEPARENT, TP),
        (TRACESTATE, "=,not a list"),
    ])));
    assert_eq!(
        (fields.traceparent(), fields.tracestate()),
        (Some(TP), None)
    );
}

#[test]
fn an_unsampled_parent_stays_unsampled() {
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let fields = TraceFields::extract(&HttpHeaders(&http(&[(TRACEPARENT, unsampled)])));
    assert_eq!(fields.traceparent(), Some(unsampled));
    assert!(!fields.sampled());
}

#[test]
fn no_trace_is_no_fields() {
    let fields = TraceFields::extract(&HttpHeaders(&http::HeaderMap::new()));
    assert!(fields.is_empty());
    assert_eq!(fields.trace_id(), None);
    assert!(!fields.context().span().span_context().is_valid());
}
