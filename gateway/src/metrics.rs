//! Metric names (the Prometheus contract of the gateway, defined once) and the series the edge
//! layer records every request in, by route template and status.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use http::{Method, StatusCode};
use metrics::{Counter, Histogram};

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
/// Requests refused with 429, by `scope` (`client`, `cart`, or `push`: provider pushes per
/// tenant).
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

/// The request series of one app (the edge layer holds it): a request is counted by route
/// template (`unmatched` when none matched), method and status, and its latency recorded.
/// Each series' handles are made once and kept: making labels and looking the series up in
/// the recorder per request was ~2 % of the gateway's CPU (cart-bench `http`). Bounded:
/// routes are templates, methods the standard ones, statuses three digits.
#[derive(Default)]
pub struct RequestSeries {
    by_route: RwLock<HashMap<Box<str>, Vec<Series>>>,
}

struct Series {
    method: &'static str,
    status: u16,
    count: Counter,
    seconds: Histogram,
}

impl RequestSeries {
    /// `route` is the matched route's template (`None`: no route matched).
    pub fn record(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        started: Instant,
    ) {
        let seconds = started.elapsed().as_secs_f64();
        let method = method_label(method);
        let route = route.unwrap_or("unmatched");
        let status = status.as_u16();
        let found = |series: &Vec<Series>| {
            series
                .iter()
                .find(|s| s.method == method && s.status == status)
                .map(|s| {
                    s.count.increment(1);
                    s.seconds.record(seconds);
                })
        };
        let by_route = self.by_route.read().unwrap_or_else(PoisonError::into_inner);
        if by_route.get(route).and_then(found).is_some() {
            return;
        }
        drop(by_route);
        let mut by_route = self
            .by_route
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let series = by_route.entry(route.into()).or_default();
        if found(series).is_none() {
            let new = Series {
                method,
                status,
                count: metrics::counter!(
                    HTTP_REQUESTS,
                    "method" => method,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                ),
                seconds: metrics::histogram!(
                    HTTP_REQUEST_SECONDS,
                    "method" => method,
                    "route" => route.to_owned()
                ),
            };
            new.count.increment(1);
            new.seconds.record(seconds);
            series.push(new);
        }
    }
}

/// Only standard methods become label values: a client must not mint new series.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// A series is made once and then counted through its kept handles; another status or
    /// method is a series of its own, and a method nobody knows does not mint one.
    #[test]
    fn requests_are_counted_in_kept_series() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let series = RequestSeries::default();
        let route = Some("/cart/{id}");
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..3 {
                series.record(&Method::POST, route, StatusCode::OK, Instant::now());
            }
            series.record(&Method::POST, route, StatusCode::CONFLICT, Instant::now());
            let odd = Method::from_bytes(b"BREW").unwrap();
            series.record(&odd, None, StatusCode::NOT_FOUND, Instant::now());
        });
        let text = handle.render();
        for line in [
            r#"cart_gateway_http_requests_total{method="POST",route="/cart/{id}",status="200"} 3"#,
            r#"cart_gateway_http_requests_total{method="POST",route="/cart/{id}",status="409"} 1"#,
            r#"cart_gateway_http_requests_total{method="other",route="unmatched",status="404"} 1"#,
            r#"cart_gateway_http_request_duration_seconds_count{method="POST",route="/cart/{id}"} 4"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
