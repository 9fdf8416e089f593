//! The projection and the runner, as the gateway sees them: lazily connected gRPC channels
//! (one per configured address), the request context in metadata, a deadline on every call,
//! bounded retries for reads (they are safe to repeat) that move on to the next address, and
//! one mapping of their statuses to the shared error table.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Lazily connected channels to one service, one per address (nothing is dialled until the
/// first call, so the gateway starts while the service is down and reports it per request).
/// Reads go to the address that answered the last one and move on to the next when it does not
/// answer (a stopped or frozen runner: another one answers checkout reads just as well);
/// writes go to the first address.
#[derive(Clone)]
pub struct Service {
    name: &'static str,
    /// One per configured address (empty: not configured).
    channels: Arc<[Channel]>,
    /// Those addresses (`host:port`), in the same order.
    addresses: Arc<[String]>,
    /// The address that answered the last read: the next read starts there.
    preferred: Arc<AtomicUsize>,
    /// The variable that configures it (named when it is not configured).
    setting: String,
    policy: CallPolicy,
}

impl Service {
    /// The service at `endpoints` (none: `setting` is empty, the service is not configured).
    pub fn new(
        name: &'static str,
        setting: String,
        endpoints: Vec<Endpoint>,
        connect_timeout: Duration,
        policy: CallPolicy,
    ) -> Self {
        let addresses = endpoints
            .iter()
            .map(|e| {
                let uri = e.uri();
                let host = uri.host().unwrap_or_default();
                uri.port_u16()
                    .map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"))
            })
            .collect();
        let channels = endpoints
            .into_iter()
            .map(|e| {
                e.connect_timeout(connect_timeout)
                    .tcp_nodelay(true)
                    .connect_lazy()
            })
            .collect();
        Self {
            name,
            channels,
            addresses,
            preferred: Arc::new(AtomicUsize::new(0)),
            setting,
            policy,
        }
    }

    /// Whether an address is configured (checkout refuses to start without a runner).
    pub fn is_configured(&self) -> bool {
        !self.channels.is_empty()
    }

    pub fn not_configured(&self) -> ApiError {
        ApiError::new(
            ErrorCode::Unimplemented,
            format!(
                "the {} is not configured for this gateway ({} is empty)",
                self.name, self.setting
            ),
        )
    }

    /// Its addresses (`host:port`), in the configured order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The service at its address `i` alone.
    fn at(&self, i: usize) -> Self {
        Self {
            channels: Arc::new([self.channels[i].clone()]),
            addresses: Arc::new([self.addresses[i].clone()]),
            preferred: Arc::new(AtomicUsize::new(0)),
            ..self.clone()
        }
    }

    /// The service at each of its addresses alone, in order.
    pub fn each(&self) -> Vec<Self> {
        (0..self.channels.len()).map(|i| self.at(i)).collect()
    }

    /// The service at one of its addresses alone, for an action on one process (an admin
    /// call): the address `named`, or the first. An address that is not configured is refused
    /// without calling anything; the error lists the configured ones, not what was asked.
    pub fn one(&self, named: Option<&str>) -> Result<Self, ApiError> {
        if !self.is_configured() {
            return Err(self.not_configured());
        }
        let i = match named {
            None => 0,
            Some(named) => self
                .addresses
                .iter()
                .position(|a| a == named)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{} must be one of {}: {}",
                        self.name,
                        self.setting,
                        self.addresses.join(", ")
                    ))
                })?,
        };
        Ok(self.at(i))
    }

    /// Its first address (`host:port`; empty when not configured): the one a [`Service::one`]
    /// calls.
    pub fn address(&self) -> &str {
        self.addresses.first().map_or("", String::as_str)
    }

    /// A read: retried on unavailability, each try under the deadline, at least once per
    /// address and at least the policy's attempts; each retry goes to the next address.
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
        let n = self.channels.len();
        if n == 0 {
            return Err(self.not_configured());
        }
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let attempts = (self.policy.read_attempts.max(1) as usize).max(n);
        let mut last = None;
        for i in (start..).take(attempts).map(|i| i % n) {
            match self.once(op, ctx, self.policy.timeout, i, &f).await {
                Err(e) if e.code.retry_safe() && e.code != ErrorCode::VersionConflict => {
                    last = Some(e)
                }
                Ok(v) => {
                    if i != start && self.preferred.swap(i, Ordering::Relaxed) != i {
                        tracing::warn!(
                            service = self.name,
                            address = i,
                            "reads move on to the next address"
                        );
                    }
                    return Ok(v);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ApiError::unavailable(format!("{} unavailable", self.name))))
    }

    /// A write (or an admin action): tried once, at the first address, under the deadline plus
    /// `wait`, how long the service may hold the call open on purpose (a drain waiting for
    /// in-flight work; zero for any other write).
    pub async fn write<T, F, Fut>(
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
        if !self.is_configured() {
            return Err(self.not_configured());
        }
        self.once(op, ctx, self.policy.timeout.saturating_add(wait), 0, &f)
            .await
    }

    async fn once<T, F, Fut>(
        &self,
        op: &'static str,
        ctx: &RequestContext,
        timeout: Duration,
        address: usize,
        f: &F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Channel, tonic::metadata::MetadataMap) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let channel = self.channels[address].clone();
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

/// Attach the request's metadata to a gRPC request.
pub fn request<T>(md: tonic::metadata::MetadataMap, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    *r.metadata_mut() = md;
    r
}

/// The clients of the projection and the runner.
#[derive(Clone)]
pub struct Services {
    /// The projections: queries go to any of them; the dead-letter routes to one
    /// ([`Service::one`]), since each keeps its own.
    pub projection: Service,
    /// The runners: checkout reads go to any of them; `RunnerAdmin` to one.
    pub runner: Service,
    /// JetStream, for recording provider pushes and reading cart histories (`None` in tests
    /// without NATS).
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
