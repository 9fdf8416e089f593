//! The projection killed mid-batch: its views must equal a fresh fold of the stream.

use super::*;

impl Run<'_> {
    // ---- projection ------------------------------------------------------------------------

    pub(super) async fn projection_kill(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let cfg = self.load("projection", self.opts.clients);
        let carts: Vec<String> = (0..cfg.clients).map(|c| cart_of(&cfg, c)).collect();
        let load = Load::start(cfg);
        for _ in 0..r.cycles {
            Self::run_for(Duration::from_millis(500 + self.rng.u64(0..1500))).await;
            self.cluster.projection.kill9();
            self.cluster
                .projection
                .start_ready(&self.cluster.http, Duration::from_secs(30))
                .await?;
        }
        Self::run_for(Duration::from_secs(1)).await;
        self.finish(load, r).await?;
        let mismatches = self.views_equal_the_fold(&carts).await?;
        r.counts
            .insert("view_mismatches".into(), mismatches.len() as u64);
        r.notes.extend(mismatches.into_iter().take(5));
        r.pass = r.verdict.consistent() && r.counts["view_mismatches"] == 0;
        Ok(())
    }

    /// Waits until the projection has applied everything, then compares each cart's read
    /// model with the fold of its stream. The carts that differ, with why.
    pub(super) async fn views_equal_the_fold(
        &self,
        carts: &[String],
    ) -> anyhow::Result<Vec<String>> {
        shared::test_support::wait_consumer_settled(
            &self.cluster.js,
            shared::subjects::CART_EVENTS_STREAM,
            "projection-main",
            Duration::from_secs(60),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let tenant = TenantId::default_tenant();
        let gateway = &self.cluster.gateway_urls()[0];
        let mut unique: Vec<&String> = carts.iter().collect();
        unique.sort();
        unique.dedup();
        let mut bad = Vec::new();
        for cart in unique {
            let id = CartId::parse(cart)?;
            let stored = crate::chaos::check::read_from_leader(
                &self.cluster.client,
                &shared::subjects::cart_events(&tenant, &id),
            )
            .await?;
            let mut state = cart_domain::CartState::new(id);
            for m in &stored {
                let msg = cart_domain::EventMessage::from_json(&m.payload)?;
                state.apply_message(&msg, m.sequence, cart_domain::Retain::NONE);
            }
            let totals = cart_domain::totals(&state.cart);
            let items: u64 = state.cart.lines.iter().map(|l| u64::from(l.quantity)).sum();
            let view = self
                .get_json(&format!("{gateway}/v1/carts/{cart}/view"))
                .await?;
            let want = json!({
                "version": state.version,
                "itemCount": items,
                "lineCount": state.cart.lines.len(),
                "total": totals.total.inc_vat,
            });
            let got = json!({
                "version": view["version"],
                "itemCount": view["itemCount"],
                "lineCount": view["lineCount"],
                "total": view["total"]["amount"],
            });
            if want != got {
                bad.push(format!("{cart}: read model {got}, fold {want}"));
            }
        }
        Ok(bad)
    }
}
