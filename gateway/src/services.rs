//! The projection and the runner, as the gateway sees them: lazily connected gRPC channels,
//! the request context in metadata, a deadline on every call, bounded retries for reads (they
//! are safe to repeat), and one mapping of their statuses to the shared error table.

use std::future::Future;
use std::time::{Duration, Instant};

use proto::projection::v1::query_service_client::QueryServiceClient;
use proto::runner::admin::v1::checkout_query_client::CheckoutQueryClient;
use proto::runner::admin::v1::runner_admin_client::RunnerAdminClient;
use shared::headers::RequestContext;
use shared::{ApiError, ErrorCode};
use tonic::transport::{Channel, Endpoint};

use crate::metrics as m;

/// Deadlines and retries of calls to the projection and the runner.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    pub timeout: Duration,
    /// Attempts of a read (first try included); writes are tried once.
    pub read_attempts: u32,
}

/// A lazily connected channel to one service (nothing is dialled until the first call, so the
/// gateway starts while the service is down and reports it per request).
#[derive(Clone)]
pub struct Service {
    name: &'static str,
    channel: Option<Channel>,
    addr: String,
    policy: CallPolicy,
}

impl Service {
    /// A service at `addr` (empty: not configured). A malformed address is an error rather
    /// than "not configured" (`Config::check` reports it at start-up, naming the variable).
    pub fn new(
        name: &'static str,
        addr: &str,
        connect_timeout: Duration,
        policy: CallPolicy,
    ) -> Result<Self, String> {
        let channel = match addr.trim() {
            "" => None,
            a => Some(
                endpoint(a)
                    .map_err(|e| format!("{name} address: {e}"))?
                    .connect_timeout(connect_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy(),
            ),
        };
        Ok(Self {
            name,
            channel,
            addr: addr.to_owned(),
            policy,
        })
    }

    /// Whether an address is configured (checkout refuses to start without a runner).
    pub fn is_configured(&self) -> bool {
        self.channel.is_some()
    }

    pub fn not_configured(&self) -> ApiError {
        ApiError::new(
            ErrorCode::Unimplemented,
            format!(
                "the {} is not configured for this gateway (address {:?})",
                self.name, self.addr
            ),
        )
    }

    fn channel(&self) -> Result<Channel, ApiError> {
        self.channel.clone().ok_or_else(|| self.not_configured())
    }

    /// A read: retried on unavailability within the attempts, each under the deadline.
    pub async fn read<T, F, Fut>(
        &self,
        op: &'static str,
        ctx: &RequestContext,
        f: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Channel, tonic::metadata::MetadataMap) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for _ in 0..self.policy.read_attempts.max(1) {
            match self.once(op, ctx, self.policy.timeout, &f).await {
                Err(e) if e.code.retry_safe() && e.code != ErrorCode::VersionConflict => {
                    last = Some(e)
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ApiError::unavailable(format!("{} unavailable", self.name))))
    }

    /// A write (or an admin action): tried once, under the deadline.
    pub async fn write<T, F, Fut>(
        &self,
        op: &'static str,
        ctx: &RequestContext,
        f: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Channel, tonic::metadata::MetadataMap) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.once(op, ctx, self.policy.timeout, &f).await
    }

    /// A write the service may hold open on purpose for up to `wait` (a drain waiting for
    /// in-flight work): tried once, under the usual deadline plus that wait.
    pub async fn write_waiting<T, F, Fut>(
        &self,
        op: &'static str,
        ctx: &RequestContext,
        wait: Duration,
        f: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Channel, tonic::metadata::MetadataMap) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.once(op, ctx, self.timeout_waiting(wait), &f).await
    }

    /// Deadline of a call the service may hold open for `wait`.
    fn timeout_waiting(&self, wait: Duration) -> Duration {
        self.policy.timeout.saturating_add(wait)
    }

    async fn once<T, F, Fut>(
        &self,
        op: &'static str,
        ctx: &RequestContext,
        timeout: Duration,
        f: &F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Channel, tonic::metadata::MetadataMap) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = self.channel()?;
        let mut md = tonic::metadata::MetadataMap::new();
        shared::spans::downstream(ctx).to_grpc_metadata(&mut md);
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, f(channel, md)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(ApiError::from_upstream(self.name, &status)),
            Err(_) => Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the {} did not answer within {} ms",
                    self.name,
                    timeout.as_millis()
                ),
            )),
        };
        metrics::histogram!(m::UPSTREAM_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!(m::UPSTREAM_ERRORS, "op" => op, "code" => e.code.as_str())
                .increment(1);
        }
        result
    }
}

/// The endpoint of a service address: `host:port`, or a URI with its scheme (the aggregate
/// client reads `GATEWAY_AGGREGATE_ADDRS` by the same rule).
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    let addr = addr.trim();
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| format!("{addr:?} is neither host:port nor a URI ({e})"))?;
    let uri = endpoint.uri();
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{addr:?} names no host"));
    }
    // `Uri` accepts any port text; the connection would fail on every call.
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let after_host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .strip_prefix(host)
        .unwrap_or_default();
    if !after_host.is_empty()
        && after_host
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(format!("the port of {addr:?} is not a number in 0..=65535"));
    }
    Ok(endpoint)
}

/// Attach the request's metadata to a gRPC request.
pub fn request<T>(md: tonic::metadata::MetadataMap, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    *r.metadata_mut() = md;
    r
}

/// The clients of the projection and the runner.
#[derive(Clone)]
pub struct Services {
    pub projection: Service,
    pub runner: Service,
    /// JetStream, for recording provider pushes (`None` in tests without NATS).
    pub js: Option<async_nats::jetstream::Context>,
}

impl Services {
    pub fn query(channel: Channel) -> QueryServiceClient<Channel> {
        QueryServiceClient::new(channel)
    }

    pub fn runner_admin(channel: Channel) -> RunnerAdminClient<Channel> {
        RunnerAdminClient::new(channel)
    }

    pub fn checkout(channel: Channel) -> CheckoutQueryClient<Channel> {
        CheckoutQueryClient::new(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_call_gets_its_wait_on_top_of_the_deadline() {
        let policy = CallPolicy {
            timeout: Duration::from_millis(3_000),
            read_attempts: 3,
        };
        let runner = Service::new("runner", "127.0.0.1:1", Duration::from_secs(1), policy).unwrap();
        assert_eq!(
            runner.timeout_waiting(Duration::from_secs(10)),
            Duration::from_millis(13_000)
        );
        assert_eq!(runner.timeout_waiting(Duration::ZERO), policy.timeout);
    }

    #[tokio::test]
    async fn an_address_is_host_port_or_a_uri() {
        for ok in [
            "127.0.0.1:50061",
            "runner:50061",
            "http://runner:50061",
            " [::1]:1 ",
        ] {
            assert!(endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "runner 50061",
            "http://",
            "127.0.0.1:port",
            "a:1,b:2",
            "[::1]:99999",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        let policy = CallPolicy {
            timeout: Duration::from_secs(1),
            read_attempts: 1,
        };
        let e = Service::new("runner", "http://", Duration::from_secs(1), policy)
            .err()
            .unwrap();
        assert!(e.contains("runner address"), "{e}");
        let off = Service::new("runner", " ", Duration::from_secs(1), policy).unwrap();
        assert!(!off.is_configured());
    }
}
