//! The writer alone (no NATS): a batch's messages are applied to the carts in memory and each
//! cart is written once, through the cache of committed states. Whatever the batch holds and
//! however it ends (several messages per cart, poison, a failed commit, a cache smaller than
//! the carts), the views equal the domain fold of what was committed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use common::{Generator, add, assert_views, expected};
use projection::changes::Incoming;
use projection::writer::{OnFailure, Writer};
use projection::{CommitAction, Hooks};
use shared::domain::{CartState, EventMessage};

/// `n` accepted commands on random carts, as messages at sequences `first..`.
fn messages(generator: &mut Generator, first: u64, n: u64) -> Vec<Incoming> {
    (first..first + n)
        .map(|seq| generator.step_offline(seq))
        .collect()
}

fn spawn(dir: &tempfile::TempDir, hooks: Hooks, cached_carts: u64) -> Writer {
    let (writer, _thread) =
        Writer::spawn(&dir.path().join("w.db"), hooks, "w", cached_carts).expect("writer");
    writer
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
            let out = writer.apply(batch.clone(), OnFailure::Stop).await.unwrap();
            assert_eq!(out.applied, batch.len(), "cache {cached}");
            assert_eq!(out.failure, None);
        }
        assert_eq!(writer.checkpoint(), 300);
        assert_views(&dir.path().join("w.db"), &expected(&generator.carts));

        // Redelivered messages are skipped, not applied twice.
        let out = writer
            .apply(msgs[..64].to_vec(), OnFailure::Stop)
            .await
            .unwrap();
        assert_eq!((out.applied, out.skipped), (0, 64));
        assert_views(&dir.path().join("w.db"), &expected(&generator.carts));
    }
}

#[tokio::test]
async fn a_failed_commit_leaves_nothing_cached() {
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
    writer
        .apply(msgs[..40].to_vec(), OnFailure::Stop)
        .await
        .unwrap();
    // Nothing of the batch that failed to commit may survive, in the file or the cache.
    let err = writer
        .apply(msgs[40..80].to_vec(), OnFailure::Stop)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert_eq!(writer.checkpoint(), 40);
    // Retried (as the consumer does), every message applies: none looks applied already.
    let out = writer
        .apply(msgs[40..80].to_vec(), OnFailure::Stop)
        .await
        .unwrap();
    assert_eq!(out.applied, 40);
    writer
        .apply(msgs[80..].to_vec(), OnFailure::Stop)
        .await
        .unwrap();
    assert_views(&dir.path().join("w.db"), &expected(&generator.carts));
}

#[tokio::test]
async fn a_poison_message_changes_nothing_and_the_rest_of_its_cart_follows() {
    let mut generator = Generator::new(23, &["t1"], 4);
    // A cart whose first message fails, with more messages in the same batch.
    let fresh = generator.index("t1", "cart-003");
    generator.frozen.push(fresh);
    let mut msgs = messages(&mut generator, 1, 30);
    let first_seq = 31;
    msgs.push(
        generator
            .execute_offline(fresh, add("TEST-SKU-123"), first_seq)
            .unwrap(),
    );
    msgs.extend(messages(&mut generator, 32, 10));
    msgs.push(
        generator
            .execute_offline(fresh, add("BOOK-NOVEL-01"), 42)
            .unwrap(),
    );
    // One more message of a cart that already has rows, failing mid-batch.
    let busy = msgs[5].clone();
    let busy_cart = busy.subject.clone();
    let poisoned = msgs
        .iter()
        .find(|m| m.subject == busy_cart && m.sequence > 35)
        .map(|m| m.sequence);

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
    writer
        .apply(msgs[..30].to_vec(), OnFailure::Stop)
        .await
        .unwrap();

    // Live: the batch stops at the poison; what came before it is committed.
    let out = writer
        .apply(msgs[30..].to_vec(), OnFailure::Stop)
        .await
        .unwrap();
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
    let mut carts = generator.carts.clone();
    for cart in &mut carts {
        cart.messages
            .retain(|(seq, _)| *seq != first_seq && Some(*seq) != poisoned);
    }
    assert_views(&dir.path().join("w.db"), &expected(&carts));

    // Later messages of both carts build on the state without the poison.
    failing.store(false, Ordering::SeqCst);
    let more = vec![
        generator
            .execute_offline(fresh, add("FOOD-COFFEE-500"), 43)
            .unwrap(),
        generator.step_offline(44),
    ];
    writer.apply(more, OnFailure::Stop).await.unwrap();
    let mut carts = generator.carts.clone();
    for cart in &mut carts {
        cart.messages
            .retain(|(seq, _)| *seq != first_seq && Some(*seq) != poisoned);
    }
    assert_views(&dir.path().join("w.db"), &expected(&carts));
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
        let out = writer.apply(batch, OnFailure::Stop).await.unwrap();
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

#[tokio::test]
async fn a_message_giving_a_cart_a_second_line_with_the_same_id_is_poison() {
    let mut generator = Generator::new(24, &["t1"], 1);
    let cart = generator.index("t1", "cart-000");
    let first = generator
        .execute_offline(cart, add("TEST-SKU-123"), 1)
        .unwrap();
    let mut second = generator
        .execute_offline(cart, add("BOOK-NOVEL-01"), 2)
        .unwrap();
    let mut msg = EventMessage::from_json(&second.payload).unwrap();
    msg.events[0].data["line_id"] = serde_json::json!(1);
    second.payload = msg.to_json().into();
    let third = generator
        .execute_offline(cart, add("FOOD-COFFEE-500"), 3)
        .unwrap();

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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    {
        let writer = spawn(&dir, Hooks::default(), 100);
        writer.apply(msgs, OnFailure::Stop).await.unwrap();
        writer.close().await.unwrap();
    }
    // Rewrite every state the way earlier builds stored it: plain JSON text.
    let conn = rusqlite::Connection::open(&path).unwrap();
    for sim in generator.carts.iter().filter(|c| !c.messages.is_empty()) {
        let mut state = CartState::new(sim.id.clone());
        for (seq, msg) in &sim.messages {
            state.apply_message(msg, *seq, 0);
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
    let out = writer.apply(more, OnFailure::Stop).await.unwrap();
    assert_eq!(out.applied, 100);
    assert_views(&path, &expected(&generator.carts));
}
