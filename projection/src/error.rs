//! The projection's one error type, and its mapping onto the shared error-code table.

use shared::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The request names something invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller may not see this (e.g. the body's tenant differs from `x-tenant-id`).
    #[error("{0}")]
    Forbidden(String),
    /// A SQLite call failed (`what` says which step).
    #[error("database: {what}: {source}")]
    Db {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer build (its schema is ahead of ours).
    #[error("database schema version {found} is newer than this build understands ({known})")]
    SchemaTooNew { found: u32, known: u32 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A NATS or JetStream call failed (retryable).
    #[error("{0}")]
    Nats(String),
    /// The SQLite writer thread has stopped (shutdown or a simulated crash).
    #[error("the projection writer has stopped")]
    WriterStopped,
    #[error("a rebuild is already running")]
    RebuildRunning,
    #[error("rebuild failed: {0}")]
    Rebuild(String),
    #[error("invalid projection config: {0}")]
    Config(String),
}

impl ProjectionError {
    pub fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> ProjectionError {
        move |source| ProjectionError::Db { what, source }
    }

    pub fn nats(what: &str, e: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Nats(format!("{what}: {e}"))
    }
}

impl From<shared::nats::NatsError> for ProjectionError {
    fn from(e: shared::nats::NatsError) -> Self {
        ProjectionError::Nats(e.to_string())
    }
}

impl From<ProjectionError> for ApiError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Invalid(m) => ApiError::invalid(m),
            ProjectionError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m),
            ProjectionError::Forbidden(m) => ApiError::new(ErrorCode::PermissionDenied, m),
            ProjectionError::Nats(_) | ProjectionError::WriterStopped => {
                ApiError::unavailable(e.to_string())
            }
            ProjectionError::RebuildRunning => {
                ApiError::new(ErrorCode::InvalidState, e.to_string())
            }
            other => {
                tracing::error!(error = %other, "projection request failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<ProjectionError> for tonic::Status {
    fn from(e: ProjectionError) -> Self {
        ApiError::from(e).to_status()
    }
}
