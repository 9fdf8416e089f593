//! `cart-bench`: load against the platform, always next to a baseline measured in the same run
//! on the same machine (raw JetStream), because shared machines are noisy. Every mode prints a
//! table and can write `{"mode", "concurrency", "duration_s", "baseline", "subject", "ratio"}`.

pub mod alloc;
pub mod cold_load;
pub mod grpc;
pub mod http;
pub mod memory;
pub mod projection;
pub mod raw;

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// One side of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub ops: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub concurrency: usize,
    pub duration_s: f64,
    /// The spawned server's fsync policy (`always`, `never`) or the external server used.
    pub nats_sync: String,
    pub baseline: Summary,
    pub subject: Summary,
    /// subject ops/s ÷ baseline ops/s (for `memory`: subject bytes ÷ baseline bytes).
    pub ratio: f64,
    /// What baseline and subject are, and mode-specific figures.
    pub notes: Vec<String>,
    /// `memory` mode: heap bytes per cached cart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes_per_cart: Option<f64>,
}

impl Report {
    pub fn new(
        mode: &str,
        concurrency: usize,
        duration: Duration,
        baseline: Summary,
        subject: Summary,
    ) -> Self {
        let ratio = if baseline.ops_per_s > 0.0 {
            subject.ops_per_s / baseline.ops_per_s
        } else {
            0.0
        };
        Self {
            mode: mode.to_owned(),
            concurrency,
            duration_s: duration.as_secs_f64(),
            nats_sync: String::new(),
            baseline,
            subject,
            ratio,
            notes: Vec::new(),
            memory_bytes_per_cart: None,
        }
    }

    pub fn table(&self) -> String {
        let row = |name: &str, s: &Summary| {
            format!(
                "{name:<10} {:>12.0} {:>10.3} {:>10.3} {:>8} {:>10}\n",
                s.ops_per_s, s.p50_ms, s.p99_ms, s.errors, s.ops
            )
        };
        let mut out = format!(
            "mode {} · concurrency {} · {:.1} s · nats sync {}\n{:<10} {:>12} {:>10} {:>10} {:>8} {:>10}\n",
            self.mode,
            self.concurrency,
            self.duration_s,
            self.nats_sync,
            "",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "ops"
        );
        out.push_str(&row("baseline", &self.baseline));
        out.push_str(&row("subject", &self.subject));
        out.push_str(&format!("ratio      {:.3}\n", self.ratio));
        for n in &self.notes {
            out.push_str(&format!("  · {n}\n"));
        }
        out
    }
}

/// A load worker: one operation per call.
pub trait Worker: Send + 'static {
    fn op(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Latencies (µs) and counts of a load run.
pub struct Measured {
    pub hist: Histogram<u64>,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Measured {
    /// Nothing measured yet over `elapsed`.
    pub fn empty(elapsed: Duration) -> Measured {
        Measured {
            hist: histogram(),
            ops: 0,
            errors: 0,
            elapsed,
            first_error: None,
        }
    }

    /// Adds `other`, measured over another stretch of time, to this.
    pub fn merge(&mut self, other: Measured) {
        self.hist
            .add(&other.hist)
            .expect("histograms have equal bounds");
        self.ops += other.ops;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn summary(&self) -> Summary {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        Summary {
            ops_per_s: self.ops as f64 / secs,
            p50_ms: self.hist.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            errors: self.errors,
            ops: self.ops,
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Both sides of a comparison in `rounds` alternating slices (baseline, subject, baseline, ...)
/// of `duration / rounds` each, summed per side. On a shared machine the host takes CPU in
/// bursts of seconds; one 10 s phase after the other lets a burst fall on one side only, while
/// alternating slices spread it over both. `warmup` precedes the first slice of each side,
/// a quarter of it (at most 0.5 s) every later one.
pub async fn alternating<B, BF, S, SF>(
    rounds: u32,
    warmup: Duration,
    duration: Duration,
    mut baseline: B,
    mut subject: S,
) -> (Measured, Measured)
where
    B: FnMut(Duration, Duration) -> BF,
    BF: Future<Output = Measured>,
    S: FnMut(Duration, Duration) -> SF,
    SF: Future<Output = Measured>,
{
    let rounds = rounds.max(1);
    let slice = duration / rounds;
    let rewarm = (warmup / 4).min(Duration::from_millis(500));
    let (mut base, mut subj) = (
        Measured::empty(Duration::ZERO),
        Measured::empty(Duration::ZERO),
    );
    for round in 0..rounds {
        let warm = if round == 0 { warmup } else { rewarm };
        base.merge(baseline(warm, slice).await);
        subj.merge(subject(warm, slice).await);
    }
    (base, subj)
}

/// Run every worker concurrently: `warmup` first (not recorded), then `duration` measured.
pub async fn drive<W: Worker>(workers: Vec<W>, warmup: Duration, duration: Duration) -> Measured {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut w in workers {
        tasks.spawn(async move {
            // Its elapsed time stays zero: the sum below is over `duration`, not per worker.
            let mut m = Measured::empty(Duration::ZERO);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let result = w.op().await;
                let done = Instant::now();
                if t < measure_from || done > end {
                    continue;
                }
                match result {
                    Ok(()) => {
                        m.ops += 1;
                        let _ = m.hist.record((done - t).as_micros().max(1) as u64);
                    }
                    Err(e) => {
                        m.errors += 1;
                        m.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            m
        });
    }
    let mut m = Measured::empty(duration);
    while let Some(r) = tasks.join_next().await {
        m.merge(r.expect("bench worker panicked"));
    }
    m
}

/// Latencies of `n` sequential runs of `op` (cold loads are measured one at a time).
pub async fn sequential<F, Fut>(n: usize, mut op: F) -> Measured
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut m = Measured::empty(Duration::ZERO);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        match op(i).await {
            Ok(()) => {
                m.ops += 1;
                let _ = m.hist.record(t.elapsed().as_micros().max(1) as u64);
            }
            Err(e) => {
                m.errors += 1;
                m.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    m.elapsed = started.elapsed();
    m
}

/// A unique prefix per run, so repeated runs against one server never collide.
pub fn run_id() -> String {
    format!("{:x}", uuid::Uuid::now_v7().as_u128() & 0xffff_ffff_ffff)
}

/// SKUs a worker cycles through (a new line first, then quantity changes).
const SKUS: [&str; 4] = [
    "TEST-SKU-123",
    "TEST-SKU-456",
    "TEST-SKU-AAA",
    "BOOK-NOVEL-01",
];
/// Adds per cart before a worker moves to a fresh cart (quantities stay below the limit).
const PER_CART: u64 = 400;

/// One worker's item adds (the `grpc` and `http` modes): the SKUs in turn, on carts named after
/// `prefix`, a fresh one every `PER_CART` adds.
pub struct Adds {
    prefix: String,
    n: u64,
    /// The current cart's id, named once per cart (the load generator's own cost counts
    /// against the subject's ratio).
    cart: String,
}

impl Adds {
    pub fn new(prefix: String) -> Adds {
        Adds {
            prefix,
            n: 0,
            cart: String::new(),
        }
    }

    /// The next add's cart id and SKU.
    pub fn next_add(&mut self) -> (String, &'static str) {
        if self.n.is_multiple_of(PER_CART) {
            self.cart = format!("{}-{}", self.prefix, self.n / PER_CART);
        }
        let sku = SKUS[(self.n % SKUS.len() as u64) as usize];
        self.n += 1;
        (self.cart.clone(), sku)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_fill_one_cart_then_move_to_a_fresh_one() {
        let mut adds = Adds::new("w".into());
        let first: Vec<_> = (0..PER_CART).map(|_| adds.next_add()).collect();
        assert!(first.iter().all(|(cart, _)| cart == "w-0"));
        assert_eq!(first[0].1, SKUS[0]);
        assert_eq!(first[1].1, SKUS[1 % SKUS.len()]);
        assert_eq!(adds.next_add().0, "w-1");
    }

    #[tokio::test]
    async fn alternating_rounds_take_turns_and_add_up_per_side() {
        use std::cell::RefCell;
        let calls = RefCell::new(Vec::new());
        let side = |name: &'static str, ops: u64| {
            let calls = &calls;
            move |warm: Duration, time: Duration| {
                calls.borrow_mut().push((name, warm, time));
                let mut m = Measured::empty(time);
                m.ops = ops;
                m.hist.record(ops).unwrap();
                async move { m }
            }
        };
        // A quarter of this warm-up is 1 s: the later slices' 0.5 s is the cap's.
        let (warmup, duration) = (Duration::from_secs(4), Duration::from_secs(9));
        let (base, subject) =
            alternating(3, warmup, duration, side("base", 10), side("subject", 4)).await;
        let third = Duration::from_secs(3);
        let rewarm = Duration::from_millis(500);
        assert_eq!(
            calls.into_inner(),
            [
                ("base", warmup, third),
                ("subject", warmup, third),
                ("base", rewarm, third),
                ("subject", rewarm, third),
                ("base", rewarm, third),
                ("subject", rewarm, third),
            ]
        );
        assert_eq!((base.ops, base.elapsed), (30, duration));
        assert_eq!((subject.ops, subject.elapsed), (12, duration));
        assert_eq!(subject.hist.len(), 3);
        assert!((subject.summary().ops_per_s - 12.0 / 9.0).abs() < 1e-9);
    }
}
