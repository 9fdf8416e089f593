//! Path parameters with our JSON 400 (axum's own rejection is plain text).

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;
use serde::de::DeserializeOwned;
use shared::ApiError;

/// Like `axum::extract::Path`, but a parameter that does not parse is `{"error", "code"}`.
#[derive(Debug, Clone)]
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Params(v))
            .map_err(|r| ApiError::invalid(format!("path parameter: {}", r.body_text())))
    }
}
