//! Running the commands of one `/v1` request: command ids, `If-Match`, atomic or one by one,
//! and `Idempotency-Key` replays.

use axum::body::Bytes;
use axum::response::Response;
use cart_domain::{MutationError, MutationOutcome, MutationReply};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use shared::headers::RequestContext;
use shared::{ApiError, CartId, CommandId, ErrorCode};

use super::command_body::{self, Commands, Parsed};
use crate::idempotency::{Key, Stored, fingerprint};
use crate::state::AppState;
use crate::upstream::aggregate::{Exec, VersionedCart};

/// The `ETag` of a cart version: `"<version>"`.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are valid")
}

/// The version `If-Match` asks for (`"7"`, `W/"7"` or `7`); `*` or no header: none.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(raw) = headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    let v = raw.to_str().unwrap_or_default().trim();
    if v == "*" {
        return Ok(None);
    }
    parse_tag(v).map(Some).ok_or_else(|| {
        ApiError::invalid(format!(
            "header If-Match must be a cart version as returned in ETag (e.g. \"7\"), got {v:?}"
        ))
    })
}

/// True when `If-None-Match` lists `version` (or is `*`): the client's copy is current.
pub fn none_match(headers: &HeaderMap, version: u64) -> bool {
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || parse_tag(t) == Some(version))
}

fn parse_tag(t: &str) -> Option<u64> {
    let t = t.strip_prefix("W/").unwrap_or(t);
    let t = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t);
    t.parse().ok()
}

/// A successful reply: the cart's new version and the body.
struct Reply {
    version: u64,
    /// The aggregate answered with the original outcome of an earlier request (the same
    /// `Idempotency-Key`, possibly through another gateway).
    replayed: bool,
    body: MutationReply,
}

impl Reply {
    fn new(snap: VersionedCart, mutations: Vec<MutationOutcome>) -> Self {
        Self {
            version: snap.version,
            replayed: snap.replayed,
            body: MutationReply {
                result: snap.v1(),
                mutations,
            },
        }
    }

    fn stored(&self) -> Stored {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        Stored::new(StatusCode::OK, Bytes::from(body), Some(etag(self.version)))
    }
}

fn outcome(p: &Parsed, error: Option<&ApiError>) -> MutationOutcome {
    MutationOutcome {
        kind: p.command.name().to_owned(),
        error: error.map(MutationError::from),
        mutation: p.echo.clone(),
    }
}

/// Parses and runs the body of `POST /v1/carts/{id}/commands`.
pub async fn commands(
    s: &AppState,
    ctx: &RequestContext,
    cart: &CartId,
    headers: &HeaderMap,
    body: Value,
) -> Result<Response, ApiError> {
    let expected = if_match(headers)?;
    // The idempotency fingerprint is the body as sent: only a keyed request pays for it.
    let keyed = Key::from_headers(headers)?.map(|Key(k)| (k, body.to_string()));
    let commands = command_body::parse(body, &s.cfg.default_country, s.cfg.max_commands)?;
    if keyed.is_some() && matches!(commands, Commands::Many { atomic: false, .. }) {
        // Each command of such a list is decided on its own and a refused one keeps nothing,
        // so the key could not be held for the request as a whole: another request under it
        // would apply, or apply in part and then be refused.
        return Err(ApiError::invalid(
            "an Idempotency-Key cannot be used with \"atomic\": false (its commands are \
             decided one by one and a refused one keeps nothing, so the key could not be \
             held); send the list atomically, or each command as its own keyed request",
        ));
    }
    let Some((key, raw)) = keyed else {
        let exec = Exec {
            command_id: CommandId::new(),
            expected_version: expected,
            fingerprint: None,
        };
        let reply = run(s, ctx, cart, exec, commands).await?;
        return Ok(reply.stored().response(false));
    };
    let tenant = ctx.tenant.as_str();
    let expected_tag = expected.map(|v| v.to_string()).unwrap_or_default();
    let fingerprint = fingerprint(&[raw.as_bytes(), expected_tag.as_bytes()]);
    // The key derives the command id; the aggregate keeps the fingerprint and outcome with
    // the cart, so every gateway gives the same answer for the retention period.
    let exec = Exec {
        command_id: crate::idempotency::command_id(tenant, cart.as_str(), &key),
        expected_version: expected,
        fingerprint: Some(fingerprint.clone()),
    };
    s.idempotency
        .run(&[tenant, cart.as_str(), &key], &fingerprint, async {
            // A refusal is not kept: nothing was applied, the cart kept nothing, and a retry
            // is decided again (by any gateway alike).
            run(s, ctx, cart, exec, commands)
                .await
                .map(|reply| (reply.stored(), reply.replayed))
        })
        .await
}

/// One command, or several atomically: one commit with `id`. Several one by one (never keyed):
/// the i-th gets an id derived from `id` and reports its own error; `If-Match` applies to the
/// first, and when the first fails so does the request.
async fn run(
    s: &AppState,
    ctx: &RequestContext,
    cart: &CartId,
    exec: Exec,
    commands: Commands,
) -> Result<Reply, ApiError> {
    let id = exec.command_id;
    match commands {
        Commands::One(p) => {
            let mutations = vec![outcome(&p, None)];
            let snap = s.execute(ctx, cart, exec, p.command).await?;
            Ok(Reply::new(snap, mutations))
        }
        Commands::Many {
            commands,
            atomic: true,
        } => {
            let mutations = commands.iter().map(|p| outcome(p, None)).collect();
            let batch = commands.into_iter().map(|p| p.command).collect();
            let snap = s.execute_batch(ctx, cart, exec, batch).await?;
            Ok(Reply::new(snap, mutations))
        }
        Commands::Many {
            mut commands,
            atomic: false,
        } => {
            // Only what the cart decides is reported per command; a bad value is not, nor a
            // rate limit: the list is admitted whole before its first command is sent.
            crate::state::fill_and_validate(commands.iter_mut().map(|p| &mut p.command), id)?;
            s.limits
                .check_cart_n(ctx.tenant.as_str(), cart.as_str(), commands.len())?;
            // `If-Match` is the first command's: when it fails, for whatever reason, whether
            // the cart was at that version is not known, and the others are not sent.
            let guarded = exec.expected_version.is_some();
            let mut last = None;
            let mut mutations = Vec::with_capacity(commands.len());
            for (i, p) in commands.into_iter().enumerate() {
                let exec = if i == 0 {
                    exec.clone()
                } else {
                    Exec {
                        command_id: crate::state::position_id(id, i),
                        expected_version: None,
                        fingerprint: None,
                    }
                };
                // Filled, validated and admitted above.
                match s.upstream.execute(ctx, cart, exec, p.command.clone()).await {
                    Ok(snap) => {
                        mutations.push(outcome(&p, None));
                        last = Some(snap);
                    }
                    Err(e) if i == 0 && (guarded || e.code == ErrorCode::PreconditionFailed) => {
                        return Err(e);
                    }
                    Err(e) => mutations.push(outcome(&p, Some(&e))),
                }
            }
            let snap = match last {
                Some(snap) => snap,
                None => s.upstream.get(ctx, cart).await?,
            };
            Ok(Reply::new(snap, mutations))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        for v in ["\"7\"", "W/\"7\"", "7"] {
            h.insert(http::header::IF_MATCH, v.parse().unwrap());
            assert_eq!(if_match(&h).unwrap(), Some(7), "{v}");
        }
        h.insert(http::header::IF_MATCH, "*".parse().unwrap());
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(http::header::IF_MATCH, "\"abc\"".parse().unwrap());
        assert!(if_match(&h).is_err());
        let mut h = HeaderMap::new();
        assert!(!none_match(&h, 3));
        h.insert(http::header::IF_NONE_MATCH, "\"2\", \"3\"".parse().unwrap());
        assert!(none_match(&h, 3));
        assert!(!none_match(&h, 4));
        assert_eq!(etag(5), "\"5\"");
    }
}
