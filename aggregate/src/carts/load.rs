//! Reading a cart into its slot: the cache lookup, the cold load (snapshot plus the messages
//! after it), catching up after a shard came back, and confirming against the stream's leader.

use std::sync::Arc;
use std::time::Instant;

use cart_domain::{CartState, EventDecodeError, Retain};
use shared::{ApiError, ErrorCode};

use super::{
    CONFIRM_BATCH_EVERY, CartRef, Carts, Loaded, NO_LEADER_RETRY, NOT_YET_RETRY, Route, Slot,
};
use crate::metrics as m;
use crate::snapshot::Snapshot;
use crate::store::{StoreError, StoredMessage};

impl Carts {
    /// The current cart, as the stream's leader holds it. When the caller has seen a newer
    /// version than that, it answers `unavailable` (a retry may find it) rather than a cart
    /// older than the caller asked for. The answer is `render(cart)`, made while the cart is at
    /// hand (as in [`Carts::execute`]).
    pub async fn get<R>(
        &self,
        cart: &CartRef,
        route: Route,
        min_version: Option<u64>,
        render: impl FnOnce(&CartState) -> R,
    ) -> Result<R, ApiError> {
        self.check_owner(cart, route)?;
        let slot = self.slot(cart).await;
        let mut guard = slot.loaded.lock().await;
        let loaded = self.ensure_current(&slot, &mut guard, cart).await?;
        // A read is answered from the stream's leader, not only from this node's copy: another
        // node may have appended since (a gateway that could not reach this node served a
        // retry elsewhere, a shard that moved and came back, a node paused past its TTL), and
        // the replica that served the load may not hold the newest appends yet. One round
        // trip that usually returns nothing new.
        self.confirm_current(loaded, cart).await?;
        if let Some(min) = min_version
            && loaded.state.version < min
        {
            // Another node would answer the same: asked to retry here later (the client does
            // not fail over on an answer that carries a retry-after).
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the cart is at version {}, not yet at {min}; retry",
                    loaded.state.version
                ),
            )
            .with_retry_after(NOT_YET_RETRY));
        }
        Ok(render(&loaded.state))
    }

    /// Read a cart without caching it or checking ownership (merge sources, admin reads), as
    /// the stream's leader has it: a copy cached here, or one loaded from a replica, is caught
    /// up first (another node may have changed the cart since, and a merge must not lose that
    /// change).
    pub async fn read_uncached(&self, cart: &CartRef) -> Result<CartState, ApiError> {
        if let Some(slot) = self.inner.cache.get(&cart.key).await {
            let mut guard = slot.loaded.lock().await;
            if let Some(l) = guard.as_mut() {
                self.confirm_current(l, cart).await?;
                return Ok(l.state.clone());
            }
        }
        let mut loaded = self.load(cart).await?;
        self.confirm_current(&mut loaded, cart).await?;
        Ok(loaded.state)
    }

    pub(super) async fn slot(&self, cart: &CartRef) -> Arc<Slot> {
        self.inner
            .cache
            .get_with(cart.key.clone(), async {
                self.inner.meters.cached_carts.increment(1.0);
                Arc::new(Slot::default())
            })
            .await
    }

    /// Make sure `slot` (its locked `guard`) holds the cart, loading it when cold and catching
    /// up when this node (re)gained the cart's shard since the state was cached; a state read
    /// from the stream is weighed again for the cache.
    pub(super) async fn ensure_current<'a>(
        &self,
        slot: &Arc<Slot>,
        guard: &'a mut Option<Loaded>,
        cart: &CartRef,
    ) -> Result<&'a mut Loaded, ApiError> {
        let epoch = self.epoch(cart);
        match guard {
            Some(l) if l.epoch == epoch => {
                self.inner.meters.cache_hits.increment(1);
                return Ok(guard.as_mut().expect("matched Some"));
            }
            // The reads below are boxed: they are rare, and their futures are large. Inline, every
            // command's future would carry them (and be copied whole when a call starts).
            Some(l) => {
                Box::pin(self.catch_up(l, cart)).await?;
                l.epoch = epoch;
            }
            None => {
                metrics::counter!(m::CACHE_MISSES).increment(1);
                let mut l = Box::pin(self.load(cart)).await?;
                l.epoch = epoch;
                *guard = Some(l);
            }
        }
        let loaded = guard.as_mut().expect("slot was just filled");
        self.reweigh(cart, slot, &loaded.state).await;
        Ok(loaded)
    }

    /// Cold load: the snapshot (if any and consistent) plus every message after it.
    async fn load(&self, cart: &CartRef) -> Result<Loaded, ApiError> {
        let started = Instant::now();
        let keep = self.inner.cfg.retain;
        let (snapshot, newer) = match self.inner.snapshots.load(&cart.key).await {
            Snapshot::Found(s) => (Some(*s), false),
            Snapshot::Absent => (None, false),
            Snapshot::Newer => (None, true),
        };
        let snapshot = snapshot
            .filter(|s| s.cart.id == cart.cart_id && s.version > 0 && checkout_is_complete(s));
        let from_snapshot = match snapshot {
            Some(snap) => self.tail_of_snapshot(cart, snap).await?,
            None => None,
        };
        let (mut state, tail) = match from_snapshot {
            Some(loaded) => loaded,
            None => (
                CartState::new(cart.cart_id.clone()),
                self.read_after(cart, 0).await?,
            ),
        };
        let replayed = tail.len();
        let snapshot_revision = state.revision;
        // A newer build's snapshot may hold what this build's fold drops: it is not
        // overwritten by this build.
        let skipped = apply_tail(&mut state, tail, keep, &cart.key);
        let incomplete = skipped.any || newer;
        // It enters the cache: its lines share product facts with the other cached carts.
        self.inner.products.share_lines(&mut state.cart);
        // It stays in the cache: no growth slack in its lists (most cached carts are read far
        // more often than changed).
        state.shrink_to_fit();
        metrics::histogram!(m::COLD_LOAD_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::COLD_LOAD_EVENTS).record(replayed as f64);
        let mut loaded = Loaded {
            state,
            snapshot_revision,
            epoch: 0,
            incomplete,
            newer_versions: skipped.newer_version,
        };
        self.maybe_snapshot(cart, &mut loaded);
        Ok(loaded)
    }

    /// The snapshot `snap` and the messages after it, read from the snapshot's own last
    /// message: it must be there, on this subject, or the snapshot does not belong to this
    /// stream (`None`: the cart is rebuilt from the stream).
    async fn tail_of_snapshot(
        &self,
        cart: &CartRef,
        snap: CartState,
    ) -> Result<Option<(CartState, Vec<StoredMessage>)>, ApiError> {
        let tail = self.read_after(cart, snap.version - 1).await?;
        if tail.first().map(|m| m.sequence) == Some(snap.version) {
            return Ok(Some((snap, tail.into_iter().skip(1).collect())));
        }
        metrics::counter!(m::SNAPSHOTS_IGNORED).increment(1);
        tracing::warn!(
            cart = %cart.key,
            snapshot_version = snap.version,
            "snapshot does not match the stream; rebuilding the cart from the stream"
        );
        Ok(None)
    }

    /// The cart's messages after stream sequence `after`.
    async fn read_after(&self, cart: &CartRef, after: u64) -> Result<Vec<StoredMessage>, ApiError> {
        self.inner
            .store
            .read_after(&cart.subject, after)
            .await
            .map_err(store_error)
    }

    /// Whether the stream's leader still holds the copy's own last message (at the copy's
    /// version, on this cart's subject, written by the command the copy last applied). It does
    /// not when `CART_EVENTS` was deleted and created again: the copy belongs to a history that
    /// is gone, even where the new stream's sequences have grown past its version, and even
    /// where the new stream has a message of this cart at that very sequence.
    async fn copy_in_stream(&self, cart: &CartRef, copy: &CartState) -> Result<bool, ApiError> {
        let version = copy.version;
        if version == 0 {
            return Ok(true);
        }
        let own = self
            .inner
            .store
            .next_from_leader(&cart.subject, version - 1)
            .await
            .map_err(|e| store_error(e).with_retry_after(NO_LEADER_RETRY))?;
        let Some(own) = own.filter(|m| m.sequence == version) else {
            return Ok(false);
        };
        // The command id of the copy's last message, when the copy remembers it (it does
        // unless it keeps no recent commands, or that message could not be read).
        let last = copy.recent.back().filter(|r| r.version == version);
        Ok(match (last, own.message) {
            (Some(last), Some(message)) => message.command_id == last.command_id,
            _ => true,
        })
    }

    /// `loaded` read again from what the stream holds (keeping its epoch), because the node's
    /// copy is not in the stream any more ([`Self::copy_in_stream`]).
    async fn read_again(&self, loaded: &mut Loaded, cart: &CartRef) -> Result<(), ApiError> {
        metrics::counter!(m::COPIES_AHEAD_OF_STREAM).increment(1);
        tracing::warn!(
            cart = %cart.key,
            copy_version = loaded.state.version,
            "the node's copy of the cart is not in the stream (CART_EVENTS created again?); reading it again"
        );
        let epoch = loaded.epoch;
        *loaded = self.load(cart).await?;
        loaded.epoch = epoch;
        self.inner.watchers.publish(&cart.key, &loaded.state);
        Ok(())
    }

    async fn catch_up(&self, loaded: &mut Loaded, cart: &CartRef) -> Result<(), ApiError> {
        if !self.copy_in_stream(cart, &loaded.state).await? {
            return self.read_again(loaded, cart).await;
        }
        let tail = self.read_after(cart, loaded.state.version).await?;
        if !tail.is_empty() {
            let skipped = apply_tail(&mut loaded.state, tail, self.inner.cfg.retain, &cart.key);
            loaded.note(skipped);
            self.inner.products.share_lines(&mut loaded.state.cart);
            self.inner.watchers.publish(&cart.key, &loaded.state);
        }
        Ok(())
    }

    /// Brings `loaded` up to what the stream's leader holds: the leader names the cart's last
    /// message (usually one the node already has: one round trip); the messages up to it come
    /// in a batch from the replicas, and one by one from the leader where the replica that
    /// answered lags. Messages appended after the leader answered may be missing: the state
    /// is the cart as it was at a moment during the call.
    pub(super) async fn confirm_current(
        &self,
        loaded: &mut Loaded,
        cart: &CartRef,
    ) -> Result<(), ApiError> {
        // Off the common path (refusals, conflicts, stale copies) and large: boxed, as above.
        Box::pin(self.read_to_leader(loaded, cart)).await
    }

    async fn read_to_leader(&self, loaded: &mut Loaded, cart: &CartRef) -> Result<(), ApiError> {
        // Every node would hear the same (an election is under way): asked to retry.
        let leader_error = |e| store_error(e).with_retry_after(NO_LEADER_RETRY);
        let store = &self.inner.store;
        let target = store
            .last_sequence_from_leader(&cart.subject)
            .await
            .map_err(leader_error)?;
        let before = loaded.state.version;
        // Not the copy's last message: another node appended since, or the copy belongs to a
        // stream deleted since (then the messages after its version are another history).
        if target != Some(before) && !self.copy_in_stream(cart, &loaded.state).await? {
            return self.read_again(loaded, cart).await;
        }
        let Some(target) = target else {
            return Ok(());
        };
        let keep = self.inner.cfg.retain;
        let mut leader_reads = 0usize;
        while loaded.state.version < target {
            if leader_reads.is_multiple_of(CONFIRM_BATCH_EVERY) {
                let tail = self.read_after(cart, loaded.state.version).await?;
                let progressed = !tail.is_empty();
                let skipped = apply_tail(&mut loaded.state, tail, keep, &cart.key);
                loaded.note(skipped);
                if progressed && loaded.state.version >= target {
                    break;
                }
            }
            let next = store
                .next_from_leader(&cart.subject, loaded.state.version)
                .await
                .map_err(leader_error)?
                .ok_or_else(|| {
                    ApiError::unavailable(
                        "the cart's stream lost messages while it was read (purged?); retry",
                    )
                })?;
            let skipped = apply_tail(&mut loaded.state, vec![next], keep, &cart.key);
            loaded.note(skipped);
            leader_reads += 1;
        }
        if loaded.state.version != before {
            self.inner.products.share_lines(&mut loaded.state.cart);
            metrics::counter!(m::STALE_CONFIRMS).increment(1);
            self.inner.watchers.publish(&cart.key, &loaded.state);
        }
        Ok(())
    }
}

/// A snapshot written before checkouts kept what they charge has no line digest for its
/// checkout attempt: every payment of it would look like a mismatch. Such a snapshot is not
/// used; the cart is folded from its stream, whose `CheckoutStarted` has everything.
fn checkout_is_complete(state: &CartState) -> bool {
    state
        .cart
        .checkout
        .as_ref()
        .is_none_or(|c| !c.lines_digest.is_empty())
}

/// Applies `tail` to `state`; whether anything in it could not be applied (events of a newer
/// build, unreadable messages).
fn apply_tail(state: &mut CartState, tail: Vec<StoredMessage>, keep: Retain, key: &str) -> Skipped {
    let mut skipped_any = Skipped::default();
    for stored in tail {
        match stored.message {
            Some(msg) => {
                let report = state.apply_message(&msg, stored.sequence, keep);
                let skipped = report.unknown.len() + report.invalid.len();
                if skipped > 0 {
                    skipped_any.any = true;
                    skipped_any.newer_version |= report
                        .invalid
                        .iter()
                        .any(|e| matches!(e, EventDecodeError::FutureVersion { .. }));
                    metrics::counter!(m::UNKNOWN_EVENTS).increment(skipped as u64);
                    tracing::warn!(
                        cart = key,
                        sequence = stored.sequence,
                        unknown = ?report.unknown,
                        invalid = ?report.invalid,
                        "skipped events this build cannot apply"
                    );
                }
            }
            None => {
                skipped_any.any = true;
                state.skip_unreadable(stored.sequence);
            }
        }
    }
    skipped_any
}

/// What [`apply_tail`] could not apply.
#[derive(Default, Clone, Copy)]
pub(super) struct Skipped {
    /// Anything: the state lacks it and is never written as a snapshot.
    pub any: bool,
    /// A newer version of an event this build knows (a newer build's, during a rolling
    /// upgrade): the state lacks what the cart's lines are made of, and no command is decided
    /// on it.
    pub newer_version: bool,
}

impl Loaded {
    fn note(&mut self, skipped: Skipped) {
        self.incomplete |= skipped.any;
        self.newer_versions |= skipped.newer_version;
    }
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::unavailable(format!("cannot read the cart's events: {e}"))
}
