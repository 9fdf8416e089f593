//! One active runner: the lease in `RUNNER_LEASE` against a real nats-server. A second runner
//! stands by (not ready, fetching nothing) until the first is gone; a drained runner gives the
//! lease back; a runner whose lease is taken stops fetching, and `runner::run` starts it again
//! as a standby in the same process; a refresh applied without its answer is adopted; what is
//! handed back on its last delivery is still delivered again.

use crate::common;

use common::*;
use runner::lease::Holder;
use shared::subjects::{
    CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE, RUNNER_LEASE_BUCKET, RUNNER_LEASE_KEY,
};
use shared::test_support::{consumer_info, wait_until};
use tests::processes::free_ports;

async fn lease_bucket(env: &Env) -> async_nats::jetstream::kv::Store {
    env.js.get_key_value(RUNNER_LEASE_BUCKET).await.unwrap()
}

/// Who holds the lease now (`None`: nobody; no bucket yet, or the entry is gone or deleted).
async fn holder(env: &Env) -> Option<String> {
    let bucket = env.js.get_key_value(RUNNER_LEASE_BUCKET).await.ok()?;
    let entry = bucket.entry(RUNNER_LEASE_KEY).await.unwrap()?;
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return None;
    }
    let h: Holder = serde_json::from_slice(&entry.value).unwrap();
    Some(h.holder)
}

/// Writes the lease as held by someone else, the way a second runner that took it would.
async fn steal(env: &Env) {
    let value = serde_json::to_vec(&Holder {
        holder: "intruder".into(),
        since: "2026-12-05T00:00:00Z".into(),
    })
    .unwrap();
    lease_bucket(env)
        .await
        .put(RUNNER_LEASE_KEY, value.into())
        .await
        .unwrap();
}

/// Waits until `runner` holds the lease (`what`: why it should).
async fn until_active(runner: &runner::Running, what: &str) {
    wait_until(|| async { runner.status.is_active() }, WAIT)
        .await
        .expect(what);
}

/// Stops a `runner::run` started with `shutdown`, which must end without an error.
async fn stop_run(
    shutdown: tokio_util::sync::CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("run returns once asked to stop")
        .unwrap()
        .expect("a requested stop is no error");
}

/// What `runner`'s admin status says of the lease.
async fn lease_held(runner: &runner::Running) -> bool {
    admin_client(runner)
        .await
        .status(proto::runner::admin::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .lease_held
}

async fn ready_body(runner: &runner::Running) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}/ready", runner.http_addr))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Hooks whose provider call for attempt `a0` waits for a permit of `gate` (with one lane, the
/// checkouts after it queue behind it).
fn first_checkout_waits_for(gate: &std::sync::Arc<tokio::sync::Semaphore>) -> runner::Hooks {
    use futures::FutureExt;
    let gate = gate.clone();
    after_provider_call(move |attempt: String| {
        let gate = gate.clone();
        async move {
            if attempt == "a0" {
                let _ = gate.acquire().await.unwrap();
            }
        }
        .boxed()
    })
}

/// A lease hook that, once `frozen` is set, waits for a permit of `thaw` before each refresh:
/// the lease task stops running while the lanes go on, as in a process that woke from a
/// freeze before its lease task did.
fn freezable(
    frozen: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    thaw: &std::sync::Arc<tokio::sync::Semaphore>,
) -> Option<runner::lease::RefreshHook> {
    use futures::FutureExt;
    let (frozen, thaw) = (frozen.clone(), thaw.clone());
    Some(std::sync::Arc::new(move || {
        let (frozen, thaw) = (frozen.clone(), thaw.clone());
        async move {
            if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = thaw.acquire().await.unwrap();
            }
        }
        .boxed()
    }))
}

/// A runner with one lane and checkouts `c0`..`c3` (attempts `a0`..`a3`): the first started
/// (its provider call waits, [`first_checkout_waits_for`]), three queued behind it.
async fn one_started_three_queued(env: &Env, hooks: runner::Hooks) -> runner::Running {
    let config = runner::Config {
        lanes: 1,
        ..env.quick_takeover_config()
    };
    let runner = runner::start(config, hooks).await.unwrap();
    for i in 0..4 {
        env.checkout(&format!("c{i}"), &format!("a{i}")).await;
    }
    wait_until(|| async { runner.status.in_flight() == 4 }, WAIT)
        .await
        .expect("one checkout in the lane, three queued behind it");
    runner
}

/// Lets the started checkout finish; the three queued ones must be handed back unstarted.
async fn only_the_started_one_is_made(
    env: &Env,
    runner: &runner::Running,
    gate: &tokio::sync::Semaphore,
) {
    gate.add_permits(1);
    wait_until(|| async { runner.status.in_flight() == 0 }, WAIT)
        .await
        .expect("the started checkout finishes, the queued ones are handed back");
    assert_eq!(env.mock.orders_for("a0"), 1, "the started effect finished");
    for i in 1..4 {
        let attempt = format!("a{i}");
        assert_eq!(
            env.mock.orders_for(&attempt),
            0,
            "{attempt} was not started"
        );
    }
}

/// Another runner takes the lease from the frozen `runner` (a frozen holder's usual fate; one
/// thawed before its entry expired would refresh it, rightly: the compare-and-set proves it
/// still its own), then its lease task runs again, finds the lease taken, and it stops.
async fn thaw_after_a_takeover(env: &Env, runner: runner::Running, thaw: &tokio::sync::Semaphore) {
    steal(env).await;
    thaw.add_permits(1);
    tokio::time::timeout(WAIT, runner.lease_lost())
        .await
        .expect("the lease task, running again, finds the lease taken");
    runner.abort().await;
}

/// Carts `c1`..`c3` (attempts `a1`..`a3`) get their provider orders from a new runner, once
/// the entry left by the last holder has expired.
async fn the_next_holder_handles_the_rest(env: &Env) {
    let next = env.quick_takeover_runner(Default::default()).await;
    for i in 1..4 {
        env.wait_cart(
            &format!("c{i}"),
            "handled by the next holder",
            order_created(&format!("a{i}")),
        )
        .await;
    }
    next.drain(DRAIN).await;
}

#[tokio::test]
async fn a_second_runner_stands_by_until_the_first_is_gone() {
    let Some(env) = env().await else { return };
    let first = env.quick_takeover_runner(Default::default()).await;
    until_active(&first, "the first runner takes the lease").await;
    let second = env.quick_takeover_runner(Default::default()).await;
    let (status, body) = ready_body(&second).await;
    assert_eq!(status, 503, "a standby is not ready: {body}");
    assert!(body.contains("standing by"), "{body}");
    assert_eq!(ready_body(&first).await.0, 200);
    // Their admin status says which one is active.
    assert_eq!(
        (lease_held(&first).await, lease_held(&second).await),
        (true, false)
    );

    // Six checkouts: two runners sharing the consumer would split them.
    const CARTS: u64 = 6;
    for i in 0..CARTS {
        env.checked_out(&format!("c{i}"), &format!("a{i}")).await;
    }
    until_completed(&first, CARTS, "the first runner handled every checkout").await;
    assert!(
        !second.status.is_active(),
        "the standby never took the lease"
    );
    assert_eq!(
        second.status.completed_count(),
        0,
        "the standby handled nothing"
    );

    // The first one crashes: its entry expires and the standby takes over.
    first.abort().await;
    until_active(
        &second,
        "the standby takes the lease once the crashed runner's entry expired",
    )
    .await;
    env.checked_out("after", "b1").await;
    until_completed(&second, 1, "the new holder handles checkouts").await;
    assert_eq!(ready_body(&second).await.0, 200);
    assert!(lease_held(&second).await, "the new holder's status says so");
    second.drain(DRAIN).await;
}

#[tokio::test]
async fn a_drained_runner_gives_the_lease_back() {
    use proto::runner::admin::v1 as admin;
    let Some(env) = env().await else { return };
    // Drained through the admin API: it gives the lease back once idle, and stays up.
    let first = env.quick_takeover_runner(Default::default()).await;
    until_active(&first, "the runner takes the lease").await;
    assert!(holder(&env).await.is_some(), "the entry names its holder");
    let standby = env.quick_takeover_runner(Default::default()).await;
    let drained = admin_client(&first)
        .await
        .drain(admin::DrainRequest { wait_seconds: 20 })
        .await
        .unwrap()
        .into_inner();
    assert!(drained.idle);
    until_active(
        &standby,
        "the standby takes the lease the drained runner gave back",
    )
    .await;
    assert!(!first.status.is_active());
    let (status, body) = ready_body(&first).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("the lease was given back"), "{body}");
    first.drain(DRAIN).await;

    // Stopped (SIGTERM's drain): the entry is deleted, not left to expire.
    standby.drain(DRAIN).await;
    assert_eq!(holder(&env).await, None, "the entry is deleted");
    let next = env.quick_takeover_runner(Default::default()).await;
    until_active(&next, "the next runner takes it").await;
    next.drain(DRAIN).await;
}

#[tokio::test]
async fn a_runner_whose_lease_is_taken_stops_fetching() {
    let Some(env) = env().await else { return };
    let runner = env.quick_takeover_runner(Default::default()).await;
    until_active(&runner, "the runner takes the lease").await;
    env.checked_out("before", "a1").await;

    steal(&env).await;
    tokio::time::timeout(WAIT, runner.lease_lost())
        .await
        .expect("the runner notices another holder at its next refresh");
    assert!(!runner.status.is_active());
    let (status, body) = ready_body(&runner).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("lease lost"), "{body}");
    assert_eq!(
        holder(&env).await.as_deref(),
        Some("intruder"),
        "the loser never writes the lease again"
    );

    // Its last pull request ends; a checkout after that waits undelivered.
    wait_until(
        || async {
            let info = consumer_info(&env.js, CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE).await;
            info.num_waiting == 0
        },
        WAIT,
    )
    .await
    .expect("no pull request of the runner is left");
    env.checkout("after", "b1").await;
    wait_until(
        || async {
            let info = consumer_info(&env.js, CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE).await;
            info.num_pending >= 1 && info.num_ack_pending == 0
        },
        WAIT,
    )
    .await
    .expect("the checkout waits undelivered");
    assert_eq!(env.mock.orders_for("b1"), 0, "no provider call for it");
    runner.abort().await;

    // Once the intruder's entry expires, a new runner takes the lease and the checkout.
    let next = env.quick_takeover_runner(Default::default()).await;
    env.wait_cart("after", "picked up by the next holder", order_created("b1"))
        .await;
    next.drain(DRAIN).await;
}

#[tokio::test]
async fn run_starts_again_as_a_standby_when_the_lease_is_lost() {
    let Some(env) = env().await else { return };
    // Fixed ports, as in production: the next term binds the gRPC port again (the ops port
    // and the embedded mock provider live as long as the process, orders and all).
    let port = free_ports(3).into_iter().map(|p| format!("127.0.0.1:{p}"));
    let [mock, grpc, http] = <[String; 3]>::try_from(port.collect::<Vec<_>>()).unwrap();
    let mut config = env.quick_takeover_config();
    config.provider.base_url = String::new();
    config.mock_provider_addr = mock;
    config.grpc_addr = grpc;
    config.http_addr = http;
    let ready_url = format!("http://{}/ready", config.http_addr);
    let mock_stats = format!("http://{}/__mock/stats", config.mock_provider_addr);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(runner::run(config, shutdown.clone()));
    wait_until(|| async { holder(&env).await.is_some() }, WAIT)
        .await
        .expect("the runner takes the lease");
    let first = holder(&env).await.unwrap();
    env.checkout("before", "b1").await;
    env.wait_cart("before", "made in the first term", order_created("b1"))
        .await;
    steal(&env).await;
    // The loser drains and starts again in the same process, under a new holder name, and
    // takes the lease once the intruder's entry expires.
    let taken_back =
        |h: &Option<String>| h.as_ref().is_some_and(|h| h != "intruder" && *h != first);
    wait_until(|| async { taken_back(&holder(&env).await) }, WAIT)
        .await
        .expect("the runner, started again, takes the lease back");
    let second = holder(&env).await.unwrap();
    assert!(!run.is_finished(), "losing the lease does not end run()");
    wait_until(
        || async {
            reqwest::get(&ready_url)
                .await
                .is_ok_and(|r| r.status().is_success())
        },
        WAIT,
    )
    .await
    .expect("the new term answers /ready on the same port");
    assert!(
        second.contains(&std::process::id().to_string()),
        "the same process holds it again: {second}"
    );
    env.checkout("again", "c1").await;
    env.wait_cart(
        "again",
        "its provider order made by the new term",
        order_created("c1"),
    )
    .await;
    let stats: serde_json::Value = reqwest::get(&mock_stats)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &stats["created_per_reference"]["before"],
            &stats["created_per_reference"]["again"]
        ),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "one mock across both terms: {stats}"
    );
    stop_run(shutdown, run).await;
}

#[tokio::test]
async fn the_ops_endpoint_answers_between_terms_while_nats_is_away() {
    let Some(mut env) = env().await else { return };
    if !env.nats.server.as_ref().is_some_and(|s| s.can_restart()) {
        eprintln!("SKIPPED: an external NATS server (CART_TEST_NATS_URL) cannot be killed");
        return;
    }
    let [grpc, http] = free_ports(2)[..] else {
        unreachable!()
    };
    let mut config = env.quick_takeover_config();
    config.grpc_addr = format!("127.0.0.1:{grpc}");
    config.http_addr = format!("127.0.0.1:{http}");
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{http}{path}");
        async move {
            let resp = reqwest::get(url).await.expect("the ops port answers");
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(runner::run(config, shutdown.clone()));
    // Until run() has bound it, the port refuses.
    let ready = || async move {
        reqwest::get(format!("http://127.0.0.1:{http}/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    wait_until(ready, WAIT)
        .await
        .expect("the runner takes the lease and is ready");

    // NATS goes away: the lease cannot be refreshed, the term ends, and the next one cannot
    // start. The process stays up and says so on the same port; the liveness probe passes.
    env.nats.server.as_mut().unwrap().kill();
    let between_terms =
        |body: &str| body.contains("could not start again") || body.contains("the last try failed");
    wait_until(
        || async {
            let (status, body) = get("/ready").await;
            status == 503 && between_terms(&body)
        },
        WAIT,
    )
    .await
    .expect("/ready says why the runner cannot start again");
    assert_eq!(get("/health").await.0, 200, "alive between terms");
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200, "scraped between terms");
    assert!(
        metrics.contains("cart_runner_lease_lost_total 1"),
        "the loss is counted, on the endpoint that outlives the term:\n{metrics}"
    );
    assert!(!run.is_finished(), "NATS going away does not end run()");

    // NATS is back: a term starts on the same ports and takes the lease again.
    env.nats.server.as_mut().unwrap().restart().await;
    wait_until(|| async { get("/ready").await.0 == 200 }, WAIT)
        .await
        .expect("ready again once NATS is back, on the same port (never closed meanwhile)");
    stop_run(shutdown, run).await;
}

#[tokio::test]
async fn a_refresh_applied_without_its_answer_is_adopted_not_counted_as_lost() {
    let Some(env) = env().await else { return };
    let runner = env.quick_takeover_runner(Default::default()).await;
    until_active(&runner, "the runner takes the lease").await;
    // The runner's own value at a revision it never heard of: what a refresh whose answer was
    // lost leaves behind.
    let bucket = lease_bucket(&env).await;
    let entry = bucket.entry(RUNNER_LEASE_KEY).await.unwrap().unwrap();
    let written = bucket
        .put(RUNNER_LEASE_KEY, entry.value.clone())
        .await
        .unwrap();
    wait_until(
        || async {
            let now = bucket.entry(RUNNER_LEASE_KEY).await.unwrap();
            now.is_some_and(|e| e.revision > written)
        },
        WAIT,
    )
    .await
    .expect("the runner refreshes again, from the revision it found");
    assert!(runner.status.is_active(), "it still holds the lease");
    env.checked_out("still", "a1").await;
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_runner_that_lost_the_lease_hands_back_what_its_lanes_hold() {
    let Some(env) = env().await else { return };
    // One lane: the first checkout holds it (its hook waits for the test), the rest queue.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let hooks = first_checkout_waits_for(&gate);
    let runner = one_started_three_queued(&env, hooks).await;

    steal(&env).await;
    tokio::time::timeout(WAIT, runner.lease_lost())
        .await
        .expect("the runner notices another holder");
    only_the_started_one_is_made(&env, &runner, &gate).await;
    runner.abort().await;
    the_next_holder_handles_the_rest(&env).await;
}

#[tokio::test]
async fn a_runner_whose_lease_ran_out_unnoticed_starts_nothing_more() {
    let Some(env) = env().await else { return };
    // One lane: the first checkout holds it (its hook waits for the test), the rest queue.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    // The lease task, once frozen, does not run until the test lets it.
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thaw = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let hooks = runner::Hooks {
        before_lease_refresh: freezable(&frozen, &thaw),
        ..first_checkout_waits_for(&gate)
    };
    let runner = one_started_three_queued(&env, hooks).await;

    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_until(|| async { !runner.holds_lease_now() }, WAIT)
        .await
        .expect("without refreshes, the lease runs out by the runner's own clock");
    assert!(
        runner.status.is_active(),
        "the frozen lease task has not noticed: only the clock stops the lanes"
    );
    let (status, body) = ready_body(&runner).await;
    assert_eq!(status, 503, "not ready once the lease ran out: {body}");
    assert!(body.contains("ran out by this runner's clock"), "{body}");
    only_the_started_one_is_made(&env, &runner, &gate).await;
    thaw_after_a_takeover(&env, runner, &thaw).await;
    the_next_holder_handles_the_rest(&env).await;
}

/// A lease that runs out right before the runner's `n`th provider call (0: the first), as in
/// a runner that froze between starting a checkout and calling out: the hook freezes the lease
/// task ([`freezable`]) and holds the call until [`LapseBeforeCall::hand_back`] has seen the
/// lease run out by the runner's clock.
struct LapseBeforeCall {
    calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reached: std::sync::Arc<std::sync::atomic::AtomicBool>,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
    thaw: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for LapseBeforeCall {
    fn default() -> Self {
        Self {
            calls: Default::default(),
            frozen: Default::default(),
            reached: Default::default(),
            gate: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
            thaw: std::sync::Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

impl LapseBeforeCall {
    /// The hooks, running `first` when the `n`th call is reached.
    fn hooks(&self, n: u32, first: impl Fn() + Send + Sync + 'static) -> runner::Hooks {
        use futures::FutureExt;
        use std::sync::atomic::Ordering;
        let (calls, frozen, reached, gate) = (
            self.calls.clone(),
            self.frozen.clone(),
            self.reached.clone(),
            self.gate.clone(),
        );
        let first = std::sync::Arc::new(first);
        runner::Hooks {
            before_provider_call: Some(std::sync::Arc::new(move |_attempt: String| {
                let (frozen, reached, gate, first) =
                    (frozen.clone(), reached.clone(), gate.clone(), first.clone());
                let lapse = calls.fetch_add(1, Ordering::SeqCst) == n;
                async move {
                    if lapse {
                        first();
                        frozen.store(true, Ordering::SeqCst);
                        reached.store(true, Ordering::SeqCst);
                        let _ = gate.acquire().await.unwrap();
                    }
                }
                .boxed()
            })),
            before_lease_refresh: freezable(&self.frozen, &self.thaw),
            ..Default::default()
        }
    }

    /// Waits for the held call and for the lease to run out, lets the call go on and waits
    /// until its checkout is handed back.
    async fn hand_back(&self, runner: &runner::Running) {
        use std::sync::atomic::Ordering;
        wait_until(|| async { self.reached.load(Ordering::SeqCst) }, WAIT)
            .await
            .expect("the checkout reaches its provider call");
        wait_until(|| async { !runner.holds_lease_now() }, WAIT)
            .await
            .expect("the lease runs out by the runner's clock");
        self.gate.add_permits(1);
        wait_until(|| async { runner.status.in_flight() == 0 }, WAIT)
            .await
            .expect("the checkout is handed back");
    }
}

#[tokio::test]
async fn a_checkout_whose_lease_ran_out_before_its_provider_call_makes_none() {
    let Some(env) = env().await else { return };
    let lapse = LapseBeforeCall::default();
    let runner = runner::start(env.quick_takeover_config(), lapse.hooks(0, || {}))
        .await
        .unwrap();
    env.checkout("c0", "a0").await;
    lapse.hand_back(&runner).await;
    assert_eq!(
        env.mock.orders_for("a0"),
        0,
        "no provider call after the lease ran out"
    );
    thaw_after_a_takeover(&env, runner, &lapse.thaw).await;

    let next = env.quick_takeover_runner(Default::default()).await;
    env.wait_cart("c0", "made by the next holder", order_created("a0"))
        .await;
    assert_eq!(env.mock.orders_for("a0"), 1);
    next.drain(DRAIN).await;
}

#[tokio::test]
async fn a_checkout_handed_back_on_its_last_delivery_is_delivered_again() {
    let Some(env) = env().await else { return };
    // Two deliveries: the first fails at the provider (503 to every try), the second is handed
    // back because the lease ran out right before its provider call. A server that stopped
    // after the runner's `max_deliver` would never deliver it again, nor would it be
    // dead-lettered: the shopper's checkout would wait for ever.
    let config = runner::Config {
        consumer: shared::nats::ConsumerSettings {
            max_deliver: 2,
            ..env.quick_takeover_config().consumer
        },
        ..env.quick_takeover_config()
    };
    env.mock.set_faults(runner::provider::mock::Faults {
        fail_next: u32::MAX,
        ..Default::default()
    });
    let lapse = LapseBeforeCall::default();
    let mock = env.mock.clone();
    let hooks = lapse.hooks(1, move || mock.set_faults(Default::default()));
    let runner = runner::start(config.clone(), hooks).await.unwrap();
    env.checkout("c0", "a0").await;
    lapse.hand_back(&runner).await;
    assert_eq!(
        env.mock.orders_for("a0"),
        0,
        "no order before the hand-back"
    );
    thaw_after_a_takeover(&env, runner, &lapse.thaw).await;

    let next = runner::start(config, Default::default()).await.unwrap();
    env.wait_cart("c0", "made on a third delivery", order_created("a0"))
        .await;
    assert_eq!(env.mock.orders_for("a0"), 1);
    assert_eq!(env.dead_letters(RUNNER_CHECKOUT_DURABLE).await, 0);
    next.drain(DRAIN).await;
}
