//! Create what is missing, validate what exists: the startup step of every service.
//!
//! Several services (and several replicas of each) run this concurrently against the same
//! server, so a lost creation race is normal: the loser validates what the winner created.
//!
//! A cluster that has just (re)started answers nothing, or "not available", until its members
//! have elected the leaders of the JetStream API and of each stream: every step is tried again
//! for [`STARTUP_PATIENCE`] while that lasts, so a service started with its NATS cluster (or
//! right after a rolling restart) waits instead of exiting.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::{self, kv, stream};
use backon::{ExponentialBuilder, Retryable as _};

use super::NatsError;
use super::policies;
use super::settings::NatsResourceSettings;
use super::validate::{validate_kv, validate_stream};

/// Handles to every stream and bucket of the design's NATS table.
#[derive(Debug, Clone)]
pub struct Resources {
    pub cart_events: stream::Stream,
    pub workflow_commands: stream::Stream,
    pub workflow_events: stream::Stream,
    pub dead_letters: stream::Stream,
    pub cart_snapshots: kv::Store,
    pub cart_placement: kv::Store,
    pub cart_nodes: kv::Store,
    pub catalog: kv::Store,
}

/// How long start-up keeps trying while JetStream is not ready, over every stream and bucket
/// together (the waits between tries; each try is also bounded by the request timeout).
pub const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// Ensures every stream and KV bucket exists and fits `settings`. The first incompatible
/// resource stops startup with an error naming it and its mismatching fields; a JetStream
/// that is not ready yet is waited for ([`STARTUP_PATIENCE`]).
pub async fn ensure_all(
    js: &jetstream::Context,
    settings: &NatsResourceSettings,
) -> Result<Resources, NatsError> {
    ensure_all_within(js, settings, STARTUP_PATIENCE).await
}

/// [`ensure_all`], trying a step again while JetStream is not ready, for at most `patience`
/// of waiting over all the steps together (zero: each once).
pub async fn ensure_all_within(
    js: &jetstream::Context,
    settings: &NatsResourceSettings,
    patience: Duration,
) -> Result<Resources, NatsError> {
    settings.check().map_err(NatsError::Settings)?;
    let deadline = Instant::now() + patience;
    let stream = |config: stream::Config| async move {
        patiently(deadline, || ensure_stream(js, &config)).await
    };
    let kv =
        |config: kv::Config| async move { patiently(deadline, || ensure_kv(js, &config)).await };
    Ok(Resources {
        cart_events: stream(policies::cart_events(settings)).await?,
        workflow_commands: stream(policies::workflow_commands(settings)).await?,
        workflow_events: stream(policies::workflow_events(settings)).await?,
        dead_letters: stream(policies::dead_letters(settings)).await?,
        cart_snapshots: kv(policies::cart_snapshots(settings)).await?,
        cart_placement: kv(policies::cart_placement(settings)).await?,
        cart_nodes: kv(policies::cart_nodes(settings)).await?,
        catalog: kv(policies::catalog(settings)).await?,
    })
}

/// `step` until it succeeds, fails for good, or is still [`NatsError::NotReady`] when the
/// next wait would pass `deadline`; each wait is logged.
async fn patiently<T, Fut>(deadline: Instant, step: impl FnMut() -> Fut) -> Result<T, NatsError>
where
    Fut: Future<Output = Result<T, NatsError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(2))
        .with_total_delay(Some(deadline.saturating_duration_since(Instant::now())))
        .without_max_times();
    step.retry(backoff)
        .when(NatsError::is_not_ready)
        .notify(|error, wait| {
            tracing::warn!(%error, ?wait, "JetStream is not ready (a cluster electing its leaders?); trying again");
        })
        .await
}

/// `Some(stream)` if it exists, `None` if the server says it does not.
async fn existing_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Stream>, NatsError> {
    match js.get_stream(name).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            // A timeout or no responders: nothing answers the JetStream API yet.
            GetStreamErrorKind::Request => Err(NatsError::not_ready("get stream", name, e)),
            GetStreamErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE =>
            {
                Err(NatsError::not_ready("get stream", name, e))
            }
            _ => Err(NatsError::js("get stream", name, e)),
        },
    }
}

/// Creates the stream `expected` if missing; otherwise validates the existing one and never
/// changes it.
pub async fn ensure_stream(
    js: &jetstream::Context,
    expected: &stream::Config,
) -> Result<stream::Stream, NatsError> {
    let name = &expected.name;
    if let Some(s) = existing_stream(js, name).await? {
        validate_stream(expected, &s.cached_info().config)?;
        return Ok(s);
    }
    match js.create_stream(expected.clone()).await {
        Ok(s) => {
            tracing::info!(stream = %name, "created stream");
            Ok(s)
        }
        Err(e) if lost_race(&e.kind()) => {
            let s = existing_stream(js, name)
                .await?
                .ok_or_else(|| NatsError::js("create stream", name, e))?;
            validate_stream(expected, &s.cached_info().config)?;
            Ok(s)
        }
        Err(e) if not_ready(&e.kind()) => Err(NatsError::not_ready("create stream", name, e)),
        Err(e) => Err(NatsError::js("create stream", name, e)),
    }
}

/// A create that may succeed when tried again (one that timed out may have been applied: the
/// next try then finds the stream, or loses the "race" to its own first try).
fn not_ready(kind: &CreateStreamErrorKind) -> bool {
    match kind {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => true,
        CreateStreamErrorKind::JetStream(err) => {
            err.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE
        }
        _ => false,
    }
}

fn lost_race(kind: &CreateStreamErrorKind) -> bool {
    matches!(kind, CreateStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NAME_EXIST)
}

/// Creates the KV bucket `expected` if missing; otherwise validates the stream behind it
/// (`KV_<bucket>`) and never changes it.
pub async fn ensure_kv(
    js: &jetstream::Context,
    expected: &kv::Config,
) -> Result<kv::Store, NatsError> {
    let bucket = &expected.bucket;
    let stream_name = format!("KV_{bucket}");
    // Opened only once its stream was found: a failure here is the server not answering.
    let open = |js: jetstream::Context| async move {
        js.get_key_value(bucket.as_str())
            .await
            .map_err(|e| NatsError::not_ready("open kv bucket", bucket, e))
    };
    if let Some(s) = existing_stream(js, &stream_name).await? {
        validate_kv(expected, &s.cached_info().config)?;
        return open(js.clone()).await;
    }
    match js.create_key_value(expected.clone()).await {
        Ok(store) => {
            tracing::info!(bucket = %bucket, "created kv bucket");
            Ok(store)
        }
        Err(e) if e.kind() == CreateKeyValueErrorKind::BucketCreate => {
            // Possibly a lost race: if it exists now, validate it; else report the failure.
            match existing_stream(js, &stream_name).await? {
                Some(s) => {
                    validate_kv(expected, &s.cached_info().config)?;
                    open(js.clone()).await
                }
                None => Err(NatsError::js("create kv bucket", bucket, e)),
            }
        }
        Err(e) if e.kind() == CreateKeyValueErrorKind::TimedOut => {
            Err(NatsError::not_ready("create kv bucket", bucket, e))
        }
        Err(e) => Err(NatsError::js("create kv bucket", bucket, e)),
    }
}
