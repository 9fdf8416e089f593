//! Rolling restarts with drain, and the soak with its memory check.

use super::*;

impl Run<'_> {
    // ---- rolling restart -------------------------------------------------------------------

    pub(super) async fn rolling_restart(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let load = self.warm_load("rolling").await;
        let http = self.cluster.http.clone();
        let mut restarts = Vec::new();
        let count = self.cluster.aggregates.len();
        for i in 0..count {
            restarts.push(self.restart("aggregate", i, &http, r).await?);
        }
        restarts.push(self.restart("projection", 0, &http, r).await?);
        restarts.push(self.restart("runner", 0, &http, r).await?);
        for i in 0..self.cluster.gateways.len() {
            restarts.push(self.restart("gateway", i, &http, r).await?);
        }
        Self::run_for(Duration::from_secs(1)).await;
        self.finish(load, r).await?;
        r.times.insert("restart".into(), Times::of(restarts));
        r.pass = r.verdict.consistent() && r.verdict.failed_requests == 0;
        Ok(())
    }

    /// SIGTERM (the service drains), start again, wait until ready; the whole time taken.
    pub(super) async fn restart(
        &mut self,
        what: &str,
        i: usize,
        http: &reqwest::Client,
        r: &mut ScenarioResult,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let p = match what {
            "aggregate" => &mut self.cluster.aggregates[i],
            "gateway" => &mut self.cluster.gateways[i],
            "projection" => &mut self.cluster.projection,
            _ => &mut self.cluster.runner,
        };
        let graceful = p.stop(Duration::from_secs(40)).await;
        anyhow::ensure!(graceful, "{} did not stop within 40 s of SIGTERM", p.name());
        let stopped = started.elapsed();
        p.start_ready(http, Duration::from_secs(60)).await?;
        let name = p.name().to_owned();
        if what == "aggregate" {
            self.placement_converged(3).await?;
        }
        r.notes.push(format!(
            "{name}: stopped in {} ms, serving again after {} ms",
            stopped.as_millis(),
            started.elapsed().as_millis()
        ));
        Ok(started.elapsed())
    }

    // ---- soak ------------------------------------------------------------------------------

    pub(super) async fn soak(&mut self, r: &mut ScenarioResult) -> anyhow::Result<()> {
        let mut memory = Memory::default();
        let load = Load::start(self.load("soak", 200));
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut actions = 0u64;
        while Instant::now() + Duration::from_secs(30) < deadline {
            Self::run_for(Duration::from_secs(15)).await;
            memory.sample(&self.cluster.rss());
            actions += 1;
            match self.rng.usize(..5) {
                0 => {
                    let i = self.rng.usize(..3);
                    self.cluster.aggregates[i].kill9();
                    Self::run_for(Duration::from_secs(1)).await;
                }
                1 => {
                    let leader = self.cluster.leader_of("CART_EVENTS").await?;
                    self.cluster.nats[leader].kill9();
                    Self::run_for(Duration::from_secs(2)).await;
                    self.restart_nats(leader).await?;
                }
                2 => {
                    self.cluster.projection.kill9();
                }
                3 => {
                    self.cluster.runner.kill9();
                }
                _ => {
                    let j = self.rng.usize(..3);
                    self.cluster.proxies[j].reset();
                }
            }
            self.cluster.ensure_running().await?;
        }
        let ops = load.finish().await;
        memory.sample(&self.cluster.rss());
        self.verify(&ops, r).await?;
        let grown = memory.judge(r);
        r.counts.insert("fault_actions".into(), actions);
        r.counts.insert("memory_grown".into(), grown);
        r.pass = r.verdict.consistent() && grown == 0;
        Ok(())
    }
}

/// Resident memory over the soak. A process is judged over its last life when that life,
/// after a minute of warm-up, lasted at least two more minutes: flat means it ended below
/// 1.25 × its warm size + 32 MiB (caches fill to their bounds in the warm-up). The
/// nats-servers are judged together, by their sum: what one holds follows what it leads (the
/// write path's caches, the Raft state of the streams it leads), and the soak moves leaders
/// between them (in one run nats-1 went 176 → 105 MiB while nats-2 went 130 → 232 MiB).
#[derive(Default)]
struct Memory {
    lives: BTreeMap<String, Life>,
}

struct Life {
    pid: u32,
    seen: Instant,
    warm: Option<(Instant, u64)>,
    last: u64,
}

/// Warm and end sizes, in MiB.
type Sizes = (u64, u64);

impl Memory {
    const WARM_UP: Duration = Duration::from_secs(60);
    const JUDGED_AFTER: Duration = Duration::from_secs(120);
    /// The judged group of the nats-servers.
    const NATS: &'static str = "nats (sum of the judged servers)";

    fn sample(&mut self, rss: &BTreeMap<String, (u32, u64)>) {
        let now = Instant::now();
        for (name, &(pid, bytes)) in rss {
            let life = self.lives.entry(name.clone()).or_insert(Life {
                pid,
                seen: now,
                warm: None,
                last: bytes,
            });
            if life.pid != pid {
                *life = Life {
                    pid,
                    seen: now,
                    warm: None,
                    last: bytes,
                };
            }
            life.last = bytes;
            if life.warm.is_none() && now - life.seen >= Self::WARM_UP {
                life.warm = Some((now, bytes));
            }
        }
    }

    fn grew((warm, end): Sizes) -> bool {
        end > warm + warm / 4 + 32
    }

    /// Records warm → end sizes in `r`; the number of processes (or the nats group) that grew.
    fn judge(&self, r: &mut ScenarioResult) -> u64 {
        let mut unjudged = Vec::new();
        let mut judged: BTreeMap<String, Sizes> = BTreeMap::new();
        let mut nats: Option<Sizes> = None;
        for (name, life) in &self.lives {
            match life.warm {
                Some((at, warm)) if at.elapsed() >= Self::JUDGED_AFTER => {
                    let sizes = (warm >> 20, life.last >> 20);
                    r.rss_mib.insert(name.clone(), sizes);
                    if name.starts_with("nats-") {
                        let (w, e) = nats.unwrap_or_default();
                        nats = Some((w + sizes.0, e + sizes.1));
                    } else {
                        judged.insert(name.clone(), sizes);
                    }
                }
                _ => unjudged.push(name.as_str()),
            }
        }
        if let Some(sizes) = nats {
            r.rss_mib.insert(Self::NATS.to_owned(), sizes);
            judged.insert(Self::NATS.to_owned(), sizes);
        }
        let mut grown = 0;
        for (name, sizes) in judged {
            if Self::grew(sizes) {
                grown += 1;
                r.notes.push(format!(
                    "{name}: RSS grew from {} to {} MiB",
                    sizes.0, sizes.1
                ));
            }
        }
        r.notes.push(format!(
            "RSS warm → end per process, over its last life (a minute after it started, then at least two more), the nats-servers judged by their sum; restarted too late to judge: {}",
            if unjudged.is_empty() { "none".to_owned() } else { unjudged.join(", ") }
        ));
        grown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lived(warm: u64, end: u64) -> Life {
        let long_ago = Instant::now() - Memory::JUDGED_AFTER - Duration::from_secs(1);
        Life {
            pid: 1,
            seen: long_ago,
            warm: Some((long_ago, warm << 20)),
            last: end << 20,
        }
    }

    fn judged(lives: &[(&str, u64, u64)]) -> (u64, ScenarioResult) {
        let memory = Memory {
            lives: lives
                .iter()
                .map(|&(name, warm, end)| (name.to_owned(), lived(warm, end)))
                .collect(),
        };
        let mut r = ScenarioResult::default();
        (memory.judge(&mut r), r)
    }

    #[test]
    fn leadership_moving_between_nats_servers_is_not_growth_but_the_sum_growing_is() {
        // The run of seed 35438: nats-2 took over what nats-1 led.
        let (grown, r) = judged(&[("nats-1", 176, 105), ("nats-2", 130, 232)]);
        assert_eq!(grown, 0, "{:?}", r.notes);
        assert_eq!(r.rss_mib[Memory::NATS], (306, 337));
        let (grown, r) = judged(&[("nats-1", 176, 250), ("nats-2", 130, 232)]);
        assert_eq!(grown, 1, "{:?}", r.notes);
    }

    #[test]
    fn every_service_is_judged_on_its_own() {
        let (grown, r) = judged(&[("aggregate-0", 51, 96), ("aggregate-1", 60, 70)]);
        assert_eq!(grown, 1);
        assert!(r.notes[0].starts_with("aggregate-0: RSS grew from 51 to 96 MiB"));
    }
}
