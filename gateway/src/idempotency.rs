//! `Idempotency-Key` on `/v1` commands.
//!
//! Correctness comes from the aggregate: the key derives the command id, so a retry to any
//! gateway returns the original outcome instead of applying twice. This cache adds byte-exact
//! replays: a retry to the same gateway gets the very response (status and body) the first
//! request got, and concurrent retries share one upstream call. Outcomes that a retry could
//! change (timeouts, unavailability, rate limits, conflicts) are never stored. The cache is
//! bounded in entries and age.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use moka::future::Cache;
use shared::headers::IDEMPOTENCY_KEY;
use shared::{ApiError, ErrorCode};

use crate::metrics as m;

/// Response header set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";

/// A finished response, as stored for replay.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub body: Bytes,
    pub etag: Option<HeaderValue>,
    /// Hash of the request it answered: the same key with another request is refused.
    fingerprint: u64,
}

impl Stored {
    pub fn new(status: StatusCode, body: Bytes, etag: Option<HeaderValue>) -> Self {
        Self {
            status,
            body,
            etag,
            fingerprint: 0,
        }
    }

    /// A refusal worth replaying (the same request would be refused the same way).
    pub fn refusal(e: &ApiError) -> Option<Self> {
        let stable = !e.code.retry_safe() && e.code != ErrorCode::Internal;
        stable.then(|| Self::new(e.status(), Bytes::from(e.body().to_string()), None))
    }

    pub fn response(&self, replayed: bool) -> Response {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(etag) = &self.etag {
            h.insert(http::header::ETAG, etag.clone());
        }
        if replayed {
            h.insert(REPLAYED, HeaderValue::from_static("true"));
        }
        resp
    }
}

/// A validated `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Key(pub String);

impl Key {
    pub const MAX_LEN: usize = 255;

    /// The header's key, if any (400 when present but unusable).
    pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<Key>, ApiError> {
        let Some(raw) = headers.get(IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let v = raw.to_str().unwrap_or_default().trim();
        if v.is_empty() || v.len() > Self::MAX_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::invalid(format!(
                "header {IDEMPOTENCY_KEY} must be 1..={} visible ASCII characters",
                Self::MAX_LEN
            )));
        }
        Ok(Some(Key(v.to_owned())))
    }
}

#[derive(Clone)]
pub struct Idempotency {
    cache: Cache<String, Arc<Stored>>,
}

impl Idempotency {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The stored response for `scope` (tenant, cart and key), else the result of `run`,
    /// stored when it is final. `request` identifies the request (method, body, `If-Match`).
    pub async fn run<F>(
        &self,
        scope: &[&str],
        request: &[&[u8]],
        run: F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<Stored, ApiError>>,
    {
        let fingerprint = fingerprint(request);
        let fresh = AtomicBool::new(false);
        let stored = self
            .cache
            .try_get_with(scope.join("\u{1f}"), async {
                fresh.store(true, Ordering::Relaxed);
                run.await.map(|s| Arc::new(Stored { fingerprint, ..s }))
            })
            .await
            .map_err(|e: Arc<ApiError>| (*e).clone())?;
        if stored.fingerprint != fingerprint {
            return Err(ApiError::invalid(format!(
                "this {IDEMPOTENCY_KEY} was already used for a different request; use a new key for each distinct request"
            )));
        }
        let replayed = !fresh.load(Ordering::Relaxed);
        if replayed {
            metrics::counter!(m::IDEMPOTENT_REPLAYS).increment(1);
        }
        Ok(stored.response(replayed))
    }
}

fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<Stored, ApiError> {
        Ok(Stored::new(
            StatusCode::OK,
            Bytes::from(body.to_owned()),
            None,
        ))
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn replays_the_first_outcome_and_refuses_another_request() {
        let c = Idempotency::new(10, Duration::from_secs(60));
        let first = c
            .run(&["t", "c", "k"], &[b"a"], async { ok("one") })
            .await
            .unwrap();
        assert!(first.headers().get(REPLAYED).is_none());
        assert_eq!(body(first).await, "one");
        let again = c
            .run(&["t", "c", "k"], &[b"a"], async { ok("two") })
            .await
            .unwrap();
        assert_eq!(again.headers()[REPLAYED], "true");
        assert_eq!(body(again).await, "one");
        let e = c
            .run(&["t", "c", "k"], &[b"b"], async { ok("x") })
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }

    #[tokio::test]
    async fn retryable_failures_are_not_stored() {
        let c = Idempotency::new(10, Duration::from_secs(60));
        let e = c
            .run(&["k"], &[], async { Err(ApiError::unavailable("down")) })
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        let r = c.run(&["k"], &[], async { ok("up") }).await.unwrap();
        assert_eq!(body(r).await, "up");
        assert!(Stored::refusal(&ApiError::new(ErrorCode::UnknownSku, "x")).is_some());
        assert!(Stored::refusal(&ApiError::new(ErrorCode::Timeout, "x")).is_none());
        assert!(Stored::refusal(&ApiError::new(ErrorCode::VersionConflict, "x")).is_none());
    }

    #[test]
    fn keys_are_validated() {
        let mut h = http::HeaderMap::new();
        assert!(Key::from_headers(&h).unwrap().is_none());
        h.insert(IDEMPOTENCY_KEY, "abc-123".parse().unwrap());
        assert_eq!(Key::from_headers(&h).unwrap().unwrap().0, "abc-123");
        h.insert(IDEMPOTENCY_KEY, "x".repeat(300).parse().unwrap());
        assert!(Key::from_headers(&h).is_err());
    }
}
