//! Header names and the request context they carry across every transport.
//!
//! Operators read NATS headers with the `nats` CLI and clients send HTTP headers, so each name
//! is a public contract and is spelled exactly once, here. [`RequestContext`] is the one value
//! that moves tenant, correlation id and trace context HTTP → gRPC → NATS → provider HTTP; each
//! transport has a `to_*` / `from_*` pair so no service ever reads these headers by hand.

use std::fmt;

use async_nats::HeaderName;

use crate::error::{ApiError, ErrorCode};
use crate::propagation::{self, TraceFields};
use cart_domain::ids::{CorrelationId, IdError, TenantId};

// --- Names used on every transport (HTTP, gRPC metadata and NATS) --------------------------

/// Correlates everything one client request caused.
pub const CORRELATION_ID: &str = "x-correlation-id";
/// W3C trace context (read and written by the propagator only, see [`crate::propagation`]).
pub use crate::propagation::{TRACEPARENT, TRACESTATE};
/// The id a client or proxy gave one HTTP request; echoed, never interpreted.
pub const REQUEST_ID: &str = "x-request-id";

// --- HTTP headers and gRPC metadata keys ---------------------------------------------------

/// The tenant a request is for (validated as a [`TenantId`]).
pub const TENANT_ID: &str = "x-tenant-id";
/// A client-chosen key that makes a retried request return the original outcome.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// HTTP: the API key that decides the tenant when API keys are configured.
pub const API_KEY: &str = "x-api-key";
// Dead letters (`DEAD_LETTERS` stream): why a consumer gave up on a message and where it came
// from, so an operator can inspect it with `nats` and a replay can read the original back.

/// Why the consumer gave up (one line).
pub const DLQ_REASON: &str = "dlq-reason";
/// The subject the message was consumed from.
pub const DLQ_ORIGINAL_SUBJECT: &str = "dlq-original-subject";
/// Its sequence in the original stream.
pub const DLQ_ORIGINAL_SEQUENCE: &str = "dlq-original-sequence";
/// The original stream.
pub const DLQ_ORIGINAL_STREAM: &str = "dlq-original-stream";
/// The durable consumer that gave up.
pub const DLQ_CONSUMER: &str = "dlq-consumer";
/// How many times it was delivered.
pub const DLQ_DELIVERIES: &str = "dlq-deliveries";

/// gRPC metadata set by the routing client when the owner of a cart's shard could not be
/// reached: the receiving aggregate node serves the cart anyway (the expected-sequence append
/// keeps that correct) instead of answering `not_owner`.
pub const ROUTE_FALLBACK: &str = "x-cart-route-fallback";

/// gRPC metadata set by the routing client on a retry after an attempt whose outcome is
/// unknown (it timed out on a node that may still be deciding it): the receiving aggregate node
/// stores a refusal of the command with the cart, so that node cannot apply it afterwards.
pub const EARLIER_ATTEMPT_UNKNOWN: &str = "x-cart-earlier-attempt-unknown";

// --- NATS message headers --------------------------------------------------------------------

/// The tenant of the message (NATS consumers filter and account by it without parsing JSON).
pub const NATS_TENANT_ID: &str = "tenant-id";
/// Second spelling of the correlation id on NATS, for tools that look for the unprefixed name.
pub const NATS_CORRELATION_ID: &str = "correlation-id";
/// The bare trace id, for log search (the `traceparent` is what joins the trace).
pub const NATS_TRACE_ID: &str = "trace-id";
/// Comma-separated event types in an event message, so consumers skip without decoding.
pub const CART_EVENT_TYPES: &str = "cart-event-types";
/// JetStream de-duplication id (the command id / effect id).
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// JetStream optimistic concurrency: append only if the subject's last sequence is this.
pub const NATS_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

// --- JetStream direct-get response headers (set by the server) ------------------------------

pub const NATS_STREAM: &str = "Nats-Stream";
pub const NATS_SEQUENCE: &str = "Nats-Sequence";
pub const NATS_SUBJECT: &str = "Nats-Subject";
pub const NATS_TIME_STAMP: &str = "Nats-Time-Stamp";
/// Batch direct get: messages still matching after this one (on the end-of-batch marker:
/// after the whole batch).
pub const NATS_NUM_PENDING: &str = "Nats-Num-Pending";
/// Batch direct get: sequence of the previous message (on the end-of-batch marker: of the
/// last message sent).
pub const NATS_LAST_SEQUENCE: &str = "Nats-Last-Sequence";
/// Multi-subject direct get: the sequence to pass as `up_to_seq` for a consistent next page.
pub const NATS_UP_TO_SEQUENCE: &str = "Nats-UpTo-Sequence";

/// Headers the server adds to direct-get replies; stripped so a read returns what was written.
pub const DIRECT_GET_SERVER_HEADERS: &[&str] = &[
    NATS_STREAM,
    NATS_SEQUENCE,
    NATS_SUBJECT,
    NATS_TIME_STAMP,
    NATS_NUM_PENDING,
    NATS_LAST_SEQUENCE,
    NATS_UP_TO_SEQUENCE,
];

const REQUEST_ID_MAX_LEN: usize = 128;

/// Who a request is for and how to find everything it caused, in one value that every hop
/// passes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    pub tenant: TenantId,
    pub correlation_id: CorrelationId,
    /// The caller's trace context as the propagator read it (`traceparent`, `tracestate`):
    /// empty when the caller sent none (the first span here is then a root, and the sampler
    /// decides). [`crate::spans::downstream`] replaces it with the current span's context.
    pub trace: TraceFields,
    pub request_id: Option<String>,
}

/// gRPC metadata carried inside a message rather than in HEADERS (a call on
/// `CartService.ExecuteStream`): lowercase ASCII names, as a unary call would send them.
pub type CallMetadata = std::collections::HashMap<String, String>;

/// Read access to the header maps (HTTP, gRPC metadata, NATS, a stream call's metadata), so
/// the parsing rules exist once.
pub trait HeaderSource {
    /// The value of `name` as text (`None` when absent; the HTTP and gRPC maps also give
    /// `None` for a value that is not visible ASCII). Every reader validates what it takes.
    fn value(&self, name: &str) -> Option<&str>;
    /// Whether `name` is present at all, readable or not.
    fn contains(&self, name: &str) -> bool;
    /// The trace context, read by the global propagator.
    fn trace(&self) -> TraceFields;
}

impl HeaderSource for http::HeaderMap {
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    fn trace(&self) -> TraceFields {
        TraceFields::extract(&propagation::HttpHeaders(self))
    }
}

/// gRPC metadata is HTTP/2 headers: read by the same rules, from the map underneath.
impl HeaderSource for tonic::metadata::MetadataMap {
    fn value(&self, name: &str) -> Option<&str> {
        self.as_ref().value(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.as_ref().contains(name)
    }
    fn trace(&self) -> TraceFields {
        self.as_ref().trace()
    }
}

/// `md` with every name in lowercase, as gRPC metadata names are (HTTP/2 sends them so) and as
/// [`RequestContext::to_call_metadata`] writes them: a peer that wrote `X-Tenant-Id` into a
/// stream call is read like one that sent it as metadata. A name written both ways keeps its
/// lowercase entry. Free when every name already is lowercase.
pub fn lowercase_names(md: CallMetadata) -> CallMetadata {
    let upper = |k: &str| k.bytes().any(|b| b.is_ascii_uppercase());
    if !md.keys().any(|k| upper(k)) {
        return md;
    }
    let (mixed, mut lower): (CallMetadata, CallMetadata) =
        md.into_iter().partition(|(k, _)| upper(k));
    for (k, v) in mixed {
        lower.entry(k.to_ascii_lowercase()).or_insert(v);
    }
    lower
}

impl HeaderSource for CallMetadata {
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
    fn trace(&self) -> TraceFields {
        TraceFields::extract(self)
    }
}

impl HeaderSource for async_nats::HeaderMap {
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|v| v.as_str())
    }
    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    fn trace(&self) -> TraceFields {
        TraceFields::extract(&propagation::NatsHeaders(self))
    }
}

impl RequestContext {
    /// A context for work that starts here (timers, background jobs) rather than from a
    /// request: a new correlation id and no trace (the work's first span is a root).
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            correlation_id: CorrelationId::generate(),
            trace: TraceFields::default(),
            request_id: None,
        }
    }

    /// The edge's view of an incoming HTTP request. An invalid `x-tenant-id` is a 400 (the
    /// client asked for something we cannot serve); a missing one falls back to
    /// `default_tenant` (single-tenant deployments). Correlation id and trace context are
    /// best effort, never rejected: a missing or malformed correlation id is replaced, a
    /// malformed trace context is dropped (the request starts a new trace).
    pub fn from_http(
        headers: &http::HeaderMap,
        default_tenant: Option<&TenantId>,
    ) -> Result<Self, ApiError> {
        let tenant = match headers.get(TENANT_ID) {
            Some(raw) => {
                let s = raw.to_str().map_err(|_| {
                    ApiError::invalid(format!("header {TENANT_ID} must be visible ASCII"))
                })?;
                parse_tenant_header(TENANT_ID, s)?
            }
            None => default_tenant.cloned().ok_or_else(|| {
                ApiError::invalid(format!(
                    "header {TENANT_ID} is required (no default tenant is configured)"
                ))
            })?,
        };
        Ok(Self::with_tenant(tenant, headers))
    }

    /// The context of an HTTP request made on behalf of `tenant` whatever `x-tenant-id` says
    /// (an operator's call): correlation, trace and request ids come from the headers as usual.
    pub fn from_http_for_tenant(headers: &http::HeaderMap, tenant: TenantId) -> Self {
        Self::with_tenant(tenant, headers)
    }

    /// Sets the context's headers on an outgoing HTTP request or response.
    pub fn inject_http(&self, headers: &mut http::HeaderMap) {
        for (name, value) in self.pairs(TENANT_ID) {
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        self.trace
            .inject_into(&mut propagation::HttpHeadersMut(headers));
    }

    /// Sets the context on outgoing gRPC metadata (gateway → aggregate/projection/runner).
    pub fn to_grpc_metadata(&self, md: &mut tonic::metadata::MetadataMap) {
        for (name, value) in self.pairs(TENANT_ID) {
            if let Ok(v) = value.parse() {
                md.insert(name, v);
            }
        }
        self.trace
            .inject_into(&mut propagation::GrpcMetadataMut(md));
    }

    /// [`RequestContext::to_grpc_metadata`] for a call carried inside a stream message: the
    /// same names and values, straight into the message's map.
    pub fn to_call_metadata(&self, md: &mut CallMetadata) {
        for (name, value) in self.pairs(TENANT_ID) {
            md.insert(name.to_owned(), value);
        }
        self.trace.inject_into(md);
    }

    /// The server side of [`RequestContext::to_grpc_metadata`]. The tenant is required: a gRPC
    /// caller is one of our services, which always knows the tenant.
    pub fn from_grpc_metadata(md: &tonic::metadata::MetadataMap) -> Result<Self, ApiError> {
        let tenant = required_tenant(md, TENANT_ID)?;
        Ok(Self::with_tenant(tenant, md))
    }

    /// Reads a gRPC request whose body names the tenant (`tenant`, authoritative):
    /// `x-tenant-id` may be left out, and when sent must agree (`permission_denied`).
    /// Correlation, trace and request ids come from the metadata as usual.
    pub fn from_grpc_for_tenant(
        md: &impl HeaderSource,
        tenant: TenantId,
    ) -> Result<Self, ApiError> {
        if md.contains(TENANT_ID) {
            let header = required_tenant(md, TENANT_ID)?;
            if header != tenant {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "tenant {:?} in the request does not match {TENANT_ID} {:?}",
                        tenant.as_str(),
                        header.as_str()
                    ),
                ));
            }
        }
        Ok(Self::with_tenant(tenant, md))
    }

    /// Sets the context on a NATS message: both correlation spellings, the trace context
    /// (`traceparent`, `tracestate`) and the bare `trace-id`, so the `nats` CLI and tools that
    /// only know one name all find them.
    pub fn to_nats_headers(&self, headers: &mut async_nats::HeaderMap) {
        // Names made at compile time: an append (the hot path) neither checks nor copies them.
        const TENANT: HeaderName = HeaderName::from_static(NATS_TENANT_ID);
        const CORRELATION: HeaderName = HeaderName::from_static(CORRELATION_ID);
        const NATS_CORRELATION: HeaderName = HeaderName::from_static(NATS_CORRELATION_ID);
        const TRACE_ID: HeaderName = HeaderName::from_static(NATS_TRACE_ID);
        const REQUEST: HeaderName = HeaderName::from_static(REQUEST_ID);
        headers.insert(TENANT, self.tenant.as_str());
        headers.insert(CORRELATION, self.correlation_id.as_str());
        headers.insert(NATS_CORRELATION, self.correlation_id.as_str());
        self.trace
            .inject_into(&mut propagation::NatsHeadersMut(headers));
        if let Some(trace_id) = self.trace.trace_id() {
            headers.insert(TRACE_ID, trace_id.as_str());
        }
        if let Some(id) = &self.request_id {
            headers.insert(REQUEST, id.as_str());
        }
    }

    /// Reads the context of a consumed NATS message. `tenant-id` is required; either
    /// correlation spelling is accepted; the trace comes from `traceparent` / `tracestate`
    /// (`trace-id` alone is for log search and joins nothing).
    pub fn from_nats_headers(headers: &async_nats::HeaderMap) -> Result<Self, ApiError> {
        let tenant = required_tenant(headers, NATS_TENANT_ID)?;
        let correlation_id = nats_correlation_id(headers).unwrap_or_else(CorrelationId::generate);
        Ok(Self {
            tenant,
            correlation_id,
            trace: headers.trace(),
            request_id: request_id(headers),
        })
    }

    fn with_tenant(tenant: TenantId, headers: &impl HeaderSource) -> Self {
        Self {
            tenant,
            correlation_id: headers
                .value(CORRELATION_ID)
                .and_then(|v| CorrelationId::parse(v.trim()).ok())
                .unwrap_or_else(CorrelationId::generate),
            trace: headers.trace(),
            request_id: request_id(headers),
        }
    }

    /// (name, value) pairs for HTTP-style transports, with `tenant_name` as the tenant key.
    fn pairs(&self, tenant_name: &'static str) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (tenant_name, self.tenant.to_string()),
            (CORRELATION_ID, self.correlation_id.to_string()),
        ];
        if let Some(id) = &self.request_id {
            pairs.push((REQUEST_ID, id.clone()));
        }
        pairs
    }
}

fn parse_tenant_header(name: &str, value: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(value).map_err(|e| ApiError::invalid(format!("header {name}: {e}")))
}

fn required_tenant(headers: &impl HeaderSource, name: &str) -> Result<TenantId, ApiError> {
    match headers.value(name) {
        Some(v) => parse_tenant_header(name, v),
        None => Err(ApiError::invalid(format!("header {name} is required"))),
    }
}

fn request_id(headers: &impl HeaderSource) -> Option<String> {
    headers
        .value(REQUEST_ID)
        .map(str::trim)
        .filter(|v| {
            !v.is_empty()
                && v.len() <= REQUEST_ID_MAX_LEN
                && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
}

/// The correlation id a NATS message carries (either spelling), without inventing one when it
/// has none or an invalid one: what a history shows as it was recorded.
pub fn nats_correlation_id(headers: &async_nats::HeaderMap) -> Option<CorrelationId> {
    [CORRELATION_ID, NATS_CORRELATION_ID]
        .iter()
        .find_map(|name| {
            headers
                .value(name)
                .and_then(|v| CorrelationId::parse(v).ok())
        })
}

/// The event types listed in a message's `cart-event-types` header, in order. Absent header →
/// empty iterator (the consumer must then decode the payload to know).
pub fn event_types(headers: &async_nats::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .value(CART_EVENT_TYPES)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The `cart-event-types` header value for a list of types (`ItemAdded,QuantityChanged`).
/// Types must be non-empty and free of commas and whitespace, or the list could not be split
/// back.
pub fn event_types_value<I, S>(types: I) -> Result<String, IdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for t in types {
        let t = t.as_ref();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(IdError::new(
                "event type",
                "must be non-empty visible ASCII without ','",
                t,
            ));
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(t);
    }
    Ok(out)
}

impl fmt::Display for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant={} correlation_id={} trace_id={}",
            self.tenant,
            self.correlation_id,
            self.trace.trace_id().as_deref().unwrap_or("-")
        )
    }
}

#[cfg(test)]
mod tests;
