//! Reading one subject's messages with JetStream's batch direct get (nats-server >= 2.11).
//!
//! Loading a cold cart means reading every event on `cart.events.<tenant>.<cart_id>` after the
//! snapshot's sequence. A consumer per load costs several API round trips and server state;
//! a batch direct get is one request: `{"seq": <start>, "next_by_subj": <subject>, "batch": n}`
//! to `$JS.API.DIRECT.GET.<stream>`, and the server streams up to `n` matching messages to the
//! reply inbox without flow control, then an end-of-batch marker (status `204 EOB`, empty
//! body, `Nats-Num-Pending` = matches left, `Nats-Last-Sequence` = last sequence sent). When
//! nothing matches the only reply is `404`. async-nats 0.51 has no API for this, so it is
//! built here from a core subscription on a fresh inbox. The same request, one page at a time,
//! serves a cart's history to the gateway ([`read_subject_page`]).
//!
//! Direct gets may be answered by any replica, so a read can lag a just-acknowledged write;
//! correctness never depends on it (appends use `Nats-Expected-Last-Subject-Sequence`).

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::headers::{
    DIRECT_GET_SERVER_HEADERS, NATS_LAST_SEQUENCE, NATS_NUM_PENDING, NATS_SEQUENCE, NATS_SUBJECT,
    NATS_TIME_STAMP, NATS_UP_TO_SEQUENCE,
};
use crate::subjects::direct_get_api;

/// The most messages requested per round trip. The server streams a batch without flow
/// control, so a bound keeps one read from flooding the client's subscription buffer.
pub const MAX_BATCH: usize = 1_000;

/// One stored message as written: its stream sequence (the cart's version), subject, the
/// headers it was published with (server-added direct-get headers removed), payload and the
/// time the server stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub sequence: u64,
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub time: OffsetDateTime,
}

/// Tuning of [`read_subject_after`].
#[derive(Debug, Clone)]
pub struct BatchGetOptions {
    /// Messages per round trip, 1..=[`MAX_BATCH`].
    pub batch: usize,
    /// Longest wait for each reply message (an idle deadline, so long reads are fine).
    pub timeout: Duration,
}

impl Default for BatchGetOptions {
    fn default() -> Self {
        Self {
            batch: 500,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A batch direct get failed. Every variant names the stream.
#[derive(Debug, thiserror::Error)]
pub enum DirectGetError {
    #[error("direct get on {stream}: invalid request: {reason}")]
    InvalidRequest { stream: String, reason: String },
    #[error("direct get on {stream}: no responders (stream missing, or allow_direct is off)")]
    NoResponders { stream: String },
    #[error("direct get on {stream}: no reply within {timeout:?}")]
    Timeout { stream: String, timeout: Duration },
    #[error(
        "direct get on {stream}: the server does not support batch direct get (needs nats-server >= 2.11)"
    )]
    Unsupported { stream: String },
    #[error("direct get on {stream}: server answered {code} {description}")]
    Status {
        stream: String,
        code: u16,
        description: String,
    },
    #[error("direct get on {stream}: malformed reply: {reason}")]
    Malformed { stream: String, reason: String },
    #[error("direct get on {stream}: {reason}")]
    Transport { stream: String, reason: String },
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
}

/// The last message of each subject matching `multi_last` at or below `up_to_seq` (0: the
/// stream's last sequence, fixed by the first page), from sequence `seq` on.
#[derive(Serialize)]
struct MultiLastRequest<'a> {
    multi_last: [&'a str; 1],
    batch: usize,
    #[serde(skip_serializing_if = "is_zero")]
    seq: u64,
    #[serde(skip_serializing_if = "is_zero")]
    up_to_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The most subjects one multi-last request may match (the server's `maxAllowedResponses`);
/// more is answered `413 Too Many Results`.
pub const MAX_MULTI_LAST_SUBJECTS: usize = 1_024;

enum Page {
    NotFound,
    Batch {
        events: Vec<StoredEvent>,
        pending: u64,
        last_sequence: u64,
        /// The ceiling a multi-last page was read at (`Nats-UpTo-Sequence`).
        up_to: Option<u64>,
    },
}

/// Every message on `subject` in `stream` with a sequence greater than `after`, in order, in
/// as few round trips as the batch size allows (one for a typical cart). An empty result
/// means nothing was written after `after`. `subject` must be a literal subject.
pub async fn read_subject_after(
    client: &Client,
    stream: &str,
    subject: &str,
    after: u64,
    options: &BatchGetOptions,
) -> Result<Vec<StoredEvent>, DirectGetError> {
    let api = checked_api(stream, subject, Filter::Literal)?;
    let batch = options.batch.clamp(1, MAX_BATCH);
    let request = |seq, _| BatchRequest {
        seq,
        next_by_subj: subject,
        batch,
    };
    let stalled = |pending, from| {
        format!("{pending} messages pending but the batch from {from} made no progress")
    };
    read_pages(
        client,
        stream,
        &api,
        options.timeout,
        after.saturating_add(1),
        request,
        stalled,
    )
    .await
}

/// One page of [`read_subject_page`]: the messages in stream order, and how many more match
/// after the last of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectPage {
    pub events: Vec<StoredEvent>,
    /// Messages matching the filter after the last one returned (the server's
    /// `Nats-Num-Pending`); 0 when the page reached the end.
    pub pending: u64,
}

/// The first `limit` (1..=[`MAX_BATCH`]) messages matching `filter` with a sequence greater
/// than `after`, in one round trip: a cursor over a subject's history (`after` = the last
/// sequence of the previous page). Unlike [`read_subject_after`], `filter` may hold `*`
/// tokens, e.g. `cart.events.*.<cart_id>` (one cart id in every tenant); the server then walks
/// every matching subject in sequence order.
pub async fn read_subject_page(
    client: &Client,
    stream: &str,
    filter: &str,
    after: u64,
    limit: usize,
    timeout: Duration,
) -> Result<SubjectPage, DirectGetError> {
    let api = checked_api(stream, filter, Filter::Wildcards)?;
    let request = BatchRequest {
        seq: after.saturating_add(1),
        next_by_subj: filter,
        batch: limit.clamp(1, MAX_BATCH),
    };
    match request_page(client, stream, &api, &request, timeout).await? {
        Page::NotFound => Ok(SubjectPage {
            events: Vec::new(),
            pending: 0,
        }),
        Page::Batch {
            events, pending, ..
        } => Ok(SubjectPage { events, pending }),
    }
}

/// What a subject given to a read may be.
#[derive(Clone, Copy, PartialEq)]
enum Filter {
    /// One subject, no wildcards.
    Literal,
    /// `*` tokens allowed (never `>`: a page of one cart's history has a fixed depth).
    Wildcards,
}

/// The direct-get API subject of `stream`, once `subject` is known to fit `kind`.
fn checked_api(stream: &str, subject: &str, kind: Filter) -> Result<String, DirectGetError> {
    let invalid = |reason: String| DirectGetError::InvalidRequest {
        stream: stream.to_owned(),
        reason,
    };
    let api = direct_get_api(stream).map_err(|e| invalid(e.to_string()))?;
    let bad = |t: &str| t.is_empty() || t == ">" || (t == "*" && kind == Filter::Literal);
    if subject.is_empty() || subject.split('.').any(bad) {
        return Err(invalid(match kind {
            Filter::Literal => format!("{subject:?} is not a literal subject"),
            Filter::Wildcards => format!("{subject:?} is not a subject or a filter with `*`"),
        }));
    }
    Ok(api)
}

/// The last message of every subject matching `filter` (e.g. `$KV.CART_NODES.>`: a whole
/// KV bucket with revisions and delete markers), in stream order, without creating a
/// consumer: any replica answers, so it works while a dead server still holds consumer
/// placements (an ephemeral consumer placed there never answers until the server is declared
/// offline, minutes later). At most [`MAX_MULTI_LAST_SUBJECTS`] subjects may match (else
/// `Status { code: 413 }`); pages of `options.batch` are read at one fixed ceiling.
pub async fn read_last_per_subject(
    client: &Client,
    stream: &str,
    filter: &str,
    options: &BatchGetOptions,
) -> Result<Vec<StoredEvent>, DirectGetError> {
    let api = direct_get_api(stream).map_err(|e| DirectGetError::InvalidRequest {
        stream: stream.to_owned(),
        reason: e.to_string(),
    })?;
    let batch = options.batch.clamp(1, MAX_BATCH);
    let request = |seq, up_to_seq| MultiLastRequest {
        multi_last: [filter],
        batch,
        seq,
        up_to_seq,
    };
    let stalled = |pending, _| format!("{pending} subjects pending but the page made no progress");
    read_pages(client, stream, &api, options.timeout, 0, request, stalled).await
}

/// Reads page after page, from sequence `seq` on, until none is pending, and returns their
/// messages. `request(seq, up_to_seq)` is the request of the page that starts at `seq`
/// (`up_to_seq`: 0, then the ceiling the first page was read at); a page that makes no progress
/// ends the read with the error `stalled(pending, seq)`.
async fn read_pages<R: Serialize>(
    client: &Client,
    stream: &str,
    api: &str,
    timeout: Duration,
    mut seq: u64,
    request: impl Fn(u64, u64) -> R,
    stalled: impl Fn(u64, u64) -> String,
) -> Result<Vec<StoredEvent>, DirectGetError> {
    let (mut events, mut up_to_seq) = (Vec::new(), 0);
    loop {
        match request_page(client, stream, api, &request(seq, up_to_seq), timeout).await? {
            Page::NotFound => return Ok(events),
            Page::Batch {
                events: page,
                pending,
                last_sequence,
                up_to,
            } => {
                let progressed = !page.is_empty();
                events.extend(page);
                if pending == 0 {
                    return Ok(events);
                }
                if !progressed || last_sequence < seq {
                    return Err(DirectGetError::Malformed {
                        stream: stream.to_owned(),
                        reason: stalled(pending, seq),
                    });
                }
                seq = last_sequence + 1;
                up_to_seq = up_to.unwrap_or(last_sequence);
            }
        }
    }
}

async fn request_page(
    client: &Client,
    stream: &str,
    api: &str,
    request: &impl Serialize,
    timeout: Duration,
) -> Result<Page, DirectGetError> {
    let transport = |reason: String| DirectGetError::Transport {
        stream: stream.to_owned(),
        reason,
    };
    let body = serde_json::to_vec(request).map_err(|e| transport(e.to_string()))?;
    let inbox = client.new_inbox();
    // Subscribe before publishing: the server replies as fast as it reads the store.
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| transport(format!("subscribe: {e}")))?;
    client
        .publish_with_reply(api.to_owned(), inbox, body.into())
        .await
        .map_err(|e| transport(format!("publish: {e}")))?;

    let mut events = Vec::new();
    loop {
        let msg = tokio::time::timeout(timeout, replies.next())
            .await
            .map_err(|_| DirectGetError::Timeout {
                stream: stream.to_owned(),
                timeout,
            })?
            .ok_or_else(|| transport("subscription closed".into()))?;
        match msg.status.map(|s| s.as_u16()) {
            None | Some(200) => events.push(parse_message(stream, msg)?),
            Some(204) => {
                let headers = msg.headers.unwrap_or_default();
                let pending = header_u64(&headers, NATS_NUM_PENDING).unwrap_or(0);
                let last_sequence = header_u64(&headers, NATS_LAST_SEQUENCE)
                    .or_else(|| events.last().map(|e: &StoredEvent| e.sequence))
                    .unwrap_or(0);
                let up_to = header_u64(&headers, NATS_UP_TO_SEQUENCE);
                return Ok(Page::Batch {
                    events,
                    pending,
                    last_sequence,
                    up_to,
                });
            }
            Some(404) if events.is_empty() => return Ok(Page::NotFound),
            Some(503) => {
                return Err(DirectGetError::NoResponders {
                    stream: stream.to_owned(),
                });
            }
            Some(code) => {
                return Err(DirectGetError::Status {
                    stream: stream.to_owned(),
                    code,
                    description: msg.description.unwrap_or_default(),
                });
            }
        }
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .and_then(|v| v.as_str().trim().parse().ok())
}

fn parse_message(stream: &str, msg: Message) -> Result<StoredEvent, DirectGetError> {
    let malformed = |reason: String| DirectGetError::Malformed {
        stream: stream.to_owned(),
        reason,
    };
    let headers = msg
        .headers
        .ok_or_else(|| malformed("message without headers".into()))?;
    if headers.get(NATS_NUM_PENDING).is_none() {
        // Servers before 2.11 ignore `batch` and answer with one plain direct-get reply.
        return Err(DirectGetError::Unsupported {
            stream: stream.to_owned(),
        });
    }
    let sequence = header_u64(&headers, NATS_SEQUENCE)
        .ok_or_else(|| malformed(format!("missing or invalid {NATS_SEQUENCE}")))?;
    let subject = headers
        .get(NATS_SUBJECT)
        .ok_or_else(|| malformed(format!("missing {NATS_SUBJECT}")))?
        .to_string();
    let stamp = headers
        .get(NATS_TIME_STAMP)
        .ok_or_else(|| malformed(format!("missing {NATS_TIME_STAMP}")))?;
    let time = OffsetDateTime::parse(stamp.as_str(), &Rfc3339)
        .map_err(|e| malformed(format!("{NATS_TIME_STAMP} {:?}: {e}", stamp.as_str())))?;
    let mut original = HeaderMap::new();
    for (name, values) in headers.iter() {
        let name = name.to_string();
        if DIRECT_GET_SERVER_HEADERS.contains(&name.as_str()) {
            continue;
        }
        for v in values {
            original.append(name.as_str(), v.as_str());
        }
    }
    Ok(StoredEvent {
        sequence,
        subject,
        headers: original,
        payload: msg.payload,
        time,
    })
}
