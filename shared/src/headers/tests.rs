use super::*;
use crate::ErrorCode;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TS: &str = "vendor=opaque";

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn sample() -> RequestContext {
    RequestContext {
        tenant: tenant("shop-1"),
        correlation_id: CorrelationId::parse("corr-42").unwrap(),
        trace: TraceFields::extract(&propagation::HttpHeaders(&http_headers(&[
            (TRACEPARENT, TP),
            (TRACESTATE, TS),
        ]))),
        request_id: Some("req-7".into()),
    }
}

fn http_headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, http::HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn http_round_trip() {
    let ctx = sample();
    let mut h = http::HeaderMap::new();
    ctx.inject_http(&mut h);
    assert_eq!(h[TENANT_ID], "shop-1");
    assert_eq!(h[CORRELATION_ID], "corr-42");
    assert_eq!(h[TRACEPARENT], TP);
    assert_eq!(h[TRACESTATE], TS);
    assert_eq!(h[REQUEST_ID], "req-7");
    assert_eq!(RequestContext::from_http(&h, None).unwrap(), ctx);
}

#[test]
fn an_operators_call_keeps_its_ids_whatever_the_tenant_header_says() {
    let ctx = sample();
    let mut h = http::HeaderMap::new();
    ctx.inject_http(&mut h);
    h.insert(TENANT_ID, http::HeaderValue::from_static("NOT A TENANT"));
    let read = RequestContext::from_http_for_tenant(&h, tenant("shop-1"));
    assert_eq!(
        read, ctx,
        "a malformed tenant header loses no correlation or trace id"
    );
}

#[test]
fn http_tenant_rules() {
    let err =
        RequestContext::from_http(&http_headers(&[(TENANT_ID, "Bad.Tenant")]), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains(TENANT_ID), "{err}");

    let default = tenant("default");
    let err = RequestContext::from_http(&http::HeaderMap::new(), None).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains(TENANT_ID), "{err}");

    let ctx = RequestContext::from_http(&http::HeaderMap::new(), Some(&default)).unwrap();
    assert_eq!(ctx.tenant, default);

    // An explicit (valid) header wins over the default.
    let ctx =
        RequestContext::from_http(&http_headers(&[(TENANT_ID, "other")]), Some(&default)).unwrap();
    assert_eq!(ctx.tenant.as_str(), "other");

    // An invalid header is rejected even when a default exists.
    assert!(RequestContext::from_http(&http_headers(&[(TENANT_ID, "")]), Some(&default)).is_err());
}

#[test]
fn http_generates_missing_or_invalid_correlation_and_trace() {
    let h = http_headers(&[
        (TENANT_ID, "t1"),
        (CORRELATION_ID, "has space"),
        (TRACEPARENT, "00-nope"),
        (REQUEST_ID, ""),
    ]);
    let a = RequestContext::from_http(&h, None).unwrap();
    let b = RequestContext::from_http(&h, None).unwrap();
    assert_ne!(a.correlation_id.as_str(), "has space");
    assert_ne!(a.correlation_id, b.correlation_id);
    assert!(a.trace.is_empty(), "a malformed traceparent is dropped");
    assert_eq!(a.request_id, None);

    // The spec allows lowercase hex only; the propagator ignores anything else.
    let upper = http_headers(&[(TENANT_ID, "t1"), (TRACEPARENT, &TP.to_uppercase())]);
    let ctx = RequestContext::from_http(&upper, None).unwrap();
    assert!(ctx.trace.is_empty());
    let mut out = http::HeaderMap::new();
    ctx.inject_http(&mut out);
    assert!(
        out.get(TRACEPARENT).is_none(),
        "nothing malformed travels on"
    );
}

#[test]
fn grpc_round_trip_and_tenant_required() {
    let ctx = sample();
    let mut md = tonic::metadata::MetadataMap::new();
    ctx.to_grpc_metadata(&mut md);
    assert_eq!(md.get(TENANT_ID).unwrap(), "shop-1");
    assert_eq!(RequestContext::from_grpc_metadata(&md).unwrap(), ctx);

    md.remove(TENANT_ID);
    let err = RequestContext::from_grpc_metadata(&md).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.contains(TENANT_ID), "{err}");

    md.insert(TENANT_ID, "UPPER".parse().unwrap());
    assert!(RequestContext::from_grpc_metadata(&md).is_err());
}

/// A stream call's metadata map carries what gRPC metadata would, read the same way: the
/// whole context round-trips (trace included), names in any case.
#[test]
fn a_stream_calls_metadata_round_trips_and_names_are_read_in_any_case() {
    let ctx = sample();
    let mut md = CallMetadata::new();
    ctx.to_call_metadata(&mut md);
    assert_eq!(md.get(TENANT_ID).map(String::as_str), Some("shop-1"));
    assert_eq!(md.get(TRACEPARENT).map(String::as_str), Some(TP));
    assert_eq!(
        RequestContext::from_grpc_for_tenant(&md, tenant("shop-1")).unwrap(),
        ctx
    );
    let err = RequestContext::from_grpc_for_tenant(&md, tenant("shop-2")).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);

    let shouted: CallMetadata = md
        .iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
        .collect();
    assert!(RequestContext::from_grpc_for_tenant(&shouted, tenant("shop-2")).is_ok());
    let read = lowercase_names(shouted);
    assert_eq!(read, md);
    assert!(RequestContext::from_grpc_for_tenant(&read, tenant("shop-2")).is_err());

    // Written both ways: the lowercase entry counts.
    let mut both = md.clone();
    both.insert("X-TENANT-ID".into(), "shop-2".into());
    assert_eq!(lowercase_names(both), md);
}

#[test]
fn grpc_body_tenant_needs_no_header_but_must_agree_with_one() {
    let ctx = sample();
    let mut md = tonic::metadata::MetadataMap::new();
    ctx.to_grpc_metadata(&mut md);
    md.remove(TENANT_ID);
    let read = RequestContext::from_grpc_for_tenant(&md, tenant("shop-1")).unwrap();
    assert_eq!(read, ctx, "ids still come from the metadata");

    md.insert(TENANT_ID, "shop-1".parse().unwrap());
    assert_eq!(
        RequestContext::from_grpc_for_tenant(&md, tenant("shop-1")).unwrap(),
        ctx
    );
    let err = RequestContext::from_grpc_for_tenant(&md, tenant("shop-2")).unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    assert!(err.message.contains("does not match"), "{err}");
}

#[test]
fn nats_round_trip_sets_both_spellings() {
    let ctx = sample();
    let mut h = async_nats::HeaderMap::new();
    ctx.to_nats_headers(&mut h);
    assert_eq!(h.get(NATS_TENANT_ID).unwrap().as_str(), "shop-1");
    assert_eq!(h.get(CORRELATION_ID).unwrap().as_str(), "corr-42");
    assert_eq!(h.get(NATS_CORRELATION_ID).unwrap().as_str(), "corr-42");
    assert_eq!(h.get(TRACEPARENT).unwrap().as_str(), TP);
    assert_eq!(h.get(TRACESTATE).unwrap().as_str(), TS);
    assert_eq!(
        h.get(NATS_TRACE_ID).unwrap().as_str(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(h.get(REQUEST_ID).unwrap().as_str(), "req-7");
    assert_eq!(RequestContext::from_nats_headers(&h).unwrap(), ctx);

    let mut no_req = ctx.clone();
    no_req.request_id = None;
    let mut h = async_nats::HeaderMap::new();
    no_req.to_nats_headers(&mut h);
    assert!(h.get(REQUEST_ID).is_none());
    assert_eq!(RequestContext::from_nats_headers(&h).unwrap(), no_req);
}

#[test]
fn nats_accepts_either_correlation_header_and_joins_only_a_traceparent() {
    let mut h = async_nats::HeaderMap::new();
    h.insert(NATS_TENANT_ID, "t1");
    h.insert(NATS_CORRELATION_ID, "only-plain");
    h.insert(NATS_TRACE_ID, "4bf92f3577b34da6a3ce929d0e0e4736");
    let ctx = RequestContext::from_nats_headers(&h).unwrap();
    assert_eq!(ctx.correlation_id.as_str(), "only-plain");
    assert!(ctx.trace.is_empty(), "a bare trace-id names no parent span");
    let mut out = async_nats::HeaderMap::new();
    ctx.to_nats_headers(&mut out);
    assert!(out.get(NATS_TRACE_ID).is_none() && out.get(TRACEPARENT).is_none());

    h.insert(
        TRACEPARENT,
        "00-11111111111111111111111111111111-2222222222222222-01",
    );
    let ctx = RequestContext::from_nats_headers(&h).unwrap();
    assert_eq!(
        ctx.trace.trace_id().as_deref(),
        Some("11111111111111111111111111111111")
    );

    // Neither: a fresh correlation id, still a valid context (with no trace to join) ...
    let mut bare = async_nats::HeaderMap::new();
    bare.insert(NATS_TENANT_ID, "t1");
    let ctx = RequestContext::from_nats_headers(&bare).unwrap();
    assert!(ctx.trace.is_empty());
    // ... but a history shows what the message carries: nothing.
    assert_eq!(nats_correlation_id(&bare), None);
    assert_eq!(
        nats_correlation_id(&h).map(|c| c.to_string()).as_deref(),
        Some("only-plain")
    );

    let missing_tenant = async_nats::HeaderMap::new();
    let err = RequestContext::from_nats_headers(&missing_tenant).unwrap_err();
    assert!(err.message.contains(NATS_TENANT_ID), "{err}");
}
