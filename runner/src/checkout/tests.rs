use async_nats::HeaderMap;

use super::*;

#[test]
fn only_the_carts_own_refusals_end_a_result_and_the_rest_is_asked_again() {
    for code in [
        ErrorCode::InvalidState,
        ErrorCode::CartLocked,
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::LimitExceeded,
    ] {
        assert!(!is_transient(&ApiError::new(code, "")), "{code:?}");
    }
    for code in [
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::Internal,
        ErrorCode::Unimplemented,
        ErrorCode::Unavailable,
    ] {
        assert!(is_transient(&ApiError::new(code, "")), "{code:?}");
    }
}

#[test]
fn only_events_that_may_hold_a_checkout_reach_the_handler() {
    let with_types = |types: &str| {
        let mut h = HeaderMap::new();
        h.insert(headers::NATS_TENANT_ID, "shop");
        h.insert(headers::CART_EVENT_TYPES, types);
        h
    };
    assert!(may_start_a_checkout(Some(&with_types("CheckoutStarted"))));
    assert!(may_start_a_checkout(Some(&with_types(
        "ItemAdded,CheckoutStarted"
    ))));
    assert!(
        may_start_a_checkout(Some(&with_types("PaymentApproved"))),
        "an approval is noted for reconciliation"
    );
    assert!(!may_start_a_checkout(Some(&with_types("ItemAdded"))));
    assert!(!may_start_a_checkout(Some(&with_types(
        "CheckoutReopened,ItemAdded"
    ))));
    // No header: the payload decides.
    let mut no_types = HeaderMap::new();
    no_types.insert(headers::NATS_TENANT_ID, "shop");
    assert!(may_start_a_checkout(Some(&no_types)));
    assert!(may_start_a_checkout(None));
}
