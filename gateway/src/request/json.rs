//! The one JSON extractor of the crate.
//!
//! The go-cart-actor storefront client posts JSON with the browser's default `text/plain`
//! content type, so the body is parsed as JSON whatever the content type says. Every failure is
//! our JSON 400 naming the field (`quantity: invalid value: integer -1, expected u32`), or 413
//! when the body is over the limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::error::clip;
use shared::{ApiError, ErrorCode};

/// A JSON request body, whatever its content type.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        parse(&body(req, state).await?).map(JsonBody)
    }
}

/// The body of a route that takes none: nothing, or an empty object `{}`. Anything else is
/// refused rather than dropped (a client sending lines with `POST /v1/carts` would otherwise
/// get an empty cart and not know).
#[derive(Debug, Clone, Copy)]
pub struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}

        let bytes = body(req, state).await?;
        if bytes.trim_ascii().is_empty() {
            return Ok(NoBody);
        }
        parse::<Empty>(&bytes).map(|_| NoBody).map_err(|e| {
            ApiError::invalid(format!(
                "this request takes no body (or {{}}), got: {}",
                e.message
            ))
        })
    }
}

/// The raw body; 413 as our JSON error when it is over the limit.
async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(None)
        } else {
            ApiError::invalid(format!("cannot read the request body: {rejection}"))
        }
    })
}

/// A JSON body decoded into a type that ignores unknown fields (a domain type shared with
/// events), with unknown fields refused anyway (see [`refuse_unknown`]).
#[derive(Debug, Clone)]
pub struct StrictJson<T>(pub T);

impl<S, T> FromRequest<S> for StrictJson<T>
where
    T: DeserializeOwned + Serialize,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBody(sent) = JsonBody::<Value>::from_request(req, state).await?;
        let decoded: T = from_value(sent.clone(), "")?;
        let written =
            serde_json::to_value(&decoded).map_err(|e| ApiError::internal(e.to_string()))?;
        refuse_unknown(&sent, &written, "")?;
        Ok(StrictJson(decoded))
    }
}

/// Refuses a field the client sent that the decoded value does not have: the domain's types
/// that events share (`PickupPoint`, `Marking`, ...) ignore unknown fields, so that old code
/// reads new events, while a request with a typo must fail. A `null` counts as absent.
pub fn refuse_unknown(sent: &Value, decoded: &Value, path: &str) -> Result<(), ApiError> {
    match (sent, decoded) {
        (Value::Object(sent), Value::Object(decoded)) => {
            for (key, value) in sent.iter().filter(|(_, v)| !v.is_null()) {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match decoded.get(key) {
                    Some(d) => refuse_unknown(value, d, &at)?,
                    None => {
                        return Err(ApiError::invalid(format!(
                            "{}: unknown field {}",
                            clip(&at),
                            clip(key)
                        )));
                    }
                }
            }
            Ok(())
        }
        (Value::Array(sent), Value::Array(decoded)) => sent
            .iter()
            .zip(decoded)
            .enumerate()
            .try_for_each(|(i, (s, d))| refuse_unknown(s, d, &format!("{path}[{i}]"))),
        _ => Ok(()),
    }
}

/// The 413 every oversize body gets.
pub fn too_large(limit: Option<usize>) -> ApiError {
    let limit = limit.map_or_else(String::new, |l| format!(" of {l} bytes"));
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the request body is larger than the limit{limit} (GATEWAY_BODY_LIMIT_BYTES); send a smaller body"
        ),
    )
}

/// Parses a JSON body into `T`; errors name the offending field. Every body of this API is a
/// JSON object (serde would otherwise also fill a struct from an array, by position).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::invalid(
                "the request body is empty; send a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) if serde_json::from_slice::<serde_json::Value>(bytes).is_ok() => {
            return Err(ApiError::invalid(
                "the request body must be a JSON object ({...})",
            ));
        }
        Some(_) => {}
    }
    // serde_path_to_error keeps every key it passes (a `String` each) for the error's path:
    // a body that parses does not need it, so it is only the second pass of one that fails.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| describe(&e.path().to_string(), e.inner()))?;
    de.end().map_err(|e| describe(".", &e))?;
    Ok(value)
}

/// Deserializes an already parsed JSON value; `prefix` is the value's own path in the request
/// (`commands[2]`), so errors still name the field from the top of the body.
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let full = match (prefix.is_empty(), path.as_str()) {
            (true, _) => path,
            (false, ".") => prefix.to_owned(),
            (false, p) if p.starts_with('[') => format!("{prefix}{p}"),
            (false, p) => format!("{prefix}.{p}"),
        };
        describe(&full, e.inner())
    })
}

/// Our 400 for a JSON error at `path` (empty or `.`: the body itself).
pub fn describe(path: &str, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::invalid(format!("malformed JSON body: {err}"))
        }
        Category::Data => {
            let message = shared::error::clip_quoted(without_position(&err.to_string()).to_owned())
                .replace('`', "");
            if path.is_empty() || path == "." {
                ApiError::invalid(message)
            } else {
                ApiError::invalid(format!("{}: {message}", clip(path)))
            }
        }
    }
}

/// serde_json appends ` at line 1 column 34`; the field path says more than the position.
fn without_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: u32,
    }

    fn err(body: &str) -> String {
        parse::<Body>(body.as_bytes()).unwrap_err().message
    }

    #[test]
    fn errors_name_the_field() {
        // A body that parses takes the first pass only; the rest take the second, with paths.
        assert!(parse::<Body>(br#"{"items":[{"sku":"a","quantity":2}]}"#).is_ok());
        assert_eq!(
            err(r#"{"items":[{"sku":"a","quantity":-1}]}"#),
            "items[0].quantity: invalid value: integer -1, expected u32"
        );
        assert_eq!(
            err(r#"{"items":[{"sku":"a","quantity":1,"zz":1}]}"#),
            "items[0].zz: unknown field zz, expected sku or quantity"
        );
        assert_eq!(
            err(r#"{"items":[{"sku":1,"quantity":1}]}"#),
            "items[0].sku: invalid type: integer 1, expected a string"
        );
        assert!(err(r#"{"items":[}"#).starts_with("malformed JSON body"));
        assert!(err("").contains("empty"));
        assert!(err(r#"{"items":[]} x"#).starts_with("malformed JSON body"));
        assert!(err("{}").contains("missing field items"), "{}", err("{}"));
        assert!(
            err("[1]").contains("must be a JSON object"),
            "{}",
            err("[1]")
        );
    }

    #[test]
    fn values_keep_their_prefix() {
        let v = serde_json::json!({"sku": "a", "quantity": "x"});
        let e = from_value::<Item>(v, "commands[1]").unwrap_err();
        assert_eq!(
            e.message,
            "commands[1].quantity: invalid type: string \"x\", expected u32"
        );
    }
}
