//! HTTP client for the Klarna Checkout v3 / Order Management API shape.
//!
//! Basic auth and timeouts from config; each call (with its retries) is a `provider.call` span,
//! whose trace context goes out as `traceparent` / `tracestate`; transient
//! failures (connect errors, timeouts, 408/429/5xx) are retried with exponential back-off and
//! jitter, permanent ones (other 4xx) are returned at once with the provider's reason.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use shared::headers::RequestContext;
use shared::secret::Secret;
use tracing::Instrument;

use super::order::Order;
use crate::metrics as m;

/// Where and how to reach the provider. Reloadable at runtime (RunnerAdmin.Reload).
/// `Debug` shows no password (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderConfig {
    /// Base URL, e.g. `https://api.playground.klarna.com`. Empty: the embedded mock provider.
    pub base_url: String,
    pub username: String,
    pub password: Secret,
    pub timeout_ms: u64,
    /// Attempts for a transient failure, the first included.
    pub attempts: usize,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    pub locale: String,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            username: "merchant".into(),
            password: "secret".into(),
            timeout_ms: 5_000,
            attempts: 4,
            backoff_min_ms: 100,
            backoff_max_ms: 2_000,
            locale: "sv-SE".into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later: the provider or the network failed.
    #[error("provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request; retrying will not help.
    #[error("provider refused the request ({status}): {message}")]
    Permanent {
        status: u16,
        code: String,
        message: String,
    },
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Transient(_))
    }

    /// The provider does not know the order (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ProviderError::Permanent { status: 404, .. })
    }

    /// A short machine-readable reason (recorded in `CheckoutFailed`).
    pub fn code(&self) -> String {
        match self {
            ProviderError::Transient(_) => "provider_unavailable".into(),
            ProviderError::Permanent { code, .. } => code.clone(),
        }
    }
}

/// Klarna's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    error_messages: Vec<String>,
}

#[derive(Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    cfg: ProviderConfig,
}

impl ProviderClient {
    pub fn new(cfg: ProviderConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.clamp(1, 2_000)))
            .user_agent("cart-runner")
            .build()
            .map_err(|e| ProviderError::Transient(format!("http client: {e}")))?;
        Ok(Self { http, cfg })
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    /// `POST /checkout/v3/orders`. `idempotency_key` (the attempt id) makes a repeated create
    /// return the order the first one made. A failed try is repeated only while `may_retry`
    /// (the runner still holds its lease).
    pub async fn create_order(
        &self,
        order: &Order,
        idempotency_key: &str,
        ctx: &RequestContext,
        may_retry: &(dyn Fn() -> bool + Sync),
    ) -> Result<Order, ProviderError> {
        let call = Call {
            endpoint: "create_order",
            method: reqwest::Method::POST,
            path: "/checkout/v3/orders",
            idempotency_key: Some(idempotency_key),
            may_retry,
        };
        self.send(call, Some(order), ctx).await.and_then(decode)
    }

    /// `POST /checkout/v3/orders/{id}`: replace lines and amounts of an open order. A failed
    /// try is repeated only while `may_retry` (the runner still holds its lease).
    pub async fn update_order(
        &self,
        id: &str,
        order: &Order,
        ctx: &RequestContext,
        may_retry: &(dyn Fn() -> bool + Sync),
    ) -> Result<Order, ProviderError> {
        let path = format!("/checkout/v3/orders/{id}");
        let call = Call {
            endpoint: "update_order",
            method: reqwest::Method::POST,
            path: &path,
            idempotency_key: None,
            may_retry,
        };
        self.send(call, Some(order), ctx).await.and_then(decode)
    }

    /// `GET /checkout/v3/orders/{id}`.
    pub async fn get_order(&self, id: &str, ctx: &RequestContext) -> Result<Order, ProviderError> {
        let path = format!("/checkout/v3/orders/{id}");
        let call = Call::repeatable("get_order", reqwest::Method::GET, &path);
        self.send::<()>(call, None, ctx).await.and_then(decode)
    }

    /// `POST /ordermanagement/v1/orders/{id}/acknowledge` (after a push).
    pub async fn acknowledge(&self, id: &str, ctx: &RequestContext) -> Result<(), ProviderError> {
        let path = format!("/ordermanagement/v1/orders/{id}/acknowledge");
        let call = Call::repeatable("acknowledge", reqwest::Method::POST, &path);
        self.send::<()>(call, None, ctx).await.map(|_| ())
    }

    /// `POST /ordermanagement/v1/orders/{id}/cancel`: release a paid order's authorisation
    /// (a paid order that does not match its cart, with `RUNNER_MISMATCH_ACTION=cancel`).
    pub async fn cancel(&self, id: &str, ctx: &RequestContext) -> Result<(), ProviderError> {
        let path = format!("/ordermanagement/v1/orders/{id}/cancel");
        let call = Call::repeatable("cancel", reqwest::Method::POST, &path);
        self.send::<()>(call, None, ctx).await.map(|_| ())
    }

    async fn send<B: Serialize>(
        &self,
        call: Call<'_>,
        body: Option<&B>,
        ctx: &RequestContext,
    ) -> Result<bytes::Bytes, ProviderError> {
        let Call {
            endpoint,
            method,
            path,
            idempotency_key,
            may_retry,
        } = call;
        let url = format!("{}{path}", self.cfg.base_url.trim_end_matches('/'));
        let attempt = || async {
            let mut req = self
                .http
                .request(method.clone(), &url)
                .basic_auth(&self.cfg.username, Some(self.cfg.password.expose()));
            let mut headers = http::HeaderMap::new();
            shared::spans::downstream(ctx).inject_http(&mut headers);
            req = req.headers(headers);
            if let Some(key) = idempotency_key {
                req = req.header("Klarna-Idempotency-Key", key);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let started = Instant::now();
            let result = req.send().await;
            metrics::histogram!(m::PROVIDER_SECONDS, "endpoint" => endpoint)
                .record(started.elapsed().as_secs_f64());
            let resp = result.map_err(|e| ProviderError::Transient(format!("{endpoint}: {e}")))?;
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| ProviderError::Transient(format!("{endpoint}: reading body: {e}")))?;
            if status.is_success() {
                return Ok(bytes);
            }
            metrics::counter!(m::PROVIDER_ERRORS, "endpoint" => endpoint, "status" => status.as_u16().to_string()).increment(1);
            Err(classify(status, &bytes))
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(self.cfg.backoff_min_ms))
                    .with_max_delay(Duration::from_millis(self.cfg.backoff_max_ms))
                    .with_max_times(self.cfg.attempts.saturating_sub(1))
                    .with_jitter(),
            )
            .when(|e| e.is_transient() && may_retry())
            .notify(|e, after| tracing::warn!(endpoint, error = %e, ?after, "provider call failed; retrying"))
            .instrument(tracing::info_span!("provider.call", endpoint, %method, path))
            .await
    }
}

/// One provider endpoint as [`ProviderClient::send`] calls it.
struct Call<'a> {
    endpoint: &'static str,
    method: reqwest::Method,
    path: &'a str,
    idempotency_key: Option<&'a str>,
    /// Asked before each repeated try.
    may_retry: &'a (dyn Fn() -> bool + Sync),
}

impl<'a> Call<'a> {
    /// A call any runner may repeat, with or without the lease: a read, or an acknowledgement
    /// or cancel of a paid order, which the provider applies once however often it is sent.
    fn repeatable(endpoint: &'static str, method: reqwest::Method, path: &'a str) -> Self {
        Self {
            endpoint,
            method,
            path,
            idempotency_key: None,
            may_retry: &|| true,
        }
    }
}

fn classify(status: StatusCode, body: &[u8]) -> ProviderError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .map(|b| b.error_messages.join("; "))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        return ProviderError::Transient(format!("{status}: {message}"));
    }
    ProviderError::Permanent {
        status: status.as_u16(),
        code: parsed
            .map(|b| b.error_code)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| format!("http_{}", status.as_u16())),
        message,
    }
}

fn decode(bytes: bytes::Bytes) -> Result<Order, ProviderError> {
    serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::Transient(format!("provider answered an unreadable order: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::provider::mock::{Faults, MockProvider};
    use shared::test_support::config_check::assert_debug_hides;

    /// An order-changing call is tried again only while its caller still may (the runner
    /// holds its lease): the client's retries outlast the lease, and a standby that took over
    /// makes its own calls. Repeatable calls (reads, acknowledge, cancel) retry regardless.
    #[tokio::test]
    async fn an_order_change_is_tried_again_only_while_the_caller_may() {
        shared::tls::install_crypto_provider();
        let mock = MockProvider::new("merchant", "secret");
        let stop = tokio_util::sync::CancellationToken::new();
        let (addr, _) = mock.serve("127.0.0.1:0", stop.clone()).await.unwrap();
        mock.set_faults(Faults {
            fail_next: 100,
            ..Default::default()
        });
        let client = ProviderClient::new(ProviderConfig {
            base_url: format!("http://{addr}"),
            attempts: 4,
            backoff_min_ms: 1,
            backoff_max_ms: 2,
            ..Default::default()
        })
        .unwrap();
        let ctx = RequestContext::new(shared::TenantId::default_tenant());
        let asked = AtomicU32::new(0);
        let once = || asked.fetch_add(1, Ordering::SeqCst) == 0;
        let order = Order::default();
        let e = client
            .update_order("ko-1", &order, &ctx, &once)
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(mock.stats().api_requests, 2, "one try, one retry, no more");
        let e = client
            .create_order(&order, "key-1", &ctx, &|| false)
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert_eq!(mock.stats().api_requests, 3, "no retry at all");
        client.get_order("ko-1", &ctx).await.unwrap_err();
        assert_eq!(
            mock.stats().api_requests,
            7,
            "repeatable calls retry as configured"
        );
        stop.cancel();
    }

    #[test]
    fn a_printed_provider_config_does_not_show_the_password() {
        let cfg = ProviderConfig {
            password: "hunter2-provider".into(),
            ..Default::default()
        };
        assert_debug_hides(&cfg, &["hunter2-provider"], "merchant");
    }
}
