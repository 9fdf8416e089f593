//! Checkout effects against a real nats-server, aggregate and mock provider.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_nats::jetstream::stream::DirectGetErrorKind;
use cart_domain::event::{CartCleared, CheckoutLine, CheckoutStarted};
use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::money::TaxRate;
use cart_domain::{CheckoutStatus, Command, Event, EventMessage};
use common::*;
use futures::FutureExt;
use runner::provider::mock::Faults;
use shared::subjects::{
    CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE, WORKFLOW_COMMANDS_STREAM, WORKFLOW_EVENTS_STREAM,
};
use shared::test_support::{cart_messages, subject_messages, wait_until};
use shared::workflow::{
    CHECKOUT_KIND, CheckoutAction, CheckoutIntent, CheckoutOutcome, CheckoutResult, ORDER_KIND,
    PUSH_KIND, PushReceived,
};

fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

#[tokio::test]
async fn a_checkout_creates_one_provider_order_and_records_intent_and_result() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let cart = env.checked_out("c1", "a1").await;
    let order_id = cart.cart.provider_order_id.clone().unwrap();
    assert_eq!(env.mock.orders_for("a1"), 1);
    assert_eq!(env.mock.orders_for("c1"), 1);
    let order = env.mock.order(&order_id).unwrap();
    let totals = cart_domain::totals(&cart.cart);
    assert_eq!(
        order.order_amount, totals.total.inc_vat,
        "amounts come from the cart"
    );
    assert_eq!(order.merchant_reference1.as_deref(), Some("c1"));
    let cmd = shared::subjects::workflow_command(&tenant(), CHECKOUT_KIND, "c1").unwrap();
    let evt = shared::subjects::workflow_event(&tenant(), CHECKOUT_KIND, "c1").unwrap();
    assert_eq!(
        env.messages_of(&cmd, WORKFLOW_COMMANDS_STREAM).await,
        1,
        "one intent"
    );
    assert_eq!(
        env.messages_of(&evt, WORKFLOW_EVENTS_STREAM).await,
        1,
        "one result"
    );
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_runner_killed_after_the_provider_call_never_creates_a_second_order() {
    let Some(env) = env().await else { return };
    const CRASHES: u32 = 5;
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let hook = {
        let calls = calls.clone();
        move |attempt: String| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let tx = tx.clone();
            async move {
                if n <= CRASHES {
                    // Tell the test, then hang: the test kills the runner right here.
                    let _ = tx.send(attempt);
                    std::future::pending::<()>().await;
                }
            }
            .boxed()
        }
    };
    let hooks = after_provider_call(hook);
    env.checkout("crashy", "attempt-x").await;
    for _ in 0..CRASHES {
        let runner = env.quick_takeover_runner(hooks.clone()).await;
        let attempt = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("provider called")
            .unwrap();
        assert_eq!(attempt, "attempt-x");
        runner.abort().await;
    }
    let runner = env.quick_takeover_runner(hooks).await;
    let cart = env
        .wait_cart(
            "crashy",
            "order recorded after the crashes",
            order_created("attempt-x"),
        )
        .await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        CRASHES + 1,
        "the provider was called on every delivery"
    );
    assert_eq!(
        env.mock.orders_for("attempt-x"),
        1,
        "exactly one provider order"
    );
    let order_id = cart.cart.provider_order_id.unwrap();
    assert_eq!(
        env.mock
            .order(&order_id)
            .unwrap()
            .merchant_reference2
            .as_deref(),
        Some("attempt-x")
    );
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn transient_provider_errors_are_retried_into_one_order() {
    let Some(env) = env().await else { return };
    env.mock.set_faults(Faults {
        fail_next: 3,
        ..Default::default()
    });
    let runner = env.runner(Default::default()).await;
    env.checked_out("flaky", "a1").await;
    assert_eq!(env.mock.orders_for("a1"), 1);
    assert!(
        env.mock.stats().api_requests >= 4,
        "the failures were retried"
    );
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_multi_line_provider_error_is_dead_lettered_as_one_line_and_the_lane_keeps_working() {
    let Some(env) = env().await else { return };
    // A proxy in front of the provider answers every call with an HTML page.
    env.mock.set_faults(Faults {
        fail_next: u32::MAX,
        fail_body: Some("<html>\r\n<body>\n<h1>502 Bad Gateway</h1>\r</body>\n</html>".into()),
        ..Default::default()
    });
    let mut config = env.runner_config();
    config.consumer.max_deliver = 2;
    let runner = env.runner_with(config).await;
    env.checkout("proxied", "a1").await;
    env.wait_cart(
        "proxied",
        "checkout failed after the last retry",
        checkout_failed,
    )
    .await;
    let dlq = shared::subjects::dead_letter(
        shared::subjects::RUNNER_CHECKOUT_DURABLE,
        &tenant(),
        &CartId::parse("proxied").unwrap(),
    )
    .unwrap();
    let dead_letters = shared::subjects::DEAD_LETTERS_STREAM;
    wait_until(
        || async { env.messages_of(&dlq, dead_letters).await == 1 },
        WAIT,
    )
    .await
    .expect("the event is dead-lettered");
    // How the reason is made one header line is tested in `shared::nats::dead_letter`.
    let letters = subject_messages(&env.nats.client, dead_letters, &dlq).await;
    let reason = letters[0].headers.get(shared::headers::DLQ_REASON).unwrap();
    assert!(reason.as_str().contains("502 Bad Gateway"), "{reason}");

    // The same cart (so the same lane) checks out again once the provider is back.
    env.mock.set_faults(Faults::default());
    env.checkout_again("proxied", "a2", "order recorded").await;
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_handler_that_panics_is_retried_and_its_lane_goes_on() {
    let Some(env) = env().await else { return };
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook = {
        let panicked = panicked.clone();
        move |_attempt: String| -> futures::future::BoxFuture<'static, ()> {
            let first = !panicked.swap(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if first {
                    panic!("a bug after the provider call");
                }
            })
        }
    };
    let runner = env.runner(after_provider_call(hook)).await;
    env.checkout("panicky", "a1").await;
    env.wait_cart(
        "panicky",
        "order recorded on redelivery",
        order_created("a1"),
    )
    .await;
    assert!(panicked.load(std::sync::atomic::Ordering::SeqCst));
    // The retry after a panic that followed the provider call still placed one order.
    assert_eq!(env.mock.orders_for("a1"), 1);
    // The same cart (so the same lane) goes on.
    env.checkout_again("panicky", "a2", "the next checkout is handled")
        .await;
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_message_whose_handler_always_panics_is_dead_lettered_on_its_last_delivery() {
    let Some(env) = env().await else { return };
    let mut config = env.runner_config();
    config.consumer.max_deliver = 2;
    let hook = |_attempt: String| -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async { panic!("a bug after the provider call") })
    };
    let hooks = after_provider_call(hook);
    let runner = runner::start(config, hooks).await.unwrap();
    env.checkout("doomed", "a1").await;
    // Redelivered once, then kept in DEAD_LETTERS (before, it was nak'd on its last delivery
    // and the server dropped it unrecorded).
    wait_until(
        || async { env.dead_letters(RUNNER_CHECKOUT_DURABLE).await == 1 },
        WAIT,
    )
    .await
    .expect("the message is dead-lettered after its last delivery");
    // And the checkout is failed, so the shopper is not left waiting on it.
    let cart = env
        .wait_cart("doomed", "checkout failed", checkout_failed)
        .await;
    assert!(!cart.cart.payment_in_progress());
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_permanently_failing_provider_fails_the_checkout_and_the_cart_stays_usable() {
    let Some(env) = env().await else { return };
    env.mock.set_faults(Faults {
        refuse: true,
        ..Default::default()
    });
    let runner = env.runner(Default::default()).await;
    env.checkout("refused", "a1").await;
    let cart = env
        .wait_cart("refused", "checkout failed", checkout_failed)
        .await;
    let Some(cart_domain::cart::Checkout {
        status: CheckoutStatus::Failed { code, reason },
        ..
    }) = cart.cart.checkout.as_deref()
    else {
        unreachable!()
    };
    assert_eq!(code, "REJECTED");
    assert!(reason.contains("injected permanent refusal"), "{reason}");
    assert!(!cart.cart.payment_in_progress());
    assert_eq!(env.mock.orders_for("a1"), 0);
    env.exec("refused", add("BOOK-NOVEL-01", 1))
        .await
        .expect("the cart is usable again");
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_cart_changed_after_checkout_started_updates_the_same_provider_order() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let order_id = env.checked_out_order("changed", "a1").await;

    // The shopper goes back and adds an item (this re-opens the checkout), then checks out again.
    env.exec("changed", add("BOOK-NOVEL-01", 1)).await.unwrap();
    let second = env.checkout_again("changed", "a2", "order updated").await;
    assert_eq!(
        second.cart.provider_order_id.as_deref(),
        Some(order_id.as_str())
    );
    assert_eq!(
        env.mock.orders_for("changed"),
        1,
        "one provider order for the cart"
    );
    assert_eq!(env.mock.stats().orders, 1);
    let order = env.mock.order(&order_id).unwrap();
    assert_eq!(
        order.order_amount,
        cart_domain::totals(&second.cart).total.inc_vat
    );
    assert_eq!(
        order.order_lines.len(),
        2,
        "the update carries the new line"
    );
    runner.drain(DRAIN).await;
}

/// A push as the gateway records it: no Msg-Id, so every push is kept.
async fn publish_push(env: &Env, order_id: &str) {
    publish_push_as(env, TENANT, order_id).await;
}

/// A push naming `tenant` (a forged one names another tenant than its order).
async fn publish_push_as(env: &Env, tenant: &str, order_id: &str) {
    let tenant = TenantId::parse(tenant).unwrap();
    let subject = shared::subjects::workflow_command(&tenant, PUSH_KIND, order_id).unwrap();
    let push = PushReceived {
        tenant: tenant.to_string(),
        provider_order_id: order_id.into(),
        received_at: "2026-11-23T12:00:00Z".into(),
        source: Default::default(),
    };
    env.publish_json(subject, tenant, &push).await;
}

#[tokio::test]
async fn duplicate_pushes_place_the_order_once() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let order_id = env.checked_out_order("paid", "a1").await;
    // A push before payment changes nothing; then the shopper pays and the provider pushes
    // three times (it retries until acknowledged).
    publish_push(&env, &order_id).await;
    env.mock.mark_complete(&order_id).unwrap();
    for _ in 0..3 {
        publish_push(&env, &order_id).await;
    }
    let placed = env
        .wait_cart("paid", "order placed", |s| s.cart.order.is_some())
        .await;
    // The checkout effect, the early push and the three pushes after payment: each one is
    // read from the provider, only the cart de-duplicates.
    until_completed(&runner, 5, "every push handled").await;
    assert!(
        env.mock.stats().acknowledged.contains(&order_id),
        "acknowledged with the provider"
    );
    let paid = CartId::parse("paid").unwrap();
    let messages = cart_messages(&env.nats.client, &tenant(), &paid).await;
    let placed_count = messages
        .iter()
        .filter(|m| {
            m.headers
                .get(shared::headers::CART_EVENT_TYPES)
                .is_some_and(|v| v.as_str().contains("OrderPlaced"))
        })
        .count();
    assert_eq!(placed_count, 1, "one OrderPlaced");
    assert!(placed.cart.order.unwrap().order_reference.len() >= 8);
    let err = env.exec("paid", add("BOOK-NOVEL-01", 1)).await.unwrap_err();
    assert_eq!(
        err.code,
        shared::ErrorCode::CartLocked,
        "no mutation after the order"
    );
    runner.drain(DRAIN).await;
}

/// Pushes are hints: one for an order the provider does not know, one naming another tenant
/// and one before payment are each read and change nothing, block nothing and dead-letter
/// nothing; the real push after payment places the order.
#[tokio::test]
async fn forged_and_early_pushes_change_nothing_and_block_the_real_one_from_nothing() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let order_id = env.checked_out_order("forged", "a1").await;
    publish_push(&env, "no-such-order").await;
    publish_push_as(&env, "evil", &order_id).await;
    publish_push(&env, &order_id).await;
    until_completed(&runner, 4, "the three pushes are handled").await;
    assert!(
        env.cart("forged").await.cart.order.is_none(),
        "nothing paid yet"
    );
    env.mock.mark_complete(&order_id).unwrap();
    publish_push(&env, &order_id).await;
    env.wait_cart("forged", "order placed", |s| s.cart.order.is_some())
        .await;
    assert_eq!(
        env.dead_letters(shared::subjects::RUNNER_PUSH_DURABLE)
            .await,
        0
    );
    let metrics = runner_metrics(&runner).await;
    for result in ["unknown_order", "foreign_tenant", "incomplete", "confirmed"] {
        assert!(
            metrics.contains(&format!(
                "cart_runner_pushes_total{{result=\"{result}\"}} 1"
            )),
            "{result}: {metrics}"
        );
    }
    runner.drain(DRAIN).await;
}

async fn runner_metrics(runner: &runner::Running) -> String {
    reqwest::get(format!("http://{}/metrics", runner.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A paid order whose push never arrives is placed by reconciliation, which reads waiting
/// orders from the provider again; then reconciliation leaves it alone.
#[tokio::test]
async fn a_paid_order_whose_push_was_lost_is_placed_by_reconciliation() {
    let Some(env) = env().await else { return };
    let mut config = env.runner_config();
    config.reconcile_interval_secs = 1;
    config.reconcile_after_secs = 1;
    let runner = env.runner_with(config).await;
    let order_id = env.checked_out_order("lost-push", "a1").await;
    env.mock.mark_complete(&order_id).unwrap();
    let placed = env
        .wait_cart("lost-push", "placed without a push", |s| {
            s.cart.order.is_some()
        })
        .await;
    assert_eq!(placed.cart.order.unwrap().provider_order_id, order_id);
    wait_until(
        || async { env.mock.stats().acknowledged.contains(&order_id) },
        WAIT,
    )
    .await
    .expect("acknowledged with the provider");
    let outcome = order_outcome(&env, &order_id).await;
    assert_eq!(outcome.outcome, CheckoutOutcome::Placed, "{outcome:?}");
    let last = last_result(&env, "lost-push").await;
    assert_eq!(
        last.outcome,
        CheckoutOutcome::Created,
        "the checkout's own record"
    );
    let reconciled = tests::requests::metric_value(
        &runner_metrics(&runner).await,
        "cart_runner_reconciled_orders_total",
    );
    assert!(
        reconciled >= 1.0,
        "reconciliation asked for the order: {reconciled}"
    );
    runner.drain(DRAIN).await;
}

/// A paid order whose push was lost, then a second checkout of the same cart: its update of the
/// completed order is refused and the cart's last result is that failure. Reconciliation still
/// reads the paid order (every waiting order, not each cart's last), so it is placed or its
/// mismatch recorded, never left paid and unnoticed.
#[tokio::test]
async fn a_paid_order_is_reconciled_even_after_a_later_attempt_failed() {
    let Some(env) = env().await else { return };
    let mut config = env.runner_config();
    config.reconcile_interval_secs = 0;
    let runner = env.runner_with(config.clone()).await;
    let order_id = env.checked_out_order("paid-then-retried", "a1").await;
    env.mock.mark_complete(&order_id).unwrap();
    env.exec("paid-then-retried", start("a2")).await.unwrap();
    wait_until(
        || async {
            last_result_of(&env, "paid-then-retried")
                .await
                .is_some_and(|r| r.attempt_id == "a2" && r.outcome == CheckoutOutcome::Failed)
        },
        WAIT,
    )
    .await
    .expect("the second attempt fails: a completed order cannot be updated");
    runner.drain(DRAIN).await;

    config.reconcile_interval_secs = 1;
    config.reconcile_after_secs = 1;
    let runner = env.runner_with(config).await;
    wait_until(
        || async {
            last_workflow_event_of(&env, ORDER_KIND, &order_id)
                .await
                .is_some()
        },
        WAIT,
    )
    .await
    .expect("reconciliation reads the paid order");
    let outcome = order_outcome(&env, &order_id).await;
    assert!(
        matches!(
            outcome.outcome,
            CheckoutOutcome::Placed | CheckoutOutcome::Mismatched
        ),
        "{outcome:?}"
    );
    runner.drain(DRAIN).await;
}

/// The last result of the cart's checkout, if any.
async fn last_result_of(env: &Env, cart: &str) -> Option<CheckoutResult> {
    last_workflow_event_of(env, CHECKOUT_KIND, cart).await
}

/// The last workflow event of the `kind` workflow `id`, if any.
async fn last_workflow_event_of(env: &Env, kind: &str, id: &str) -> Option<CheckoutResult> {
    let subject = shared::subjects::workflow_event(&tenant(), kind, id).unwrap();
    let stream = env.js.get_stream(WORKFLOW_EVENTS_STREAM).await.unwrap();
    // Only "no such message" is `None`: any other error is the test's to see.
    match stream.direct_get_last_for_subject(subject).await {
        Ok(msg) => Some(serde_json::from_slice(&msg.payload).unwrap()),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => None,
        Err(e) => panic!("reading the last {kind} event of {id}: {e}"),
    }
}

/// The recorded outcome of a paid provider order.
async fn order_outcome(env: &Env, order_id: &str) -> CheckoutResult {
    last_workflow_event(env, ORDER_KIND, order_id).await
}

/// The last recorded result of the cart's checkout.
async fn last_result(env: &Env, cart: &str) -> CheckoutResult {
    last_workflow_event(env, CHECKOUT_KIND, cart).await
}

/// The last workflow event of the `kind` workflow `id` (there must be one).
async fn last_workflow_event(env: &Env, kind: &str, id: &str) -> CheckoutResult {
    last_workflow_event_of(env, kind, id)
        .await
        .unwrap_or_else(|| panic!("no {kind} event for {id}"))
}

/// The shopper checks out, changes the cart, then pays the old provider order: the order is
/// not placed and not acknowledged, the cart records why, the mismatch is counted once and
/// (with `mismatch_action = cancel`) the payment is cancelled; a new checkout gets a new
/// provider order, which is placed for the new amount.
#[tokio::test]
async fn a_paid_order_the_cart_moved_past_is_recorded_never_placed_nor_acknowledged() {
    let Some(env) = env().await else { return };
    let mut config = env.runner_config();
    config.mismatch_action = runner::config::MismatchAction::Cancel;
    let runner = env.runner_with(config).await;
    let old_order = env.checked_out_order("moved", "a1").await;
    env.exec("moved", add("BOOK-NOVEL-01", 1)).await.unwrap();
    env.mock.mark_complete(&old_order).unwrap();
    publish_push(&env, &old_order).await;
    publish_push(&env, &old_order).await;
    let cart = env
        .wait_cart("moved", "mismatch recorded", |s| {
            s.cart.mismatch(&old_order).is_some()
        })
        .await;
    until_completed(&runner, 3, "both pushes handled").await;
    assert!(cart.cart.order.is_none(), "never placed");
    assert_eq!(cart.cart.mismatch(&old_order).unwrap().code, "cart_changed");
    assert_eq!(
        cart.cart.payment_status.as_deref(),
        Some("payment_mismatch")
    );
    let stats = env.mock.stats();
    assert!(
        !stats.acknowledged.contains(&old_order),
        "never acknowledged"
    );
    assert_eq!(stats.cancelled, vec![old_order.clone()], "cancelled");
    assert_eq!(
        stats.cancel_requests, 1,
        "the second push finds the outcome recorded and does nothing more"
    );
    let metrics = runner_metrics(&runner).await;
    assert!(
        metrics.contains("cart_runner_payment_mismatches_total{reason=\"cart_changed\"} 1"),
        "counted once: {metrics}"
    );
    let outcome = order_outcome(&env, &old_order).await;
    assert_eq!(outcome.outcome, CheckoutOutcome::Mismatched, "{outcome:?}");

    let cart = env
        .checkout_again("moved", "a2", "new order recorded")
        .await;
    let new_order = cart.cart.provider_order_id.clone().unwrap();
    assert_ne!(new_order, old_order, "a paid order is never updated");
    env.mock.mark_complete(&new_order).unwrap();
    publish_push(&env, &new_order).await;
    let placed = env
        .wait_cart("moved", "order placed", |s| s.cart.order.is_some())
        .await;
    assert_eq!(
        placed.cart.order.as_ref().unwrap().provider_order_id,
        new_order
    );
    assert_eq!(
        env.mock.order(&new_order).unwrap().order_amount,
        cart_domain::totals(&placed.cart).total.inc_vat
    );
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn drain_finishes_in_flight_effects_and_starts_no_new_ones() {
    use proto::runner::admin::v1 as admin;
    let Some(env) = env().await else { return };
    env.mock.set_faults(Faults {
        delay_ms: 700,
        ..Default::default()
    });
    let runner = env.runner(Default::default()).await;
    let mut client = admin_client(&runner).await;
    env.checkout("inflight", "a1").await;
    wait_until(|| async { runner.status.in_flight() > 0 }, WAIT)
        .await
        .expect("the effect is in flight");
    let drained = client
        .drain(admin::DrainRequest { wait_seconds: 20 })
        .await
        .unwrap()
        .into_inner();
    assert!(drained.draining && drained.idle && drained.in_flight == 0);
    env.wait_cart(
        "inflight",
        "the in-flight effect finished",
        order_created("a1"),
    )
    .await;

    // A checkout after the drain stays pending on the consumer: this runner takes no new work.
    env.mock.set_faults(Faults::default());
    env.checkout("after-drain", "b1").await;
    wait_until(
        || async {
            let info = shared::test_support::consumer_info(
                &env.js,
                CART_EVENTS_STREAM,
                RUNNER_CHECKOUT_DURABLE,
            )
            .await;
            info.num_pending >= 1 && info.num_ack_pending == 0
        },
        WAIT,
    )
    .await
    .expect("the new checkout event waits undelivered");
    let status = client
        .status(admin::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.draining && status.consumer_lag >= 1);
    assert_eq!(env.mock.orders_for("b1"), 0, "no new effect was started");
    runner.abort().await;
    // Another runner takes it over.
    let next = env.runner(Default::default()).await;
    env.wait_cart(
        "after-drain",
        "picked up by the next runner",
        order_created("b1"),
    )
    .await;
    next.drain(DRAIN).await;
}

#[tokio::test]
async fn reload_switches_the_provider_without_a_restart() {
    use proto::runner::admin::v1 as admin;
    let Some(env) = env().await else { return };
    let second = runner::provider::mock::MockProvider::new("merchant", "secret");
    let stop = tokio_util::sync::CancellationToken::new();
    let (second_addr, _) = second.serve("127.0.0.1:0", stop.clone()).await.unwrap();
    let mut cfg = env.runner_config().provider;
    cfg.base_url = format!("http://{second_addr}");
    let hooks = runner::Hooks {
        reload: Some(Arc::new(move || Ok(cfg.clone()))),
        ..Default::default()
    };
    let runner = env.runner(hooks).await;
    let mut client = admin_client(&runner).await;
    let reloaded = client
        .reload(admin::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.provider_base_url, format!("http://{second_addr}"));
    assert_eq!(reloaded.generation, 2);
    env.checked_out("reloaded", "a1").await;
    assert_eq!(second.orders_for("a1"), 1, "the new provider got the order");
    assert_eq!(env.mock.orders_for("a1"), 0);
    runner.drain(DRAIN).await;
    stop.cancel();
}

#[tokio::test]
async fn other_cart_events_are_skipped_without_effects() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    for _ in 0..5 {
        env.exec("browsing", add("TEST-SKU-456", 1)).await.unwrap();
    }
    env.exec("browsing", Command::ClearCart).await.unwrap();
    env.checked_out("buyer", "a1").await;
    // Every event was acked, none nak'ed (left pending) or dead-lettered. Which events reach
    // the handler at all is pinned by `checkout::tests`.
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    assert_eq!(env.dead_letters(RUNNER_CHECKOUT_DURABLE).await, 0);
    assert_eq!(env.mock.stats().orders, 1);
    assert_eq!(
        runner.status.completed_count(),
        1,
        "only the CheckoutStarted was an effect"
    );
    runner.drain(DRAIN).await;
}

/// An event message as a publisher that sets no `cart-event-types` header writes it.
async fn publish_without_types(env: &Env, cart: &str, revision: u64, event: Event) {
    let cart = CartId::parse(cart).unwrap();
    let message = EventMessage::new(
        tenant(),
        cart.clone(),
        CommandId::new(),
        revision,
        time::OffsetDateTime::now_utc(),
        &[event],
    );
    let subject = shared::subjects::cart_events(&tenant(), &cart);
    env.publish_json(subject, tenant(), &message).await;
}

#[tokio::test]
async fn events_without_a_types_header_are_decoded_to_find_checkouts() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    // Same cart, so one lane, in order: the other event is handled before the checkout.
    publish_without_types(&env, "headerless", 1, Event::CartCleared(CartCleared {})).await;
    publish_without_types(
        &env,
        "headerless",
        2,
        Event::CheckoutStarted(CheckoutStarted {
            attempt_id: "h1".into(),
            provider_order_id: None,
            currency: "SEK".into(),
            country: "se".into(),
            total_amount: 10_000,
            total_tax_amount: 2_000,
            lines: vec![CheckoutLine {
                kind: "physical".into(),
                reference: "TEST-SKU-123".into(),
                name: "Test".into(),
                quantity: 1,
                unit_price: 10_000,
                tax_rate: TaxRate(2_500),
                total_amount: 10_000,
                total_tax_amount: 2_000,
                total_discount_amount: 0,
            }],
        }),
    )
    .await;
    let result = shared::subjects::workflow_event(&tenant(), CHECKOUT_KIND, "headerless").unwrap();
    wait_until(
        || async { env.messages_of(&result, WORKFLOW_EVENTS_STREAM).await == 1 },
        WAIT,
    )
    .await
    .expect("the checkout's result is recorded");
    assert_eq!(env.mock.orders_for("h1"), 1, "the checkout happened");
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    assert_eq!(
        env.dead_letters(RUNNER_CHECKOUT_DURABLE).await,
        0,
        "the event without a checkout was acked, not dead-lettered"
    );
    assert_eq!(runner.status.completed_count(), 1);
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_deleted_consumer_is_recreated_and_checkouts_continue() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    env.checked_out("before", "a1").await;
    let per_checkout = env.mock.stats().api_requests;
    // A second attempt: were the first one's event replayed, the handler would skip it (see
    // `a_full_replay_calls_the_provider_for_no_attempt_already_handled`); this test pins that
    // the consumer does not replay it at all.
    env.checkout_again("before", "a2", "second order recorded")
        .await;
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    let stream = env.js.get_stream(CART_EVENTS_STREAM).await.unwrap();
    let handled = stream.get_info().await.unwrap().state.last_sequence;
    wait_until(
        || async { runner.status.ack_floor(RUNNER_CHECKOUT_DURABLE) >= handled },
        WAIT,
    )
    .await
    .expect("the runner read the consumer's ack floor");
    let before = env.mock.stats().api_requests;
    // An operator (or a stream re-creation) removes the durable consumer under the runner.
    // nats-server can refuse to delete a consumer in active use ("directory not empty"):
    // retry until a delete succeeds.
    wait_until(
        || {
            let stream = stream.clone();
            async move {
                stream
                    .delete_consumer(RUNNER_CHECKOUT_DURABLE)
                    .await
                    .is_ok()
            }
        },
        WAIT,
    )
    .await
    .expect("the consumer is deleted");
    env.checkout("after", "b1").await;
    env.wait_cart(
        "after",
        "order recorded after the consumer came back",
        order_created("b1"),
    )
    .await;
    assert_eq!(env.mock.orders_for("b1"), 1);
    assert_eq!(
        env.mock.stats().api_requests,
        before + per_checkout,
        "the re-created consumer resumed after what was handled: a1 and a2 were not sent again"
    );
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_full_replay_calls_the_provider_for_no_attempt_already_handled() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    env.checked_out("replayed", "a1").await;
    env.checkout_again("replayed", "a2", "second order recorded")
        .await;
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    runner.drain(DRAIN).await;
    let before = env.mock.stats().api_requests;
    // The consumer disappears while the runner is down: the next one creates it anew, and it
    // replays CART_EVENTS from sequence 1, a1's CheckoutStarted (no longer the cart's newest
    // attempt) and a2's (already done) included.
    let stream = env.js.get_stream(CART_EVENTS_STREAM).await.unwrap();
    stream
        .delete_consumer(RUNNER_CHECKOUT_DURABLE)
        .await
        .unwrap();
    let runner = env.runner(Default::default()).await;
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    assert_eq!(
        env.mock.stats().api_requests,
        before,
        "replayed attempts did not call the provider (a1 would have updated a2's order)"
    );
    assert_eq!(env.dead_letters(RUNNER_CHECKOUT_DURABLE).await, 0);
    env.wait_cart("replayed", "the cart keeps a2's order", order_created("a2"))
        .await;
    runner.drain(DRAIN).await;
}

/// A paid order the cart moved past (a mismatch) stays off the cart when the runner's result
/// for its attempt comes back later: a re-created consumer replays the attempt and feeds the
/// result back under its command id, which JetStream and the cart no longer remember once its
/// duplicate window and the cart's `recent` ids have passed (that is the command sent here, with
/// an id of its own). Shown again the order could never be paid (the provider refuses to update
/// a completed order), and the cart could not check out any more.
#[tokio::test]
async fn a_late_result_never_brings_back_a_paid_order_that_was_not_placed() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let old_order = env.checked_out_order("paid-then-replayed", "a1").await;
    env.exec("paid-then-replayed", add("BOOK-NOVEL-01", 1))
        .await
        .unwrap();
    env.mock.mark_complete(&old_order).unwrap();
    publish_push(&env, &old_order).await;
    env.wait_cart("paid-then-replayed", "mismatch recorded", |s| {
        s.cart.mismatch(&old_order).is_some()
    })
    .await;
    let late = Command::RecordProviderOrder {
        attempt_id: "a1".into(),
        provider_order_id: old_order.clone(),
        status: "checkout_incomplete".into(),
    };
    let cart = env.exec("paid-then-replayed", late).await.unwrap();
    assert_eq!(
        cart.cart.provider_order_id, None,
        "the paid order stays off the cart"
    );
    let cart = env
        .checkout_again("paid-then-replayed", "a2", "new order recorded")
        .await;
    assert_ne!(cart.cart.provider_order_id.unwrap(), old_order);
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn the_embedded_mock_listening_on_every_interface_is_called_over_loopback() {
    use proto::runner::admin::v1 as admin;
    let Some(env) = env().await else { return };
    // As under compose: no provider URL, the mock on 0.0.0.0 so a published port reaches it.
    let mut config = env.runner_config();
    config.provider.base_url = String::new();
    config.mock_provider_addr = "0.0.0.0:0".into();
    let runner = env.runner_with(config).await;
    let status = admin_client(&runner)
        .await
        .status(admin::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.provider_base_url.starts_with("http://127.0.0.1:"),
        "{}",
        status.provider_base_url
    );
    env.checked_out("embedded", "a1").await;
    assert_eq!(env.mock.orders_for("a1"), 0, "the embedded mock took it");
    runner.drain(DRAIN).await;
}

#[tokio::test]
async fn a_shard_count_below_the_aggregates_claims_stops_startup() {
    let Some(env) = env().await else { return };
    // An aggregate cluster with more shards than the runner's count has claimed shard 300.
    let placement = env
        .js
        .get_key_value(shared::subjects::CART_PLACEMENT_BUCKET)
        .await
        .unwrap();
    placement
        .put(shared::subjects::placement_key(300), "{}".into())
        .await
        .unwrap();
    let err = runner::start(env.runner_config(), runner::Hooks::default())
        .await
        .err()
        .expect("start must fail");
    let message = format!("{err:#}");
    assert!(message.contains("RUNNER_SHARD_COUNT is 256"), "{message}");
}

/// What the runner acts on (a cart's last checkout result and intent, a paid order's outcome)
/// is read from the stream's leader. A direct get may be answered by a replica that has not
/// stored the newest record yet: the runner would call the provider for an attempt already
/// done, or update an order already paid.
#[tokio::test]
async fn the_runner_reads_what_it_acts_on_from_the_streams_leader() {
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let order_id = env.checked_out_order("c1", "a1").await;
    let as_runner = shared::nats::connect(&env.nats.nats("runner"))
        .await
        .unwrap();
    let records = runner::records::Records::new(
        async_nats::jetstream::new(as_runner),
        5,
        std::time::Duration::from_secs(5),
    );
    // Every JetStream API request of the account, in the order the server takes them. A
    // flush only writes the subscription to the socket: the server may take the first read
    // (from another connection) before it. A marker seen on it proves the server has it.
    let mut api = env.nats.client.subscribe("$JS.API.>").await.unwrap();
    subjects_until(
        &env.nats.client,
        &mut api,
        "this test's subscription is in place",
    )
    .await;

    let result = records
        .last_checkout::<CheckoutResult>(&tenant(), "c1")
        .await;
    assert_eq!(result.unwrap().unwrap().attempt_id, "a1");
    let intent = records
        .last_checkout::<shared::workflow::CheckoutIntent>(&tenant(), "c1")
        .await;
    assert_eq!(intent.unwrap().unwrap().attempt_id, "a1");
    let outcome = records.last_order_outcome(&tenant(), &order_id).await;
    assert!(outcome.unwrap().is_none(), "the order is not paid");

    // Every request the reads above made reaches the subscription before this marker.
    let asked: Vec<String> = subjects_until(&env.nats.client, &mut api, "the end of the reads")
        .await
        .into_iter()
        .filter(|s| {
            s.starts_with("$JS.API.DIRECT.GET.WORKFLOW_")
                || s.starts_with("$JS.API.STREAM.MSG.GET.WORKFLOW_")
        })
        .collect();
    assert_eq!(
        asked,
        [
            "$JS.API.STREAM.MSG.GET.WORKFLOW_EVENTS",
            "$JS.API.STREAM.MSG.GET.WORKFLOW_COMMANDS",
            "$JS.API.STREAM.MSG.GET.WORKFLOW_EVENTS"
        ],
        "each read asks the leader, none is a direct get"
    );
    runner.drain(DRAIN).await;
}

/// Publishes `marker` on `$JS.API.INFO` through `client` (which `api` belongs to) and returns
/// the subjects `api` received before it: every request the server took before the marker.
async fn subjects_until(
    client: &async_nats::Client,
    api: &mut async_nats::Subscriber,
    marker: &'static str,
) -> Vec<String> {
    use futures::StreamExt as _;
    let marker = bytes::Bytes::from_static(marker.as_bytes());
    client
        .publish("$JS.API.INFO", marker.clone())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(WAIT, api.next()).await;
        let msg = next.expect("the marker").unwrap();
        if msg.payload == marker {
            return seen;
        }
        seen.push(msg.subject.to_string());
    }
}

/// A purchase the cart approved is read again within the cart's 10-minute hold, counted from
/// the approval. Counted from the order's creation, an order paid 17 minutes after it was
/// created (its push lost) would next be read at 32 minutes: after the hold, with the cart
/// free to change under the paid order, which would then not be placed.
#[tokio::test]
async fn a_purchase_approved_long_after_its_order_was_created_is_read_within_the_hold() {
    use runner::reconcile::{Approvals, Reconciler};
    use std::time::Duration;
    let Some((env, runner)) = env_and_runner().await else {
        return;
    };
    let order_id = env.checked_out_order("late-payer", "a1").await;
    let created = time::OffsetDateTime::now_utc();
    let paid = env
        .cart("late-payer")
        .await
        .cart
        .checkout
        .unwrap()
        .paid_in_full();
    let approve = Command::ApprovePayment {
        provider_order_id: order_id.clone(),
        paid,
    };
    env.exec("late-payer", approve).await.unwrap();
    wait_until(
        || async { runner.approvals.approved_at(TENANT, &order_id).is_some() },
        WAIT,
    )
    .await
    .expect("the checkout lane notes the approval");

    // The passes of a minute ago and now, as if the approval had come 17 minutes after the
    // order was created: the order is due 2 minutes after its approval, not before 32 after
    // its creation.
    let minutes = |m: i64| created + time::Duration::minutes(m);
    runner
        .approvals
        .note(TENANT, &order_id, minutes(17).unix_timestamp());
    let reconciler = |approvals: Approvals| Reconciler {
        records: runner::records::Records::new(env.js.clone(), 5, Duration::from_secs(5)),
        interval: Duration::from_secs(60),
        after: Duration::from_secs(120),
        max_age: Duration::from_secs(48 * 3600),
        approvals,
    };
    let by_approval = reconciler(runner.approvals.clone());
    let asked = by_approval.pass(minutes(19), Some(minutes(18))).await;
    assert_eq!(asked.unwrap(), 1, "read 2 minutes after the approval");
    let by_creation = reconciler(Approvals::default());
    let asked = by_creation.pass(minutes(19), Some(minutes(18))).await;
    assert_eq!(asked.unwrap(), 0, "counted from its creation it is not due");
    runner.drain(DRAIN).await;
}

/// A late delivery of an attempt the cart has moved past, while the newer attempt is under
/// way (its intent recorded, as a runner does before its provider call, and no result yet):
/// the older attempt calls no provider. Before, that check ran only once some attempt of the
/// cart had a result, and the older attempt created an order the newer one never knew of.
#[tokio::test]
async fn an_older_attempt_calls_no_provider_once_a_newer_one_is_under_way() {
    let Some(env) = env().await else { return };
    let cart = "stale-first";
    env.checkout(cart, "a1").await;
    env.exec(cart, add("BOOK-NOVEL-01", 1)).await.unwrap();
    let a2 = env.exec(cart, start("a2")).await.unwrap();
    let records = runner::records::Records::new(env.js.clone(), 5, WAIT);
    let intent = CheckoutIntent {
        tenant: TENANT.into(),
        cart_id: cart.into(),
        attempt_id: "a2".into(),
        action: CheckoutAction::Create,
        provider_order_id: None,
        total_amount: a2.cart.checkout.as_ref().unwrap().amount,
        currency: "SEK".into(),
        source_sequence: a2.version,
    };
    records.record_checkout(&intent, &ctx()).await.unwrap();

    let runner = env.runner(Default::default()).await;
    env.wait_cart(cart, "a2's order recorded", order_created("a2"))
        .await;
    env.wait_settled(CART_EVENTS_STREAM, RUNNER_CHECKOUT_DURABLE)
        .await;
    assert_eq!(
        env.mock.orders_for("a1"),
        0,
        "an order for the attempt the cart moved past"
    );
    assert_eq!(env.mock.orders_for("a2"), 1);
    runner.drain(DRAIN).await;
}

/// Out of deliveries while the cart's node cannot be reached: the checkout's failure is
/// recorded, and the cart must still hear it. Before, the runner dead-lettered the event and
/// the cart waited in `processing` for ever; now the event is kept and tried again until the
/// cart is told.
#[tokio::test]
async fn a_given_up_attempt_is_told_to_its_cart_once_the_node_is_back() {
    let Some(env) = env().await else { return };
    // The runner reaches the aggregate through a forwarder that first leads nowhere.
    let nowhere = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let to_node = tests::forward::Forward::start().await.unwrap();
    to_node.to(nowhere);
    let mut config = env.runner_config();
    config.aggregate_addrs = to_node.addr.to_string();
    config.consumer.max_deliver = 2;
    config.provider.attempts = 1;
    env.mock.set_faults(Faults {
        fail_next: u32::MAX,
        ..Faults::default()
    });
    let cart = "told-late";
    env.checkout(cart, "a1").await;
    let runner = env.runner_with(config).await;
    // The failure is recorded (the last delivery gave up), and the node is still away.
    let results = shared::subjects::workflow_event(&tenant(), CHECKOUT_KIND, cart).unwrap();
    wait_until(
        || async { env.messages_of(&results, WORKFLOW_EVENTS_STREAM).await > 0 },
        WAIT,
    )
    .await
    .expect("the given-up attempt's result is recorded");
    to_node.to(env.aggregate.grpc_addr);
    env.wait_cart(cart, "the cart hears its checkout failed", checkout_failed)
        .await;
    assert_eq!(env.dead_letters(RUNNER_CHECKOUT_DURABLE).await, 0);
    runner.drain(DRAIN).await;
}
