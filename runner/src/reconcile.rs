//! Reconciliation: the safety net under provider pushes. A push can be lost (a network
//! failure, a gateway that was down, a provider that gave up); the money is taken all the
//! same. Every `reconcile_interval_secs`, the runner looks at the checkouts whose provider
//! order still waits for payment (their last `WORKFLOW_EVENTS` result is `created` or
//! `updated`) and asks the push handler to read each order again once it is
//! `reconcile_after_secs` old, then at twice, four times, ... that age, until
//! `reconcile_max_age_secs`. The first pass after a start reads every waiting order past the
//! first age, so none is missed while the runner was down. The push handler then acts on the
//! order's state exactly as for a push: a paid order is placed (or its mismatch recorded).

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
}

impl Reconciler {
    /// Runs passes every `interval` until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut first = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.pass(first).await {
                Ok(asked) => {
                    first = false;
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

    /// One pass: how many orders it asked to read again.
    pub async fn pass(&self, first: bool) -> Result<usize, async_nats::Error> {
        let now = time::OffsetDateTime::now_utc();
        let results = self.records.results_since(now - self.max_age).await?;
        let mut asked = 0;
        for (result, recorded) in results {
            let Some(order) = result
                .order
                .as_ref()
                .filter(|_| result.outcome.awaits_payment())
            else {
                continue;
            };
            let age = (now - recorded).whole_seconds();
            let after = self.after.as_secs() as i64;
            let interval = self.interval.as_secs().max(1) as i64;
            if !(first && age >= after || due(age, after, interval)) {
                continue;
            }
            let push = PushReceived {
                tenant: result.tenant.clone(),
                provider_order_id: order.order_id.clone(),
                received_at: crate::checkout::now(),
                source: PushSource::Reconcile,
            };
            self.records.reconcile(&push).await?;
            asked += 1;
        }
        metrics::counter!(m::RECONCILED).increment(asked as u64);
        Ok(asked)
    }
}

/// Whether an order `age` seconds old passed one of its read-again ages (`after`, `2·after`,
/// `4·after`, ...) within the last `interval` seconds.
pub fn due(age: i64, after: i64, interval: i64) -> bool {
    if after <= 0 || age < after {
        return false;
    }
    let mut checkpoint = after;
    while checkpoint.saturating_mul(2) <= age {
        checkpoint *= 2;
    }
    checkpoint > age - interval
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_read_again_at_doubling_ages_once_each() {
        let (after, interval) = (120, 60);
        let reads: Vec<i64> = (0..20_000)
            .step_by(interval as usize)
            .filter(|&age| due(age, after, interval))
            .collect();
        assert_eq!(
            reads,
            [120, 240, 480, 960, 1920, 3840, 7680, 15360],
            "once per doubling, never twice"
        );
        // A pass that runs late still catches a checkpoint within its interval.
        assert!(due(130, 120, 60));
        assert!(!due(185, 120, 60));
        assert!(!due(100, 120, 60));
        assert!(!due(500, 0, 60));
    }
}
