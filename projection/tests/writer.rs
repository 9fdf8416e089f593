//! The writer alone (no NATS): a batch's messages are applied to the carts in memory and each
//! cart is written once, through the cache of committed states. Whatever the batch holds and
//! however it ends (several messages per cart, poison, a failed commit, a cache smaller than
//! the carts), the views equal the domain fold of what was committed.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use cart_domain::{CartState, EventMessage};
use common::{Generator, add, assert_views, expected, expected_states, read_states};
use projection::write::changes::Incoming;
use projection::write::writer::{BatchOutcome, OnFailure, StateSettings, Writer};
use projection::{CommitAction, Hooks};

/// `n` accepted commands on random carts, as messages at sequences `first..`.
fn messages(generator: &mut Generator, first: u64, n: u64) -> Vec<Incoming> {
    (first..first + n)
        .map(|seq| generator.step_offline(seq))
        .collect()
}

/// The message at `seq` of cart `index` adding one `sku` (an accepted command).
fn added(generator: &mut Generator, index: usize, sku: &str, seq: u64) -> Incoming {
    generator
        .execute_offline(index, add(sku), seq)
        .expect("an accepted command")
}

/// A writer on the database at `path` keeping up to `cached_carts` states in memory, written
/// `flush_after` at the latest; and its thread.
fn spawn_at(
    path: &std::path::Path,
    hooks: Hooks,
    cached_carts: u64,
    flush_after: Duration,
) -> (Writer, std::thread::JoinHandle<()>) {
    let states = StateSettings {
        cached_carts,
        flush_after,
    };
    Writer::spawn(path, hooks, "w", states).expect("writer")
}

/// A new temporary directory and the path of `w.db` in it (not created yet).
fn db_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    (dir, path)
}

/// A writer on `w.db` in `dir` writing the states it keeps once an hour.
fn spawn(dir: &tempfile::TempDir, hooks: Hooks, cached_carts: u64) -> Writer {
    let path = dir.path().join("w.db");
    spawn_at(&path, hooks, cached_carts, Duration::from_secs(3600)).0
}

/// Applies `msgs` as the live consumer does (stopping at a failure), which must succeed.
async fn apply(writer: &Writer, msgs: &[Incoming]) -> BatchOutcome {
    writer.apply(msgs.to_vec(), OnFailure::Stop).await.unwrap()
}

#[tokio::test]
async fn batches_with_many_messages_per_cart_equal_the_fold_whatever_the_cache_size() {
    // 12 carts, 64 messages per batch: a batch holds several messages for most carts. A
    // cache of 0 reads every state back, 2 evicts constantly, 100 holds them all.
    for cached in [0, 2, 100] {
        let mut generator = Generator::new(21, &["t1", "t2"], 6);
        let msgs = messages(&mut generator, 1, 300);
        let dir = tempfile::tempdir().unwrap();
        let writer = spawn(&dir, Hooks::default(), cached);
        for (i, batch) in msgs.chunks(64).enumerate() {
            // Every other batch is decoded ahead, as the consumer does; the rest the writer
            // decodes itself (read-backs, replays).
            let batch = batch
                .iter()
                .map(|m| {
                    if i % 2 == 0 {
                        m.clone().decoded_ahead()
                    } else {
                        m.clone()
                    }
                })
                .collect::<Vec<_>>();
            let out = apply(&writer, &batch).await;
            assert_eq!(out.applied, batch.len(), "cache {cached}");
            assert_eq!(out.failure, None);
        }
        assert_eq!(writer.checkpoint(), 300);
        assert_views(&dir.path().join("w.db"), &expected(&generator.carts));

        // Redelivered messages are skipped, not applied twice.
        let out = apply(&writer, &msgs[..64]).await;
        assert_eq!((out.applied, out.skipped), (0, 64));
        assert_views(&dir.path().join("w.db"), &expected(&generator.carts));
    }
}

#[tokio::test]
async fn a_failed_commit_changes_nothing_in_the_file_or_in_memory() {
    let mut generator = Generator::new(22, &["t1"], 10);
    let msgs = messages(&mut generator, 1, 120);
    // The second commit fails.
    let calls = AtomicU32::new(0);
    let hooks = Hooks {
        before_commit: Some(Arc::new(move |_| {
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                CommitAction::FailCommit
            } else {
                CommitAction::Commit
            }
        })),
        ..Hooks::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let writer = spawn(&dir, hooks, 100);
    apply(&writer, &msgs[..40]).await;
    // Nothing of the batch that failed to commit may survive, in the file or the cache.
    let err = writer
        .apply(msgs[40..80].to_vec(), OnFailure::Stop)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(writer.checkpoint(), 40);
    // Retried (as the consumer does), every message applies: none looks applied already.
    let out = apply(&writer, &msgs[40..80]).await;
    assert_eq!(out.applied, 40);
    apply(&writer, &msgs[80..]).await;
    assert_views(&dir.path().join("w.db"), &expected(&generator.carts));
    // The states taken by the failed batch were not yet written: they went back to memory
    // as they were, so what is written now is the fold.
    writer.flush_states(true).await.unwrap();
    let (states, sequence) = read_states(&dir.path().join("w.db"));
    assert_eq!(sequence, 120);
    assert_eq!(states, expected_states(&generator.carts));
}

#[tokio::test]
async fn a_poison_message_changes_nothing_and_the_rest_of_its_cart_follows() {
    let mut generator = Generator::new(23, &["t1"], 4);
    // A cart whose first message fails, with more messages in the same batch.
    let fresh = generator.index("t1", "cart-003");
    generator.frozen.push(fresh);
    let mut msgs = messages(&mut generator, 1, 30);
    let first_seq = 31;
    msgs.push(added(&mut generator, fresh, "TEST-SKU-123", first_seq));
    msgs.extend(messages(&mut generator, 32, 10));
    msgs.push(added(&mut generator, fresh, "BOOK-NOVEL-01", 42));
    // One more message of a cart that already has rows, failing mid-batch.
    let busy = msgs[5].clone();
    let busy_cart = busy.subject.clone();
    let poisoned = msgs
        .iter()
        .find(|m| m.subject == busy_cart && m.sequence > 35)
        .map(|m| m.sequence);

    // The carts as they are without the failing messages.
    let without_poison = |generator: &Generator| {
        let mut carts = generator.carts.clone();
        for cart in &mut carts {
            cart.messages
                .retain(|(seq, _)| *seq != first_seq && Some(*seq) != poisoned);
        }
        carts
    };

    let failing = Arc::new(AtomicBool::new(true));
    let hooks = Hooks {
        fail_apply: Some(Arc::new({
            let failing = failing.clone();
            move |_msg: &EventMessage, seq| {
                (failing.load(Ordering::SeqCst) && (seq == first_seq || Some(seq) == poisoned))
                    .then(|| "simulated bug".to_owned())
            }
        })),
        ..Hooks::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let writer = spawn(&dir, hooks, 100);
    apply(&writer, &msgs[..30]).await;

    // Live: the batch stops at the poison; what came before it is committed.
    let out = apply(&writer, &msgs[30..]).await;
    assert_eq!(out.handled, 0);
    assert_eq!(
        out.failure.map(|f| f.reason).as_deref(),
        Some("simulated bug")
    );
    assert_eq!(writer.checkpoint(), 30);

    // Rebuild-style: poison is recorded and skipped, the rest of the batch is applied.
    let out = writer
        .apply(
            msgs[30..].to_vec(),
            OnFailure::Record {
                consumer: "projection-w".into(),
            },
        )
        .await
        .unwrap();
    let skipped = 1 + usize::from(poisoned.is_some());
    assert_eq!(out.applied, msgs.len() - 30 - skipped);
    assert_eq!(writer.checkpoint(), 42);
    assert_views(
        &dir.path().join("w.db"),
        &expected(&without_poison(&generator)),
    );

    // Later messages of both carts build on the state without the poison.
    failing.store(false, Ordering::SeqCst);
    let more = vec![
        added(&mut generator, fresh, "FOOD-COFFEE-500", 43),
        generator.step_offline(44),
    ];
    apply(&writer, &more).await;
    assert_views(
        &dir.path().join("w.db"),
        &expected(&without_poison(&generator)),
    );
}

#[tokio::test]
async fn an_undecodable_payload_is_poison_whether_or_not_it_was_decoded_ahead() {
    let mut generator = Generator::new(26, &["t1"], 3);
    let good = messages(&mut generator, 1, 3);
    let bad = Incoming::new(
        4,
        good[0].subject.clone(),
        None,
        bytes::Bytes::from_static(b"{not json"),
        1,
    );
    for ahead in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let writer = spawn(&dir, Hooks::default(), 100);
        let mut batch = good.clone();
        batch.push(if ahead {
            bad.clone().decoded_ahead()
        } else {
            bad.clone()
        });
        let out = apply(&writer, &batch).await;
        assert_eq!(out.handled, 3, "decoded ahead: {ahead}");
        let reason = out.failure.map(|f| f.reason).unwrap_or_default();
        assert!(
            reason.starts_with("payload is not a valid event envelope"),
            "decoded ahead: {ahead}: {reason}"
        );
        assert_eq!(writer.checkpoint(), 3);
        assert_views(&dir.path().join("w.db"), &expected(&generator.carts));
    }
}

/// A message at `seq` adding a product to cart `index` as a second line with id 1 (poison for
/// a cart that has line 1 already).
fn second_line_one(generator: &mut Generator, index: usize, seq: u64) -> Incoming {
    let mut inc = added(generator, index, "BOOK-NOVEL-01", seq);
    let mut msg = EventMessage::from_json(&inc.payload).unwrap();
    msg.events[0].data["line_id"] = serde_json::json!(1);
    inc.payload = msg.to_json().into();
    inc
}

#[tokio::test]
async fn a_message_giving_a_cart_a_second_line_with_the_same_id_is_poison() {
    let mut generator = Generator::new(24, &["t1"], 1);
    let cart = generator.index("t1", "cart-000");
    let first = added(&mut generator, cart, "TEST-SKU-123", 1);
    let second = second_line_one(&mut generator, cart, 2);
    let third = added(&mut generator, cart, "FOOD-COFFEE-500", 3);

    let dir = tempfile::tempdir().unwrap();
    let writer = spawn(&dir, Hooks::default(), 100);
    let out = writer
        .apply(vec![first, second, third], OnFailure::Stop)
        .await
        .unwrap();
    assert_eq!(out.handled, 1);
    let reason = out.failure.expect("poison").reason;
    assert!(reason.contains("second line 1"), "{reason}");
    let mut carts = generator.carts.clone();
    carts[cart].messages.truncate(1);
    assert_views(&dir.path().join("w.db"), &expected(&carts));
}

#[tokio::test]
async fn states_stored_as_json_by_earlier_builds_are_read_and_carried_on() {
    let mut generator = Generator::new(25, &["t1"], 8);
    let msgs = messages(&mut generator, 1, 100);
    let (dir, path) = db_file();
    {
        let writer = spawn(&dir, Hooks::default(), 100);
        apply(&writer, &msgs).await;
        writer.close().await.unwrap();
    }
    // Rewrite every state the way earlier builds stored it: plain JSON text.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for sim in generator.carts.iter().filter(|c| !c.messages.is_empty()) {
        let mut state = CartState::new(sim.id.clone());
        for (seq, msg) in &sim.messages {
            state.apply_message(msg, *seq, cart_domain::Retain::NONE);
        }
        let json = serde_json::to_string(&state).unwrap();
        let changed = conn
            .execute(
                "UPDATE cart_states SET state = ?1 WHERE tenant = ?2 AND cart_id = ?3",
                rusqlite::params![json, sim.tenant.as_str(), sim.id.as_str()],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    drop(conn);

    // A new writer (empty cache) reads them and goes on.
    let writer = spawn(&dir, Hooks::default(), 100);
    let more = messages(&mut generator, 101, 100);
    let out = apply(&writer, &more).await;
    assert_eq!(out.applied, 100);
    assert_views(&path, &expected(&generator.carts));
}

#[tokio::test]
async fn cart_states_are_written_behind_the_views_when_it_is_time_or_many_wait() {
    let mut generator = Generator::new(26, &["t1", "t2"], 12);
    let msgs = messages(&mut generator, 1, 200);
    let carts = expected_states(&generator.carts).len();
    assert!(carts > 8, "the generator touched few carts");

    // Room for every cart, an hour between flushes: the views follow every batch, the states
    // wait in memory until asked for.
    let (dir, path) = db_file();
    let writer = spawn(&dir, Hooks::default(), 1_000);
    for batch in msgs.chunks(50) {
        apply(&writer, batch).await;
    }
    assert_views(&path, &expected(&generator.carts));
    let (states, sequence) = read_states(&path);
    assert_eq!((states.len(), sequence), (0, 0), "no state written yet");
    assert_eq!(writer.flush_states(false).await.unwrap(), 0, "not yet time");
    assert_eq!(writer.flush_states(true).await.unwrap(), carts);
    let (states, sequence) = read_states(&path);
    assert_eq!(sequence, 200);
    assert_eq!(states, expected_states(&generator.carts));

    // Room for 4: a batch leaving more than 4 waiting writes them all, with its checkpoint.
    let (dir, path) = db_file();
    let writer = spawn(&dir, Hooks::default(), 4);
    for batch in msgs.chunks(50) {
        apply(&writer, batch).await;
        let (_, sequence) = read_states(&path);
        assert_eq!(sequence, writer.checkpoint(), "written with the batch");
    }
    let (states, _) = read_states(&path);
    assert_eq!(states, expected_states(&generator.carts));

    // No wait at all: every batch writes its states.
    let (_dir, path) = db_file();
    let (writer, _thread) = spawn_at(&path, Hooks::default(), 1_000, Duration::ZERO);
    apply(&writer, &msgs[..50]).await;
    let (states, sequence) = read_states(&path);
    assert_eq!(sequence, 50);
    assert!(!states.is_empty());
}

/// A writer keeping every state in memory for an hour, and its thread.
fn spawn_behind(path: &std::path::Path) -> (Writer, std::thread::JoinHandle<()>) {
    spawn_at(path, Hooks::default(), 1_000, Duration::from_secs(3600))
}

/// Drops the last handle of `writer` and waits for its thread to end.
async fn stop(writer: Writer, thread: std::thread::JoinHandle<()>) {
    drop(writer);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_writer_that_stops_writes_the_waiting_states_and_the_next_one_trusts_only_those() {
    let mut generator = Generator::new(27, &["t1"], 8);
    let msgs = messages(&mut generator, 1, 80);
    let (_dir, path) = db_file();
    let (writer, thread) = spawn_behind(&path);
    assert_eq!(writer.states_behind(), None, "a fresh file is whole");
    apply(&writer, &msgs).await;
    stop(writer, thread).await;
    let (states, sequence) = read_states(&path);
    assert_eq!(sequence, 80);
    assert_eq!(states, expected_states(&generator.carts));

    // Nothing to recover: the states are read back and carried on.
    let (writer, thread) = spawn_behind(&path);
    assert_eq!(writer.states_behind(), None);
    let more = messages(&mut generator, 81, 40);
    apply(&writer, &more).await;
    assert_views(&path, &expected(&generator.carts));
    stop(writer, thread).await;

    // A stored state lost behind the writer's back (none is in memory): applying to its cart
    // is refused with what to do, and nothing changes.
    let sim = generator
        .carts
        .iter()
        .find(|c| {
            let cart = &c.state.cart;
            !c.messages.is_empty() && cart.order.is_none() && !cart.payment_in_progress()
        })
        .expect("an open cart");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let deleted = conn
        .execute(
            "DELETE FROM cart_states WHERE tenant = ?1 AND cart_id = ?2",
            rusqlite::params![sim.tenant.as_str(), sim.id.as_str()],
        )
        .unwrap();
    assert_eq!(deleted, 1);
    drop(conn);
    let index = generator.index(sim.tenant.as_str(), sim.id.as_str());
    let next = added(&mut generator, index, "TEST-SKU-123", 121);
    let (writer, thread) = spawn_behind(&path);
    let err = writer
        .apply(vec![next], OnFailure::Stop)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing") && err.contains("rebuild"), "{err}");
    assert_eq!(writer.checkpoint(), 120);
    stop(writer, thread).await;
}

#[tokio::test]
async fn a_flush_writes_the_unwritten_state_of_a_cart_whose_message_failed() {
    let mut generator = Generator::new(28, &["t1"], 2);
    let (x, y) = (
        generator.index("t1", "cart-000"),
        generator.index("t1", "cart-001"),
    );
    let first = added(&mut generator, x, "TEST-SKU-123", 1);
    let bad = second_line_one(&mut generator, x, 2);
    let other = added(&mut generator, y, "TEST-SKU-123", 3);

    // Room for two states: the first batch leaves cart-000's waiting; the second takes it,
    // fails on it (recorded, as a rebuild does) and changes cart-001, so two wait: a flush,
    // which must write cart-000's state although this batch did not change it.
    let (dir, path) = db_file();
    let writer = spawn(&dir, Hooks::default(), 2);
    apply(&writer, &[first]).await;
    assert_eq!(read_states(&path).1, 0, "nothing written yet");
    let record = OnFailure::Record {
        consumer: "w".into(),
    };
    let out = writer.apply(vec![bad, other], record).await.unwrap();
    assert_eq!((out.applied, out.handled), (1, 2));
    let mut carts = generator.carts.clone();
    carts[x].messages.truncate(1);
    let (states, sequence) = read_states(&path);
    assert_eq!(sequence, 3, "flushed with the batch");
    assert_eq!(states, expected_states(&carts));
}
