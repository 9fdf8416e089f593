//! Reconciliation: the safety net under provider pushes. A push can be lost (a network
//! failure, a gateway that was down, a provider that gave up); the money is taken all the
//! same. Every `reconcile_interval_secs`, the runner looks at the checkouts whose provider
//! order still waits for payment (their last `WORKFLOW_EVENTS` result is `created` or
//! `updated`) and asks the push handler to read each order again once it is
//! `reconcile_after_secs` old, then at twice, four times, ... that age (at most
//! [`LONGEST_GAP_SECS`] apart), until `reconcile_max_age_secs`. The first pass after a start reads every waiting order past the
//! first age, so none is missed while the runner was down (a burst of provider reads after a
//! restart, one per waiting order). Orders whose outcome is recorded (placed or mismatched)
//! are not waiting. Every runner replica reconciles; a second read of an order is harmless. The push handler then acts on the
//! order's state exactly as for a push: a paid order is placed (or its mismatch recorded).
//!
//! A purchase the cart approved (`PaymentApproved`, from the provider's validation callback)
//! counts the ages from its approval, not from the order's last result: the cart holds still
//! for it for `PURCHASE_HOLD_SECS` (10 minutes), and a lost push must be read within that
//! hold (at 2, 4 and 8 minutes by default), or the shopper could change the cart under a paid
//! order. The checkout lane notes approvals as it sees them ([`Approvals`]); one noted before
//! a restart is covered by the first pass, which reads every waiting order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::workflow::{PushReceived, PushSource};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::records::Records;

pub struct Reconciler {
    pub records: Records,
    pub interval: Duration,
    pub after: Duration,
    pub max_age: Duration,
    pub approvals: Approvals,
}

/// When carts approved the purchase of provider orders (Unix seconds), by tenant and order:
/// noted by the checkout lane, read and pruned by the reconciler (an order no longer waiting
/// is forgotten).
#[derive(Clone, Default)]
pub struct Approvals(Arc<Mutex<HashMap<(String, String), i64>>>);

impl Approvals {
    pub fn note(&self, tenant: &str, order: &str, approved_at: i64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let at = map
            .entry((tenant.to_owned(), order.to_owned()))
            .or_default();
        *at = (*at).max(approved_at);
    }

    /// When the purchase of `order` was approved, if the checkout lane saw it.
    pub fn approved_at(&self, tenant: &str, order: &str) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(tenant.to_owned(), order.to_owned())).copied()
    }

    /// Keeps only the approvals of orders `waiting` names.
    fn keep(&self, waiting: &std::collections::HashSet<(String, String)>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| waiting.contains(k));
    }
}

impl Reconciler {
    /// Runs passes every `interval` until `stop`. A pass looks back to the start of the last
    /// one that succeeded, so an order whose read-again age fell into a failed or late pass
    /// is read by the next one.
    ///
    /// `stop` also cuts a pass short: otherwise a pass that waits for an unreachable server
    /// holds the term's stop for its requests' timeouts. Nothing is lost: the next term's first
    /// pass (or the other runner's) asks for every waiting order past the first age, and an
    /// order asked for twice is only read twice.
    pub async fn run(self, stop: CancellationToken) {
        stop.run_until_cancelled(self.passes()).await;
    }

    /// [`Reconciler::run`]'s loop, which never ends by itself.
    async fn passes(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_pass: Option<time::OffsetDateTime> = None;
        loop {
            tick.tick().await;
            let started = time::OffsetDateTime::now_utc();
            match self.pass(started, last_pass).await {
                Ok(asked) => {
                    last_pass = Some(started);
                    if asked > 0 {
                        tracing::info!(
                            asked,
                            "reconciliation: waiting provider orders to read again"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation pass failed; trying again next time")
                }
            }
        }
    }

    /// One pass at `now`, after a successful one at `last` (`None`: the first since start,
    /// which reads every waiting order past the first age). Returns how many orders it asked
    /// to read again. An order whose request could not be published is logged and the pass
    /// fails, so the next one looks back far enough to take it.
    pub async fn pass(
        &self,
        now: time::OffsetDateTime,
        last: Option<time::OffsetDateTime>,
    ) -> Result<usize, async_nats::Error> {
        let waiting = self.records.waiting_since(now - self.max_age).await?;
        let after = self.after.as_secs() as i64;
        let mut asked = 0;
        let mut failed = None;
        let mut orders = std::collections::HashSet::new();
        for (result, recorded) in waiting {
            let Some(order) = &result.order else {
                continue;
            };
            orders.insert((result.tenant.clone(), order.order_id.clone()));
            // From the approval of its purchase, when that is newer than its last result.
            let since = match self.approvals.approved_at(&result.tenant, &order.order_id) {
                Some(at) => recorded.unix_timestamp().max(at),
                None => recorded.unix_timestamp(),
            };
            let age = now.unix_timestamp() - since;
            let is_due = match last {
                None => age >= after,
                Some(last) => due(age, after, (now - last).whole_seconds().max(1)),
            };
            if !is_due {
                continue;
            }
            let push = PushReceived {
                tenant: result.tenant.clone(),
                provider_order_id: order.order_id.clone(),
                received_at: crate::state::now(),
                source: PushSource::Reconcile,
            };
            match self.records.reconcile(&push).await {
                Ok(()) => asked += 1,
                Err(e) => {
                    tracing::warn!(order = %order.order_id, error = %e, "could not ask for a waiting order to be read again");
                    failed = Some(e);
                }
            }
        }
        self.approvals.keep(&orders);
        metrics::counter!(m::RECONCILED).increment(asked as u64);
        match failed {
            Some(e) => Err(e),
            None => Ok(asked),
        }
    }
}

/// The longest time between two reads of a waiting order: the doubling stops there, so an
/// order paid a day and a half after it was created is read within hours, not never (the
/// next doubling, 68 hours, is past the default `reconcile_max_age_secs` of 48).
pub const LONGEST_GAP_SECS: i64 = 4 * 3600;

/// Whether an order `age` seconds old passed one of its read-again ages within the last
/// `window` seconds: `after`, `2·after`, `4·after`, ... while they are at most
/// [`LONGEST_GAP_SECS`] apart, then every [`LONGEST_GAP_SECS`].
pub fn due(age: i64, after: i64, window: i64) -> bool {
    if after <= 0 || age < after {
        return false;
    }
    let mut checkpoint = after;
    while checkpoint.saturating_mul(2) <= age && checkpoint < LONGEST_GAP_SECS {
        checkpoint *= 2;
    }
    if checkpoint >= LONGEST_GAP_SECS {
        checkpoint += (age - checkpoint) / LONGEST_GAP_SECS * LONGEST_GAP_SECS;
    }
    checkpoint > age - window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_read_again_at_doubling_ages_once_each() {
        let (after, interval) = (120, 60);
        let reads: Vec<i64> = (0..60_000)
            .step_by(interval as usize)
            .filter(|&age| due(age, after, interval))
            .collect();
        assert_eq!(
            reads,
            [
                120, 240, 480, 960, 1920, 3840, 7680, 15360, 29760, 44160, 58560
            ],
            "once per doubling, never twice, then every 4 hours"
        );
        // Up to the default look-back (48 hours), no 4 hours without a read.
        let reads: Vec<i64> = (0..=172_800)
            .step_by(interval as usize)
            .filter(|&age| due(age, after, interval))
            .collect();
        assert!(
            reads.windows(2).all(|w| w[1] - w[0] <= LONGEST_GAP_SECS),
            "{reads:?}"
        );
        assert!(
            reads
                .last()
                .is_some_and(|&last| last > 172_800 - LONGEST_GAP_SECS)
        );
        // A pass that runs late still catches a checkpoint within its interval, and one after a
        // failed pass looks back to the last good one.
        assert!(due(130, 120, 60));
        assert!(!due(185, 120, 60));
        assert!(
            due(300, 120, 90),
            "240 fell between the last good pass and this one"
        );
        assert!(!due(100, 120, 60));
        assert!(!due(500, 0, 60));
    }
}
