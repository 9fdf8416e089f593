//! The views equal the domain fold of the stream: for random command sequences on many carts,
//! and across crashes in the middle of a batch (before and after its commit).

mod common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Generator, WAIT, assert_views, expected, expected_states, read_states};
use projection::{CommitAction, Hooks};
use shared::test_support::wait_until;

#[tokio::test]
async fn views_equal_the_fold_of_random_commands_on_many_carts() {
    let Some((env, mut generator)) = common::env_published(7, &["t1", "t2", "t3"], 25, 250).await
    else {
        return;
    };
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    // Live messages arriving after the start are applied too.
    generator.publish(&env.js, 150).await;
    env.caught_up(&running).await;

    let want = expected(&generator.carts);
    assert!(want.carts.len() > 40, "the generator touched few carts");
    assert!(!want.orders.is_empty(), "the generator placed no order");
    assert!(
        want.carts.values().any(|c| c.status == "checkout"),
        "no cart in checkout"
    );
    assert_views(&running.db_path, &want);

    // QueryService serves the same rows.
    let mut q = common::query(&running).await;
    let sim = generator
        .carts
        .iter()
        .find(|c| c.state.cart.lines.len() > 1)
        .expect("a cart with lines");
    let got = common::get_cart(&mut q, sim.tenant.as_ref(), sim.id.as_ref()).await;
    let row = &want.carts[&(sim.tenant.to_string(), sim.id.to_string())];
    assert_eq!(got.total_amount, row.total_amount);
    assert_eq!(got.version, row.version);
    assert_eq!(got.lines.len(), sim.state.cart.lines.len());
    assert_eq!(got.lines[0].sku, sim.state.cart.lines[0].product.sku);
    let status = common::status(&mut q).await;
    assert_eq!(status.applied_sequence, env.stream_last().await);
    assert_eq!(status.dead_letters, 0);
    running.stop().await.unwrap();
}

async fn wait_reached(reached: &mpsc::Receiver<u64>) -> u64 {
    let mut got = None;
    wait_until(
        || {
            got = got.or_else(|| reached.try_recv().ok());
            let done = got.is_some();
            async move { done }
        },
        WAIT,
    )
    .await
    .expect("the writer reaches the hooked commit");
    got.unwrap()
}

/// Starts a projection whose `n`-th commit is held until released (then does `action`);
/// returns it once that commit is reached, with the batch's last sequence and the release.
async fn held_at_commit(
    env: &common::Env,
    config: projection::Config,
    n: u32,
    action: CommitAction,
) -> (projection::Running, u64, mpsc::Sender<()>) {
    let (hooks, reached, release) = common::hold_commit(n, action);
    let running = env.start(config, hooks).await;
    let at = wait_reached(&reached).await;
    (running, at, release)
}

/// [`common::env_published`] with a `main` config that commits batches of 50 messages (the
/// crash tests kill it between batches).
async fn batched(
    seed: u64,
    tenants: &[&str],
    carts_per_tenant: usize,
    n: usize,
) -> Option<(common::Env, Generator, projection::Config)> {
    let (env, generator) = common::env_published(seed, tenants, carts_per_tenant, n).await?;
    let config = projection::Config {
        batch_size: 50,
        ..env.config("main")
    };
    Some((env, generator, config))
}

/// Starts a projection, kills it while its `n`-th commit is held and lets the commit go
/// (`CrashBeforeCommit`: it is not written); returns the checkpoint it had reached.
async fn killed_at_commit(env: &common::Env, config: projection::Config, n: u32) -> u64 {
    let (running, _, release) =
        held_at_commit(env, config, n, CommitAction::CrashBeforeCommit).await;
    let committed = running.checkpoint();
    running.abort().await;
    release.send(()).unwrap();
    committed
}

/// Starts `config` (whose ack wait is longer than [`RESTART_WITHIN`]) after an earlier run
/// stopped holding messages, and asserts that it catches up within [`RESTART_WITHIN`], so it
/// did not wait for the server to hand those messages out again, and that its views are the
/// fold of `carts`.
async fn restarts_without_waiting_for_the_ack_wait(
    env: &common::Env,
    config: projection::Config,
    carts: &[common::SimCart],
) {
    assert!(
        Duration::from_millis(config.ack_wait_ms) > RESTART_WITHIN,
        "the ack wait must be longer than the restart may take"
    );
    let running = env
        .start_caught_up_within(config, Hooks::default(), RESTART_WITHIN)
        .await;
    common::assert_fold_and_stop(running, carts).await;
}

/// How long a restart may take to catch up in the tests whose ack wait is longer.
const RESTART_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_crash_mid_batch_applies_nothing_twice_and_loses_nothing() {
    let Some((env, mut generator, config)) = batched(11, &["t1", "t2"], 20, 300).await else {
        return;
    };

    // 1. Killed while the second batch is applied but not committed.
    let committed = killed_at_commit(&env, config.clone(), 2).await;
    assert!(committed > 0, "the first batch was committed");
    let db = common::open_db(&env.db_path("main"));
    let stored: i64 = db
        .query_row("SELECT last_sequence FROM checkpoint", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as u64, committed, "the second batch was rolled back");
    drop(db);

    // 2. Killed after committing a batch but before acknowledging it: it is redelivered.
    generator.publish(&env.js, 50).await;
    let (running, crashed_at, release) =
        held_at_commit(&env, config.clone(), 1, CommitAction::CrashAfterCommit).await;
    let before = running.checkpoint();
    release.send(()).unwrap();
    wait_until(|| async { running.checkpoint() > before }, WAIT)
        .await
        .expect("the batch commits before the simulated crash");
    running.abort().await;

    // 3. A clean restart catches up; every message is applied exactly once.
    generator.publish(&env.js, 50).await;
    let running = env.start_caught_up(config, Hooks::default()).await;
    assert!(running.checkpoint() > crashed_at);
    // `applied` per cart (compared by assert_views) equals the cart's message count.
    common::assert_fold_and_stop(running, &generator.carts).await;
}

#[tokio::test]
async fn a_restart_reads_what_a_killed_run_left_unacknowledged_without_waiting_for_the_ack_wait() {
    let Some((env, mut generator, mut config)) = batched(29, &["t1", "t2"], 20, 200).await else {
        return;
    };
    // A long ack wait: the server hands the killed run's messages out again only after it,
    // and the messages behind them must not wait that long.
    config.ack_wait_ms = 120_000;
    killed_at_commit(&env, config.clone(), 2).await;

    generator.publish(&env.js, 50).await;
    restarts_without_waiting_for_the_ack_wait(&env, config, &generator.carts).await;
}

#[tokio::test]
async fn cart_states_a_crash_did_not_write_are_folded_again_from_the_stream() {
    let Some((env, mut generator, mut config)) = batched(12, &["t1", "t2"], 15, 200).await else {
        return;
    };
    config.state_flush_secs = 3600;

    // Two batches committed, states waiting in memory; killed during the third.
    let committed = killed_at_commit(&env, config.clone(), 3).await;
    assert!(committed > 0, "batches were committed");
    let (states, sequence) = read_states(&env.db_path("main"));
    assert_eq!((states.len(), sequence), (0, 0), "the crash wrote no state");

    // The restart folds 1..=committed into the states before applying anything new, so the
    // carts go on from where their views are.
    generator.publish(&env.js, 100).await;
    let running = env.start(config.clone(), Hooks::default()).await;
    let (_, sequence) = read_states(&env.db_path("main"));
    assert_eq!(
        sequence, committed,
        "the recovered states are written at start-up"
    );
    env.fold_and_stop(running, &generator.carts).await;
    let (states, sequence) = read_states(&env.db_path("main"));
    assert_eq!(
        sequence,
        env.stream_last().await,
        "a graceful stop writes them all"
    );
    assert_eq!(states, expected_states(&generator.carts));

    // Killed again, then the stream loses the messages the states need (deleted; the start
    // creates it empty again): the projection refuses to start rather than build on states
    // it cannot recover.
    generator.publish(&env.js, 100).await;
    killed_at_commit(&env, config.clone(), 2).await;
    env.js
        .delete_stream(shared::subjects::CART_EVENTS_STREAM)
        .await
        .unwrap();
    let err = projection::start_with_hooks(config, Hooks::default())
        .await
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(err.contains("rebuild the projection"), "{err}");
}

/// The stream is deleted and created again after a graceful stop (every state written, so
/// nothing to recover): a database whose checkpoint is past the new stream's end is refused
/// with the way out, rather than skipping the new messages up to the old checkpoint.
#[tokio::test]
async fn a_stream_created_again_behind_the_checkpoint_is_refused_not_skipped() {
    let Some((env, _)) = common::env_published(4, &["t1"], 10, 80).await else {
        return;
    };
    let checkpoint = env.run_to_checkpoint().await;
    // New carts write fewer messages than it had.
    env.create_stream_again().await;
    common::generator::Generator::new(5, &["t2"], 3)
        .publish(&env.js, 10)
        .await;
    assert!(env.stream_last().await < checkpoint);
    let err = projection::start_with_hooks(env.config("main"), Hooks::default())
        .await
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!("up to sequence {checkpoint}"))
            && err.contains("rebuild the projection"),
        "{err}"
    );
}

#[tokio::test]
async fn a_node_far_behind_catches_up_without_secondary_indexes_and_creates_them_again() {
    let Some((env, mut generator, mut config)) = batched(14, &["t1", "t2"], 20, 300).await else {
        return;
    };
    config.drop_indexes_behind = 100;
    let indexes = {
        // The schema as created: every index in place.
        let (writer, _thread) = projection::write::writer::Writer::spawn(
            &env.db_path("main"),
            Hooks::default(),
            "main",
            config.state_settings(),
        )
        .unwrap();
        drop(writer);
        wait_until(
            || async { !common::view_indexes(&env.db_path("main")).is_empty() },
            WAIT,
        )
        .await
        .unwrap();
        common::view_indexes(&env.db_path("main"))
    };

    // 300 behind: the indexes are dropped while it applies; killed in the middle.
    let (running, _, release) =
        held_at_commit(&env, config.clone(), 2, CommitAction::CrashBeforeCommit).await;
    assert!(running.indexes_dropped());
    assert_eq!(common::view_indexes(&running.db_path), vec![]);
    // Not ready meanwhile, although fewer messages are behind than `ready_max_lag`.
    let ready = format!("http://{}/ready", running.http_addr);
    wait_until(
        || async {
            let Ok(r) = reqwest::get(&ready).await else {
                return false;
            };
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            status == 503 && body.contains("without the views' indexes")
        },
        WAIT,
    )
    .await
    .expect("/ready fails while the indexes are dropped");
    running.abort().await;
    release.send(()).unwrap();

    // Restarted (still behind) it catches up; then the indexes are back as they were, and
    // the views are the fold.
    let running = env.start_caught_up(config.clone(), Hooks::default()).await;
    wait_until(|| async { !running.indexes_dropped() }, WAIT)
        .await
        .expect("the indexes are created again once caught up");
    assert_eq!(common::view_indexes(&running.db_path), indexes);
    common::assert_fold_and_stop(running, &generator.carts).await;

    // A few messages behind: nothing is dropped.
    generator.publish(&env.js, 20).await;
    let running = env.start(config, Hooks::default()).await;
    assert!(!running.indexes_dropped());
    env.fold_and_stop(running, &generator.carts).await;
}

#[tokio::test]
async fn messages_are_acknowledged_only_once_their_commit_is_on_disk() {
    let Some((env, generator)) = common::env_published(17, &["t1"], 10, 60).await else {
        return;
    };
    let last = env.stream_last().await;

    // 1. Syncs held: everything is committed (the views show it), nothing acknowledged.
    let (hooks, decide) = common::hold_sync();
    let running = env.start_caught_up(env.config("held"), hooks).await;
    assert_eq!(running.durable_checkpoint(), 0, "nothing is on disk yet");
    assert_eq!(env.ack_floor("held").await, 0, "nothing acknowledged");
    // Released: the commits reach the disk and then the messages are acknowledged.
    decide.send(true).unwrap();
    wait_until(|| async { env.ack_floor("held").await == last }, WAIT)
        .await
        .expect("acknowledged once synced");
    assert_eq!(running.durable_checkpoint(), last);
    running.stop().await.unwrap();

    // 2. A failed sync: the projection stops without acknowledging anything; after a restart
    // every message is applied exactly once.
    let (hooks, decide) = common::hold_sync();
    decide.send(false).unwrap();
    let running = env.start(env.config("failed"), hooks).await;
    let failed = running.failed.clone();
    wait_until(|| async { failed.is_cancelled() }, WAIT)
        .await
        .expect("a failed sync stops the projection");
    assert_eq!(env.ack_floor("failed").await, 0, "nothing acknowledged");
    running.abort().await;
    let running = env
        .start_caught_up(env.config("failed"), Hooks::default())
        .await;
    assert_views(&running.db_path, &expected(&generator.carts));
    wait_until(|| async { env.ack_floor("failed").await == last }, WAIT)
        .await
        .expect("acknowledged after the restart");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_stop_and_restart_continue_from_the_checkpoint_even_without_the_durable() {
    let Some((env, mut generator)) = common::env_published(3, &["t1"], 10, 60).await else {
        return;
    };
    let checkpoint = env.run_to_checkpoint().await;
    // Its durable consumer is deleted meanwhile (an operator, a re-created stream): the new
    // one starts after the checkpoint instead of replaying the stream.
    let durable = shared::subjects::projection_durable("main").unwrap();
    let stream = env
        .js
        .get_stream(shared::subjects::CART_EVENTS_STREAM)
        .await
        .unwrap();
    stream.delete_consumer(&durable).await.unwrap();

    generator.publish(&env.js, 40).await;
    let running = env.start(env.config("main"), Hooks::default()).await;
    assert_eq!(
        running.checkpoint(),
        checkpoint,
        "the checkpoint survives a restart"
    );
    let info = stream.consumer_info(&durable).await.unwrap();
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: checkpoint + 1
        },
        "not replayed from sequence 1"
    );
    env.caught_up(&running).await;
    assert_views(&running.db_path, &expected(&generator.carts));
    tokio::time::timeout(Duration::from_secs(10), running.stop())
        .await
        .expect("stops promptly")
        .unwrap();
}

#[tokio::test]
async fn messages_the_server_no_longer_redelivers_are_read_back() {
    let Some((env, generator, mut config)) = batched(13, &["t1"], 10, 40).await else {
        return;
    };
    // One delivery only: a crash before the commit exhausts them, and nothing newer arrives
    // that would reveal the gap, so only the stall repair can recover the messages.
    config.max_deliver = 1;
    killed_at_commit(&env, config.clone(), 1).await;

    let running = env.start_caught_up(config, Hooks::default()).await;
    common::assert_fold_and_stop(running, &generator.carts).await;
}

/// `CART_EVENTS`' configuration updated (unchanged), then the server restarted.
async fn updated_and_restarted(env: &mut common::Env) {
    let events = env
        .js
        .get_stream(shared::subjects::CART_EVENTS_STREAM)
        .await
        .unwrap();
    env.js
        .update_stream(events.cached_info().config.clone())
        .await
        .unwrap();
    env.nats.kill();
    env.nats.restart().await;
    env.js = env.nats.jetstream().await;
}

#[tokio::test]
async fn keeps_up_across_a_nats_server_restart() {
    let Some(mut env) = common::env().await else {
        return;
    };
    if !env.nats.can_restart() {
        eprintln!("skipping: an external server (CART_TEST_NATS_URL) cannot be restarted");
        return;
    }
    let mut generator = Generator::new(19, &["t1"], 10);
    generator.publish(&env.js, 50).await;
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;

    env.nats.kill();
    env.nats.restart().await;
    // The test's own connection reconnects too; publish once it is back.
    let js = env.nats.jetstream().await;
    env.js = js;
    generator.publish(&env.js, 50).await;
    env.fold_and_stop(running, &generator.carts).await;

    // A config update between two restarts gives the stream a new creation time
    // (nats-io/nats-server#8470); it is still the same stream, and the database is not
    // refused as built from another one.
    updated_and_restarted(&mut env).await;
    let running = env.start(env.config("main"), Hooks::default()).await;
    generator.publish(&env.js, 20).await;
    env.caught_up(&running).await;

    // The same again under the running node, then its durable disappears: the stream's new
    // creation time does not make the node replay it from sequence 1 (the witness says it is
    // the same stream), the new durable starts after the checkpoint.
    updated_and_restarted(&mut env).await;
    let checkpoint = running.checkpoint();
    let durable = shared::subjects::projection_durable("main").unwrap();
    let events = env
        .js
        .get_stream(shared::subjects::CART_EVENTS_STREAM)
        .await
        .unwrap();
    events.delete_consumer(&durable).await.unwrap();
    wait_until(
        || async { events.consumer_info(&durable).await.is_ok() },
        WAIT,
    )
    .await
    .expect("the node re-creates its durable");
    let info = events.consumer_info(&durable).await.unwrap();
    assert_eq!(
        info.config.deliver_policy,
        async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: checkpoint + 1
        },
        "not replayed from sequence 1"
    );
    generator.publish(&env.js, 20).await;
    env.fold_and_stop(running, &generator.carts).await;
}

#[tokio::test]
async fn a_graceful_stop_while_catching_up_hands_the_fetched_batch_back() {
    let Some((env, generator)) = common::env_published(23, &["t1"], 30, 300).await else {
        return;
    };
    // Small batches: the node is still catching up (with the next batch fetched) when it
    // stops. A long ack wait: a batch that was fetched but not handed back would only come
    // again after it.
    let mut config = env.config("main");
    config.batch_size = 10;
    config.catch_up_batch_size = 10;
    config.ack_wait_ms = 60_000;
    let running = env.start(config.clone(), Hooks::default()).await;
    wait_until(|| async { running.checkpoint() >= 50 }, WAIT)
        .await
        .expect("the node applies some batches");
    running.stop().await.unwrap();

    restarts_without_waiting_for_the_ack_wait(&env, config, &generator.carts).await;
}

#[tokio::test]
async fn a_projection_behind_commits_catch_up_batches_and_one_that_keeps_up_small_ones() {
    let Some((env, mut generator)) = common::env_published(24, &["t1", "t2"], 40, 400).await else {
        return;
    };
    // The last stream sequence of every commit.
    let commits = Arc::new(Mutex::new(Vec::new()));
    let hooks = Hooks {
        before_commit: Some(Arc::new({
            let commits = commits.clone();
            move |last| {
                commits.lock().unwrap().push(last);
                CommitAction::Commit
            }
        })),
        ..Hooks::default()
    };
    let mut config = env.config("main");
    config.batch_size = 8;
    config.catch_up_batch_size = 100;
    let running = env.start_caught_up(config, hooks).await;
    assert_views(&running.db_path, &expected(&generator.carts));
    let sizes = |commits: &[u64]| -> Vec<u64> {
        std::iter::once(0)
            .chain(commits.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect()
    };
    let caught_up = commits.lock().unwrap().clone();
    let behind = sizes(&caught_up);
    // The first fetch is a live one (8); after it came back full, fetches ask for 100.
    assert_eq!(behind.first(), Some(&8), "transactions: {behind:?}");
    assert!(
        behind.iter().filter(|&&n| n > 8).count() >= 3 && behind.iter().all(|&n| n <= 100),
        "catching up commits transactions of up to 100 messages: {behind:?}"
    );
    assert!(
        behind.len() < 400 / 8,
        "fewer transactions than live batches would take: {behind:?}"
    );

    // Caught up: one new message is fetched and committed on its own.
    generator.publish(&env.js, 1).await;
    env.caught_up(&running).await;
    let all = commits.lock().unwrap().clone();
    assert_eq!(
        sizes(&all).last(),
        Some(&1),
        "transactions: {:?}",
        sizes(&all)
    );
    common::assert_fold_and_stop(running, &generator.carts).await;
}
