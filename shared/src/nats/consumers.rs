//! Durable pull consumers (`projection-<view>`, `runner-checkout`, `runner-push`).
//!
//! Pull with explicit acks so a worker acknowledges only what it has durably applied, and the
//! server redelivers the rest after `ack_wait`, at most `max_deliver` times; `max_ack_pending`
//! bounds the work in flight.

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;

use super::NatsError;
use super::settings::ConsumerSettings;
use super::validate::{ConsumerCheck, validate_consumer};

/// The wanted configuration of durable `durable` reading `filter_subjects` (one or more) from
/// the start of the stream.
pub fn durable_pull_config(
    durable: &str,
    filter_subjects: &[String],
    settings: &ConsumerSettings,
) -> consumer::pull::Config {
    let (filter_subject, filter_subjects) = match filter_subjects {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait(),
        max_deliver: settings.max_deliver,
        max_ack_pending: settings.max_ack_pending,
        filter_subject,
        filter_subjects,
        ..Default::default()
    }
}

/// Creates the durable if missing. An existing one with a different filter, ack policy or
/// kind is a startup error naming the field (changing those would skip or replay messages);
/// differing `ack_wait`/`max_deliver`/`max_ack_pending` are updated in place, which keeps the
/// consumer's position.
pub async fn ensure_durable_pull(
    stream: &Stream,
    expected: consumer::pull::Config,
) -> Result<PullConsumer, NatsError> {
    let name = expected
        .durable_name
        .clone()
        .ok_or_else(|| NatsError::Settings("a durable consumer needs a durable_name".into()))?;
    let stream_name = stream.cached_info().config.name.clone();
    let resource = format!("{stream_name}/{name}");
    let info = match stream.consumer_info(&name).await {
        Ok(info) => Some(info),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(NatsError::js("get consumer", &resource, e)),
    };
    let Some(info) = info else {
        return match stream.create_consumer(expected.clone()).await {
            Ok(c) => {
                tracing::info!(consumer = %resource, "created durable consumer");
                Ok(c)
            }
            Err(e) => {
                // Lost a creation race with an identical config is fine; anything else is not.
                let info = stream
                    .consumer_info(&name)
                    .await
                    .map_err(|_| NatsError::js("create consumer", &resource, &e))?;
                validate_consumer(&expected, &info.config)?;
                get(stream, &name, &resource).await
            }
        };
    };
    match validate_consumer(&expected, &info.config)? {
        ConsumerCheck::UpToDate => {}
        ConsumerCheck::NeedsUpdate(fields) => {
            let changes: Vec<String> = fields.iter().map(ToString::to_string).collect();
            tracing::info!(consumer = %resource, changes = %changes.join("; "), "updating durable consumer");
            let mut updated = info.config.clone();
            updated.ack_wait = expected.ack_wait;
            updated.max_deliver = expected.max_deliver;
            updated.max_ack_pending = expected.max_ack_pending;
            stream
                .update_consumer(updated)
                .await
                .map_err(|e| NatsError::js("update consumer", &resource, e))?;
        }
    }
    get(stream, &name, &resource).await
}

/// A durable pull consumer and what it takes to bring it back: its stream and configuration.
#[derive(Clone)]
pub struct Durable {
    pub stream: Stream,
    pub config: consumer::pull::Config,
}

impl Durable {
    /// Creates or validates it (see [`ensure_durable_pull`]).
    pub async fn ensure(&self) -> Result<PullConsumer, NatsError> {
        ensure_durable_pull(&self.stream, self.config.clone()).await
    }

    /// Brings it back after it disappeared (deleted, or its stream re-created). Its position
    /// went with it, so a new one starts after stream sequence `handled` (everything up to it
    /// is handled; 0: from the start) instead of replaying the whole stream. One that exists
    /// is only validated and keeps its own position.
    ///
    /// `handled` is a sequence of the stream this `Durable` was made with: if the stream was
    /// re-created since (another creation time, or fewer messages than `handled`), its
    /// sequences started again at 1 and a new consumer reads it from the start.
    pub async fn recreate(&self, handled: u64) -> Result<PullConsumer, NatsError> {
        self.recreate_after(handled, false).await
    }

    /// [`Self::recreate`] for a caller that has made sure by content that the stream is the
    /// one `handled` numbers (the projection's witness): the stream's creation time is not
    /// compared, since nats-server 2.12.3 reports a new one after a restart, a config update
    /// and another restart (nats-io/nats-server#8470), and the consumer would replay the
    /// whole stream.
    pub async fn recreate_on_same_stream(&self, handled: u64) -> Result<PullConsumer, NatsError> {
        self.recreate_after(handled, true).await
    }

    async fn recreate_after(
        &self,
        handled: u64,
        known_same: bool,
    ) -> Result<PullConsumer, NatsError> {
        let mut config = self.config.clone();
        if handled > 0 {
            let now = self.stream.get_info().await.map_err(|e| {
                NatsError::js("read stream", &self.stream.cached_info().config.name, e)
            })?;
            let same = (known_same || now.created == self.stream.cached_info().created)
                && now.state.last_sequence >= handled;
            if same {
                config.deliver_policy = DeliverPolicy::ByStartSequence {
                    start_sequence: handled + 1,
                };
            }
        }
        ensure_durable_pull(&self.stream, config).await
    }
}

async fn get(stream: &Stream, name: &str, resource: &str) -> Result<PullConsumer, NatsError> {
    stream
        .get_consumer(name)
        .await
        .map_err(|e| NatsError::js("get consumer", resource, e))
}
