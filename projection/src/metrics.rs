//! Metric names of the projection, defined once and described for `/metrics`. Every series
//! carries a `view` label so several projections can share one Prometheus.

pub const MESSAGES_APPLIED: &str = "cart_projection_messages_applied_total";
pub const EVENTS_APPLIED: &str = "cart_projection_events_applied_total";
pub const MESSAGES_SKIPPED: &str = "cart_projection_messages_skipped_total";
pub const STATE_LOADS: &str = "cart_projection_state_loads_total";
pub const BATCH_SECONDS: &str = "cart_projection_batch_duration_seconds";
pub const SYNC_SECONDS: &str = "cart_projection_sync_duration_seconds";
pub const BATCH_MESSAGES: &str = "cart_projection_batch_messages";
pub const APPLIED_SEQUENCE: &str = "cart_projection_applied_sequence";
pub const STREAM_LAST_SEQUENCE: &str = "cart_projection_stream_last_sequence";
pub const LAG: &str = "cart_projection_lag_messages";
pub const UNKNOWN_EVENTS: &str = "cart_projection_unknown_events_total";
pub const FAILED_MESSAGES: &str = "cart_projection_failed_messages_total";
pub const DEAD_LETTERS: &str = "cart_projection_dead_letters_total";
pub const REPLAYS: &str = "cart_projection_dead_letter_replays_total";
pub const ORDER_WAITS: &str = "cart_projection_order_waits_total";
pub const GAPS_READ_BACK: &str = "cart_projection_gaps_read_back_total";
pub const BATCH_ERRORS: &str = "cart_projection_batch_errors_total";
pub const REBUILDING: &str = "cart_projection_rebuilding";
pub const REBUILD_APPLIED: &str = "cart_projection_rebuild_applied_sequence";
pub const REBUILD_TARGET: &str = "cart_projection_rebuild_target_sequence";
pub const REBUILDS: &str = "cart_projection_rebuilds_total";
pub const QUERIES: &str = "cart_projection_queries_total";
pub const STATE_FLUSHES: &str = "cart_projection_state_flushes_total";
pub const STATES_WRITTEN: &str = "cart_projection_states_written_total";
pub const UNWRITTEN_STATES: &str = "cart_projection_unwritten_states";
pub const RECOVERED_MESSAGES: &str = "cart_projection_recovered_messages_total";
pub const INDEXES_DROPPED: &str = "cart_projection_indexes_dropped";

/// Label with the view name on every series.
pub const VIEW: &str = "view";

/// Register descriptions (shown as `# HELP` lines). Safe to call more than once.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        MESSAGES_APPLIED,
        "Event messages applied to the views (one per accepted command)."
    );
    describe_counter!(EVENTS_APPLIED, "Events inside the applied messages.");
    describe_counter!(
        MESSAGES_SKIPPED,
        "Redelivered messages at or below the checkpoint, acknowledged without applying."
    );
    describe_counter!(
        STATE_LOADS,
        "Cart states read from the database because they were not in the state cache."
    );
    describe_histogram!(
        BATCH_SECONDS,
        Unit::Seconds,
        "Time to apply and commit one batch."
    );
    describe_histogram!(
        SYNC_SECONDS,
        Unit::Seconds,
        "Time to sync the WAL to disk after commits (batches are acknowledged after it)."
    );
    describe_histogram!(BATCH_MESSAGES, "Messages per fetched batch.");
    describe_gauge!(APPLIED_SEQUENCE, "Stream sequence of the checkpoint.");
    describe_gauge!(STREAM_LAST_SEQUENCE, "Last sequence of CART_EVENTS.");
    describe_gauge!(
        LAG,
        "Messages not yet applied: stream last sequence minus applied sequence."
    );
    describe_counter!(
        UNKNOWN_EVENTS,
        "Events of a type this build does not know (skipped), by type."
    );
    describe_counter!(
        FAILED_MESSAGES,
        "Deliveries that could not be decoded or applied (retried, then dead-lettered)."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Messages given up on: published to DEAD_LETTERS and the poison table."
    );
    describe_counter!(REPLAYS, "Dead-letter replays, by result.");
    describe_counter!(
        GAPS_READ_BACK,
        "Messages read from the stream because an earlier run took them and stopped unacknowledged."
    );
    describe_counter!(
        ORDER_WAITS,
        "Batches held back because an earlier message was still being retried."
    );
    describe_counter!(
        BATCH_ERRORS,
        "Batches that failed (fetch, NATS or database error) and were retried."
    );
    describe_gauge!(REBUILDING, "1 while a rebuild runs.");
    describe_gauge!(
        REBUILD_APPLIED,
        "Stream sequence the running rebuild has applied up to (of the target sequence)."
    );
    describe_gauge!(
        REBUILD_TARGET,
        "Stream sequence the running rebuild replays up to."
    );
    describe_counter!(REBUILDS, "Rebuilds, by result.");
    describe_counter!(QUERIES, "QueryService calls, by method and result code.");
    describe_counter!(
        STATE_FLUSHES,
        "Writes of the waiting cart states (they are written behind the views)."
    );
    describe_counter!(STATES_WRITTEN, "Cart states written by those flushes.");
    describe_gauge!(
        UNWRITTEN_STATES,
        "Cart states changed since the last flush (in memory only; recovered from the stream after a crash)."
    );
    describe_gauge!(
        INDEXES_DROPPED,
        "Secondary indexes of the views dropped while catching up from far behind (0 otherwise)."
    );
    describe_counter!(
        RECOVERED_MESSAGES,
        "Messages folded into the cart states again at start-up, after a stop that did not write them."
    );
}
