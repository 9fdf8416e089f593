//! NATS under fault: stream and KV leaders killed, latency, resets and a black hole between
//! the services and NATS.

use super::*;

impl Run<'_> {
    // ---- NATS leaders ----------------------------------------------------------------------

    pub(super) async fn stream_leader_kill(
        &mut self,
        r: &mut ScenarioResult,
    ) -> anyhow::Result<()> {
        let load = self.warm_load("stream-leader").await;
        let mut resumed = Vec::new();
        for cycle in 0..r.cycles {
            let leader = self.cluster.leader_of("CART_EVENTS").await?;
            self.cluster.nats[leader].kill9();
            let killed = Instant::now();
            resumed.push(self.writes_resume(killed, cycle).await?);
            self.restart_nats(leader).await?;
        }
        self.finish(load, r).await?;
        let times = Times::of(resumed);
        r.pass = r.verdict.consistent() && times.max_ms <= WRITES_RESUME_BOUND_MS;
        r.times.insert("writes_resume".into(), times);
        Ok(())
    }

    /// How long after `since` a new change is acknowledged again: a probe of its own cart
    /// every 100 ms (each waits up to 3 s, so a probe waiting for an election does not hide
    /// the moment writes come back), the earliest success counts.
    pub(super) async fn writes_resume(
        &self,
        since: Instant,
        cycle: usize,
    ) -> anyhow::Result<Duration> {
        let gateways = self.cluster.gateway_urls();
        let deadline = since + Duration::from_secs(60);
        let mut probes = tokio::task::JoinSet::new();
        let mut n = 0;
        while Instant::now() < deadline {
            n += 1;
            let request = self
                .cluster
                .http
                .post(format!(
                    "{}/v1/carts/probe-{}-{cycle}-{}/commands",
                    gateways[n % gateways.len()],
                    self.opts.seed,
                    n % 8
                ))
                .header("idempotency-key", format!("probe-{cycle}-{n}"))
                .json(&json!({"type": "AddItem", "sku": "TEST-SKU-123", "quantity": 1}))
                .timeout(Duration::from_secs(3));
            probes.spawn(async move {
                let ok = request.send().await.is_ok_and(|r| r.status().is_success());
                ok.then(Instant::now)
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut first: Option<Instant> = None;
            while let Some(done) = probes.try_join_next() {
                if let Ok(Some(at)) = done {
                    first = Some(first.map_or(at, |f| f.min(at)));
                }
            }
            if let Some(at) = first {
                probes.abort_all();
                return Ok(at - since);
            }
        }
        anyhow::bail!("no write succeeded within 60 s of the kill")
    }

    /// Starts NATS server `i` again with its store and waits until it is healthy and every
    /// stream has its three replicas current again.
    pub(super) async fn restart_nats(&mut self, i: usize) -> anyhow::Result<()> {
        self.cluster.nats[i]
            .start_ready(&self.cluster.http, Duration::from_secs(60))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let lease = format!("KV_{}", shared::subjects::RUNNER_LEASE_BUCKET);
        for stream in ["CART_EVENTS", "KV_CART_PLACEMENT", "KV_CART_NODES", &lease] {
            loop {
                let current = match self.cluster.js.get_stream(stream).await {
                    Ok(mut s) => s.info().await.ok().and_then(|info| {
                        let c = info.cluster.as_ref()?;
                        Some(
                            c.leader.is_some()
                                && c.replicas.len() == 2
                                && c.replicas.iter().all(|p| p.current),
                        )
                    }),
                    Err(_) => None,
                };
                if current == Some(true) {
                    break;
                }
                if Instant::now() > deadline {
                    anyhow::bail!("{stream} did not get all replicas current again within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    pub(super) async fn kv_leader_kill(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let load = self.warm_load("kv-leader").await;
        let mut converged = Vec::new();
        for cycle in 0..r.cycles {
            let bucket = if cycle % 2 == 0 {
                "KV_CART_PLACEMENT"
            } else {
                "KV_CART_NODES"
            };
            let leader = self.cluster.leader_of(bucket).await?;
            self.cluster.nats[leader].kill9();
            Self::run_for(Duration::from_secs(2)).await;
            converged.push(self.placement_converged(3).await?);
            self.restart_nats(leader).await?;
            self.placement_converged(3).await?;
        }
        self.finish_timed(load, r, "placement_converged", converged)
            .await
    }

    // ---- network faults --------------------------------------------------------------------

    pub(super) async fn network_faults(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let load = self.warm_load("netfault").await;
        let mut resumed = Vec::new();
        for cycle in 0..r.cycles {
            // Latency on every link, then every connection reset, then one server unreachable
            // without a close (a black hole).
            for p in &self.cluster.proxies {
                p.set(Fault::Latency(Duration::from_millis(150)));
            }
            Self::run_for(Duration::from_secs(3)).await;
            for p in &self.cluster.proxies {
                p.set(Fault::None);
                p.reset();
            }
            let reset = Instant::now();
            resumed.push(self.writes_resume(reset, 1000 + cycle).await?);
            let j = self.rng.usize(..3);
            self.cluster.proxies[j].set(Fault::BlackHole);
            Self::run_for(Duration::from_secs(4)).await;
            self.cluster.proxies[j].set(Fault::None);
            Self::run_for(Duration::from_secs(1)).await;
        }
        self.finish_timed(load, r, "writes_resume_after_reset", resumed)
            .await
    }
}
