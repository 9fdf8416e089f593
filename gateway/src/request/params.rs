//! Path and query-string parameters with our JSON 400 (axum's own rejections are plain text).

use axum::extract::{FromRequestParts, Path, Query};
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

/// Like `axum::extract::Query`, but a parameter that does not parse (or is unknown, with
/// `deny_unknown_fields`) is a JSON 400 naming it: `query parameter page_size: invalid digit
/// found in string`.
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

/// What axum puts before serde's message.
const QUERY_PREFIX: &str = "Failed to deserialize query string: ";

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(v)| QueryParams(v))
            .map_err(|r| {
                let text = shared::error::clip_quoted(r.body_text()).replace('`', "");
                let detail = text.strip_prefix(QUERY_PREFIX).unwrap_or(&text);
                // serde names an unknown field twice (`x: unknown field x, expected ...`).
                let unknown = detail
                    .split_once(": unknown field ")
                    .map_or(detail.strip_prefix("unknown field "), |(_, rest)| {
                        Some(rest)
                    });
                match unknown {
                    Some(rest) => ApiError::invalid(format!("unknown query parameter {rest}")),
                    None => ApiError::invalid(format!("query parameter {detail}")),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        page_size: Option<u32>,
    }

    async fn err(uri: &str) -> String {
        let (mut parts, ()) = http::Request::get(uri).body(()).unwrap().into_parts();
        QueryParams::<Q>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err()
            .message
    }

    #[tokio::test]
    async fn query_errors_name_the_parameter() {
        assert_eq!(
            err("/x?page_size=x").await,
            "query parameter page_size: invalid digit found in string"
        );
        assert_eq!(
            err("/x?tenant=a").await,
            "unknown query parameter tenant, expected page_size"
        );
    }
}
