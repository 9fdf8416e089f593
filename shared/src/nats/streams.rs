//! Create what is missing, validate what exists: the startup step of every service.
//!
//! Several services (and several replicas of each) run this concurrently against the same
//! server, so a lost creation race is normal: the loser validates what the winner created.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    CreateKeyValueErrorKind, CreateStreamErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::{self, kv, stream};

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

/// Ensures every stream and KV bucket exists and fits `settings`. The first incompatible
/// resource stops startup with an error naming it and its mismatching fields.
pub async fn ensure_all(
    js: &jetstream::Context,
    settings: &NatsResourceSettings,
) -> Result<Resources, NatsError> {
    settings.check().map_err(NatsError::Settings)?;
    Ok(Resources {
        cart_events: ensure_stream(js, &policies::cart_events(settings)).await?,
        workflow_commands: ensure_stream(js, &policies::workflow_commands(settings)).await?,
        workflow_events: ensure_stream(js, &policies::workflow_events(settings)).await?,
        dead_letters: ensure_stream(js, &policies::dead_letters(settings)).await?,
        cart_snapshots: ensure_kv(js, &policies::cart_snapshots(settings)).await?,
        cart_placement: ensure_kv(js, &policies::cart_placement(settings)).await?,
        cart_nodes: ensure_kv(js, &policies::cart_nodes(settings)).await?,
        catalog: ensure_kv(js, &policies::catalog(settings)).await?,
    })
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
        Err(e) => Err(NatsError::js("create stream", name, e)),
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
    let open = |js: jetstream::Context| async move {
        js.get_key_value(bucket.as_str())
            .await
            .map_err(|e| NatsError::js("open kv bucket", bucket, e))
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
        Err(e) => Err(NatsError::js("create kv bucket", bucket, e)),
    }
}
