//! `Idempotency-Key` on `/v1` commands.
//!
//! Correctness comes from the aggregate: the key derives the command id, and the cart keeps
//! the request's fingerprint with the outcome for the idempotency retention (decided with the
//! append), so a retry through any gateway, after any restart and however many commands
//! followed, returns the original outcome instead of applying twice, and the same key with
//! another request is refused with `idempotency_key_reused` everywhere. This cache adds
//! byte-exact replays of successes: a retry to the same gateway gets the very response (status
//! and body) the first request got, and concurrent retries share one upstream call. Refusals
//! are not cached here: the cart stores its own refusal of a keyed command (so every gateway
//! answers a retry with it), and a transient failure is worth deciding again. The cache is
//! bounded in entries and age.

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
pub const REPLAYED: &str = shared::error::REPLAYED_KEY;

/// A finished response, as stored for replay.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub body: Bytes,
    pub etag: Option<HeaderValue>,
    /// Fingerprint of the request it answered: the same key with another request is refused.
    fingerprint: String,
}

impl Stored {
    pub fn new(status: StatusCode, body: Bytes, etag: Option<HeaderValue>) -> Self {
        Self {
            status,
            body,
            etag,
            fingerprint: String::new(),
        }
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

    /// The stored response for `scope` (tenant, cart and key), else the result of `run`
    /// (the response, and whether the aggregate answered with an earlier outcome), stored
    /// when it is final. `fingerprint` identifies the request (see [`fingerprint`]).
    ///
    /// Concurrent requests under one key wait for the first. A refusal is not stored, and it
    /// is handed only to waiters with the same request: another request under the key is
    /// then decided on its own (not given a refusal of something it did not ask).
    pub async fn run<F>(
        &self,
        scope: &[&str],
        fingerprint: &str,
        run: F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<(Stored, bool), ApiError>>,
    {
        const ROUNDS: usize = 4;
        let key = scope.join("\u{1f}");
        let mut run = std::pin::pin!(run);
        for _ in 0..ROUNDS {
            let fresh = AtomicBool::new(false);
            let upstream_replay = AtomicBool::new(false);
            let got = self
                .cache
                .try_get_with(key.clone(), async {
                    fresh.store(true, Ordering::Relaxed);
                    match run.as_mut().await {
                        Ok((s, replayed)) => {
                            upstream_replay.store(replayed, Ordering::Relaxed);
                            Ok(Arc::new(Stored {
                                fingerprint: fingerprint.to_owned(),
                                ..s
                            }))
                        }
                        Err(e) => Err((fingerprint.to_owned(), e)),
                    }
                })
                .await;
            let stored = match got {
                Ok(stored) => stored,
                // Another request's refusal, waited for: this one has not run yet.
                Err(e) if e.0 != fingerprint && !fresh.load(Ordering::Relaxed) => continue,
                Err(e) => return Err(e.1.clone()),
            };
            if stored.fingerprint != fingerprint {
                return Err(key_reused());
            }
            let replayed =
                !fresh.load(Ordering::Relaxed) || upstream_replay.load(Ordering::Relaxed);
            if replayed {
                metrics::counter!(m::IDEMPOTENT_REPLAYS).increment(1);
            }
            return Ok(stored.response(replayed));
        }
        Err(ApiError::unavailable(format!(
            "other requests under this {IDEMPOTENCY_KEY} kept being decided first; retry"
        ))
        .with_retry_after(Duration::from_secs(1)))
    }
}

fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        format!(
            "this {IDEMPOTENCY_KEY} was already used on this cart for a different request; use a new key for each distinct request"
        ),
    )
}

/// The command id of a request with `Idempotency-Key: key` on `tenant`'s `cart` (the first
/// command's; a non-atomic list derives the others from it). Every gateway derives the same.
pub fn command_id(tenant: &str, cart: &str, key: &str) -> shared::CommandId {
    shared::CommandId::derived(&["idempotency", tenant, cart, key])
}

/// The fingerprint of a keyed request: the same in every gateway and every build (a UUIDv5 of
/// its parts), so the aggregate can compare it with the one the cart kept.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8a3f_0c2e_51d4_4f6b_b7e2_93c1_0d5a_6e48);
    let mut bytes = Vec::new();
    for p in parts {
        bytes.extend_from_slice(&(p.len() as u64).to_be_bytes());
        bytes.extend_from_slice(p);
    }
    uuid::Uuid::new_v5(&NAMESPACE, &bytes).simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Result<(Stored, bool), ApiError> {
        Ok((
            Stored::new(StatusCode::OK, Bytes::from(body.to_owned()), None),
            false,
        ))
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn replays_the_first_outcome_and_refuses_another_request() {
        let c = Idempotency::new(10, Duration::from_secs(60));
        let (a, b) = (fingerprint(&[b"a", b""]), fingerprint(&[b"b", b""]));
        let first = c
            .run(&["t", "c", "k"], &a, async { ok("one") })
            .await
            .unwrap();
        assert!(first.headers().get(REPLAYED).is_none());
        assert_eq!(body(first).await, "one");
        let again = c
            .run(&["t", "c", "k"], &a, async { ok("two") })
            .await
            .unwrap();
        assert_eq!(again.headers()[REPLAYED], "true");
        assert_eq!(body(again).await, "one");
        let e = c
            .run(&["t", "c", "k"], &b, async { ok("x") })
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::IdempotencyKeyReused);
        // An outcome the aggregate replayed (another gateway ran it first) says so too.
        let r = c
            .run(&["t", "c", "k2"], &a, async { Ok((ok("one")?.0, true)) })
            .await
            .unwrap();
        assert_eq!(r.headers()[REPLAYED], "true");
    }

    #[test]
    fn fingerprints_are_stable_and_separate_their_parts() {
        // Pinned: every gateway of every build must compute the same value, or a retry
        // through another gateway would look like another request.
        assert_eq!(
            fingerprint(&[b"{}", b"7"]),
            "91c916ee96985499ae279c5119ae80ca"
        );
        assert_ne!(fingerprint(&[b"ab", b""]), fingerprint(&[b"a", b"b"]));
        assert_eq!(fingerprint(&[b"x"]).len(), 32);
    }

    #[tokio::test]
    async fn refusals_are_not_stored() {
        let c = Idempotency::new(10, Duration::from_secs(60));
        let e = c
            .run(&["k"], "f", async { Err(ApiError::unavailable("down")) })
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable);
        let r = c.run(&["k"], "f", async { ok("up") }).await.unwrap();
        assert_eq!(body(r).await, "up");
    }

    /// `second` run under `key` with fingerprint `second_fp` while a request with fingerprint
    /// "first" runs under it and is refused (unknown SKU) once both wait on the key.
    async fn behind_a_refusal(
        c: &Idempotency,
        key: &str,
        second_fp: &str,
        second: impl Future<Output = Result<(Stored, bool), ApiError>>,
    ) -> Result<Response, ApiError> {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let scope = ["t", "c", key];
        let first = c.run(&scope, "first", async {
            released.await.unwrap();
            Err(ApiError::new(ErrorCode::UnknownSku, "no such SKU: NOPE"))
        });
        let second = c.run(&scope, second_fp, second);
        let (first, second, ()) = tokio::join!(first, second, async {
            // Both are waiting on the key by now: the first running, the second behind it.
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        });
        assert_eq!(first.unwrap_err().code, ErrorCode::UnknownSku);
        second
    }

    /// Two requests under one key at once, with different bodies: the first is refused, and
    /// the second, which waited for it, is decided on its own instead of being handed that
    /// refusal (it would report an unknown SKU it never sent). The same request behind a
    /// refusal shares it.
    #[tokio::test]
    async fn a_waiting_request_with_another_body_is_not_given_the_first_ones_refusal() {
        let c = Idempotency::new(10, Duration::from_secs(60));
        let second = behind_a_refusal(&c, "k", "second", async { ok("added") }).await;
        assert_eq!(body(second.expect("decided on its own")).await, "added");
        let again = behind_a_refusal(&c, "k2", "first", async { ok("not run") }).await;
        assert_eq!(again.unwrap_err().code, ErrorCode::UnknownSku);
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
