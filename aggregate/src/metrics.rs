//! Metric names of the aggregate, defined once and described for `/metrics`.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

pub const COMMANDS: &str = "cart_aggregate_commands_total";
pub const COMMAND_SECONDS: &str = "cart_aggregate_command_duration_seconds";
pub const APPEND_SECONDS: &str = "cart_aggregate_append_duration_seconds";
pub const LEADER_READ_SECONDS: &str = "cart_aggregate_leader_read_duration_seconds";
pub const STALE_CONFIRMS: &str = "cart_aggregate_stale_confirms_total";
pub const CONFLICTS: &str = "cart_aggregate_version_conflicts_total";
pub const DUPLICATES: &str = "cart_aggregate_duplicate_commands_total";
pub const REFUSALS_STORED: &str = "cart_aggregate_refusals_stored_total";
pub const CACHE_HITS: &str = "cart_aggregate_cache_hits_total";
pub const CACHE_MISSES: &str = "cart_aggregate_cache_misses_total";
pub const CACHE_EVICTIONS: &str = "cart_aggregate_cache_evictions_total";
pub const CACHED_CARTS: &str = "cart_aggregate_cached_carts";
pub const CACHE_WEIGHT: &str = "cart_aggregate_cache_weight";
pub const CACHE_CAPACITY: &str = "cart_aggregate_cache_capacity";
pub const COLD_LOAD_SECONDS: &str = "cart_aggregate_cold_load_duration_seconds";
pub const COLD_LOAD_EVENTS: &str = "cart_aggregate_cold_load_replayed_messages";
pub const SNAPSHOT_WRITES: &str = "cart_aggregate_snapshot_writes_total";
pub const SNAPSHOTS_IGNORED: &str = "cart_aggregate_snapshots_ignored_total";
pub const COPIES_AHEAD_OF_STREAM: &str = "cart_aggregate_copies_ahead_of_stream_total";
pub const UNREADABLE_MESSAGES: &str = "cart_aggregate_unreadable_messages_total";
pub const UNKNOWN_EVENTS: &str = "cart_aggregate_unknown_events_total";
pub const OWNED_SHARDS: &str = "cart_aggregate_owned_shards";
pub const PLACEMENT_CHANGES: &str = "cart_aggregate_placement_changes_total";
pub const NOT_OWNER: &str = "cart_aggregate_not_owner_total";
pub const IN_FLIGHT: &str = "cart_aggregate_commands_in_flight";
pub const WATCHERS_DROPPED: &str = "cart_aggregate_watchers_dropped_total";
pub const EXECUTE_STREAMS: &str = "cart_aggregate_execute_streams";
pub const IN_PROCESS_CALLS: &str = "cart_aggregate_in_process_calls_total";

/// Handles of the series the command path records, registered once: `metrics::gauge!` and
/// friends look their series up in the registry on each call (hashing the name), which the
/// command path would otherwise pay several times per command. `cached_carts` counts cache
/// slots as they are made and removed (moka's own `entry_count` trails its housekeeping).
pub struct PerCommand {
    pub in_flight: metrics::Gauge,
    pub cached_carts: metrics::Gauge,
    pub cache_hits: metrics::Counter,
    pub commands: CommandSeries,
}

impl PerCommand {
    pub fn register() -> Self {
        live();
        Self {
            in_flight: metrics::gauge!(IN_FLIGHT),
            cached_carts: metrics::gauge!(CACHED_CARTS),
            cache_hits: metrics::counter!(CACHE_HITS),
            commands: CommandSeries::default(),
        }
    }
}

/// [`COMMANDS`] by command type and result, and [`COMMAND_SECONDS`] by type, with each
/// series' handles made once: `counter!` with labels builds its key and looks the series up in
/// the registry on every call (~1.5 % of the CPU of `cart-bench grpc`). Bounded: both the
/// command types and the results (ok, duplicate, error codes) are fixed lists.
#[derive(Default)]
pub struct CommandSeries {
    /// By (type, result).
    by_label: RwLock<HashMap<(&'static str, &'static str), Handles>>,
}

/// One series' count and its type's duration.
type Handles = (metrics::Counter, metrics::Histogram);

impl CommandSeries {
    /// Counts one command of type `kind` that ended as `result` after `seconds`.
    pub fn record(&self, kind: &'static str, result: &'static str, seconds: f64) {
        let key = (kind, result);
        let kept = self.by_label.read().unwrap_or_else(PoisonError::into_inner);
        if let Some((count, duration)) = kept.get(&key) {
            count.increment(1);
            duration.record(seconds);
            return;
        }
        drop(kept);
        let mut kept = self
            .by_label
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let (count, duration) = kept.entry(key).or_insert_with(|| {
            (
                metrics::counter!(COMMANDS, "type" => kind, "result" => result),
                metrics::histogram!(COMMAND_SECONDS, "type" => kind),
            )
        });
        count.increment(1);
        duration.record(seconds);
    }
}

/// The [`APPEND_SECONDS`] handle, for the event store (which times every append).
pub fn append_seconds() -> metrics::Histogram {
    live();
    metrics::histogram!(APPEND_SECONDS)
}

/// Installs the process recorder before handles are taken: a handle registered before it
/// would record nowhere, for good.
fn live() {
    shared::telemetry::prometheus();
}

/// Register descriptions (shown as `# HELP` lines). Safe to call more than once.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        COMMANDS,
        "Commands handled, by type and result (ok, duplicate, or the error code)."
    );
    describe_histogram!(
        COMMAND_SECONDS,
        Unit::Seconds,
        "Time to handle one command, load and append included."
    );
    describe_histogram!(
        APPEND_SECONDS,
        Unit::Seconds,
        "JetStream publish-to-ack time of one event message."
    );
    describe_histogram!(
        LEADER_READ_SECONDS,
        Unit::Seconds,
        "Time to ask the CART_EVENTS leader whether a cart has a message after the node's version."
    );
    describe_counter!(
        STALE_CONFIRMS,
        "Reads and refusals that found the node's copy of a cart behind the stream leader."
    );
    describe_counter!(
        CONFLICTS,
        "Appends refused by the expected-sequence fence (another writer was first)."
    );
    describe_counter!(
        DUPLICATES,
        "Commands answered from their earlier outcome (retries)."
    );
    describe_counter!(
        REFUSALS_STORED,
        "Refusals kept with the cart (keyed commands, and retries after a timed-out attempt), by code."
    );
    describe_counter!(CACHE_HITS, "Commands and reads served from a cached cart.");
    describe_counter!(CACHE_MISSES, "Carts loaded from snapshot and stream.");
    describe_counter!(
        CACHE_EVICTIONS,
        "Carts dropped from the cache (size or idle time)."
    );
    describe_gauge!(CACHED_CARTS, "Carts currently cached.");
    describe_gauge!(
        CACHE_WEIGHT,
        "Weight of the cached carts (1 per cart plus 1 per 8 of its lines and kept keyed commands; about 1 KiB each): evictions start at the capacity."
    );
    describe_gauge!(
        CACHE_CAPACITY,
        "The cart cache's capacity, in the units of cart_aggregate_cache_weight (AGGREGATE_CACHE_CAPACITY)."
    );
    describe_histogram!(
        COLD_LOAD_SECONDS,
        Unit::Seconds,
        "Time to load a cart that was not cached."
    );
    describe_histogram!(
        COLD_LOAD_EVENTS,
        "Messages replayed on top of the snapshot by a cold load."
    );
    describe_counter!(SNAPSHOT_WRITES, "Snapshot writes, by result.");
    describe_counter!(
        SNAPSHOTS_IGNORED,
        "SnapshotStore ignored as stale or corrupt (cart rebuilt from the stream)."
    );
    describe_counter!(
        COPIES_AHEAD_OF_STREAM,
        "Cached carts whose last message the stream's leader no longer holds (CART_EVENTS \
         created again), read again from the stream."
    );
    describe_counter!(
        UNREADABLE_MESSAGES,
        "Event messages whose envelope could not be parsed (skipped)."
    );
    describe_counter!(
        UNKNOWN_EVENTS,
        "Events of an unknown type or invalid data (skipped during replay)."
    );
    describe_gauge!(OWNED_SHARDS, "Shards this node owns.");
    describe_counter!(
        PLACEMENT_CHANGES,
        "Shard ownership changes this node observed."
    );
    describe_counter!(
        NOT_OWNER,
        "Requests refused because another node owns the cart's shard."
    );
    describe_gauge!(IN_FLIGHT, "Commands being handled now.");
    describe_gauge!(
        EXECUTE_STREAMS,
        "Open ExecuteStream streams (about one per caller connection)."
    );
    describe_counter!(
        IN_PROCESS_CALLS,
        "Execute calls handed over by the gateway in this process (cart-node), not over gRPC."
    );
    describe_counter!(
        WATCHERS_DROPPED,
        "WatchCart streams dropped because the client fell behind."
    );
}
