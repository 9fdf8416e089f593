//! Executing commands against carts.
//!
//! Commands for one cart are serialised by the cart's slot lock; different carts run in
//! parallel. A slot caches the cart's state (bounded LRU with idle expiry); a cold cart is
//! loaded from its snapshot plus the stream messages after it. Every append is fenced by the
//! cart's version, so a stale cache or a second node serving the same cart can delay a command
//! (conflict → catch up → decide again) but never lose or double-apply one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::product_pool::ProductPool;
use cart_domain::{CartState, Limits, Retain};
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use shared::ApiError;
use shared::placement::shard_for;
use shared::subjects;
use tokio::sync::{Mutex, Notify};

use crate::catalog::CatalogCache;
use crate::metrics as m;
use crate::placement::Placement;
use crate::snapshot::SnapshotStore;
use crate::store::EventStore;
use crate::watch::Watchers;

mod execute;
mod load;

/// When to ask again for a cart version the stream does not hold yet (whole seconds: what
/// the gRPC `retry-after` and HTTP `Retry-After` carry).
/// Retry-After when the event stream has no leader (a NATS election takes 4–9 s).
const NO_LEADER_RETRY: Duration = Duration::from_secs(2);
/// Retry-After for a cart this node cannot decide on during a rolling upgrade.
const NEWER_BUILD_RETRY: Duration = Duration::from_secs(5);
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
    /// An earlier attempt of this command timed out on a node that may still be deciding it:
    /// a refusal is stored with the cart, as for a keyed command.
    pub earlier_attempt_unknown: bool,
}

impl Identity {
    pub fn new(command_id: CommandId) -> Self {
        Self {
            command_id,
            fingerprint: None,
            earlier_attempt_unknown: false,
        }
    }
}

/// The result of a command: `reply` is the cart as the caller asked it rendered.
#[derive(Debug, Clone)]
pub struct Outcome<R> {
    pub reply: R,
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
    /// Some of the cart's messages held events this build cannot apply (written by a newer
    /// build during a rolling upgrade) or could not be read: the state lacks them. It serves
    /// commands (their appends stay fenced by the version) but is never written as a snapshot,
    /// since a newer node would start from that snapshot and never see those events.
    incomplete: bool,
    /// Among what it lacks, a newer version of an event this build knows: commands on it are
    /// refused (see [`load::Skipped`]).
    newer_versions: bool,
}

impl Loaded {
    /// Whether the state changed since its last snapshot and may be written as one (evicted,
    /// drained).
    fn wants_snapshot(&self) -> bool {
        !self.incomplete && self.state.revision > self.snapshot_revision
    }

    /// Whether enough changed since the last snapshot for `store` to want a new one.
    fn snapshot_due(&self, store: &SnapshotStore) -> bool {
        !self.incomplete && store.due(self.state.revision, self.snapshot_revision)
    }
}

struct Slot {
    loaded: Mutex<Option<Loaded>>,
    /// What the cart weighs in the cache ([`weight_of`] its state; 1 while not loaded).
    weight: AtomicU32,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            loaded: Mutex::default(),
            weight: AtomicU32::new(1),
        }
    }
}

/// Lines and keyed commands that weigh as much as a cart: each takes about 128 bytes, a cached
/// three-line cart about 1 KiB (`cart-bench memory`).
const ITEMS_PER_CART_WEIGHT: usize = 8;

/// A cart's weight in the cache, in carts of about 1 KiB: 1, plus 1 per 8 of its lines and of
/// the `Idempotency-Key`ed commands it keeps (up to 1,000 for 24 hours, ~100 KiB). The cache's
/// capacity is a total of weights, so what it holds stays near `cache_capacity` KiB however
/// many keys its carts keep.
fn weight_of(state: &CartState) -> u32 {
    let items = state.cart.lines.len() + state.keyed.len();
    u32::try_from(1 + items / ITEMS_PER_CART_WEIGHT).unwrap_or(u32::MAX)
}

#[derive(Clone)]
pub struct Carts {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    snapshots: SnapshotStore,
    catalog: CatalogCache,
    cache: Cache<Arc<str>, Arc<Slot>>,
    watchers: Watchers,
    placement: Option<Arc<Placement>>,
    cfg: CartsConfig,
    in_flight: AtomicU32,
    idle: Notify,
    meters: m::PerCommand,
    /// Product facts shared between the cached carts' lines.
    products: ProductPool,
}

impl Carts {
    pub fn new(
        store: EventStore,
        snapshots: SnapshotStore,
        catalog: CatalogCache,
        placement: Option<Arc<Placement>>,
        cfg: CartsConfig,
    ) -> Self {
        let evict_snapshots = snapshots.clone();
        let meters = m::PerCommand::register();
        let cached = meters.cached_carts.clone();
        let cache = Cache::builder()
            // LRU, not moka's default TinyLFU: TinyLFU may refuse to admit a freshly loaded
            // cart, and every command to it would then load it again (in a slot of its own).
            .eviction_policy(EvictionPolicy::lru())
            .max_capacity(cfg.cache_capacity)
            .weigher(|_key, slot: &Arc<Slot>| slot.weight.load(Ordering::Relaxed))
            .time_to_idle(cfg.cache_idle)
            .eviction_listener(move |key: Arc<Arc<str>>, slot: Arc<Slot>, cause| {
                if cause != RemovalCause::Replaced {
                    // Counted where a slot is made (`Carts::slot`); a replaced one has a
                    // successor.
                    cached.decrement(1.0);
                }
                if cause != RemovalCause::Replaced && cause != RemovalCause::Explicit {
                    metrics::counter!(m::CACHE_EVICTIONS).increment(1);
                }
                // Keep the next cold load short: snapshot what changed since the last one (a
                // slot replaced by itself, re-weighed, stays).
                if cause != RemovalCause::Replaced
                    && evict_snapshots.enabled()
                    && let Ok(guard) = slot.loaded.try_lock()
                    && let Some(l) = guard.as_ref()
                    && l.wants_snapshot()
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
                meters,
                products: ProductPool::default(),
            }),
        }
    }

    pub fn cart_ref(&self, tenant: TenantId, cart_id: CartId) -> CartRef {
        CartRef::new(tenant, cart_id, self.inner.cfg.shard_count)
    }

    pub fn watchers(&self) -> &Watchers {
        &self.inner.watchers
    }

    pub fn snapshots(&self) -> &SnapshotStore {
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

    /// The cache's total weight ([`weight_of`] each cart), once its pending evictions ran.
    pub async fn cache_weight(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.weighted_size()
    }

    /// Weighs `slot` again for `state` (after a load, a catch-up, a commit): a cart whose
    /// weight changed is put back in the cache as itself, which is when the cache weighs it.
    /// Only while the cache still holds this slot (not one made after it was evicted). The
    /// re-insert is boxed: it is rare (every 8th line or key), and inline every command's
    /// future would carry it.
    async fn reweigh(&self, cart: &CartRef, slot: &Arc<Slot>, state: &CartState) {
        let weight = weight_of(state);
        if slot.weight.swap(weight, Ordering::Relaxed) == weight {
            return;
        }
        let insert =
            self.inner
                .cache
                .entry(cart.key.clone())
                .and_compute_with(|entry| async move {
                    match entry {
                        Some(e) if Arc::ptr_eq(e.value(), slot) => {
                            moka::ops::compute::Op::Put(slot.clone())
                        }
                        _ => moka::ops::compute::Op::Nop,
                    }
                });
        Box::pin(insert).await;
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
                    Some(l) if l.wants_snapshot() => Arc::new(l.state.clone()),
                    _ => continue,
                }
            };
            self.inner.snapshots.queue(key.to_string(), state).await;
        }
        self.inner.snapshots.flush().await;
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
}

/// Counts a command as in flight for its lifetime (drain waits for zero).
struct InFlight<'a>(&'a Inner);

impl<'a> InFlight<'a> {
    fn enter(inner: &'a Inner) -> Self {
        let n = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        inner.meters.in_flight.set(f64::from(n));
        Self(inner)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let n = self.0.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.meters.in_flight.set(f64::from(n));
        if n == 0 {
            self.0.idle.notify_waiters();
        }
    }
}
