//! What the clients saw, checked against what the event stream holds.
//!
//! - Every acknowledged change is in `CART_EVENTS` exactly once (its command id is derived from
//!   its `Idempotency-Key`, and every keyed command is one message), at the version the client
//!   was told; an unknown outcome is there at most once; a refusal is not there as a change
//!   (the cart may store it as a refusal, so a retry gets it again).
//! - Per cart, linearizable: when change A was acknowledged before change B was sent, A's
//!   stream sequence is below B's; a read never shows a version older than a change the same
//!   client had been told about.
//! - The cart the aggregate serves is the fold of its stream.

use std::collections::{BTreeMap, HashMap};

use cart_domain::{CartState, CartView, EventMessage, Retain};
use serde::Serialize;
use serde_json::Value;
use shared::{CartId, CommandId, TenantId};

use super::load::{Op, Outcome};

#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Verdict {
    pub commands_sent: usize,
    pub acknowledged: usize,
    pub refused: usize,
    pub ambiguous: usize,
    /// Acknowledged, but not in the cart's stream.
    pub lost: usize,
    /// In the cart's stream more than once.
    pub applied_twice: usize,
    /// Refused, yet in the stream.
    pub applied_though_refused: usize,
    /// Acknowledged at another version than the stream holds it at, out of real-time order,
    /// or a read older than the client's own acknowledged change.
    pub order_violations: usize,
    /// Carts whose served state differs from the fold of their stream.
    pub wrong_carts: usize,
    pub reads: usize,
    /// Reads without an answer after every retry.
    pub failed_reads: usize,
    /// Changes and reads that failed for the client (unknown outcome or server refusal).
    pub failed_requests: usize,
    pub carts: usize,
    pub examples: Vec<String>,
}

impl Verdict {
    /// Nothing lost, applied twice or out of order, and every cart is its stream's fold.
    pub fn consistent(&self) -> bool {
        self.lost == 0
            && self.applied_twice == 0
            && self.applied_though_refused == 0
            && self.order_violations == 0
            && self.wrong_carts == 0
    }

    fn example(&mut self, what: String) {
        if self.examples.len() < 10 {
            self.examples.push(what);
        }
    }
}

/// A stored message of a cart.
pub struct Stored {
    pub sequence: u64,
    pub payload: bytes::Bytes,
}

/// Every message of `subject` in `CART_EVENTS`, as the stream's leader holds them (one request
/// per message). Direct gets would do in one round trip, but a follower that rejoined after a
/// kill answers them before it has every acknowledged message.
pub async fn read_from_leader(
    client: &async_nats::Client,
    subject: &str,
) -> anyhow::Result<Vec<Stored>> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .get_stream_no_info(shared::subjects::CART_EVENTS_STREAM)
        .await?;
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let get = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subject)
            .send();
        match tokio::time::timeout(std::time::Duration::from_secs(10), get).await {
            Err(_) => anyhow::bail!("the CART_EVENTS leader did not answer for {subject}"),
            Ok(Ok(msg)) => {
                next = msg.sequence + 1;
                out.push(Stored {
                    sequence: msg.sequence,
                    payload: msg.payload,
                });
            }
            Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(out),
            Ok(Err(e)) => anyhow::bail!("reading {subject} from the CART_EVENTS leader: {e}"),
        }
    }
}

/// Checks `ops` against the stream (read through `client`) and the carts served by
/// `gateway`.
pub async fn check(
    client: &async_nats::Client,
    http: &reqwest::Client,
    gateway: &str,
    ops: &[Op],
) -> anyhow::Result<Verdict> {
    let tenant = TenantId::default_tenant();
    let mut v = Verdict::default();
    let mut by_cart: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_cart.entry(op.cart.as_str()).or_default().push(op);
    }
    v.carts = by_cart.len();
    for (cart, ops) in by_cart {
        let cart_id = CartId::parse(cart)?;
        let subject = shared::subjects::cart_events(&tenant, &cart_id);
        let stored = read_from_leader(client, &subject).await?;
        // Per command id: the sequences of its messages, and those of them that applied it
        // (not a keyed command's stored refusal).
        let mut seqs: HashMap<CommandId, (Vec<u64>, Vec<u64>)> = HashMap::new();
        let mut state = CartState::new(cart_id.clone());
        for m in &stored {
            let msg = EventMessage::from_json(&m.payload)?;
            let (all, applied) = seqs.entry(msg.command_id).or_default();
            all.push(m.sequence);
            if msg.refused.is_none() {
                applied.push(m.sequence);
            }
            state.apply_message(&msg, m.sequence, Retain::NONE);
        }

        // Each change against the stream.
        let mut acked: Vec<(&Op, u64)> = Vec::new();
        for op in ops.iter().filter(|o| o.is_write()) {
            v.commands_sent += 1;
            let key = op.key.as_deref().unwrap_or_default();
            let id = gateway::idempotency::command_id(tenant.as_str(), cart, key);
            let (all, found) = seqs.get(&id).map_or((&[][..], &[][..]), |(all, applied)| {
                (all.as_slice(), applied.as_slice())
            });
            if all.len() > 1 {
                v.applied_twice += 1;
                v.example(format!("{cart} {key}: stored at {all:?}"));
            }
            match &op.outcome {
                Outcome::Acked => {
                    v.acknowledged += 1;
                    match found.first() {
                        None => {
                            v.lost += 1;
                            v.example(format!(
                                "{cart} {key} ({}): acknowledged, not stored",
                                op.kind
                            ));
                        }
                        Some(&seq) => {
                            if op.version.is_some_and(|ver| ver != seq) {
                                v.order_violations += 1;
                                v.example(format!(
                                    "{cart} {key}: acknowledged at version {:?}, stored at {seq}",
                                    op.version
                                ));
                            }
                            acked.push((op, seq));
                        }
                    }
                }
                Outcome::Refused(status, code) => {
                    v.refused += 1;
                    if status >= &500 {
                        v.failed_requests += 1;
                    }
                    if !found.is_empty() {
                        v.applied_though_refused += 1;
                        v.example(format!(
                            "{cart} {key}: refused ({status} {code}) but stored"
                        ));
                    }
                }
                Outcome::Ambiguous(why) => {
                    v.ambiguous += 1;
                    v.failed_requests += 1;
                    v.example(format!("{cart} {key}: no answer ({why})"));
                }
            }
        }

        // Real-time order: sweep by start, knowing the highest sequence of every change
        // acknowledged before that start.
        let mut by_end = acked.clone();
        by_end.sort_by_key(|(op, _)| op.end);
        let mut by_start = acked.clone();
        by_start.sort_by_key(|(op, _)| op.start);
        let (mut i, mut highest) = (0, 0u64);
        for (op, seq) in &by_start {
            while i < by_end.len() && by_end[i].0.end < op.start {
                highest = highest.max(by_end[i].1);
                i += 1;
            }
            if highest > *seq {
                v.order_violations += 1;
                v.example(format!(
                    "{cart}: {:?} stored at {seq} after a change stored at {highest} that was acknowledged before it was sent",
                    op.key
                ));
            }
        }

        // Reads: never older than the reader's own acknowledged changes before them.
        for read in ops.iter().filter(|o| !o.is_write()) {
            v.reads += 1;
            match read.outcome {
                Outcome::Acked => {
                    let own = acked
                        .iter()
                        .filter(|(op, _)| op.client == read.client && op.end < read.start)
                        .map(|(_, seq)| *seq)
                        .max()
                        .unwrap_or(0);
                    if read.version.is_some_and(|ver| ver < own) {
                        v.order_violations += 1;
                        v.example(format!(
                            "{cart}: client {} read version {:?} after its change at {own}",
                            read.client, read.version
                        ));
                    }
                }
                Outcome::Refused(status, _) if status < 500 => {}
                _ => {
                    v.failed_reads += 1;
                    v.failed_requests += 1;
                }
            }
        }

        // The served cart is the fold of the stream.
        let folded = serde_json::to_value(CartView::of(&state.cart))?;
        let served = served(http, gateway, cart).await;
        if served.as_ref() != Some(&folded) {
            v.wrong_carts += 1;
            v.example(format!(
                "{cart}: served {served:?}, the stream folds to {folded}"
            ));
        }
    }
    Ok(v)
}

/// The cart as `gateway` serves it (a few tries: a scenario may have just ended).
async fn served(http: &reqwest::Client, gateway: &str, cart: &str) -> Option<Value> {
    for _ in 0..5 {
        if let Ok(r) = http.get(format!("{gateway}/v1/carts/{cart}")).send().await
            && r.status().is_success()
            && let Ok(v) = r.json::<Value>().await
        {
            return Some(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    None
}
