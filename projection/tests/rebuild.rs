//! `projection rebuild`: a fresh database built from sequence 1 and swapped in gives the same
//! views as the live projection, also while events keep arriving; the old database serves
//! until the swap; dead letters survive it. A database built from a `CART_EVENTS` that was
//! deleted and created again since is refused, at start and while running, until rebuilt.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::generator::publish_raw;
use common::{WAIT, assert_views, expected};
use projection::Hooks;
use shared::test_support::wait_until;

#[tokio::test]
async fn online_rebuild_equals_the_live_views_while_events_arrive() {
    let Some((env, mut generator)) = common::env_published(17, &["t1", "t2", "t3"], 15, 300).await
    else {
        return;
    };
    let poison_seq = publish_raw(&env.js, "t1", "garbage-cart", b"not json").await;
    generator.publish(&env.js, 20).await;
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    let mut q = common::query(&running).await;
    let dead = common::dead_letters(&mut q, "").await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].stream_sequence, poison_seq);

    // Damage the live views: only a rebuild (not the live consumer) repairs this.
    {
        let db = rusqlite::Connection::open(&running.db_path).unwrap();
        let damaged = db
            .execute("UPDATE carts SET total_amount = -1 WHERE tenant = 't2'", [])
            .unwrap();
        assert!(damaged > 0);
        db.execute("DELETE FROM cart_lines WHERE tenant = 't3'", [])
            .unwrap();
    }

    // Events keep arriving during the rebuild.
    let js = env.js.clone();
    let publisher = tokio::spawn(async move {
        for _ in 0..40 {
            generator.publish(&js, 5).await;
            tokio::task::yield_now().await;
        }
        generator
    });
    let report = running.rebuild().await.expect("rebuild");
    let generator = publisher.await.unwrap();
    assert!(report.applied >= 320, "{report:?}");
    assert_eq!(
        report.failed, 1,
        "the poison message fails in the rebuild too"
    );
    env.caught_up(&running).await;
    assert_views(&running.db_path, &expected(&generator.carts));

    // Queries use the new file; the dead letter kept its id; no leftovers.
    let sim = &generator.carts[generator.index("t2", "cart-001")];
    if !sim.messages.is_empty() {
        let got = common::get_cart(&mut q, "t2", "cart-001").await;
        assert_ne!(got.total_amount, -1);
    }
    let after = common::dead_letters(&mut q, "").await;
    assert_eq!(after, dead, "dead letters are carried over unchanged");
    let status = common::status(&mut q).await;
    assert!(!status.rebuilding);
    assert!(!projection::store::db::sibling(&running.db_path, ".rebuild").exists());
    running.stop().await.unwrap();
}

#[tokio::test]
async fn admin_endpoint_and_offline_rebuild() {
    let Some((env, mut generator)) = common::env_published(4, &["t1"], 12, 120).await else {
        return;
    };
    let config = env.config("main");
    let running = env.start_caught_up(config.clone(), Hooks::default()).await;

    let url = format!(
        "http://{}{}",
        running.http_addr,
        projection::ops::admin::REBUILD_PATH
    );
    let http = reqwest::Client::new();
    let denied = http.post(&url).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = http.post(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let started = http
        .post(&url)
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let last = Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    wait_until(
        || {
            let req = http.get(&url).bearer_auth("test-token").send();
            let last = last.clone();
            async move {
                let Ok(resp) = req.await else { return false };
                let Ok(v) = resp.json::<serde_json::Value>().await else {
                    return false;
                };
                let done = v["running"] == false && !v["last_result"].is_null();
                *last.lock().unwrap() = v;
                done
            }
        },
        WAIT,
    )
    .await
    .expect("rebuild finishes");
    let last = last.lock().unwrap().clone();
    assert!(
        last["last_result"].as_str().unwrap().starts_with("ok"),
        "{last}"
    );
    assert_views(&running.db_path, &expected(&generator.carts));

    // Offline: with the service stopped, rebuild the file directly.
    running.stop().await.unwrap();
    generator.publish(&env.js, 30).await;
    // Fewer cached states than carts: states are written, evicted and read back while
    // rebuilding.
    let states = projection::write::writer::StateSettings {
        cached_carts: 4,
        flush_after: Duration::from_secs(3600),
    };
    let report = env.rebuild_offline(&config, 16, states).await;
    assert_eq!(report.checkpoint, env.stream_last().await);
    // Filled without its secondary indexes, the file has them all when it is swapped in.
    let indexes = common::view_indexes(&config.db_path());
    assert_eq!(indexes.len(), 5, "{indexes:?}");
    assert_eq!(report.applied as usize, generator.message_count());
    assert_views(&config.db_path(), &expected(&generator.carts));

    // The service starts on the rebuilt file and has nothing left to do.
    let running = env.start(config, Hooks::default()).await;
    assert_eq!(running.checkpoint(), report.checkpoint);
    env.fold_and_stop(running, &generator.carts).await;
}

/// The stream is deleted and created again while the projection is stopped, and the new one
/// grows past the old checkpoint: its sequences look plausible, but number other messages. The
/// start refuses the database (it names the stream it was built from) rather than skip the new
/// messages up to the old checkpoint; after a rebuild the views are the new stream's, and so
/// are the dead letters: the old one names a message that is gone, and its id is not reused.
#[tokio::test]
async fn a_stream_created_again_past_the_checkpoint_is_refused_until_rebuilt() {
    let Some((env, _)) = common::env_published(4, &["t1"], 10, 40).await else {
        return;
    };
    publish_raw(&env.js, "t1", "garbage-old", b"not json").await;
    let checkpoint = env.run_to_checkpoint().await;
    env.create_stream_again().await;
    let mut fresh = common::Generator::new(5, &["t2"], 6);
    fresh.publish(&env.js, 20).await;
    let poison_seq = publish_raw(&env.js, "t2", "garbage-new", b"not json").await;
    fresh.publish(&env.js, checkpoint as usize).await;
    assert!(env.stream_last().await > checkpoint);

    let config = env.config("main");
    let err = projection::start_with_hooks(config.clone(), Hooks::default())
        .await
        .err()
        .expect("refused");
    let err = format!("{err:#}");
    assert!(
        err.contains("deleted and created again") && err.contains("rebuild the projection"),
        "{err}"
    );

    let states = projection::Config::default().state_settings();
    let report = env.rebuild_offline(&config, 64, states).await;
    assert_eq!(report.checkpoint, env.stream_last().await);
    assert_eq!(report.failed, 1);
    assert_views(&config.db_path(), &expected(&fresh.carts));
    let running = env.start_caught_up(config, Hooks::default()).await;
    let mut q = common::query(&running).await;
    let dead = common::dead_letters(&mut q, "").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (
            dead[0].id,
            dead[0].stream_sequence,
            dead[0].cart_id.as_str()
        ),
        (2, poison_seq, "garbage-new")
    );
    let gone = q
        .replay_dead_letter(proto::projection::v1::ReplayDeadLetterRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    common::assert_fold_and_stop(running, &fresh.carts).await;
}

/// A database that has applied no cart yet (only a message it gave up on) has nothing to
/// recognise its stream by, so one created again goes unnoticed at start-up; its dead letter
/// still names the old stream's message. A replay reads the message back by sequence and
/// refuses one on another subject rather than apply a message of the new stream.
#[tokio::test]
async fn a_dead_letter_is_not_replayed_from_another_message_at_its_sequence() {
    let Some(env) = common::env().await else {
        return;
    };
    let poison_seq = publish_raw(&env.js, "t1", "garbage-old", b"not json").await;
    env.run_to_checkpoint().await;
    env.create_stream_again().await;
    common::Generator::new(9, &["t2"], 6)
        .publish(&env.js, 10)
        .await;

    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    let mut q = common::query(&running).await;
    let dead = common::dead_letters(&mut q, "").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].stream_sequence, poison_seq);
    let refused = q
        .replay_dead_letter(proto::projection::v1::ReplayDeadLetterRequest { id: dead[0].id })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    assert!(
        refused.message().contains("not on the dead letter's"),
        "{refused:?}"
    );
    let dead = common::dead_letters(&mut q, "").await;
    assert!(!dead[0].replayed, "nothing was replayed");
    running.stop().await.unwrap();
}

/// The stream is deleted under a running projection and created again with more messages than
/// it had applied: the durable consumer went with the old stream, and re-creating it "after
/// the checkpoint" would skip the new stream's first messages and fold the rest into the old
/// views. The node stops instead (the process restarts and is refused until rebuilt), and its
/// views keep the old stream's state.
#[tokio::test]
async fn a_stream_created_again_under_a_running_projection_stops_it() {
    let Some((env, generator)) = common::env_published(6, &["t1"], 10, 40).await else {
        return;
    };
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    let checkpoint = running.checkpoint();
    env.create_stream_again().await;
    let mut fresh = common::Generator::new(7, &["t2"], 6);
    fresh.publish(&env.js, checkpoint as usize + 20).await;

    tokio::time::timeout(WAIT, running.failed.cancelled())
        .await
        .unwrap_or_else(|_| panic!("still running at {}", running.checkpoint()));
    let why = running.failure();
    assert!(why.contains("deleted and created again"), "{why}");
    assert_eq!(
        running.checkpoint(),
        checkpoint,
        "nothing of the new stream applied"
    );
    running.abort().await;
    assert_views(&env.db_path("main"), &expected(&generator.carts));
}
