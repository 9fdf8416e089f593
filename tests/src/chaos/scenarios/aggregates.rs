//! Aggregate nodes killed or paused: carts served again, placement converging, late appends
//! of a paused node fenced.

use super::*;

impl Run<'_> {
    // ---- aggregate kill ------------------------------------------------------------------

    pub(super) async fn aggregate_kill(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let cfg = self.load("agg-kill", self.opts.clients);
        let carts: Vec<String> = (0..cfg.clients).map(|c| cart_of(&cfg, c)).collect();
        let load = Load::start(cfg);
        Self::run_for(Duration::from_secs(2)).await;
        let mut served = Vec::new();
        for _ in 0..r.cycles {
            let i = self.rng.usize(..3);
            let node = format!("agg-{i}");
            let owned = self.carts_owned_by(&carts, &node).await?;
            self.cluster.aggregates[i].kill9();
            let killed = Instant::now();
            served.extend(self.served_again(&owned, killed).await);
            self.cluster.aggregates[i]
                .start_ready(&self.cluster.http, Duration::from_secs(30))
                .await?;
            self.placement_converged(3).await?;
            Self::run_for(Duration::from_millis(500)).await;
        }
        self.finish(load, r).await?;
        let times = Times::of(served);
        r.pass = r.verdict.consistent() && times.count > 0 && times.p99_ms <= 3_000;
        r.times.insert("served_again".into(), times);
        Ok(())
    }

    /// The carts whose shard `node` owns now (from `CART_PLACEMENT`).
    pub(super) async fn carts_owned_by(
        &self,
        carts: &[String],
        node: &str,
    ) -> anyhow::Result<Vec<String>> {
        let kv = self.cluster.js.get_key_value("CART_PLACEMENT").await?;
        let tenant = TenantId::default_tenant();
        let mut owned = Vec::new();
        let mut unique: Vec<&String> = carts.iter().collect();
        unique.sort();
        unique.dedup();
        for cart in unique {
            let shard = shard_for(&tenant, &CartId::parse(cart)?, SHARDS);
            let owner = kv
                .get(shared::subjects::placement_key(shard))
                .await?
                .and_then(|b| serde_json::from_slice::<ShardOwner>(&b).ok());
            if owner.is_some_and(|o| o.node == node) {
                owned.push(cart.clone());
            }
        }
        Ok(owned)
    }

    /// For each cart, how long after `since` a read through the gateway succeeded again.
    pub(super) async fn served_again(&self, carts: &[String], since: Instant) -> Vec<Duration> {
        let mut tasks = tokio::task::JoinSet::new();
        for cart in carts {
            let http = self.cluster.http.clone();
            let url = format!("{}/v1/carts/{cart}", self.cluster.gateway_urls()[0]);
            tasks.spawn(async move {
                let deadline = since + Duration::from_secs(30);
                while Instant::now() < deadline {
                    if answers(&http, &url, Duration::from_secs(5)).await {
                        return since.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                since.elapsed()
            });
        }
        tasks.join_all().await
    }

    /// Every shard is owned by one of the `nodes` live nodes of `CART_NODES`, as rendezvous
    /// hashing over them says (bounded wait). The time it took.
    pub(super) async fn placement_converged(&self, nodes: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        loop {
            // A bucket without a leader (one was just killed) answers nothing: ask again.
            let last = match self.placement_matches(nodes).await {
                Ok(true) => return Ok(started.elapsed()),
                Ok(false) => "placement differs from rendezvous over the live nodes".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                anyhow::bail!("placement did not converge on {nodes} nodes within 30 s: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every shard owned by the node rendezvous hashing picks among `nodes` live nodes (read
    /// like the services read placement: a direct get of each bucket, no consumer).
    pub(super) async fn placement_matches(&self, nodes: usize) -> anyhow::Result<bool> {
        use shared::nats::direct_get::read_last_per_subject;
        let client = &self.cluster.client;
        let opts = shared::nats::BatchGetOptions::default();
        let put = |e: &shared::nats::StoredEvent| e.headers.get("KV-Operation").is_none();
        let live: Vec<String> =
            read_last_per_subject(client, "KV_CART_NODES", "$KV.CART_NODES.>", &opts)
                .await?
                .into_iter()
                .filter(|e| {
                    put(e)
                        && serde_json::from_slice::<Value>(&e.payload)
                            .is_ok_and(|n| n["draining"] != json!(true))
                })
                .filter_map(|e| {
                    let key = e.subject.strip_prefix("$KV.CART_NODES.")?;
                    Some(shared::subjects::parse_node_key(key).ok()?.to_owned())
                })
                .collect();
        if live.len() != nodes {
            return Ok(false);
        }
        let mut owners = BTreeMap::new();
        for e in read_last_per_subject(client, "KV_CART_PLACEMENT", "$KV.CART_PLACEMENT.>", &opts)
            .await?
        {
            if put(&e)
                && let Ok(shard) = shared::subjects::parse_placement_key(
                    e.subject
                        .strip_prefix("$KV.CART_PLACEMENT.")
                        .unwrap_or_default(),
                )
                && let Ok(owner) = serde_json::from_slice::<ShardOwner>(&e.payload)
            {
                owners.insert(shard, owner.node);
            }
        }
        Ok((0..SHARDS).all(|shard| {
            owners.get(&shard).map(String::as_str)
                == shared::placement::rendezvous_owner(shard, live.iter().map(String::as_str))
        }))
    }

    // ---- a paused aggregate ----------------------------------------------------------------

    pub(super) async fn zombie(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let load = self.warm_load("zombie").await;
        let mut converged = Vec::new();
        for _ in 0..r.cycles {
            let i = self.rng.usize(..3);
            self.cluster.aggregates[i].pause();
            // Longer than the node TTL: the others take its shards while it is frozen with
            // commands half done.
            Self::run_for(Duration::from_secs(NODE_TTL_SECS + 2)).await;
            self.cluster.aggregates[i].resume();
            let resumed = Instant::now();
            self.placement_converged(3).await?;
            converged.push(resumed.elapsed());
        }
        Self::run_for(Duration::from_secs(1)).await;
        self.finish_timed(load, r, "placement_converged", converged)
            .await
    }
}
