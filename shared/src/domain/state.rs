//! A cart plus what replay needs on top of the domain fold: the stream version (sequence of the
//! cart's last message), the revision (number of messages) and the ids of the last commands,
//! which make a retried command return its original outcome even after JetStream's duplicate
//! window has passed. This is also the snapshot payload (`{stream_seq, revision, state}`).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::cart::{Cart, apply};
use super::event::{Event, EventDecodeError, EventMessage};
use crate::ids::{CartId, CommandId};

/// The outcome of a committed command, kept to answer retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentCommand {
    pub command_id: CommandId,
    pub version: u64,
    pub revision: u64,
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

    pub fn new(id: CartId) -> Self {
        Self {
            cart: Cart::new(id),
            version: 0,
            revision: 0,
            recent: VecDeque::new(),
        }
    }

    /// The recorded outcome of `command_id`, when it is one of the cart's recent commands.
    pub fn recent_outcome(&self, command_id: &CommandId) -> Option<RecentCommand> {
        self.recent
            .iter()
            .find(|r| r.command_id == *command_id)
            .copied()
    }

    /// Apply events this process decided and appended at `version` (no decoding needed).
    pub fn commit(
        &mut self,
        command_id: CommandId,
        version: u64,
        events: &[Event],
        keep_recent: usize,
    ) {
        for e in events {
            apply(&mut self.cart, e);
        }
        self.record(command_id, version, self.revision + 1, keep_recent);
    }

    /// Apply a message read from the stream at sequence `version`. Messages at or below the
    /// current version are ignored (idempotent replay).
    pub fn apply_message(
        &mut self,
        msg: &EventMessage,
        version: u64,
        keep_recent: usize,
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
        self.applied(msg, version, keep_recent);
        report
    }

    /// [`Self::apply_message`] for a caller that has already decoded the message's events
    /// (`events`, in order), so they are not decoded twice.
    pub fn apply_decoded(
        &mut self,
        msg: &EventMessage,
        events: &[Event],
        version: u64,
        keep_recent: usize,
    ) {
        if version <= self.version {
            return;
        }
        for e in events {
            apply(&mut self.cart, e);
        }
        self.applied(msg, version, keep_recent);
    }

    /// Moves past `msg` at `version` once its events are applied.
    fn applied(&mut self, msg: &EventMessage, version: u64, keep_recent: usize) {
        let revision = msg.revision.max(self.revision + 1);
        self.record(msg.command_id, version, revision, keep_recent);
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

    fn record(&mut self, command_id: CommandId, version: u64, revision: u64, keep: usize) {
        self.version = version;
        self.revision = revision;
        if keep == 0 {
            self.recent.clear();
            return;
        }
        while self.recent.len() >= keep {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentCommand {
            command_id,
            version,
            revision,
        });
    }
}
