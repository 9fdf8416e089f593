//! Rate limits (GCRA from `governor`): per client (API key, else client IP) on every API
//! request, per cart on every mutation, and per tenant on the provider's push callback. A
//! refused request gets 429 with `Retry-After` and changes nothing. Keyed limiters remember one small state per key; idle keys are pruned
//! periodically and early when a limiter holds more than `rate_limit_max_keys`, so a flood of
//! distinct clients cannot grow memory without bound.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, NotUntil, Quota};
use http::HeaderMap;
use shared::{ApiError, ErrorCode};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics as m;
use crate::request::context::Auth;

struct Limiter {
    scope: &'static str,
    inner: DefaultKeyedRateLimiter<String>,
    max_keys: usize,
}

impl Limiter {
    fn new(scope: &'static str, per_sec: u32, burst: u32, max_keys: usize) -> Option<Self> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
        Some(Self {
            scope,
            inner: DefaultKeyedRateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            max_keys: max_keys.max(1),
        })
    }

    fn check(&self, key: String, what: &str) -> Result<(), ApiError> {
        let outcome = self.inner.check_key(&key);
        if self.inner.len() > self.max_keys {
            self.prune();
        }
        outcome.map_err(|not_until| self.refused(not_until, what))
    }

    fn refused(
        &self,
        not_until: NotUntil<<DefaultClock as Clock>::Instant>,
        what: &str,
    ) -> ApiError {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        metrics::counter!(m::RATE_LIMITED, "scope" => self.scope).increment(1);
        ApiError::new(
            ErrorCode::RateLimited,
            format!("too many requests for this {what}; retry after {secs} s"),
        )
        .with_retry_after(Duration::from_secs(secs.max(1)))
    }

    /// `n` cells at once for `key` (a cart's one-by-one list): more than the burst can ever
    /// admit is refused as too large, not as "retry later".
    fn check_n(&self, key: String, n: usize) -> Result<(), ApiError> {
        let Some(cells) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return Ok(());
        };
        match self.inner.check_key_n(&key, cells) {
            Ok(outcome) => outcome.map_err(|not_until| self.refused(not_until, "cart")),
            Err(governor::InsufficientCapacity(burst)) => Err(ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{n} commands one by one are more than this gateway lets a cart take at \
                     once ({burst}); send at most {burst}, or the list atomically (one commit)"
                ),
            )),
        }
    }

    fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
        metrics::gauge!(m::RATE_LIMIT_KEYS, "scope" => self.scope).set(self.inner.len() as f64);
    }
}

/// The gateway's limiters. Either may be off (rate 0).
pub struct RateLimits {
    client: Option<Limiter>,
    cart: Option<Limiter>,
    push: Option<Limiter>,
    trusted_proxy_hops: usize,
}

impl RateLimits {
    pub fn new(cfg: &Config) -> Self {
        Self {
            client: Limiter::new(
                "client",
                cfg.client_rate_per_sec,
                cfg.client_rate_burst,
                cfg.rate_limit_max_keys,
            ),
            cart: Limiter::new(
                "cart",
                cfg.cart_rate_per_sec,
                cfg.cart_rate_burst,
                cfg.rate_limit_max_keys,
            ),
            push: Limiter::new(
                "push",
                cfg.push_rate_per_sec,
                cfg.push_rate_burst,
                cfg.rate_limit_max_keys,
            ),
            trusted_proxy_hops: cfg.trusted_proxy_hops,
        }
    }

    /// One provider push for `tenant`. The push callback takes no API key, so the per-client
    /// limit alone lets many addresses record without bound; a refused push is retried by the
    /// provider, and the runner's reconciliation pushes for a checkout left waiting. Tenants
    /// the gateway is not configured with share one budget: a push names its tenant itself,
    /// and a new name per push must not bring a new budget with it.
    pub fn check_push(&self, tenant: &str, known: bool) -> Result<(), ApiError> {
        match &self.push {
            // Not a tenant id ('?' is outside their characters): no tenant can take it.
            Some(l) if !known => l.check("?unknown".to_owned(), "tenant's provider pushes"),
            Some(l) => l.check(tenant.to_owned(), "tenant's provider pushes"),
            None => Ok(()),
        }
    }

    /// One mutation of `tenant/cart`.
    pub fn check_cart(&self, tenant: &str, cart: &str) -> Result<(), ApiError> {
        match &self.cart {
            Some(l) => l.check(format!("{tenant}/{cart}"), "cart"),
            None => Ok(()),
        }
    }

    /// `n` mutations of `tenant/cart` sent one after the other by one request: admitted
    /// together or refused together, before the first is sent (a list refused half-way
    /// would be half applied, and a retry of it would apply its first half again).
    pub fn check_cart_n(&self, tenant: &str, cart: &str, n: usize) -> Result<(), ApiError> {
        match &self.cart {
            Some(l) => l.check_n(format!("{tenant}/{cart}"), n),
            None => Ok(()),
        }
    }

    /// The per-client limit of a request (nothing to work out when it is off).
    fn check_client(
        &self,
        auth: &Auth,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<(), ApiError> {
        match &self.client {
            Some(l) => l.check(self.client_key(auth, headers, peer), "client"),
            None => Ok(()),
        }
    }

    /// Forget idle keys every `every` until `shutdown`.
    pub async fn prune_every(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for l in [&self.client, &self.cart].into_iter().flatten() {
                l.prune();
            }
        }
    }

    /// Who is asking: the API key when it is a known one, else the client's IP (from
    /// `X-Forwarded-For` only through the configured number of trusted proxies).
    fn client_key(&self, auth: &Auth, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
        if let Some(key) = auth.known_key(headers) {
            return format!("key:{}", key.label());
        }
        match client_ip(headers, peer, self.trusted_proxy_hops) {
            Some(ip) => format!("ip:{ip}"),
            None => "ip:unknown".to_owned(),
        }
    }
}

/// The client address: with `hops` trusted proxies the entry `hops` places from the right of
/// `X-Forwarded-For` (what the outermost trusted proxy saw), else the TCP peer.
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, hops: usize) -> Option<IpAddr> {
    if hops > 0 {
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let pick = entries
            .len()
            .checked_sub(hops)
            .map_or(entries.first(), |i| entries.get(i));
        if let Some(ip) = pick.and_then(|s| s.parse().ok()) {
            return Some(ip);
        }
    }
    peer.map(|p| p.ip())
}

/// The per-client limit, as a layer of the API's routes. A tower service rather than
/// `axum::middleware::from_fn`, for the reason `crate::request::layers::Edge` gives; a request
/// within the limit goes on without a future of its own.
#[derive(Clone)]
pub struct ClientLimit {
    pub limits: Arc<RateLimits>,
    pub auth: Arc<Auth>,
}

impl<S> tower::Layer<S> for ClientLimit {
    type Service = LimitClients<S>;

    fn layer(&self, inner: S) -> LimitClients<S> {
        LimitClients {
            inner,
            limit: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitClients<S> {
    inner: S,
    limit: ClientLimit,
}

impl<S> tower::Service<Request> for LimitClients<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let ClientLimit { limits, auth } = &self.limit;
        match limits.check_client(auth, req.headers(), peer) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Ok(e.into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_trusted_only_through_configured_hops() {
        let peer: SocketAddr = "10.0.0.9:1234".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        assert_eq!(
            client_ip(&h, Some(peer), 0).unwrap().to_string(),
            "10.0.0.9"
        );
        assert_eq!(client_ip(&h, Some(peer), 1).unwrap().to_string(), "2.2.2.2");
        assert_eq!(client_ip(&h, Some(peer), 2).unwrap().to_string(), "1.1.1.1");
        assert_eq!(client_ip(&h, Some(peer), 5).unwrap().to_string(), "1.1.1.1");
        assert_eq!(client_ip(&HeaderMap::new(), None, 1), None);
    }

    #[test]
    fn a_keyed_client_is_counted_under_a_name_that_is_not_its_key() {
        use crate::request::context::{API_KEY, KeyDigest};
        let keys = [("secret-key-1", "t")]
            .map(|(k, t)| (k.to_owned(), shared::TenantId::parse(t).unwrap()))
            .into();
        let auth = Auth::new(None, keys, "");
        let limits = RateLimits::new(&Config::default());
        let mut h = HeaderMap::new();
        h.insert(API_KEY, "secret-key-1".parse().unwrap());
        let name = limits.client_key(&auth, &h, None);
        assert_eq!(
            name,
            format!("key:{}", KeyDigest::of("secret-key-1").label())
        );
        assert!(!name.contains("secret-key-1"));
        h.insert(API_KEY, "unknown".parse().unwrap());
        assert_eq!(limits.client_key(&auth, &h, None), "ip:unknown");
    }

    #[test]
    fn a_burst_passes_then_429_with_retry_after() {
        let cfg = Config {
            cart_rate_per_sec: 1,
            cart_rate_burst: 2,
            rate_limit_max_keys: 2,
            ..Config::default()
        };
        let limits = RateLimits::new(&cfg);
        assert!(limits.check_cart("t", "c1").is_ok());
        assert!(limits.check_cart("t", "c1").is_ok());
        let e = limits.check_cart("t", "c1").unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
        assert!(
            limits.check_cart("t", "c2").is_ok(),
            "other carts are separate"
        );
        let off = RateLimits::new(&Config {
            cart_rate_per_sec: 0,
            ..Config::default()
        });
        assert!((0..100).all(|_| off.check_cart("t", "c").is_ok()));
    }

    #[test]
    fn pushes_are_limited_per_tenant() {
        let limits = RateLimits::new(&Config {
            push_rate_per_sec: 1,
            push_rate_burst: 3,
            ..Config::default()
        });
        assert!((0..3).all(|_| limits.check_push("t1", true).is_ok()));
        let e = limits.check_push("t1", true).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.retry_after.is_some());
        assert!(
            limits.check_push("t2", true).is_ok(),
            "tenants are separate"
        );
        // Names the gateway does not know share one budget, whatever they are.
        assert!((0..3).all(|i| limits.check_push(&format!("made-up-{i}"), false).is_ok()));
        assert!(limits.check_push("made-up-9", false).is_err());
        assert!(limits.check_push("t3", true).is_ok());
    }
}
