//! Everything that talks to NATS: connecting, the JetStream resources of the design's NATS
//! table (policies, create-or-validate), durable consumers and the batch direct get used to
//! load a cart's events, the dead letters of every consumer, and the streams' and consumers'
//! stats as gauges.
//!
//! Resource names and subjects come from [`crate::subjects`]; header names from
//! [`crate::headers`].

pub mod connect;
pub mod consumers;
pub mod dead_letter;
pub mod direct_get;
pub mod event_publish;
pub mod policies;
pub mod settings;
pub mod stats;
pub mod streams;
pub mod validate;

pub use connect::{ServiceNats, StartError, connect, connect_and_ensure, inbox_prefix, jetstream};
pub use consumers::{Durable, durable_pull_config, ensure_durable_pull};
pub use dead_letter::{
    MAX_REASON_LEN, Original, dead_letter_headers, dead_letter_msg_id, dead_letter_subject,
    one_line,
};
pub use direct_get::{
    BatchGetOptions, DirectGetError, StoredEvent, SubjectPage, read_subject_after,
    read_subject_page,
};
pub use event_publish::event_publish;
pub use settings::{ConsumerSettings, NatsConfig, NatsResourceSettings};
pub use stats::JetStreamStats;
pub use streams::{
    Resources, STARTUP_PATIENCE, ensure_all, ensure_all_within, ensure_kv, ensure_stream,
};
pub use validate::{FieldMismatch, ValidationError};

use crate::error::ApiError;

/// A NATS operation failed at startup or at run time. Messages name the resource.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    /// An existing resource does not fit the policy (startup error; fix it with the CLI).
    #[error(transparent)]
    Incompatible(#[from] ValidationError),
    /// The configured settings are themselves invalid.
    #[error("invalid NATS resource settings: {0}")]
    Settings(String),
    /// A JetStream API call failed (`op` on `resource`).
    #[error("{op} {resource}: {message}")]
    JetStream {
        op: &'static str,
        resource: String,
        message: String,
    },
    /// JetStream did not answer, or answered that it is not available yet: a cluster that has
    /// just (re)started is still electing its leaders. Worth another try, for a while.
    #[error("{op} {resource}: {message}")]
    NotReady {
        op: &'static str,
        resource: String,
        message: String,
    },
    #[error(transparent)]
    DirectGet(#[from] DirectGetError),
}

impl NatsError {
    pub(crate) fn js(op: &'static str, resource: &str, err: impl std::fmt::Display) -> Self {
        NatsError::JetStream {
            op,
            resource: resource.to_owned(),
            message: err.to_string(),
        }
    }

    pub(crate) fn not_ready(op: &'static str, resource: &str, err: impl std::fmt::Display) -> Self {
        NatsError::NotReady {
            op,
            resource: resource.to_owned(),
            message: err.to_string(),
        }
    }

    /// The call may succeed when tried again ([`NatsError::NotReady`]).
    pub fn is_not_ready(&self) -> bool {
        matches!(self, NatsError::NotReady { .. })
    }
}

impl From<NatsError> for ApiError {
    /// At run time a NATS failure means a dependency is unavailable: retryable, 503.
    fn from(e: NatsError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}
