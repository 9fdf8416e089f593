//! Metric names of the runner, defined once.

pub const CHECKOUTS: &str = "cart_runner_checkout_attempts_total";
pub const CHECKOUT_FAILURES: &str = "cart_runner_checkout_failures_total";
pub const PROVIDER_SECONDS: &str = "cart_runner_provider_request_duration_seconds";
pub const PROVIDER_ERRORS: &str = "cart_runner_provider_errors_total";
pub const DUPLICATES_SKIPPED: &str = "cart_runner_duplicate_deliveries_skipped_total";
pub const IN_FLIGHT: &str = "cart_runner_effects_in_flight";
pub const PUSHES: &str = "cart_runner_pushes_total";
pub const PAYMENT_MISMATCHES: &str = "cart_runner_payment_mismatches_total";
pub const RECONCILED: &str = "cart_runner_reconciled_orders_total";
pub const SKIPPED: &str = "cart_runner_events_skipped_total";
pub const DEAD_LETTERS: &str = "cart_runner_dead_letters_total";
pub const DEAD_LETTERS_LOST: &str = "cart_runner_dead_letters_lost_total";
pub const HANDLER_PANICS: &str = "cart_runner_handler_panics_total";
pub const ACK_FLOOR: &str = "cart_runner_consumer_ack_floor";
pub const LEASE_HELD: &str = "cart_runner_lease_held";
pub const LEASE_LOST: &str = "cart_runner_lease_lost_total";

/// Describes every series, and registers the one that must exist before its first change.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        CHECKOUTS,
        "Checkout attempts handled, by outcome (created, updated, failed)."
    );
    describe_counter!(CHECKOUT_FAILURES, "Checkouts failed, by reason code.");
    describe_histogram!(
        PROVIDER_SECONDS,
        Unit::Seconds,
        "Payment provider request time, by endpoint."
    );
    describe_counter!(
        PROVIDER_ERRORS,
        "Payment provider error responses, by endpoint and status."
    );
    describe_counter!(
        DUPLICATES_SKIPPED,
        "Redelivered effects whose result was already recorded, and replayed attempts older than their cart's newest (neither calls the provider)."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Checkout effects and pushes being processed now."
    );
    describe_counter!(
        PUSHES,
        "Provider pushes and reconciliations handled, by result (confirmed, already_placed, incomplete, mismatch, unknown_order, foreign_order, foreign_tenant, dead_letter)."
    );
    describe_counter!(
        PAYMENT_MISMATCHES,
        "Paid provider orders that could not be placed because they do not match their cart, by reason (cart_changed, amount_differs, lines_differ, attempt_changed, order_differs, order_placed, no_checkout). Each needs an operator."
    );
    describe_counter!(
        RECONCILED,
        "Provider orders waiting for payment that reconciliation asked the push handler to read again."
    );
    describe_counter!(
        SKIPPED,
        "Cart events skipped as not a CheckoutStarted (by their cart-event-types header, or their payload without one)."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Messages given up on and written to DEAD_LETTERS."
    );
    describe_counter!(
        DEAD_LETTERS_LOST,
        "Messages given up on, on their last delivery, whose dead letter could not be written: not handled and not kept (the log names their stream sequence)."
    );
    describe_counter!(
        HANDLER_PANICS,
        "Messages whose handler panicked (a bug), by consumer; redelivered while they have deliveries left, then dead-lettered."
    );
    describe_gauge!(
        LEASE_HELD,
        "1 while this runner holds the RUNNER_LEASE lease and fetches effects, 0 while it stands by."
    );
    describe_counter!(
        LEASE_LOST,
        "Times this runner lost the lease (another runner held it, or it could not be refreshed) and stopped fetching; it then starts again as a standby, in the same process."
    );
    describe_gauge!(
        ACK_FLOOR,
        "Stream sequence up to which a consumer has everything acknowledged (read every second; a re-created consumer resumes after it)."
    );
    // Zero until the first loss, and scraped (alerted on) from the first answer of `/metrics`.
    metrics::counter!(LEASE_LOST).increment(0);
}
