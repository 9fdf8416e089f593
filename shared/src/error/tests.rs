//! The error table's rows, round trips through gRPC statuses, and what a shopper is told.

use super::*;

#[test]
fn a_service_refusing_the_callers_identity_is_not_passed_on_as_the_users_fault() {
    let refused = crate::grpc_tls::Caller::in_process("projection")
        .require("Execute", &["gateway", "runner"])
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let e = ApiError::from_upstream("aggregate node", &refused);
    assert_eq!(e.code, ErrorCode::Internal, "{e}");
    assert!(!e.message.contains("projection"), "{e}");
    // A refusal of the request itself (another tenant) still reaches the user as it is.
    let tenant = tonic::Status::from(ApiError::new(
        ErrorCode::PermissionDenied,
        "tenant \"a\" does not match the x-tenant-id header",
    ));
    assert_eq!(
        ApiError::from_upstream("projection", &tenant).code,
        ErrorCode::PermissionDenied
    );
}

#[test]
fn long_quoted_values_are_cut_short_in_messages() {
    let long = "A".repeat(5000);
    let e = ApiError::invalid(format!(
        "quantity: invalid type: string \"{long}\", expected u32"
    ));
    assert!(e.message.len() < 200, "{}", e.message);
    assert!(
        e.message
            .starts_with("quantity: invalid type: string \"AAAA")
    );
    assert!(e.message.ends_with("…\", expected u32"), "{}", e.message);
    let short = "sku \"NOPE\" is not in the catalog";
    assert_eq!(ApiError::invalid(short).message, short);
    let escaped = format!(
        "got \"{}\\\"{}\" and \"x\"",
        "b".repeat(100),
        "c".repeat(100)
    );
    let clipped = ApiError::invalid(escaped).message;
    assert!(clipped.ends_with("…\" and \"x\""), "{clipped}");
    let field = clip_quoted(format!("unknown field `{long}`, expected `sku`"));
    assert!(
        field.len() < 150 && field.ends_with("…`, expected `sku`"),
        "{field}"
    );
}

#[test]
fn every_code_round_trips_and_is_documented() {
    for &code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        assert_eq!(
            serde_json::to_value(code).unwrap(),
            serde_json::Value::String(code.as_str().into())
        );
        assert!(!code.description().is_empty());
        assert_ne!(grpc_code(code), tonic::Code::Ok);
        assert!(http_status(code).as_u16() >= 400);
    }
}

#[test]
fn table_rows() {
    use ErrorCode::*;
    use tonic::Code;
    let rows = [
        (InvalidArgument, 400, Code::InvalidArgument, false),
        (PayloadTooLarge, 413, Code::InvalidArgument, false),
        (Unauthenticated, 401, Code::Unauthenticated, false),
        (PermissionDenied, 403, Code::PermissionDenied, false),
        (VersionConflict, 409, Code::Aborted, true),
        (PreconditionFailed, 412, Code::FailedPrecondition, false),
        (CartLocked, 409, Code::FailedPrecondition, false),
        (RateLimited, 429, Code::ResourceExhausted, true),
        (Unavailable, 503, Code::Unavailable, true),
        (Timeout, 504, Code::DeadlineExceeded, true),
        (Internal, 500, Code::Internal, false),
    ];
    for (code, http, grpc, retry) in rows {
        assert_eq!(http_status(code).as_u16(), http, "{code}");
        assert_eq!(grpc_code(code), grpc, "{code}");
        assert_eq!(code.retry_safe(), retry, "{code}");
    }
}

#[test]
fn a_refused_mutation_tells_the_storefront_its_code_and_http_status() {
    let e = ApiError::from(cart_domain::DomainError::UnknownLine(9));
    let m = cart_domain::MutationError::from(&e);
    assert_eq!(
        (m.message.as_str(), m.code.as_str(), m.status_code),
        ("the cart has no line 9", "unknown_line", 404)
    );
}

#[test]
fn status_round_trip_keeps_code_and_extras() {
    for &code in ErrorCode::ALL {
        let e = ApiError::new(code, "boom");
        let back = ApiError::from_status(&e.to_status());
        assert_eq!(back, e);
    }
    let e = ApiError::not_owner("10.0.0.2:50051").with_retry_after(Duration::from_secs(3));
    let back = ApiError::from_status(&e.to_status());
    assert_eq!(back.owner_addr.as_deref(), Some("10.0.0.2:50051"));
    assert_eq!(back.retry_after, Some(Duration::from_secs(3)));
    assert_eq!(back.code, ErrorCode::NotOwner);
    let e = ApiError::new(ErrorCode::UnknownLine, "no line 1").replayed();
    let back = ApiError::from_status(&e.to_status());
    assert_eq!(back, e);
    assert!(back.replayed);
    let resp = axum::response::IntoResponse::into_response(back);
    assert_eq!(resp.headers()[REPLAYED_KEY], "true");
}

#[test]
fn foreign_status_maps_by_grpc_code() {
    let e = ApiError::from_status(&tonic::Status::unavailable(""));
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(!e.message.is_empty());
    let e = ApiError::from_status(&tonic::Status::deadline_exceeded("slow"));
    assert_eq!(e.code, ErrorCode::Timeout);
}

#[test]
fn upstream_transport_failures_are_unavailable_but_service_errors_keep_their_code() {
    // From the transport (no code of ours): the peer is unreachable, try again or elsewhere.
    let e = ApiError::from_upstream("projection", &tonic::Status::internal("h2 reset"));
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message.contains("projection is unreachable: h2 reset"),
        "{e}"
    );
    let e = ApiError::from_upstream("runner", &tonic::Status::deadline_exceeded(""));
    assert_eq!(e.code, ErrorCode::Timeout);
    // A peer that gave up on a call it had (tonic's deadline) may have acted on it: the
    // outcome is unknown, which a client must not take for "never reached".
    let e = ApiError::from_upstream(
        "aggregate node",
        &tonic::Status::cancelled("Timeout expired"),
    );
    assert_eq!(e.code, ErrorCode::Timeout);
    assert!(e.message.contains("may have been applied"), "{e}");
    // From the service: its own code, even `internal`.
    let sent = ApiError::new(ErrorCode::Internal, "bug").to_status();
    assert_eq!(
        ApiError::from_upstream("runner", &sent).code,
        ErrorCode::Internal
    );
    let sent = ApiError::invalid("bad sku").to_status();
    assert_eq!(
        ApiError::from_upstream("runner", &sent).code,
        ErrorCode::InvalidArgument
    );
}

#[tokio::test]
async fn http_response_is_json_with_retry_after() {
    let resp = ApiError::new(ErrorCode::RateLimited, "slow down").into_response();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
    let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"error": "slow down", "code": "rate_limited"})
    );
}
