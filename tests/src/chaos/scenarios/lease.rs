//! The runner lease under fault, with checkouts in flight and a second runner standing by:
//! the nats-server leading its bucket killed (the lease may lapse during the election), and
//! the holder frozen past its TTL (a zombie that wakes after the other took over). The loser
//! stops and starts again as a standby in its own process; never two runners at once, no
//! duplicate provider order, no stuck checkout.

use super::checkout::RunnerLooks;
use super::*;

/// How long after the kill a checkout started then may take to get its provider order: the
/// election (≤ 10 s, [`WRITES_RESUME_BOUND_MS`]), then, when the holder's lease lapsed in it,
/// the rest of the lease's TTL (10 s) before the standby can take it, its next try (≤ 1 s) and
/// the provider call.
const CHECKOUTS_RESUME_BOUND: Duration = Duration::from_secs(30);

/// How long after a freeze of the holder the other runner may take to hold the lease: the
/// TTL (10 s) from the holder's last refresh, the standby's next try (≤ 1 s), and the looks
/// at the frozen runner (each waits 2 s for an answer that does not come).
const TAKEOVER_BOUND: Duration = Duration::from_secs(20);

impl Run<'_> {
    pub(super) async fn lease_leader_kill(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let prefix = format!("lease-{}", self.opts.seed);
        let lapses_before = self.with_a_standby().await?;
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
        let lapses = self.runner_lapses().await? - lapses_before;
        r.counts.insert("lease_lapses".into(), lapses);
        let settled = self.settle_checkouts(&carts, &mut looks, r).await?;
        let times = Times::of(resumed);
        r.pass = settled && times.max_ms <= CHECKOUTS_RESUME_BOUND.as_millis() as u64;
        r.times.insert("checkout_resumes".into(), times);
        Ok(())
    }

    /// The runner holding the lease frozen (`SIGSTOP`) past its TTL with checkouts in flight,
    /// and woken (`SIGCONT`) once the other runner has taken over.
    pub(super) async fn zombie_runner(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let prefix = format!("zombie-runner-{}", self.opts.seed);
        let lapses_before = self.with_a_standby().await?;
        let mut looks = RunnerLooks::default();
        let (mut carts, mut taken_over, mut stood_by) = (Vec::new(), Vec::new(), 0u64);
        for cycle in 0..r.cycles {
            carts.extend(self.checkouts_in_flight(&prefix, cycle).await?);
            let probe = format!("{prefix}-{cycle}-frozen");
            self.cart_with_item(&probe).await?;
            let active = self
                .active_runner(Duration::from_secs(30), &mut looks)
                .await?;
            let frozen = Instant::now();
            self.runner_proc(active).pause();
            // Started while the holder is frozen (pending until the other runner takes over;
            // the gateways' checkout reads pass over the frozen one); placed at the end.
            let _ = self.checkout(&probe).await;
            carts.push(probe);
            // The other runner takes the lease once the frozen one's entry expires.
            let deadline = frozen + Duration::from_secs(60);
            while self
                .active_runner(Duration::ZERO, &mut looks)
                .await
                .ok()
                .is_none_or(|i| i == active)
            {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no takeover within 60 s of the freeze"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            taken_over.push(frozen.elapsed());
            self.runner_proc(active).resume();
            // Woken, it finds the lease taken and starts again as a standby (in its own
            // process); both are looked at while it does.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let holder = self.active_runner(Duration::ZERO, &mut looks).await.ok();
                if holder.is_some_and(|i| i != active) && self.standing_by(active).await {
                    stood_by += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let lapses = self.runner_lapses().await? - lapses_before;
        r.counts.insert("lease_lapses".into(), lapses);
        r.counts.insert("woken_runner_stood_by".into(), stood_by);
        let settled = self.settle_checkouts(&carts, &mut looks, r).await?;
        let times = Times::of(taken_over);
        let cycles = r.cycles as u64;
        r.pass = settled
            && lapses == cycles
            && stood_by == cycles
            && times.max_ms <= TAKEOVER_BOUND.as_millis() as u64;
        r.times.insert("taken_over".into(), times);
        Ok(())
    }

    /// Starts the second runner (standing by) and returns the runners' lapse count so far.
    async fn with_a_standby(&mut self) -> anyhow::Result<u64> {
        let http = self.cluster.http.clone();
        self.cluster
            .standby_runner
            .start_ready(&http, Duration::from_secs(30))
            .await?;
        self.runner_lapses().await
    }

    /// Runner `i` (0 the first, 1 the standby, as [`Self::active_runner`] counts them).
    fn runner_proc(&mut self, i: usize) -> &mut crate::chaos::process::Proc {
        if i == 0 {
            &mut self.cluster.runner
        } else {
            &mut self.cluster.standby_runner
        }
    }

    /// Whether runner `i` answers `/ready` with "standing by" (a started standby).
    async fn standing_by(&mut self, i: usize) -> bool {
        let layout = &self.cluster.layout;
        let port = [layout.runner_http(), layout.standby_runner_http()][i];
        let answer = self
            .cluster
            .http
            .get(format!("http://127.0.0.1:{port}/ready"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        match answer {
            Ok(resp) => resp.text().await.is_ok_and(|b| b.contains("standing by")),
            Err(_) => false,
        }
    }

    /// Both runners' `cart_runner_lease_lost_total`, summed (both must be running).
    async fn runner_lapses(&self) -> anyhow::Result<u64> {
        let mut lapses = 0;
        for port in [
            self.cluster.layout.runner_http(),
            self.cluster.layout.standby_runner_http(),
        ] {
            lapses += self.lease_lapses(port).await?;
        }
        Ok(lapses)
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
