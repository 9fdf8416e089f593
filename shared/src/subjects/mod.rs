//! NATS subjects, KV keys and resource names: builders and parsers for every one in the
//! design's NATS contract.
//!
//! Subjects are how consumers filter and how operators inspect (`nats sub 'cart.events.acme.>'`),
//! so their shape is a public API. Each shape is built and parsed here only; every variable
//! token is validated so an id can never add a level (`.`) or turn into a wildcard (`*`, `>`).

use std::fmt;

use cart_domain::ids::{CartId, IdError, TenantId, is_token};

// --- Streams ---------------------------------------------------------------------------------

/// The event store: one message per accepted command.
pub const CART_EVENTS_STREAM: &str = "CART_EVENTS";
/// The runner's outbox: effects to perform.
pub const WORKFLOW_COMMANDS_STREAM: &str = "WORKFLOW_COMMANDS";
/// Effect results.
pub const WORKFLOW_EVENTS_STREAM: &str = "WORKFLOW_EVENTS";
/// Poison messages with the reason, original subject and sequence.
pub const DEAD_LETTERS_STREAM: &str = "DEAD_LETTERS";

/// Everything `CART_EVENTS` captures.
pub const CART_EVENTS_ALL: &str = "cart.events.>";
/// Everything `WORKFLOW_COMMANDS` captures.
pub const WORKFLOW_COMMANDS_ALL: &str = "workflow.commands.>";
/// Everything `WORKFLOW_EVENTS` captures.
pub const WORKFLOW_EVENTS_ALL: &str = "workflow.events.>";
/// Everything `DEAD_LETTERS` captures.
pub const DEAD_LETTERS_ALL: &str = "dlq.>";

const CART_EVENTS_PREFIX: &str = "cart.events";
const WORKFLOW_COMMANDS_PREFIX: &str = "workflow.commands";
const WORKFLOW_EVENTS_PREFIX: &str = "workflow.events";
const DLQ_PREFIX: &str = "dlq";

// --- KV buckets ------------------------------------------------------------------------------

/// Cart snapshots (`<tenant>.<cart_id>`), an optimisation completed from the stream.
pub const CART_SNAPSHOTS_BUCKET: &str = "CART_SNAPSHOTS";
/// Shard → owning aggregate node (`shards.<n>`).
pub const CART_PLACEMENT_BUCKET: &str = "CART_PLACEMENT";
/// Live aggregate nodes (`<node_id>`); the bucket TTL is the liveness timeout.
pub const CART_NODES_BUCKET: &str = "CART_NODES";
/// SKUs, delivery prices and vouchers.
pub const CATALOG_BUCKET: &str = "CATALOG";
/// The runner's lease (`checkout`): only the runner holding it fetches effects; the bucket
/// TTL is how long a holder that stopped refreshing keeps it.
pub const RUNNER_LEASE_BUCKET: &str = "RUNNER_LEASE";
/// The one key of `RUNNER_LEASE`.
pub const RUNNER_LEASE_KEY: &str = "checkout";

// --- Durable consumers -----------------------------------------------------------------------

/// The runner's consumer on `CART_EVENTS` (checkout intents).
pub const RUNNER_CHECKOUT_DURABLE: &str = "runner-checkout";
/// The runner's consumer on `WORKFLOW_COMMANDS` (effects to push to the provider).
pub const RUNNER_PUSH_DURABLE: &str = "runner-push";

/// The JetStream API subject prefix for direct gets (`$JS.API.DIRECT.GET.<stream>`).
pub const DIRECT_GET_API_PREFIX: &str = "$JS.API.DIRECT.GET";

/// A subject, key or name could not be built or parsed. Names what and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct SubjectError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl SubjectError {
    fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            what,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<SubjectError> for crate::ApiError {
    fn from(e: SubjectError) -> Self {
        crate::ApiError::invalid(e.to_string())
    }
}

const TOKEN_RULE: &str = "must be a NATS subject token: A-Z, a-z, 0-9, '-' or '_'";

/// Checks one variable token (kind, id, consumer, node, SKU ...).
pub fn token<'a>(field: &'static str, value: &'a str) -> Result<&'a str, IdError> {
    if is_token(value) {
        Ok(value)
    } else {
        Err(IdError::new(field, TOKEN_RULE, value))
    }
}

fn tok(what: &'static str, field: &'static str, value: &str) -> Result<(), SubjectError> {
    token(field, value)
        .map(|_| ())
        .map_err(|e| SubjectError::new(what, value, e.to_string()))
}

/// Splits `subject` into exactly `n` tokens after `prefix` (itself dot-separated).
fn split_after<'a>(
    what: &'static str,
    subject: &'a str,
    prefix: &str,
    n: usize,
) -> Result<Vec<&'a str>, SubjectError> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| SubjectError::new(what, subject, format!("must start with {prefix}.")))?;
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() != n {
        return Err(SubjectError::new(
            what,
            subject,
            format!("must have {n} tokens after {prefix}., got {}", parts.len()),
        ));
    }
    Ok(parts)
}

fn parse_tenant(what: &'static str, subject: &str, s: &str) -> Result<TenantId, SubjectError> {
    TenantId::parse(s).map_err(|e| SubjectError::new(what, subject, e.to_string()))
}

fn parse_cart(what: &'static str, subject: &str, s: &str) -> Result<CartId, SubjectError> {
    CartId::parse(s).map_err(|e| SubjectError::new(what, subject, e.to_string()))
}

// --- cart.events.<tenant>.<cart_id> ----------------------------------------------------------

/// `cart.events.<tenant>.<cart_id>`: one cart's event history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CartEventSubject {
    pub tenant: TenantId,
    pub cart_id: CartId,
}

impl CartEventSubject {
    pub fn new(tenant: &TenantId, cart_id: &CartId) -> Self {
        Self {
            tenant: tenant.clone(),
            cart_id: cart_id.clone(),
        }
    }

    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        const WHAT: &str = "cart event subject";
        let p = split_after(WHAT, subject, CART_EVENTS_PREFIX, 2)?;
        Ok(Self {
            tenant: parse_tenant(WHAT, subject, p[0])?,
            cart_id: parse_cart(WHAT, subject, p[1])?,
        })
    }
}

impl fmt::Display for CartEventSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&cart_events(&self.tenant, &self.cart_id))
    }
}

/// `cart.events.<tenant>.<cart_id>`: the one place its layout is written. Made per command, so
/// in one allocation of the exact size (formatting grows the string several times).
pub fn cart_events(tenant: &TenantId, cart_id: &CartId) -> String {
    [CART_EVENTS_PREFIX, tenant.as_str(), cart_id.as_str()].join(".")
}

/// `cart.events.*.<cart_id>`: the carts with this id in every tenant (an operator's read of a
/// cart whose tenant is not known; ids are chosen by clients, so two tenants may share one).
pub fn cart_events_any_tenant(cart_id: &CartId) -> String {
    format!("{CART_EVENTS_PREFIX}.*.{cart_id}")
}

/// `cart.events.<tenant>.*`: every cart of one tenant (a consumer filter).
pub fn cart_events_for_tenant(tenant: &TenantId) -> String {
    format!("{CART_EVENTS_PREFIX}.{tenant}.*")
}

// --- workflow.{commands,events}.<tenant>.<kind>.<id> ----------------------------------------

/// Which workflow stream a subject belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowStream {
    /// `workflow.commands.…`: effects to perform.
    Commands,
    /// `workflow.events.…`: effect results.
    Events,
}

impl WorkflowStream {
    fn prefix(self) -> &'static str {
        match self {
            WorkflowStream::Commands => WORKFLOW_COMMANDS_PREFIX,
            WorkflowStream::Events => WORKFLOW_EVENTS_PREFIX,
        }
    }
}

/// `workflow.<commands|events>.<tenant>.<kind>.<id>`, e.g. a checkout attempt's effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkflowSubject {
    pub stream: WorkflowStream,
    pub tenant: TenantId,
    pub kind: String,
    pub id: String,
}

impl WorkflowSubject {
    pub fn new(
        stream: WorkflowStream,
        tenant: &TenantId,
        kind: &str,
        id: &str,
    ) -> Result<Self, SubjectError> {
        tok("workflow subject", "workflow kind", kind)?;
        tok("workflow subject", "workflow id", id)?;
        Ok(Self {
            stream,
            tenant: tenant.clone(),
            kind: kind.to_owned(),
            id: id.to_owned(),
        })
    }

    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        const WHAT: &str = "workflow subject";
        let stream = if subject.starts_with(WORKFLOW_COMMANDS_PREFIX) {
            WorkflowStream::Commands
        } else if subject.starts_with(WORKFLOW_EVENTS_PREFIX) {
            WorkflowStream::Events
        } else {
            return Err(SubjectError::new(
                WHAT,
                subject,
                format!("must start with {WORKFLOW_COMMANDS_PREFIX}. or {WORKFLOW_EVENTS_PREFIX}."),
            ));
        };
        let p = split_after(WHAT, subject, stream.prefix(), 3)?;
        let tenant = parse_tenant(WHAT, subject, p[0])?;
        Self::new(stream, &tenant, p[1], p[2])
            .map_err(|e| SubjectError::new(WHAT, subject, e.reason))
    }
}

impl fmt::Display for WorkflowSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.stream.prefix();
        write!(f, "{p}.{}.{}.{}", self.tenant, self.kind, self.id)
    }
}

/// `workflow.commands.<tenant>.<kind>.<id>`.
pub fn workflow_command(tenant: &TenantId, kind: &str, id: &str) -> Result<String, SubjectError> {
    WorkflowSubject::new(WorkflowStream::Commands, tenant, kind, id).map(|s| s.to_string())
}

/// `workflow.events.<tenant>.<kind>.<id>`.
pub fn workflow_event(tenant: &TenantId, kind: &str, id: &str) -> Result<String, SubjectError> {
    WorkflowSubject::new(WorkflowStream::Events, tenant, kind, id).map(|s| s.to_string())
}

/// `workflow.<commands|events>.*.<kind>.*`: every workflow of one kind (a consumer filter).
pub fn workflow_kind_filter(stream: WorkflowStream, kind: &str) -> Result<String, SubjectError> {
    tok("workflow filter", "workflow kind", kind)?;
    Ok(format!("{}.*.{kind}.*", stream.prefix()))
}

// --- dlq.<consumer>.<tenant>.<cart_id> -------------------------------------------------------

/// `dlq.<consumer>.<tenant>.<cart_id>`: a message `consumer` gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeadLetterSubject {
    pub consumer: String,
    pub tenant: TenantId,
    pub cart_id: CartId,
}

impl DeadLetterSubject {
    pub fn new(consumer: &str, tenant: &TenantId, cart_id: &CartId) -> Result<Self, SubjectError> {
        tok("dead-letter subject", "consumer", consumer)?;
        Ok(Self {
            consumer: consumer.to_owned(),
            tenant: tenant.clone(),
            cart_id: cart_id.clone(),
        })
    }

    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        const WHAT: &str = "dead-letter subject";
        let p = split_after(WHAT, subject, DLQ_PREFIX, 3)?;
        let tenant = parse_tenant(WHAT, subject, p[1])?;
        let cart_id = parse_cart(WHAT, subject, p[2])?;
        Self::new(p[0], &tenant, &cart_id).map_err(|e| SubjectError::new(WHAT, subject, e.reason))
    }
}

impl fmt::Display for DeadLetterSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DLQ_PREFIX}.{}.{}.{}",
            self.consumer, self.tenant, self.cart_id
        )
    }
}

/// `dlq.<consumer>.<tenant>.<cart_id>`.
pub fn dead_letter(
    consumer: &str,
    tenant: &TenantId,
    cart_id: &CartId,
) -> Result<String, SubjectError> {
    DeadLetterSubject::new(consumer, tenant, cart_id).map(|s| s.to_string())
}

/// `dlq.<consumer>.>`: one consumer's dead letters (admin listing and replay).
pub fn dead_letters_of(consumer: &str) -> Result<String, SubjectError> {
    tok("dead-letter filter", "consumer", consumer)?;
    Ok(format!("{DLQ_PREFIX}.{consumer}.>"))
}

// --- Durable names and API subjects ---------------------------------------------------------

/// `projection-<view>`: the durable consumer that feeds one projection view.
pub fn projection_durable(view: &str) -> Result<String, SubjectError> {
    tok("durable name", "projection view", view)?;
    Ok(format!("projection-{view}"))
}

/// `$JS.API.DIRECT.GET.<stream>`: where (batch) direct-get requests for a stream go.
pub fn direct_get_api(stream: &str) -> Result<String, SubjectError> {
    tok("direct get subject", "stream", stream)?;
    Ok(format!("{DIRECT_GET_API_PREFIX}.{stream}"))
}

mod kv_keys;
pub use kv_keys::*;

#[cfg(test)]
mod tests;
