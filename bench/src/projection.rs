//! `projection` mode: how fast a fresh projection catches up with a long stream. `CART_EVENTS`
//! is preloaded with real event messages (the aggregate's JSON and headers, realistic carts:
//! three lines added, then quantity changes), then two consumers read it from sequence 1 to its
//! last sequence:
//!
//! - baseline: a bare durable pull consumer with the projection's own settings (explicit ack,
//!   same `max_ack_pending`, same fetch call with the live batch size) that acks every message
//!   and does nothing else — what NATS delivery alone costs on this machine. It fetches one
//!   batch at a time, where the projection fetches the next while it applies one;
//! - subject: `projection::start` on a fresh SQLite file, until its applied sequence (the
//!   checkpoint committed with each batch) is on disk up to the stream's last sequence and the
//!   secondary indexes it drops to catch up from far behind are back. Once
//!   a fetch comes back full it fetches (and commits) at its catch-up batch size.
//!
//! The same bare consumer fetching at the catch-up size is faster than the headline baseline;
//! it is measured too and its ratio is reported in the notes, so neither side gets a batch
//! size the other lacks unsaid.
//!
//! `ops_per_s` is messages per second (one event message per command; each message here holds
//! one event), each side timed from creating its consumer to its last message. p50/p99 are per
//! batch: for the baseline a fetch and its acks, for the subject the interval between two
//! commits on the writer thread (fetching ahead and syncing after run beside it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cart_domain::ids::{CartId, TenantId};
use cart_domain::{AddItem, Cart, Command, Context, Event, decide, evolve};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shared::nats::{ConsumerSettings, durable_pull_config, ensure_durable_pull};
use shared::subjects::{CART_EVENTS_ALL, CART_EVENTS_STREAM};

use super::raw::{TENANT, cart_event_publish};
use super::{Measured, Report, histogram};
use tests::stack::Stack;

/// Longest wait of a fetch that finds fewer than a batch (only the tail of the stream).
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// Publishes awaiting their ack during the preload: enough to keep the server busy, few enough
/// that a slow disk acknowledges each well within the ack timeout.
const IN_FLIGHT: usize = 512;
/// Tries per preload message; a retry carries the same `Nats-Msg-Id`, so a message whose ack
/// was lost (not the message) is stored once.
const PUBLISH_ATTEMPTS: usize = 5;
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const SKUS: [&str; 3] = ["TEST-SKU-123", "BOOK-NOVEL-01", "FOOD-COFFEE-500"];

/// The events of a cart's first `n` commands, decided for real: three `AddItem`s, then
/// quantity changes over the three lines. Every cart gets the same sequence.
fn template(n: u64) -> anyhow::Result<Vec<Vec<Event>>> {
    let seed = aggregate::seed::parse(tests::stack::CATALOG_JSON).map_err(anyhow::Error::msg)?;
    let catalog = cart_domain::catalog::CatalogSnapshot::from_seed(seed);
    let ctx = Context {
        now: time::OffsetDateTime::now_utc(),
        catalog: &catalog,
        limits: Default::default(),
    };
    let mut cart = Cart::new(CartId::parse("template").unwrap());
    let mut out = Vec::new();
    for i in 0..n {
        let command = match SKUS.get(i as usize) {
            Some(sku) => Command::AddItem(AddItem {
                sku: (*sku).into(),
                quantity: 1,
                country: "se".into(),
                store_id: None,
            }),
            None => Command::ChangeQuantity {
                line_id: (i % 3) as u32 + 1,
                quantity: (i % 9) as u32 + 1,
            },
        };
        let events = decide(&cart, command, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
        cart = events.iter().fold(cart, evolve);
        out.push(events);
    }
    Ok(out)
}

/// Publish `events` messages over `carts` carts (round-robin by revision, so carts interleave in
/// the stream as they do live), pipelined. Returns the stream's last sequence.
async fn preload(stack: &Stack, run: &str, events: u64, carts: usize) -> anyhow::Result<u64> {
    let carts = carts.max(1) as u64;
    let per_cart = events.div_ceil(carts);
    let template = template(per_cart)?;
    let tenant = TenantId::parse(TENANT).unwrap();
    let ids: Vec<CartId> = (0..carts)
        .map(|c| CartId::parse(&format!("proj-{run}-{c}")).unwrap())
        .collect();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut acks = FuturesUnordered::new();
    let mut published = 0u64;
    'outer: for revision in 1..=per_cart {
        let evs = &template[revision as usize - 1];
        for cart in &ids {
            if published == events {
                break 'outer;
            }
            let (subject, publish) = cart_event_publish(&tenant, cart, revision, evs, None);
            acks.push(publish_retrying(stack.js.clone(), subject, publish));
            published += 1;
            while acks.len() >= IN_FLIGHT {
                acks.next().await.expect("non-empty")?;
            }
            if last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                eprintln!(
                    "  preload: {published} / {events} messages ({:.0}/s)",
                    published as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    eprintln!(
        "  preload: {published} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    last_sequence(&stack.js).await
}

/// Restarts the spawned server with `sync_always` and waits until the stack's connection
/// (which reconnects by itself) reaches JetStream again.
async fn switch_sync(stack: &mut Stack, sync_always: bool) -> anyhow::Result<()> {
    let server = stack.server.as_mut().expect("a spawned server");
    server.restart_with_sync(sync_always).await;
    let js = stack.js.clone();
    shared::test_support::wait_until(
        || {
            let js = js.clone();
            async move { js.query_account().await.is_ok() }
        },
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| anyhow::anyhow!("JetStream after the restart: {e}"))
}

/// Publishes until acknowledged ([`until_acknowledged`]). Every try carries the same
/// `Nats-Msg-Id`, so a publish whose ack was lost is not stored twice.
async fn publish_retrying(
    js: jetstream::Context,
    subject: String,
    publish: jetstream::message::PublishMessage,
) -> anyhow::Result<()> {
    until_acknowledged(&subject, || async {
        js.send_publish(subject.clone(), publish.clone())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
}

/// `publish` until it succeeds, at most [`PUBLISH_ATTEMPTS`] times, waiting a little longer
/// before each retry (backon: 50 ms doubling up to 2 s): one slow ack (a disk that falls behind
/// for a moment) does not end the benchmark, and the retries give the disk time to catch up
/// instead of adding to its queue.
async fn until_acknowledged<F, Fut>(subject: &str, publish: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    use backon::{ExponentialBuilder, Retryable};
    publish
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(PUBLISH_ATTEMPTS - 1),
        )
        .await
        .map_err(|last| {
            anyhow::anyhow!(
                "publish to {subject}: no ack after {PUBLISH_ATTEMPTS} tries (last: {last})"
            )
        })
}

async fn last_sequence(js: &jetstream::Context) -> anyhow::Result<u64> {
    Ok(js
        .get_stream(CART_EVENTS_STREAM)
        .await?
        .get_info()
        .await?
        .state
        .last_sequence)
}

/// Prints progress every few seconds.
struct Progress {
    side: &'static str,
    target: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(side: &'static str, target: u64) -> Self {
        let now = Instant::now();
        Self {
            side,
            target,
            started: now,
            last: now,
        }
    }

    fn tick(&mut self, at: u64) {
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            eprintln!(
                "  {}: {at} / {} ({:.0} msgs/s)",
                self.side,
                self.target,
                at as f64 / self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The projection's own consumer settings.
fn settings() -> ConsumerSettings {
    projection::Config::default().consumer_settings()
}

/// A bare durable pull consumer from sequence 1 to `target`, fetching `fetch` at a time and
/// acking every message.
async fn baseline(stack: &Stack, run: &str, target: u64, fetch: usize) -> anyhow::Result<Measured> {
    let name = format!("bench-baseline-{run}-{fetch}");
    let stream = stack.js.get_stream(CART_EVENTS_STREAM).await?;
    let config = durable_pull_config(&name, &[CART_EVENTS_ALL.to_owned()], &settings());
    let started = Instant::now();
    let consumer = ensure_durable_pull(&stream, config).await?;
    let mut m = Measured::empty(Duration::ZERO);
    let mut progress = Progress::new("baseline", target);
    let mut at = 0;
    while at < target {
        let batch_started = Instant::now();
        let mut batch = consumer
            .fetch()
            .max_messages(fetch)
            .expires(FETCH_WAIT)
            .messages()
            .await?;
        let mut n = 0;
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| anyhow::anyhow!("fetch: {e}"))?;
            at = at.max(
                msg.info()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .stream_sequence,
            );
            match msg.ack().await {
                Ok(()) => m.ops += 1,
                Err(e) => {
                    m.errors += 1;
                    m.first_error.get_or_insert_with(|| format!("ack: {e}"));
                }
            }
            n += 1;
        }
        if n > 0 {
            let _ = m
                .hist
                .record(batch_started.elapsed().as_micros().max(1) as u64);
        }
        progress.tick(at);
    }
    m.elapsed = started.elapsed();
    stream.delete_consumer(&name).await.ok();
    Ok(m)
}

/// A fresh projection on a temp database, from start-up until it has applied `target`.
async fn subject(stack: &Stack, run: &str, target: u64) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let view = format!("bench{run}");
    let mut nats = stack.nats("projection");
    nats.name = format!("projection-{view}");
    let config = projection::Config {
        view: view.clone(),
        fetch_wait_ms: FETCH_WAIT.as_millis() as u64,
        ready_max_lag: u64::MAX,
        nats,
        ..stack.projection_config(dir.path())
    };
    // Each commit of a batch marks the end of its cycle.
    let cycles = Arc::new(Mutex::new((Instant::now(), histogram())));
    let hooks = projection::Hooks {
        before_commit: Some(Arc::new({
            let cycles = cycles.clone();
            move |_| {
                let mut c = cycles.lock().unwrap();
                let now = Instant::now();
                let cycle = (now - c.0).as_micros().max(1) as u64;
                let _ = c.1.record(cycle);
                c.0 = now;
                projection::CommitAction::Commit
            }
        })),
        ..Default::default()
    };
    let mut progress = Progress::new("subject", target);
    let started = Instant::now();
    cycles.lock().unwrap().0 = started;
    let running = projection::start_with_hooks(config, hooks).await?;
    // Done when everything is applied and on disk and the indexes dropped to catch up are
    // back (the node could serve queries).
    while running.durable_checkpoint() < target || running.indexes_dropped() {
        if running.failed.is_cancelled() {
            anyhow::bail!("the projection failed while catching up");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        progress.tick(running.durable_checkpoint());
    }
    let elapsed = started.elapsed();
    running.stop().await?;
    let durable = shared::subjects::projection_durable(&view).map_err(anyhow::Error::msg)?;
    let stream = stack.js.get_stream(CART_EVENTS_STREAM).await?;
    stream.delete_consumer(&durable).await.ok();
    let hist = cycles.lock().unwrap().1.clone();
    Ok(Measured {
        hist,
        ops: target,
        errors: 0,
        elapsed,
        first_error: None,
    })
}

pub async fn run(stack: &mut Stack, events: u64, carts: usize) -> anyhow::Result<Report> {
    let run = super::run_id();
    // Loading a million messages at the disk's fsync rate takes minutes and measures nothing:
    // a spawned fsync-always server loads through a lazily fsyncing run of itself (same store),
    // and is back to `sync_interval: always` before anything is measured.
    let fast_preload = stack.server.as_ref().is_some_and(|s| s.sync_always());
    if fast_preload {
        switch_sync(stack, false).await?;
    }
    eprintln!("preloading {events} event messages over {carts} carts …");
    let target = preload(stack, &run, events, carts).await?;
    if fast_preload {
        switch_sync(stack, true).await?;
    }
    // The projection's defaults: the live batch (also the headline baseline's fetch) and the
    // catch-up batch.
    let defaults = projection::Config::default();
    let (live, catch_up) = (defaults.batch_size, defaults.catch_up_batch_size);
    eprintln!("stream last sequence {target}; baseline: bare pull consumer from 1, fetch {live} …");
    let base = baseline(stack, &run, target, live).await?;
    eprintln!("subject: fresh projection from 1 …");
    let subj = subject(stack, &run, target).await?;
    eprintln!("baseline again with fetch {catch_up} (reported in the notes) …");
    let wide = baseline(stack, &run, target, catch_up).await?;
    let (b, s) = (base.summary(), subj.summary());
    let (wide_rate, subject_rate) = (wide.summary().ops_per_s, s.ops_per_s);
    let elapsed = base.elapsed + subj.elapsed + wide.elapsed;
    let mut report = Report::new("projection", 1, elapsed, b, s);
    report.notes = vec![
        format!(
            "preload {}; both sides measured against the server as chosen (--nats-sync)",
            if fast_preload {
                "through the same server restarted without per-message fsync"
            } else {
                "at the server's own fsync policy"
            }
        ),
        format!(
            "{events} event messages over {carts} carts preloaded (3 AddItem then ChangeQuantity per cart, carts interleaved); both sides read sequences 1..={target}"
        ),
        format!(
            "baseline: durable pull consumer, explicit ack, fetch {live} (max_ack_pending {}), ack every message, no processing: {:.1} s",
            settings().max_ack_pending,
            base.elapsed.as_secs_f64()
        ),
        format!(
            "subject: projection::start on a fresh SQLite file (batch {live}, {catch_up} once a fetch comes back full; one transaction per fetched batch; secondary indexes dropped while it catches up) until its checkpoint reaches {target} and its indexes are back: {:.1} s",
            subj.elapsed.as_secs_f64()
        ),
        format!(
            "the same bare consumer fetching {catch_up} at a time: {wide_rate:.0} msgs/s in {:.1} s; subject ÷ it = {:.3}",
            wide.elapsed.as_secs_f64(),
            subject_rate / wide_rate.max(f64::MIN_POSITIVE)
        ),
        "p50/p99 per batch: baseline fetch + acks; subject commit-to-commit interval on the writer"
            .into(),
    ];
    if let Some(e) = base.first_error.or(wide.first_error) {
        report.notes.push(format!("first baseline error: {e}"));
    }
    Ok(report)
}

#[cfg(test)]
mod retries {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A publish failing `failures` times (an ack timeout), then acknowledged; how often it ran.
    async fn publish_failing(failures: usize) -> (anyhow::Result<()>, usize) {
        let tries = AtomicUsize::new(0);
        let result = until_acknowledged("cart.events.t.c", || async {
            if tries.fetch_add(1, Ordering::SeqCst) < failures {
                Err("publish ack: timed out".to_owned())
            } else {
                Ok(())
            }
        })
        .await;
        (result, tries.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_timed_out_ack_is_tried_again_not_the_end_of_the_run() {
        let (result, tries) = publish_failing(PUBLISH_ATTEMPTS - 1).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(tries, PUBLISH_ATTEMPTS);
    }

    #[tokio::test]
    async fn a_publish_never_acknowledged_fails_after_its_tries_naming_the_last_error() {
        let (result, tries) = publish_failing(usize::MAX).await;
        assert_eq!(tries, PUBLISH_ATTEMPTS);
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains("no ack after 5 tries") && error.contains("timed out"),
            "{error}"
        );
    }
}
