//! Reading `CART_EVENTS` again from a given sequence on, in order, outside the live consumer:
//! an ordered consumer (no state on the server, nothing to acknowledge) that a rebuild reads
//! from sequence 1 ([`crate::ops::rebuild`]) and start-up recovery from the first message the
//! stored cart states lack ([`super::recovery`]).

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::Ordered, pull::OrderedConfig};
use async_nats::jetstream::stream::Stream;
use futures::{FutureExt, StreamExt};
use shared::subjects::CART_EVENTS_ALL;

use crate::error::ProjectionError;
use crate::write::changes::Incoming;

/// A replay: an ordered consumer over `CART_EVENTS` from a given sequence on.
pub(crate) struct Source {
    messages: Ordered,
    /// A message read past the current goal, kept for the next phase.
    ahead: Option<Incoming>,
    timeout: Duration,
}

impl Source {
    pub(crate) async fn open(
        events: &Stream,
        from: u64,
        timeout: Duration,
    ) -> Result<Self, ProjectionError> {
        let consumer = tokio::time::timeout(
            timeout,
            events.create_consumer(OrderedConfig {
                filter_subject: CART_EVENTS_ALL.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..OrderedConfig::default()
            }),
        )
        .await
        .map_err(|_| ProjectionError::nats("create replay consumer", "no reply in time"))?
        .map_err(|e| ProjectionError::nats("create replay consumer", e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| ProjectionError::nats("replay", e))?;
        Ok(Self {
            messages,
            ahead: None,
            timeout,
        })
    }

    fn convert(msg: async_nats::jetstream::Message) -> Result<Incoming, ProjectionError> {
        let info = msg.info().map_err(|e| ProjectionError::nats("replay", e))?;
        Ok(Incoming::new(
            info.stream_sequence,
            msg.subject.to_string(),
            msg.headers.clone(),
            msg.payload.clone(),
            1,
        )
        .decoded_ahead())
    }

    pub(crate) async fn next(&mut self) -> Result<Incoming, ProjectionError> {
        if let Some(inc) = self.ahead.take() {
            return Ok(inc);
        }
        match tokio::time::timeout(self.timeout, self.messages.next()).await {
            Err(_) => Err(ProjectionError::nats("replay", "no message in time")),
            Ok(None) => Err(ProjectionError::nats("replay", "the replay consumer ended")),
            Ok(Some(r)) => Self::convert(r.map_err(|e| ProjectionError::nats("replay", e))?),
        }
    }

    /// The next message if one is already buffered.
    pub(crate) fn next_ready(&mut self) -> Option<Result<Incoming, ProjectionError>> {
        if let Some(inc) = self.ahead.take() {
            return Some(Ok(inc));
        }
        match self.messages.next().now_or_never()? {
            None => Some(Err(ProjectionError::nats(
                "replay",
                "the replay consumer ended",
            ))),
            Some(r) => Some(
                r.map_err(|e| ProjectionError::nats("replay", e))
                    .and_then(Self::convert),
            ),
        }
    }

    /// Keeps `inc`, read past the current goal, for the next phase: [`Source::next`] returns
    /// it first.
    pub(crate) fn put_back(&mut self, inc: Incoming) {
        self.ahead = Some(inc);
    }
}
