//! Poison messages: retried up to max_deliver, then published to DEAD_LETTERS and the poison
//! table while later messages are still applied; replayed once the cause is fixed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cart_domain::{Command, EventRecord};
use common::generator::publish_raw;
use common::{Generator, add, assert_views, expected};
use projection::consume::dead_letter_stream::{
    DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ORIGINAL_SEQUENCE, DLQ_ORIGINAL_SUBJECT, DLQ_REASON,
};
use projection::{Hooks, Running};
use proto::projection::v1 as pb;
use shared::subjects::DEAD_LETTERS_STREAM;

const GARBAGE: &[u8] = b"{\"not\": \"an event envelope\"}";

/// Why a hooked message fails to apply.
const BUG: &str = "simulated bug in the view code";

/// Makes `cmd` the last message of `t1`'s `cart`, a valid message that a bug in this build
/// fails to apply while the returned switch is on; publishes 20 more messages and starts a
/// projection caught up past them. Returns the cart's index, the message's stream sequence,
/// the switch and the projection.
async fn hooked_failure(
    env: &common::Env,
    generator: &mut Generator,
    cart: &str,
    cmd: Command,
) -> (usize, u64, Arc<AtomicBool>, Running) {
    let (hooked, hooked_seq) = generator.execute_last(&env.js, "t1", cart, cmd).await;
    generator.publish(&env.js, 20).await;
    let (hooks, failing) = common::fail_apply_at(hooked_seq, BUG);
    let running = env.start_caught_up(env.config("main"), hooks).await;
    (hooked, hooked_seq, failing, running)
}

#[tokio::test]
async fn poison_is_dead_lettered_in_order_and_replayed_once_fixed() {
    let Some((env, mut generator)) = common::env_published(5, &["t1", "t2"], 8, 40).await else {
        return;
    };
    let garbage_seq = publish_raw(&env.js, "t1", "garbage-cart", GARBAGE).await;
    generator.publish(&env.js, 20).await;

    // A valid message made to fail by a hook (a bug in this build, fixed later). It stays the
    // cart's last message, so replaying it later gives exactly the fold.
    let (hooked, hooked_seq, failing, running) =
        hooked_failure(&env, &mut generator, "cart-003", add("TEST-SKU-AAA")).await;

    // DEAD_LETTERS holds both, with the original payload and where they came from.
    let dlq = env.js.get_stream(DEAD_LETTERS_STREAM).await.unwrap();
    let dead = dlq
        .direct_get_last_for_subject("dlq.projection-main.t1.garbage-cart")
        .await
        .expect("garbage dead-lettered");
    assert_eq!(&dead.payload[..], GARBAGE);
    let header = |name: &str| dead.headers.get(name).unwrap().as_str().to_owned();
    assert!(
        header(DLQ_REASON).contains("envelope"),
        "{}",
        header(DLQ_REASON)
    );
    assert_eq!(header(DLQ_ORIGINAL_SUBJECT), "cart.events.t1.garbage-cart");
    assert_eq!(header(DLQ_ORIGINAL_SEQUENCE), garbage_seq.to_string());
    assert_eq!(header(DLQ_CONSUMER), "projection-main");
    assert_eq!(header(DLQ_DELIVERIES), "3");
    assert_eq!(header(shared::headers::NATS_TENANT_ID), "t1");
    let dead = dlq
        .direct_get_last_for_subject("dlq.projection-main.t1.cart-003")
        .await
        .expect("hooked message dead-lettered");
    assert_eq!(dead.headers.get(DLQ_REASON).unwrap().as_str(), BUG);
    assert_eq!(dlq.get_info().await.unwrap().state.messages, 2);

    // The poison table lists them (per tenant, and all for the admin view).
    let mut q = common::query(&running).await;
    let all = common::dead_letters(&mut q, "").await;
    assert_eq!(all.len(), 2);
    let t1 = common::dead_letters(&mut q, "t1").await;
    assert_eq!(t1.len(), 2);
    assert!(t1.iter().all(|d| d.deliveries == 3 && !d.replayed));
    assert!(t1.iter().all(|d| d.consumer == "projection-main"));
    let t2 = common::dead_letters(&mut q, "t2").await;
    assert!(t2.is_empty());
    let garbage = t1
        .iter()
        .find(|d| d.stream_sequence == garbage_seq)
        .unwrap();
    let poisoned = t1.iter().find(|d| d.stream_sequence == hooked_seq).unwrap();
    assert_eq!(poisoned.cart_id, "cart-003");

    // Everything after the poison was applied; the hooked cart lacks only its last message.
    let mut want = expected(&generator.carts);
    let mut sim = generator.carts[hooked].clone();
    let last = sim.messages.pop().unwrap();
    assert_eq!(last.0, hooked_seq);
    let partial = expected([&sim]);
    want.carts.extend(partial.carts);
    want.applied.extend(partial.applied);
    assert_views(&running.db_path, &want);
    let status = common::status(&mut q).await;
    assert_eq!(status.dead_letters, 2);
    assert_eq!(status.lag, 0);

    // Replay: the garbage still fails; the hooked message applies once the bug is fixed.
    let r = common::replay(&mut q, garbage.id).await;
    assert!(!r.applied && r.error.contains("envelope"), "{r:?}");
    let r = common::replay(&mut q, poisoned.id).await;
    assert!(!r.applied, "still failing while the bug is there: {r:?}");
    failing.store(false, Ordering::SeqCst);
    let r = common::replay(&mut q, poisoned.id).await;
    assert!(r.applied, "{r:?}");
    let again = common::replay(&mut q, poisoned.id).await;
    assert!(
        !again.applied && again.error.contains("already replayed"),
        "{again:?}"
    );
    let missing = q
        .replay_dead_letter(pb::ReplayDeadLetterRequest { id: 9_999 })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let zero = q
        .replay_dead_letter(pb::ReplayDeadLetterRequest { id: 0 })
        .await
        .unwrap_err();
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);

    assert_views(&running.db_path, &expected(&generator.carts));
    let t1 = common::dead_letters(&mut q, "t1").await;
    let replayed: Vec<_> = t1.iter().filter(|d| d.replayed).map(|d| d.id).collect();
    assert_eq!(replayed, [poisoned.id]);
    let status = common::status(&mut q).await;
    assert_eq!(status.dead_letters, 1);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_event_types_are_counted_and_skipped() {
    let Some((env, mut generator)) = common::env_published(9, &["t1"], 4, 10).await else {
        return;
    };
    let index = generator.index("t1", "cart-001");
    generator
        .execute_with(&env.js, index, add("TEST-SKU-BBB"), |msg| {
            msg.events.push(EventRecord {
                event_type: "GiftWrapped".into(),
                v: 1,
                data: serde_json::json!({"paper": "gold"}),
            });
        })
        .await
        .expect("accepted");
    generator.publish(&env.js, 10).await;
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    assert_views(&running.db_path, &expected(&generator.carts));
    let mut q = common::query(&running).await;
    let status = common::status(&mut q).await;
    assert_eq!(
        status.dead_letters, 0,
        "an unknown event type is not poison"
    );
    let metrics = common::metrics(&running).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cart_projection_unknown_events_total")
                && l.contains("GiftWrapped")),
        "{metrics}"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_rebuild_applies_a_fixed_dead_letter_once() {
    let Some((env, mut generator)) = common::env_published(8, &["t1"], 6, 20).await else {
        return;
    };
    let (hooked, _, failing, running) =
        hooked_failure(&env, &mut generator, "cart-002", add("FOOD-CHOC-100")).await;
    let mut q = common::query(&running).await;
    let before = common::dead_letters(&mut q, "").await;
    assert_eq!(before.len(), 1);
    assert!(!before[0].replayed);

    // The bug is fixed; the rebuild applies the message in stream order.
    failing.store(false, Ordering::SeqCst);
    let report = running.rebuild().await.expect("rebuild");
    assert_eq!(report.failed, 0);
    assert_views(&running.db_path, &expected(&generator.carts));
    let after = common::dead_letters(&mut q, "").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id, "the dead letter keeps its id");
    assert!(after[0].replayed, "applied by the rebuild: no longer open");
    let again = common::replay(&mut q, after[0].id).await;
    assert!(!again.applied, "a replay must not apply it a second time");
    assert_views(&running.db_path, &expected(&generator.carts));
    let status = common::status(&mut q).await;
    assert_eq!(status.dead_letters, 0);

    // The live writer continues from the rebuilt states (which hold the fixed message), not
    // from the ones it had cached before the swap.
    generator
        .execute(&env.js, hooked, add("TEST-SKU-123"))
        .await
        .expect("accepted");
    env.fold_and_stop(running, &generator.carts).await;
}
