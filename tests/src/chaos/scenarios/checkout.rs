//! The runner killed around the provider call, and provider faults: no duplicate provider
//! order, no stuck checkout.

use super::*;

/// What the looks at the two runners found.
#[derive(Default)]
pub(super) struct RunnerLooks {
    /// Looks that found both runners ready (the lease should make that impossible).
    pub both_ready: u64,
    /// Runners that exited on their own and were started again (a runner that loses its
    /// lease starts again in its own process: any exit is a failure).
    pub restarts: u64,
}

impl Run<'_> {
    // ---- runner and provider ---------------------------------------------------------------

    /// A cart with one item, through `/v1`.
    pub(super) async fn cart_with_item(&self, cart: &str) -> anyhow::Result<()> {
        let gateway = &self.cluster.gateway_urls()[0];
        for attempt in 0..10 {
            let ok = self
                .cluster
                .http
                .post(format!("{gateway}/v1/carts/{cart}/commands"))
                .header("idempotency-key", format!("{cart}-fill"))
                .json(&json!({"type": "AddItem", "sku": "TEST-SKU-123", "quantity": 1}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
        }
        anyhow::bail!("could not fill {cart}")
    }

    /// `GET /cart/byid/{cart}/checkout` once: the provider order id when it is there.
    pub(super) async fn checkout(&self, cart: &str) -> Result<Option<String>, (u16, String)> {
        let gateway = &self.cluster.gateway_urls()[0];
        let resp = self
            .cluster
            .http
            .get(format!("{gateway}/cart/byid/{cart}/checkout"))
            .send()
            .await
            .map_err(|e| (0, e.to_string()))?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        match status {
            200 => Ok(body["order_id"].as_str().map(str::to_owned)),
            202 => Ok(None),
            _ => Err((status, body.to_string())),
        }
    }

    pub(super) async fn set_mock_faults(&self, faults: Value) -> anyhow::Result<()> {
        self.cluster
            .http
            .post(format!("{}/__mock/faults", self.cluster.mock_url()))
            .json(&faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    pub(super) async fn mock_stats(&self) -> anyhow::Result<Value> {
        self.get_json(&format!("{}/__mock/stats", self.cluster.mock_url()))
            .await
    }

    /// The cart's storefront JSON.
    pub(super) async fn storefront_cart(&self, cart: &str) -> anyhow::Result<Value> {
        let gateway = &self.cluster.gateway_urls()[0];
        self.get_json(&format!("{gateway}/cart/byid/{cart}")).await
    }

    /// Drives `cart`'s checkout to its end: waits for the provider order, pays it, waits for
    /// the placed order. `Ok(true)` placed, `Ok(false)` failed cleanly (the provider refused).
    pub(super) async fn checkout_to_the_end(&self, cart: &str) -> anyhow::Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let order = loop {
            match self.checkout(cart).await {
                Ok(Some(order)) => break order,
                Ok(None) => {}
                Err((502, _)) => return Ok(false),
                Err((status, body)) if status >= 500 || status == 0 => {
                    let _ = body;
                }
                Err((status, body)) => anyhow::bail!("{cart}: checkout answered {status}: {body}"),
            }
            if Instant::now() > deadline {
                anyhow::bail!("{cart}: stuck, no provider order within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let paid = self
            .cluster
            .http
            .post(format!(
                "{}/__mock/orders/{order}/complete",
                self.cluster.mock_url()
            ))
            .send()
            .await?;
        anyhow::ensure!(
            paid.status().is_success(),
            "{cart}: paying {order} answered {}",
            paid.status()
        );
        while Instant::now() < deadline {
            if self.storefront_cart(cart).await?["orderReference"].is_string() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("{cart}: paid order {order} not placed within 90 s")
    }

    /// Which of the two runners holds the lease (answers `/ready`): 0 the first, 1 the standby.
    /// Waits up to `within`. A runner that exited on its own is started again, as an
    /// orchestrator would; `looks` counts those restarts and the looks that found both runners
    /// ready.
    pub(super) async fn active_runner(
        &mut self,
        within: Duration,
        looks: &mut RunnerLooks,
    ) -> anyhow::Result<usize> {
        let layout = &self.cluster.layout;
        let urls = [layout.runner_http(), layout.standby_runner_http()]
            .map(|port| format!("http://127.0.0.1:{port}/ready"));
        let deadline = Instant::now() + within;
        loop {
            for p in [&mut self.cluster.runner, &mut self.cluster.standby_runner] {
                if p.pid().is_some() && !p.running() {
                    looks.restarts += 1;
                    p.start()?;
                }
            }
            let mut ready = Vec::new();
            for (i, url) in urls.iter().enumerate() {
                if answers(&self.cluster.http, url, Duration::from_secs(2)).await {
                    ready.push(i);
                }
            }
            if ready.len() == 2 {
                looks.both_ready += 1;
            }
            if let Some(i) = ready.first() {
                return Ok(*i);
            }
            if Instant::now() > deadline {
                anyhow::bail!("no runner holds the lease within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Back to one runner for the scenarios after this one (the standby drains, giving the
    /// lease back if it holds it), then every cart in `carts` driven to the end of its
    /// checkout and counted into `r`. True when none is stuck, none has a duplicate provider
    /// order, the runners were never both ready and none exited on its own.
    pub(super) async fn settle_checkouts(
        &mut self,
        carts: &[String],
        looks: &mut RunnerLooks,
        r: &mut ScenarioResult,
    ) -> anyhow::Result<bool> {
        let http = self.cluster.http.clone();
        // An exit since the last look counts too (`stop` and `start` would hide it).
        for p in [&mut self.cluster.runner, &mut self.cluster.standby_runner] {
            if p.pid().is_some() && !p.running() {
                looks.restarts += 1;
            }
        }
        self.cluster
            .standby_runner
            .stop(Duration::from_secs(30))
            .await;
        self.cluster.runner.start()?;
        self.cluster
            .runner
            .wait_ready(&http, Duration::from_secs(30))
            .await?;
        self.set_mock_faults(json!({})).await?;
        let (mut placed, mut failed, mut stuck) = (0u64, 0u64, 0u64);
        for cart in carts {
            match self.checkout_to_the_end(cart).await {
                Ok(true) => placed += 1,
                Ok(false) => failed += 1,
                Err(e) => {
                    stuck += 1;
                    r.notes.push(e.to_string());
                }
            }
        }
        let stats = self.mock_stats().await?;
        let duplicates: u64 = carts
            .iter()
            .map(|c| {
                stats["created_per_reference"][c]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(1)
            })
            .sum();
        r.counts.insert("checkouts".into(), carts.len() as u64);
        r.counts.insert("placed".into(), placed);
        r.counts.insert("failed".into(), failed);
        r.counts.insert("stuck".into(), stuck);
        r.counts
            .insert("duplicate_provider_orders".into(), duplicates);
        r.counts
            .insert("both_runners_ready".into(), looks.both_ready);
        r.counts.insert("runner_restarts".into(), looks.restarts);
        Ok(duplicates == 0
            && stuck == 0
            && looks.both_ready == 0
            && looks.restarts == 0
            && placed + failed == carts.len() as u64)
    }

    pub(super) async fn runner_kill(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let prefix = format!("runner-{}", self.opts.seed);
        let mut carts = Vec::new();
        // A second runner stands by the whole scenario: each kill falls on whichever runner
        // holds the lease, and the other one takes over once the killed one's lease expires.
        let http = self.cluster.http.clone();
        self.cluster
            .standby_runner
            .start_ready(&http, Duration::from_secs(30))
            .await?;
        let mut looks = RunnerLooks::default();
        let mut takeovers = 0u64;
        for cycle in 0..r.cycles {
            let batch = self.checkouts_in_flight(&prefix, cycle).await?;
            let active = self
                .active_runner(Duration::from_secs(30), &mut looks)
                .await?;
            let killed = if active == 0 {
                &mut self.cluster.runner
            } else {
                &mut self.cluster.standby_runner
            };
            killed.kill9();
            // Back as a standby: up, not ready while the other one holds the lease.
            killed.start()?;
            if self
                .active_runner(Duration::from_secs(30), &mut looks)
                .await?
                != active
            {
                takeovers += 1;
            }
            carts.extend(batch);
        }
        let settled = self.settle_checkouts(&carts, &mut looks, r).await?;
        r.counts
            .insert("takeovers_by_the_other_runner".into(), takeovers);
        r.pass = settled;
        Ok(())
    }

    /// Two carts of `prefix` and `cycle` with an item each and their checkouts started, the
    /// provider slowed by a random 0–400 ms (slow calls widen the window a fault falls
    /// into), then a random pause of up to 500 ms.
    pub(super) async fn checkouts_in_flight(
        &mut self,
        prefix: &str,
        cycle: usize,
    ) -> anyhow::Result<Vec<String>> {
        let delay = self.rng.u64(0..400);
        self.set_mock_faults(json!({"delay_ms": delay})).await?;
        let batch: Vec<String> = (0..2).map(|k| format!("{prefix}-{cycle}-{k}")).collect();
        for cart in &batch {
            self.cart_with_item(cart).await?;
            // Starts the attempt; the reply may be 202 (still being created).
            let _ = self.checkout(cart).await;
        }
        Self::run_for(Duration::from_millis(self.rng.u64(0..500))).await;
        Ok(batch)
    }

    pub(super) async fn provider_faults(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let prefix = format!("provider-{}", self.opts.seed);
        let faults = [
            ("transient_5xx", json!({"fail_next": 2})),
            ("slow", json!({"delay_ms": 600})),
            ("timeouts", json!({"delay_ms": 1500})),
            ("refused", json!({"refuse": true})),
        ];
        let (mut clean, mut unclean, mut usable) = (0u64, 0u64, 0u64);
        for cycle in 0..r.cycles {
            for (name, fault) in &faults {
                let cart = format!("{prefix}-{cycle}-{name}");
                self.cart_with_item(&cart).await?;
                self.set_mock_faults(fault.clone()).await?;
                match self.checkout_to_the_end(&cart).await {
                    Ok(_) => clean += 1,
                    Err(e) => {
                        unclean += 1;
                        r.notes.push(format!("{name}: {e}"));
                    }
                }
                self.set_mock_faults(json!({})).await?;
                // Usable after: a failed checkout leaves a cart that changes and checks out.
                let cart_now = self.storefront_cart(&cart).await?;
                if cart_now["orderReference"].is_string() {
                    usable += 1;
                } else {
                    let added = self
                        .cluster
                        .http
                        .post(format!(
                            "{}/v1/carts/{cart}/commands",
                            self.cluster.gateway_urls()[0]
                        ))
                        .json(&json!({"type": "AddItem", "sku": "BOOK-NOVEL-01", "quantity": 1}))
                        .send()
                        .await?
                        .status()
                        .is_success();
                    if added && self.checkout_to_the_end(&cart).await.unwrap_or(false) {
                        usable += 1;
                    } else {
                        r.notes.push(format!("{cart}: not usable after {name}"));
                    }
                }
            }
        }
        let total = (r.cycles * faults.len()) as u64;
        r.counts.insert("checkouts".into(), total);
        r.counts.insert("ended_cleanly".into(), clean);
        r.counts.insert("ended_uncleanly".into(), unclean);
        r.counts.insert("usable_after".into(), usable);
        r.pass = unclean == 0 && usable == total;
        Ok(())
    }
}
