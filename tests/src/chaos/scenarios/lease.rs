//! The nats-server leading the runner lease's bucket killed with checkouts in flight and a
//! second runner standing by: the lease may lapse during the election (the holder then stops
//! and starts again as a standby, in its own process), but never two runners at once, no
//! duplicate provider order, no stuck checkout.

use super::checkout::RunnerLooks;
use super::*;

/// How long after the kill a checkout started then may take to get its provider order: the
/// election (≤ 10 s, [`WRITES_RESUME_BOUND_MS`]), then, when the holder's lease lapsed in it,
/// the rest of the lease's TTL (10 s) before the standby can take it, its next try (≤ 1 s) and
/// the provider call.
const CHECKOUTS_RESUME_BOUND: Duration = Duration::from_secs(30);

impl Run<'_> {
    pub(super) async fn lease_leader_kill(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let prefix = format!("lease-{}", self.opts.seed);
        let http = self.cluster.http.clone();
        self.cluster
            .standby_runner
            .start_ready(&http, Duration::from_secs(30))
            .await?;
        let mut looks = RunnerLooks::default();
        let mut carts = Vec::new();
        let mut resumed = Vec::new();
        for cycle in 0..r.cycles {
            carts.extend(self.checkouts_in_flight(&prefix, cycle).await?);
            // A cart ready to check out the moment the leader is gone.
            let probe = format!("{prefix}-{cycle}-after");
            self.cart_with_item(&probe).await?;
            self.active_runner(Duration::from_secs(30), &mut looks)
                .await?;
            let leader = self
                .cluster
                .leader_of(&format!("KV_{}", shared::subjects::RUNNER_LEASE_BUCKET))
                .await?;
            self.cluster.nats[leader].kill9();
            let killed = Instant::now();
            resumed.push(self.checkout_resumes(&probe, killed, &mut looks).await?);
            carts.push(probe);
            // One runner holds the lease again before the server comes back.
            self.active_runner(Duration::from_secs(30), &mut looks)
                .await?;
            self.restart_nats(leader).await?;
        }
        // How often the election outlasted the holder's lease (both runners lived throughout).
        let mut lapses = 0;
        for port in [
            self.cluster.layout.runner_http(),
            self.cluster.layout.standby_runner_http(),
        ] {
            lapses += self.lease_lapses(port).await?;
        }
        r.counts.insert("lease_lapses".into(), lapses);
        let settled = self.settle_checkouts(&carts, &mut looks, r).await?;
        let times = Times::of(resumed);
        r.pass = settled && times.max_ms <= CHECKOUTS_RESUME_BOUND.as_millis() as u64;
        r.times.insert("checkout_resumes".into(), times);
        Ok(())
    }

    /// `cart_runner_lease_lost_total` of the runner whose HTTP port is `port`.
    async fn lease_lapses(&self, port: u16) -> anyhow::Result<u64> {
        let metrics = self
            .cluster
            .http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let value = metrics
            .lines()
            .find_map(|l| l.strip_prefix("cart_runner_lease_lost_total "))
            .context("no cart_runner_lease_lost_total in the runner's metrics")?;
        Ok(value.trim().parse::<f64>()? as u64)
    }

    /// How long after `since` `cart`'s checkout, started now and asked again every 250 ms,
    /// has its provider order. A runner that exits meanwhile is started again (and counted).
    async fn checkout_resumes(
        &mut self,
        cart: &str,
        since: Instant,
        looks: &mut RunnerLooks,
    ) -> anyhow::Result<Duration> {
        let deadline = since + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.checkout(cart).await {
                return Ok(since.elapsed());
            }
            // Counts both-ready looks and exited runners; none ready yet is fine.
            let _ = self.active_runner(Duration::ZERO, looks).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::bail!("{cart}: no provider order within 60 s of the kill")
    }
}
