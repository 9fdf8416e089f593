//! A cart plus what replay needs on top of the domain fold: the stream version (sequence of the
//! cart's last message), the revision (number of messages), the ids of the last commands,
//! which make a retried command return its original outcome even after JetStream's duplicate
//! window has passed, and the commands sent with an `Idempotency-Key`, kept for a retention
//! period however many commands follow. This is also the snapshot payload (`{stream_seq,
//! revision, state}`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::cart::{Cart, apply};
use super::event::{Event, EventDecodeError, EventMessage, Refusal};
use crate::ids::{CartId, CommandId};

/// The outcome of a committed command, kept to answer retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentCommand {
    pub command_id: CommandId,
    pub version: u64,
    pub revision: u64,
}

/// What a cart remembers of a command ([`CartState::prior`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior<'a> {
    /// Not decided before (or forgotten): decide it.
    New,
    /// Decided before, at this version: answer that.
    Answered(u64),
    /// Refused before, and the refusal kept: answer it again.
    Refused(&'a Refusal),
    /// Its `Idempotency-Key` was used for a different request within the retention.
    KeyReused,
}

/// A committed command that came with an `Idempotency-Key`: the fingerprint of its request
/// and its outcome, kept for [`Retain::keyed_secs`] after it was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedCommand {
    pub command_id: CommandId,
    pub fingerprint: String,
    pub version: u64,
    pub revision: u64,
    /// When it was decided (Unix seconds, the message's `occurred_at`).
    pub at: i64,
    /// Set when the cart refused it (the message recorded only that): the refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Box<Refusal>>,
}

/// How much of its command history a cart keeps to answer retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retain {
    /// The ids of the last this many commands (any command).
    pub recent: usize,
    /// Commands sent with an `Idempotency-Key`, for this many seconds after they were decided
    /// (0: none are kept).
    pub keyed_secs: i64,
}

impl Retain {
    /// Nothing: for readers that never answer retries (the projection).
    pub const NONE: Retain = Retain {
        recent: 0,
        keyed_secs: 0,
    };
    /// The aggregate's defaults: 16 recent commands, keyed commands for 24 hours.
    pub const DEFAULT: Retain = Retain {
        recent: CartState::DEFAULT_RECENT,
        keyed_secs: 24 * 3600,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartState {
    pub cart: Cart,
    /// Stream sequence of the cart's last message; 0 for a cart with no events.
    pub version: u64,
    /// Number of messages applied.
    pub revision: u64,
    #[serde(default)]
    pub recent: VecDeque<RecentCommand>,
    /// Keyed commands of the retention period, oldest first (at most [`CartState::MAX_KEYED`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyed: Vec<KeyedCommand>,
}

/// What replaying one message did besides changing the cart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Events of a type this build does not know (counted and skipped, never fatal).
    pub unknown: Vec<String>,
    /// Events that could not be decoded (logged, counted and skipped so the cart still loads).
    pub invalid: Vec<EventDecodeError>,
}

impl CartState {
    /// How many recent command ids a cart remembers by default.
    pub const DEFAULT_RECENT: usize = 16;
    /// Most keyed commands a cart holds within the retention. The aggregate refuses another
    /// keyed command beyond it (a forgotten key could apply twice), so replay never drops one.
    pub const MAX_KEYED: usize = 1000;

    /// Drops the spare capacity of every list (a cart about to sit in a cache); changes no
    /// value.
    pub fn shrink_to_fit(&mut self) {
        let cart = &mut self.cart;
        cart.lines.shrink_to_fit();
        cart.deliveries.shrink_to_fit();
        cart.vouchers.shrink_to_fit();
        cart.subscription_details.shrink_to_fit();
        cart.mismatched_orders.shrink_to_fit();
        self.recent.shrink_to_fit();
        self.keyed.shrink_to_fit();
    }

    pub fn new(id: CartId) -> Self {
        Self {
            cart: Cart::new(id),
            version: 0,
            revision: 0,
            recent: VecDeque::new(),
            keyed: Vec::new(),
        }
    }

    /// The keyed command `command_id`, if it was decided within the retention before `now`
    /// (Unix seconds).
    pub fn keyed_outcome(
        &self,
        command_id: &CommandId,
        now: i64,
        retain: Retain,
    ) -> Option<&KeyedCommand> {
        self.keyed
            .iter()
            .find(|k| k.command_id == *command_id && k.at + retain.keyed_secs >= now)
    }

    /// How many keyed commands are still within the retention at `now`.
    pub fn keyed_live(&self, now: i64, retain: Retain) -> usize {
        self.keyed
            .iter()
            .filter(|k| k.at + retain.keyed_secs >= now)
            .count()
    }

    /// Whether command `command_id` (sent with an `Idempotency-Key` whose request has
    /// `fingerprint`, or without one) was decided before, as of `now` (Unix seconds).
    ///
    /// A keyed command is answered by its keyed record while the retention lasts (with the
    /// stored refusal when the cart refused it; refused when the request differs). Past it the
    /// key is forgotten and the request is a new one, even while its id is still among the
    /// cart's recent commands: that record cannot tell a retry from another request under the
    /// same key. A command without a key is answered by its stored refusal (kept like a keyed
    /// record), else by the recent commands.
    pub fn prior(
        &self,
        command_id: &CommandId,
        fingerprint: Option<&str>,
        now: i64,
        retain: Retain,
    ) -> Prior<'_> {
        match fingerprint {
            Some(fingerprint) if retain.keyed_secs > 0 => {
                match self.keyed_outcome(command_id, now, retain) {
                    Some(k) if k.fingerprint == fingerprint => match &k.refused {
                        Some(refusal) => Prior::Refused(refusal),
                        None => Prior::Answered(k.version),
                    },
                    Some(_) => Prior::KeyReused,
                    None => Prior::New,
                }
            }
            _ => match self.keyed_outcome(command_id, now, retain) {
                // Refused after an attempt whose outcome was unknown.
                Some(KeyedCommand {
                    refused: Some(refusal),
                    ..
                }) => Prior::Refused(refusal),
                _ => match self.recent_outcome(command_id) {
                    Some(r) => Prior::Answered(r.version),
                    None => Prior::New,
                },
            },
        }
    }

    /// The recorded outcome of `command_id`, when it is one of the cart's recent commands.
    pub fn recent_outcome(&self, command_id: &CommandId) -> Option<RecentCommand> {
        self.recent
            .iter()
            .find(|r| r.command_id == *command_id)
            .copied()
    }

    /// Apply `msg`, whose `events` this process decided and appended at `version` (no
    /// decoding needed).
    pub fn commit(&mut self, msg: &EventMessage, events: &[Event], version: u64, retain: Retain) {
        for e in events {
            apply(&mut self.cart, e);
        }
        self.record(msg, version, self.revision + 1, retain);
    }

    /// Apply a message read from the stream at sequence `version`. Messages at or below the
    /// current version are ignored (idempotent replay).
    pub fn apply_message(
        &mut self,
        msg: &EventMessage,
        version: u64,
        retain: Retain,
    ) -> ApplyReport {
        let mut report = ApplyReport::default();
        if version <= self.version {
            return report;
        }
        for record in &msg.events {
            match Event::decode(record) {
                Ok(e) => apply(&mut self.cart, &e),
                Err(EventDecodeError::UnknownType(t)) => report.unknown.push(t),
                Err(e) => report.invalid.push(e),
            }
        }
        self.applied(msg, version, retain);
        report
    }

    /// [`Self::apply_message`] for a caller that has already decoded the message's events
    /// (`events`, in order), so they are not decoded twice.
    pub fn apply_decoded(
        &mut self,
        msg: &EventMessage,
        events: &[Event],
        version: u64,
        retain: Retain,
    ) {
        if version <= self.version {
            return;
        }
        for e in events {
            apply(&mut self.cart, e);
        }
        self.applied(msg, version, retain);
    }

    /// Moves past `msg` at `version` once its events are applied.
    fn applied(&mut self, msg: &EventMessage, version: u64, retain: Retain) {
        let revision = msg.revision.max(self.revision + 1);
        self.record(msg, version, revision, retain);
    }

    /// Move past a message at `version` that could not be read at all (not even its command
    /// id). The cart keeps its state; only the version and revision advance, so appends
    /// continue to work.
    pub fn skip_unreadable(&mut self, version: u64) {
        if version > self.version {
            self.version = version;
            self.revision += 1;
        }
    }

    fn record(&mut self, msg: &EventMessage, version: u64, revision: u64, retain: Retain) {
        self.version = version;
        self.revision = revision;
        self.remember_keyed(msg, version, revision, retain);
        if retain.recent == 0 {
            self.recent.clear();
            return;
        }
        // A refusal is answered from the keyed records alone: listed here, it would answer a
        // retry past their retention as applied.
        if msg.refused.is_some() {
            return;
        }
        while self.recent.len() >= retain.recent {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentCommand {
            command_id: msg.command_id,
            version,
            revision,
        });
    }

    /// Keeps `msg`'s outcome when it came with an `Idempotency-Key` or is a stored refusal,
    /// and forgets keyed commands older than the retention (measured from this message's
    /// time).
    fn remember_keyed(&mut self, msg: &EventMessage, version: u64, revision: u64, retain: Retain) {
        if retain.keyed_secs <= 0 {
            self.keyed.clear();
            return;
        }
        let at = msg.occurred_at.unix_timestamp();
        self.keyed.retain(|k| k.at + retain.keyed_secs >= at);
        // A refusal is kept here with or without a key (an unkeyed one with an empty
        // fingerprint): the recent commands hold no refusals ([`Self::record`]).
        if msg.request_fingerprint.is_some() || msg.refused.is_some() {
            if self.keyed.len() >= Self::MAX_KEYED {
                self.keyed.remove(0);
            }
            self.keyed.push(KeyedCommand {
                command_id: msg.command_id,
                fingerprint: msg.fingerprint().unwrap_or_default().to_owned(),
                version,
                revision,
                at,
                refused: msg.refused.as_ref().map(|r| Box::new(r.refusal.clone())),
            });
        }
    }
}
