//! Metric names (the Prometheus contract of the gateway, defined once) and the middleware that
//! records every request by route template and status.

use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Method, StatusCode};

/// Requests served, by `method`, `route` (template, e.g. `/cart/{id}`; `unmatched` for 404s)
/// and `status`.
pub const HTTP_REQUESTS: &str = "cart_gateway_http_requests_total";
/// Request latency in seconds, by `method` and `route` (time to response headers; an SSE
/// stream counts until it starts).
pub const HTTP_REQUEST_SECONDS: &str = "cart_gateway_http_request_duration_seconds";
/// Failed upstream calls, by `op` (aggregate: `get`, `execute`, `execute_batch`, `watch`;
/// projection: `projection_list_carts`, `projection_get_cart`, ...; NATS: `cart_history`) and
/// the stable error `code` (`unavailable`, `timeout`, `unknown_sku`, ...).
pub const UPSTREAM_ERRORS: &str = "cart_gateway_upstream_errors_total";
/// Upstream call latency in seconds, by `op` (aggregate calls with retries and failover,
/// projection and runner calls per attempt, a page of a cart's history).
pub const UPSTREAM_SECONDS: &str = "cart_gateway_upstream_duration_seconds";
/// Requests refused with 429, by `scope` (`client` or `cart`).
pub const RATE_LIMITED: &str = "cart_gateway_rate_limited_total";
/// Keys tracked by each rate limiter, by `scope` (bounded by pruning).
pub const RATE_LIMIT_KEYS: &str = "cart_gateway_rate_limit_keys";
/// Keyed `/v1` requests answered with an earlier outcome (from this gateway's cache, or the
/// outcome the cart kept for the key).
pub const IDEMPOTENT_REPLAYS: &str = "cart_gateway_idempotent_replays_total";
/// Answers to the provider's validation callback, by `result` (`approved`, `refused`) and
/// `reason` (the mismatch code of a refusal, e.g. `cart_changed`; `none` when approved).
pub const CHECKOUT_VALIDATIONS: &str = "cart_gateway_checkout_validations_total";
/// Open `/v1/carts/{id}/events` streams.
pub const SSE_STREAMS: &str = "cart_gateway_sse_streams";
/// Handler panics turned into JSON 500s.
pub const PANICS: &str = "cart_gateway_panics_total";

/// Registers descriptions so `/metrics` explains each series.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, route template and status"
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "HTTP request latency by method and route template"
    );
    describe_counter!(
        UPSTREAM_ERRORS,
        "failed upstream calls by operation and error code"
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        metrics::Unit::Seconds,
        "upstream call latency by operation"
    );
    describe_counter!(RATE_LIMITED, "requests refused by a rate limit, by scope");
    describe_gauge!(RATE_LIMIT_KEYS, "keys tracked per rate limiter");
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "keyed requests answered with the outcome of an earlier one (same Idempotency-Key)"
    );
    describe_counter!(
        CHECKOUT_VALIDATIONS,
        "answers to the payment provider's validation callback, by result and reason"
    );
    describe_gauge!(SSE_STREAMS, "open server-sent event streams");
    describe_counter!(PANICS, "handler panics answered with a JSON 500");
}

/// Counts a request by route template (`unmatched` when none matched) and status, and its
/// latency since `started` (called by the edge layer, `crate::request::layers`).
pub fn record_request(
    method: &Method,
    route: Option<&MatchedPath>,
    status: StatusCode,
    started: Instant,
) {
    // Only standard methods become label values: a client must not mint new series.
    let method: &'static str = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let route = route.map_or("unmatched", MatchedPath::as_str).to_owned();
    let status = status.as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
}
