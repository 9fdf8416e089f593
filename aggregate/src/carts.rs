//! Executing commands against carts.
//!
//! Commands for one cart are serialised by the cart's slot lock; different carts run in
//! parallel. A slot caches the cart's state (bounded LRU with idle expiry); a cold cart is
//! loaded from its snapshot plus the stream messages after it. Every append is fenced by the
//! cart's version, so a stale cache or a second node serving the same cart can delay a command
//! (conflict → catch up → decide again) but never lose or double-apply one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::{
    self as domain, CartState, Command, Context, Event, EventMessage, Limits, Retain,
};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use shared::headers::RequestContext;
use shared::placement::shard_for;
use shared::subjects;
use shared::{ApiError, ErrorCode};
use tokio::sync::{Mutex, Notify};

use crate::catalog::CatalogCache;
use crate::metrics as m;
use crate::placement::Placement;
use crate::snapshot::Snapshots;
use crate::store::{EventStore, StoreError};
use crate::watch::Watchers;

/// When to ask again for a cart version the stream does not hold yet (whole seconds: what
/// the gRPC `retry-after` and HTTP `Retry-After` carry).
/// Retry-After when the event stream has no leader (a NATS election takes 4–9 s).
const NO_LEADER_RETRY: Duration = Duration::from_secs(2);
const NOT_YET_RETRY: Duration = Duration::from_secs(1);
/// While confirming a cart far behind, leader reads between two batch reads of the replicas.
const CONFIRM_BATCH_EVERY: usize = 16;

/// Tuning of command execution (from the service config).
#[derive(Debug, Clone)]
pub struct CartsConfig {
    pub shard_count: u32,
    pub cache_capacity: u64,
    pub cache_idle: Duration,
    /// What each cart keeps to answer retries (recent command ids, keyed commands).
    pub retain: Retain,
    pub max_conflict_retries: u32,
    pub append_timeout_retries: u32,
    pub limits: Limits,
}

/// A cart addressed by tenant and id, with the names derived from them.
#[derive(Debug, Clone)]
pub struct CartRef {
    pub tenant: TenantId,
    pub cart_id: CartId,
    pub key: Arc<str>,
    pub subject: String,
    pub shard: u32,
}

impl CartRef {
    pub fn new(tenant: TenantId, cart_id: CartId, shard_count: u32) -> Self {
        Self {
            key: subjects::snapshot_key(&tenant, &cart_id).into(),
            subject: subjects::cart_events(&tenant, &cart_id),
            shard: shard_for(&tenant, &cart_id, shard_count),
            tenant,
            cart_id,
        }
    }
}

/// How a request reached this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Routed by placement: refuse carts another live node owns.
    Placed,
    /// The caller could not reach the owner: serve anyway (the append fence keeps it safe).
    Fallback,
}

/// Who a command is: its id, and for a command sent with an `Idempotency-Key` (its id derived
/// from the key) the fingerprint of the client's request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub command_id: CommandId,
    pub fingerprint: Option<String>,
}

impl Identity {
    pub fn new(command_id: CommandId) -> Self {
        Self {
            command_id,
            fingerprint: None,
        }
    }
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub state: CartState,
    /// The command id had been applied before; this is its original outcome.
    pub duplicate: bool,
    pub event_types: Vec<String>,
}

struct Loaded {
    state: CartState,
    /// Revision of the last snapshot offered for this cart.
    snapshot_revision: u64,
    /// Placement epoch of the cart's shard when the state was last known to be current.
    epoch: u64,
}

#[derive(Default)]
struct Slot {
    loaded: Mutex<Option<Loaded>>,
}

#[derive(Clone)]
pub struct Carts {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    snapshots: Snapshots,
    catalog: CatalogCache,
    cache: Cache<Arc<str>, Arc<Slot>>,
    watchers: Watchers,
    placement: Option<Arc<Placement>>,
    cfg: CartsConfig,
    in_flight: AtomicU32,
    idle: Notify,
}

impl Carts {
    pub fn new(
        store: EventStore,
        snapshots: Snapshots,
        catalog: CatalogCache,
        placement: Option<Arc<Placement>>,
        cfg: CartsConfig,
    ) -> Self {
        let evict_snapshots = snapshots.clone();
        let cache = Cache::builder()
            // LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a freshly loaded
            // cart, and every command to it would then load it again (in a slot of its own).
            .eviction_policy(EvictionPolicy::lru())
            .max_capacity(cfg.cache_capacity)
            .time_to_idle(cfg.cache_idle)
            .eviction_listener(move |key: Arc<Arc<str>>, slot: Arc<Slot>, cause| {
                if cause != RemovalCause::Replaced && cause != RemovalCause::Explicit {
                    metrics::counter!(m::CACHE_EVICTIONS).increment(1);
                }
                // Keep the next cold load short: snapshot what changed since the last one.
                if evict_snapshots.enabled()
                    && let Ok(guard) = slot.loaded.try_lock()
                    && let Some(l) = guard.as_ref()
                    && l.state.revision > l.snapshot_revision
                {
                    evict_snapshots.offer(key.to_string(), Arc::new(l.state.clone()));
                }
            })
            .build();
        Self {
            inner: Arc::new(Inner {
                store,
                snapshots,
                catalog,
                cache,
                watchers: Watchers::default(),
                placement,
                cfg,
                in_flight: AtomicU32::new(0),
                idle: Notify::new(),
            }),
        }
    }

    pub fn cart_ref(&self, tenant: TenantId, cart_id: CartId) -> CartRef {
        CartRef::new(tenant, cart_id, self.inner.cfg.shard_count)
    }

    pub fn watchers(&self) -> &Watchers {
        &self.inner.watchers
    }

    pub fn snapshots(&self) -> &Snapshots {
        &self.inner.snapshots
    }

    pub fn config(&self) -> &CartsConfig {
        &self.inner.cfg
    }

    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    pub fn cached_carts(&self) -> u64 {
        self.inner.cache.entry_count()
    }

    /// Wait until no command is in flight, or `timeout` passes. True when idle.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Snapshot every cached cart that changed since its last snapshot, and wait for the
    /// writes (drain).
    pub async fn flush_snapshots(&self) {
        if !self.inner.snapshots.enabled() {
            return;
        }
        for (key, slot) in self.inner.cache.iter() {
            let state = {
                let guard = slot.loaded.lock().await;
                match guard.as_ref() {
                    Some(l) if l.state.revision > l.snapshot_revision => Arc::new(l.state.clone()),
                    _ => continue,
                }
            };
            self.inner.snapshots.queue(key.to_string(), state).await;
        }
        self.inner.snapshots.flush().await;
    }

    /// Decide `commands` (atomically, as one message) and append the result.
    /// `route: Route::Fallback` serves the cart even when another node owns its shard (the
    /// caller could not reach the owner).
    pub async fn execute(
        &self,
        ctx: &RequestContext,
        cart: &CartRef,
        route: Route,
        id: Identity,
        expected_version: Option<u64>,
        mut commands: Vec<Command>,
    ) -> Result<Outcome, ApiError> {
        let _in_flight = InFlight::enter(&self.inner);
        self.check_owner(cart, route)?;
        let started = Instant::now();
        let kind = match commands.as_slice() {
            [one] => one.name(),
            _ => "Batch",
        };
        let result = self
            .execute_inner(ctx, cart, &id, expected_version, &mut commands)
            .await;
        let label = match &result {
            Ok(o) if o.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        metrics::counter!(m::COMMANDS, "type" => kind, "result" => label).increment(1);
        metrics::histogram!(m::COMMAND_SECONDS, "type" => kind)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn execute_inner(
        &self,
        ctx: &RequestContext,
        cart: &CartRef,
        id: &Identity,
        expected_version: Option<u64>,
        commands: &mut [Command],
    ) -> Result<Outcome, ApiError> {
        let command_id = id.command_id;
        // Inputs from outside the cart are gathered before taking its lock.
        for c in commands.iter_mut() {
            if let Command::MergeCart {
                source_cart_id,
                items,
            } = c
                && items.is_empty()
            {
                *items = self.merge_items(&cart.tenant, source_cart_id).await?;
            }
        }
        let mut catalog = cart_domain::catalog::CatalogSnapshot::default();
        for c in commands.iter() {
            let snap = self.inner.catalog.snapshot(&c.catalog_needs()).await?;
            catalog.products.extend(snap.products);
            catalog.deliveries.extend(snap.deliveries);
            catalog.vouchers.extend(snap.vouchers);
        }

        let slot = self.slot(cart).await;
        let mut guard = slot.loaded.lock().await;
        let loaded = self.ensure_current(&mut guard, cart).await?;
        let cfg = &self.inner.cfg;
        // Whether the state is known to be what the stream's leader holds (an append that the
        // fence let through, or a leader read). A cached or replica-read state may be behind.
        let mut confirmed = false;

        // At least two rounds: a refusal found stale is decided once more.
        for attempt in 0..=cfg.max_conflict_retries.max(1) {
            let now = time::OffsetDateTime::now_utc();
            if let Some(answered) = self.answered_before(&loaded.state, id, now)? {
                return Ok(answered);
            }
            if let Some(expected) = expected_version
                && expected != loaded.state.version
            {
                if expected > loaded.state.version {
                    self.confirm_current(loaded, cart).await?;
                    confirmed = true;
                }
                if expected != loaded.state.version {
                    metrics::counter!(m::CONFLICTS).increment(1);
                    return Err(ApiError::new(
                        ErrorCode::VersionConflict,
                        format!(
                            "expected version {expected}, but the cart is at version {}",
                            loaded.state.version
                        ),
                    ));
                }
            }
            let decided = decide_all(&loaded.state, commands, &catalog, now, cfg.limits);
            // A refusal or a no-op is not fenced by an append: decided on a copy that is behind
            // (a retry whose first attempt was stored but whose answer was lost, a change
            // another node served), it would tell the client something the stream
            // contradicts. Decided again on what the leader holds, when that is newer.
            let unfenced = decided
                .as_ref()
                .map_or(true, |e| e.is_empty() && id.fingerprint.is_none());
            if unfenced && !confirmed {
                confirmed = true;
                let before = loaded.state.version;
                self.confirm_current(loaded, cart).await?;
                if loaded.state.version != before {
                    continue;
                }
            }
            let events = decided?;
            // A keyed command that changes nothing is still recorded (a message without
            // events), so its key cannot be used for another request afterwards.
            if events.is_empty() && id.fingerprint.is_none() {
                return Ok(Outcome {
                    state: loaded.state.clone(),
                    duplicate: false,
                    event_types: Vec::new(),
                });
            }
            if id.fingerprint.is_some()
                && loaded.state.keyed_live(now.unix_timestamp(), cfg.retain) >= CartState::MAX_KEYED
            {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "this cart holds {} Idempotency-Keys of the last {} s, the most it keeps; send this request without one",
                        CartState::MAX_KEYED,
                        cfg.retain.keyed_secs
                    ),
                ));
            }
            let mut msg = EventMessage::new(
                cart.tenant.clone(),
                cart.cart_id.clone(),
                command_id,
                loaded.state.revision + 1,
                now,
                &events,
            );
            msg.request_fingerprint.clone_from(&id.fingerprint);
            match self.append(cart, &msg, loaded.state.version, ctx).await {
                Ok(appended) if !appended.duplicate => {
                    loaded
                        .state
                        .commit(&msg, &events, appended.sequence, cfg.retain);
                    self.after_commit(cart, loaded);
                    return Ok(Outcome {
                        state: loaded.state.clone(),
                        duplicate: false,
                        event_types: events.iter().map(|e| e.type_name().to_owned()).collect(),
                    });
                }
                Ok(appended) => {
                    // Stored before (an earlier attempt whose ack was lost, or another node).
                    self.confirm_current(loaded, cart).await?;
                    return match self.answered_before(&loaded.state, id, now)? {
                        Some(answered) => Ok(answered),
                        None if appended.sequence <= loaded.state.version => {
                            Err(ApiError::invalid(format!(
                                "command_id {command_id} was already used for a different \
                                 request; send a new id for each request"
                            )))
                        }
                        None => Err(ApiError::unavailable(
                            "the event store reported a duplicate that is not readable yet; retry",
                        )),
                    };
                }
                Err(StoreError::WrongLastSequence { .. }) => {
                    metrics::counter!(m::CONFLICTS).increment(1);
                    // Another writer is active on this cart (split brain, placement moving).
                    // Back off with jitter so a writer whose cache is current does not win
                    // every race while this one keeps catching up.
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                    self.confirm_current(loaded, cart).await?;
                    confirmed = true;
                }
                Err(StoreError::Timeout) => {
                    return Err(ApiError::new(
                        ErrorCode::Timeout,
                        "the event store did not confirm the append in time; retry with the \
                         same command id (a retry cannot apply twice)",
                    ));
                }
                // Every node would hear the same: the client is told when to retry rather
                // than failed over.
                Err(e @ StoreError::NoLeader) => {
                    return Err(
                        ApiError::unavailable(e.to_string()).with_retry_after(NO_LEADER_RETRY)
                    );
                }
                Err(e) => return Err(ApiError::unavailable(e.to_string())),
            }
        }
        Err(ApiError::new(
            ErrorCode::VersionConflict,
            format!(
                "the cart kept changing concurrently ({} attempts); retry",
                cfg.max_conflict_retries.max(1) + 1
            ),
        ))
    }

    /// The current cart, as the stream's leader holds it. When the caller has seen a newer
    /// version than that, it answers `unavailable` (a retry may find it) rather than a cart
    /// older than the caller asked for.
    pub async fn get(
        &self,
        cart: &CartRef,
        route: Route,
        min_version: Option<u64>,
    ) -> Result<CartState, ApiError> {
        self.check_owner(cart, route)?;
        let slot = self.slot(cart).await;
        let mut guard = slot.loaded.lock().await;
        let loaded = self.ensure_current(&mut guard, cart).await?;
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
        Ok(loaded.state.clone())
    }

    /// Read a cart without caching it or checking ownership (merge sources, admin reads).
    pub async fn read_uncached(&self, cart: &CartRef) -> Result<CartState, ApiError> {
        if let Some(slot) = self.inner.cache.get(&cart.key).await {
            let guard = slot.loaded.lock().await;
            if let Some(l) = guard.as_ref() {
                return Ok(l.state.clone());
            }
        }
        Ok(self.load(cart).await?.state)
    }

    async fn merge_items(
        &self,
        tenant: &TenantId,
        source: &CartId,
    ) -> Result<Vec<domain::AddItem>, ApiError> {
        let source = self.cart_ref(tenant.clone(), source.clone());
        let state = self.read_uncached(&source).await?;
        Ok(state
            .cart
            .lines
            .iter()
            .map(|l| domain::AddItem {
                sku: l.product.sku.clone(),
                quantity: l.quantity,
                country: l.country.to_string(),
                store_id: l.store_id.as_deref().map(str::to_owned),
            })
            .collect())
    }

    fn check_owner(&self, cart: &CartRef, route: Route) -> Result<(), ApiError> {
        match &self.inner.placement {
            Some(_) if route == Route::Fallback => Ok(()),
            Some(p) => p.check(cart.shard).inspect_err(|_| {
                metrics::counter!(m::NOT_OWNER).increment(1);
            }),
            None => Ok(()),
        }
    }

    fn epoch(&self, cart: &CartRef) -> u64 {
        self.inner
            .placement
            .as_ref()
            .map_or(0, |p| p.epoch(cart.shard))
    }

    async fn slot(&self, cart: &CartRef) -> Arc<Slot> {
        self.inner
            .cache
            .get_with(cart.key.clone(), async { Arc::new(Slot::default()) })
            .await
    }

    /// Make sure the slot holds the cart, loading it when cold and catching up when this
    /// node (re)gained the cart's shard since the state was cached.
    async fn ensure_current<'a>(
        &self,
        guard: &'a mut Option<Loaded>,
        cart: &CartRef,
    ) -> Result<&'a mut Loaded, ApiError> {
        let epoch = self.epoch(cart);
        match guard {
            Some(l) if l.epoch == epoch => {
                metrics::counter!(m::CACHE_HITS).increment(1);
            }
            Some(l) => {
                self.catch_up(l, cart).await?;
                l.epoch = epoch;
            }
            None => {
                metrics::counter!(m::CACHE_MISSES).increment(1);
                let mut l = self.load(cart).await?;
                l.epoch = epoch;
                *guard = Some(l);
            }
        }
        metrics::gauge!(m::CACHED_CARTS).set(self.inner.cache.entry_count() as f64);
        Ok(guard.as_mut().expect("slot was just filled"))
    }

    /// Cold load: the snapshot (if any and consistent) plus every message after it.
    async fn load(&self, cart: &CartRef) -> Result<Loaded, ApiError> {
        let started = Instant::now();
        let keep = self.inner.cfg.retain;
        let snapshot = self
            .inner
            .snapshots
            .load(&cart.key)
            .await
            .filter(|s| s.cart.id == cart.cart_id && s.version > 0 && checkout_is_complete(s));
        let (mut state, tail) = match snapshot {
            Some(snap) => {
                // Read from the snapshot's own last message: it must be there, on this
                // subject, or the snapshot does not belong to this stream.
                let tail = self
                    .inner
                    .store
                    .read_after(&cart.subject, snap.version - 1)
                    .await
                    .map_err(store_error)?;
                if tail.first().map(|m| m.sequence) == Some(snap.version) {
                    (snap, tail.into_iter().skip(1).collect())
                } else {
                    metrics::counter!(m::SNAPSHOTS_IGNORED).increment(1);
                    tracing::warn!(
                        cart = %cart.key,
                        snapshot_version = snap.version,
                        "snapshot does not match the stream; rebuilding the cart from the stream"
                    );
                    let tail = self
                        .inner
                        .store
                        .read_after(&cart.subject, 0)
                        .await
                        .map_err(store_error)?;
                    (CartState::new(cart.cart_id.clone()), tail)
                }
            }
            None => {
                let tail = self
                    .inner
                    .store
                    .read_after(&cart.subject, 0)
                    .await
                    .map_err(store_error)?;
                (CartState::new(cart.cart_id.clone()), tail)
            }
        };
        let replayed = tail.len();
        let snapshot_revision = state.revision;
        apply_tail(&mut state, tail, keep, &cart.key);
        // It stays in the cache: no growth slack in its lists (most cached carts are read far
        // more often than changed).
        state.shrink_to_fit();
        metrics::histogram!(m::COLD_LOAD_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::COLD_LOAD_EVENTS).record(replayed as f64);
        let mut loaded = Loaded {
            state,
            snapshot_revision,
            epoch: 0,
        };
        self.maybe_snapshot(cart, &mut loaded);
        Ok(loaded)
    }

    async fn catch_up(&self, loaded: &mut Loaded, cart: &CartRef) -> Result<(), ApiError> {
        let tail = self
            .inner
            .store
            .read_after(&cart.subject, loaded.state.version)
            .await
            .map_err(store_error)?;
        if !tail.is_empty() {
            apply_tail(&mut loaded.state, tail, self.inner.cfg.retain, &cart.key);
            self.inner.watchers.publish(&cart.key, &loaded.state);
        }
        Ok(())
    }

    /// Brings `loaded` up to what the stream's leader holds: the leader names the cart's last
    /// message (usually one the node already has: one round trip); the messages up to it come
    /// in a batch from the replicas, and one by one from the leader where the replica that
    /// answered lags. Messages appended after the leader answered may be missing: the state
    /// is the cart as it was at a moment during the call.
    async fn confirm_current(&self, loaded: &mut Loaded, cart: &CartRef) -> Result<(), ApiError> {
        // Every node would hear the same (an election is under way): asked to retry.
        let leader_error = |e| store_error(e).with_retry_after(NO_LEADER_RETRY);
        let store = &self.inner.store;
        let Some(target) = store
            .last_sequence_from_leader(&cart.subject)
            .await
            .map_err(leader_error)?
        else {
            return Ok(());
        };
        let before = loaded.state.version;
        let keep = self.inner.cfg.retain;
        let mut leader_reads = 0usize;
        while loaded.state.version < target {
            if leader_reads.is_multiple_of(CONFIRM_BATCH_EVERY) {
                let tail = store
                    .read_after(&cart.subject, loaded.state.version)
                    .await
                    .map_err(store_error)?;
                let progressed = !tail.is_empty();
                apply_tail(&mut loaded.state, tail, keep, &cart.key);
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
            apply_tail(&mut loaded.state, vec![next], keep, &cart.key);
            leader_reads += 1;
        }
        if loaded.state.version != before {
            metrics::counter!(m::STALE_CONFIRMS).increment(1);
            self.inner.watchers.publish(&cart.key, &loaded.state);
        }
        Ok(())
    }

    async fn append(
        &self,
        cart: &CartRef,
        msg: &EventMessage,
        expected: u64,
        ctx: &RequestContext,
    ) -> Result<crate::store::Appended, StoreError> {
        let mut attempts = 0;
        loop {
            match self
                .inner
                .store
                .append(&cart.subject, msg, expected, ctx)
                .await
            {
                // An unknown outcome: the same Msg-Id makes a retry safe.
                Err(StoreError::Timeout) if attempts < self.inner.cfg.append_timeout_retries => {
                    attempts += 1;
                    tracing::warn!(cart = %cart.key, attempts, "append timed out; retrying with the same message id");
                }
                other => return other,
            }
        }
    }

    fn after_commit(&self, cart: &CartRef, loaded: &mut Loaded) {
        self.inner.watchers.publish(&cart.key, &loaded.state);
        self.maybe_snapshot(cart, loaded);
    }

    fn maybe_snapshot(&self, cart: &CartRef, loaded: &mut Loaded) {
        if self
            .inner
            .snapshots
            .due(loaded.state.revision, loaded.snapshot_revision)
        {
            loaded.snapshot_revision = loaded.state.revision;
            self.inner
                .snapshots
                .offer(cart.key.to_string(), Arc::new(loaded.state.clone()));
        }
    }

    /// The original outcome when this command was decided before: a keyed command within
    /// the idempotency retention (refused when its request differs), or one of the cart's
    /// recent commands.
    fn answered_before(
        &self,
        state: &CartState,
        id: &Identity,
        now: time::OffsetDateTime,
    ) -> Result<Option<Outcome>, ApiError> {
        if let Some(fingerprint) = &id.fingerprint
            && let Some(keyed) =
                state.keyed_outcome(&id.command_id, now.unix_timestamp(), self.inner.cfg.retain)
        {
            if keyed.fingerprint != *fingerprint {
                return Err(ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was already used on this cart for a different request; \
                     use a new key for each distinct request",
                ));
            }
            return Ok(Some(self.duplicate_reply(state, keyed.version)));
        }
        Ok(state
            .recent_outcome(&id.command_id)
            .map(|prior| self.duplicate_reply(state, prior.version)))
    }

    fn duplicate_reply(&self, state: &CartState, version: u64) -> Outcome {
        metrics::counter!(m::DUPLICATES).increment(1);
        let mut state = state.clone();
        // The original outcome's version; the cart is the current one (later commands may
        // have changed it since).
        state.version = version.max(1);
        Outcome {
            state,
            duplicate: true,
            event_types: Vec::new(),
        }
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

/// Random delay of up to 2^attempt ms, capped at 16 ms.
fn conflict_backoff(attempt: u32) -> Duration {
    let cap_ms = 1u64 << attempt.min(4);
    Duration::from_micros(fastrand::u64(0..cap_ms * 1000))
}

fn decide_all(
    state: &CartState,
    commands: &[Command],
    catalog: &cart_domain::catalog::CatalogSnapshot,
    now: time::OffsetDateTime,
    limits: Limits,
) -> Result<Vec<Event>, ApiError> {
    let ctx = Context {
        now,
        catalog,
        limits,
    };
    let single = commands.len() == 1;
    let mut work = state.cart.clone();
    let mut all = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let name = c.name();
        let events = domain::decide(&work, c.clone(), &ctx).map_err(|e| {
            let mut err = ApiError::from(e);
            if !single {
                err.message = format!("commands[{i}] ({name}): {}", err.message);
            }
            err
        })?;
        for e in &events {
            domain::apply(&mut work, e);
        }
        all.extend(events);
    }
    Ok(all)
}

fn apply_tail(
    state: &mut CartState,
    tail: Vec<crate::store::StoredMessage>,
    keep: Retain,
    key: &str,
) {
    for stored in tail {
        match stored.message {
            Some(msg) => {
                let report = state.apply_message(&msg, stored.sequence, keep);
                let skipped = report.unknown.len() + report.invalid.len();
                if skipped > 0 {
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
            None => state.skip_unreadable(stored.sequence),
        }
    }
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::unavailable(format!("cannot read the cart's events: {e}"))
}

/// Counts a command as in flight for its lifetime (drain waits for zero).
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let n = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(m::IN_FLIGHT).set(f64::from(n));
        Self(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let n = self.0.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(m::IN_FLIGHT).set(f64::from(n));
        if n == 0 {
            self.0.idle.notify_waiters();
        }
    }
}
