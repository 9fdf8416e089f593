//! Property tests: totals are the sum of their parts, and replaying the emitted events (through
//! their JSON wire form) reproduces the state.

use proptest::prelude::*;

use super::*;
use crate::ids::{CartId, CommandId, TenantId};

/// A command id no other call in this test process has had (derived from a counter: the
/// crate mints no ids without its `generate` feature).
fn fresh_id() -> CommandId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    CommandId::derived(&["properties", &n.to_string()])
}

fn arb_command() -> impl Strategy<Value = Command> {
    let sku = prop::sample::select(vec![
        "TEST-SKU-123",
        "TEST-SKU-456",
        "BOOK-1",
        "FOOD-1",
        "NOPE",
    ]);
    let item = (sku, 0u32..6).prop_map(|(s, q)| add(s, q));
    prop_oneof![
        4 => item.clone().prop_map(Command::AddItem),
        1 => prop::collection::vec(item.clone(), 0..4).prop_map(|items| Command::AddItems { items }),
        2 => (1u32..6, 0u32..12).prop_map(|(line_id, quantity)| Command::ChangeQuantity { line_id, quantity }),
        1 => (1u32..6).prop_map(|line_id| Command::RemoveItem { line_id }),
        1 => prop::collection::vec(item, 0..3).prop_map(|items| Command::SetItems { items }),
        1 => Just(Command::ClearCart),
        1 => (prop::sample::select(vec!["standard", "express"]), prop::collection::vec(1u32..6, 0..3))
            .prop_map(|(p, line_ids)| Command::AddDelivery { provider: p.into(), line_ids }),
        1 => (1u32..4).prop_map(|delivery_id| Command::RemoveDelivery { delivery_id }),
        2 => prop::sample::select(vec!["TEN", "FIFTY", "BIG"]).prop_map(|c| Command::ApplyVoucher { code: c.into() }),
        1 => (1u32..4).prop_map(|voucher_id| Command::RemoveVoucher { voucher_id }),
        1 => (0u32..3).prop_map(|n| Command::StartCheckout { attempt_id: format!("a{n}"), country: None }),
        1 => (0u32..3).prop_map(|n| Command::RecordProviderOrder {
            attempt_id: format!("a{n}"), provider_order_id: "ko-1".into(), status: "checkout_incomplete".into() }),
        1 => Just(Command::CancelCheckout),
    ]
}

fn check_totals(cart: &Cart) -> Result<(), TestCaseError> {
    let t = totals(cart);
    let prices = t
        .lines
        .iter()
        .chain(&t.deliveries)
        .chain(&t.vouchers)
        .chain([&t.items, &t.delivery_total, &t.discount, &t.total]);
    for p in prices {
        prop_assert_eq!(p.inc_vat, p.ex_vat() + p.total_vat());
    }
    let lines: i64 = cart.lines.iter().map(|l| l.total_gross()).sum();
    let lines_vat: i64 = t.lines.iter().map(|p| p.total_vat()).sum();
    prop_assert_eq!(t.items.inc_vat, lines);
    prop_assert_eq!(t.items.total_vat(), lines_vat);
    let deliveries: i64 = cart.deliveries.iter().map(|d| d.price).sum();
    prop_assert_eq!(t.delivery_total.inc_vat, deliveries);
    let discounts: i64 = t.vouchers.iter().map(|v| v.inc_vat).sum();
    prop_assert_eq!(t.discount.inc_vat, discounts);
    prop_assert!(
        t.discount.inc_vat <= t.items.inc_vat,
        "discount never exceeds the items"
    );
    prop_assert_eq!(t.total.inc_vat, lines + deliveries - discounts);
    // Per rate: total VAT = items + deliveries − discount.
    let mut rates: std::collections::BTreeSet<TaxRate> = t.items.vat.keys().copied().collect();
    rates.extend(t.delivery_total.vat.keys());
    for r in rates {
        let get = |p: &CartPrice| p.vat.get(&r).copied().unwrap_or(0);
        prop_assert_eq!(
            get(&t.total),
            get(&t.items) + get(&t.delivery_total) - get(&t.discount)
        );
    }
    let view = CartView::of(cart);
    prop_assert_eq!(view.total_tax.inc_vat, t.total.total_vat());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn totals_equal_the_sum_of_their_parts_and_replay_reproduces_state(
        commands in prop::collection::vec(arb_command(), 1..40)
    ) {
        let cat = catalog();
        let ctx = ctx(&cat);
        let tenant = TenantId::parse("t1").unwrap();
        let mut state = CartState::new(cart_id());
        let mut log: Vec<(EventMessage, u64)> = Vec::new();
        let mut seq = 0;
        for cmd in commands {
            if let Ok(events) = decide(&state.cart, cmd, &ctx) {
                if events.is_empty() {
                    continue;
                }
                seq += 3; // other carts' messages interleave in the stream
                let id = fresh_id();
                let msg = EventMessage::new(tenant.clone(), cart_id(), id, state.revision + 1, ctx.now, &events);
                state.commit(&msg, &events, seq, Retain::DEFAULT);
                log.push((msg, seq));
                check_totals(&state.cart)?;
            }
        }
        // Replay the wire form from scratch.
        let mut replayed = CartState::new(cart_id());
        for (msg, seq) in &log {
            let wire = EventMessage::from_json(&msg.to_json()).unwrap();
            let report = replayed.apply_message(&wire, *seq, Retain::DEFAULT);
            prop_assert!(report.unknown.is_empty() && report.invalid.is_empty());
        }
        prop_assert_eq!(&replayed, &state);
        // Replaying again is idempotent (messages at or below the version are ignored).
        for (msg, seq) in &log {
            replayed.apply_message(msg, *seq, Retain::DEFAULT);
        }
        prop_assert_eq!(&replayed, &state);
        // Shrinking (a cart about to be cached) changes no value and leaves no spare room.
        replayed.shrink_to_fit();
        prop_assert_eq!(&replayed, &state);
        prop_assert_eq!(replayed.cart.lines.capacity(), replayed.cart.lines.len());
        prop_assert_eq!(replayed.recent.capacity(), replayed.recent.len());
        // A snapshot (JSON) of the state is the same state.
        let snap: CartState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        prop_assert_eq!(snap, state);
    }

    #[test]
    fn evolve_is_deterministic(commands in prop::collection::vec(arb_command(), 1..20)) {
        let cat = catalog();
        let ctx = ctx(&cat);
        let mut a = Cart::new(CartId::parse("x").unwrap());
        let mut events = Vec::new();
        for cmd in commands {
            if let Ok(es) = decide(&a, cmd, &ctx) {
                for e in es {
                    a = evolve(a, &e);
                    events.push(e);
                }
            }
        }
        let b = events.iter().fold(Cart::new(CartId::parse("x").unwrap()), evolve);
        prop_assert_eq!(a, b);
    }
}

#[test]
fn recent_commands_answer_retries_and_are_bounded() {
    let mut state = CartState::new(cart_id());
    let ids: Vec<CommandId> = (0..20).map(|_| fresh_id()).collect();
    let retain = Retain {
        recent: 4,
        ..Retain::DEFAULT
    };
    for (i, id) in ids.iter().enumerate() {
        state.commit(&message(*id, 0, None), &[], (i as u64 + 1) * 2, retain);
    }
    assert_eq!(state.recent.len(), 4);
    assert_eq!(state.revision, 20);
    let last = state.recent_outcome(&ids[19]).unwrap();
    assert_eq!((last.version, last.revision), (40, 20));
    assert!(state.recent_outcome(&ids[15]).is_none());
    assert!(state.recent_outcome(&ids[16]).is_some());
}

#[test]
fn unknown_event_types_are_counted_and_skipped() {
    let mut state = CartState::new(cart_id());
    let msg = EventMessage {
        cart_id: cart_id(),
        tenant: TenantId::parse("t").unwrap(),
        command_id: fresh_id(),
        revision: 1,
        occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        request_fingerprint: None,
        refused: None,
        events: vec![
            EventRecord {
                event_type: "GiftWrapped".into(),
                v: 1,
                data: serde_json::json!({}),
            },
            Event::UserSet(event::UserSet {
                user_id: Some("u".into()),
            })
            .encode(),
        ],
    };
    let report = state.apply_message(&msg, 7, Retain::DEFAULT);
    assert_eq!(report.unknown, vec!["GiftWrapped".to_owned()]);
    assert_eq!(state.cart.user_id.as_deref(), Some("u"));
    assert_eq!((state.version, state.revision), (7, 1));
}

/// A message of no events for command `id`, decided at Unix second `at`.
fn message(id: CommandId, at: i64, fingerprint: Option<&str>) -> EventMessage {
    let mut msg = EventMessage::new(
        TenantId::parse("t").unwrap(),
        cart_id(),
        id,
        1,
        time::OffsetDateTime::from_unix_timestamp(at).unwrap(),
        &[],
    );
    msg.request_fingerprint = fingerprint.map(str::to_owned);
    msg
}

/// A state that keeps the last `recent` commands and keys for 100 s, after committing one
/// command under key fingerprint `fp-1` at Unix second 1000 (version 2); and that command's id.
fn keyed_at_1000(recent: usize) -> (Retain, CartState, CommandId) {
    let retain = Retain {
        recent,
        keyed_secs: 100,
    };
    let mut state = CartState::new(cart_id());
    let keyed = fresh_id();
    state.commit(&message(keyed, 1_000, Some("fp-1")), &[], 2, retain);
    (retain, state, keyed)
}

/// Keyed commands outlive the recent-command window and are forgotten only after the
/// retention, measured both when replaying and when asked.
#[test]
fn keyed_commands_are_kept_for_the_retention_whatever_follows() {
    let (retain, mut state, keyed) = keyed_at_1000(4);
    for i in 0..50 {
        state.commit(
            &message(fresh_id(), 1_001 + i, None),
            &[],
            3 + i as u64,
            retain,
        );
    }
    assert!(
        state.recent_outcome(&keyed).is_none(),
        "past the recent window"
    );
    let k = state.keyed_outcome(&keyed, 1_100, retain).expect("kept");
    assert_eq!(
        (k.fingerprint.as_str(), k.version, k.revision),
        ("fp-1", 2, 1)
    );
    assert!(
        state.keyed_outcome(&keyed, 1_101, retain).is_none(),
        "expired when asked"
    );
    assert_eq!(state.keyed_live(1_050, retain), 1);
    // A later message past the retention drops it from the state (and from snapshots).
    state.commit(&message(fresh_id(), 1_200, None), &[], 60, retain);
    assert!(state.keyed.is_empty());
    // A reader that keeps nothing keeps no keys either.
    let mut reader = CartState::new(cart_id());
    reader.apply_message(&message(keyed, 1_000, Some("fp-1")), 2, Retain::NONE);
    assert!(reader.keyed.is_empty() && reader.recent.is_empty());
}

/// A retry is answered while the cart remembers it: a keyed one by its key's record for the
/// retention (another request under the key is refused), one without a key by the recent
/// commands. Past the retention a key is forgotten: a request under it is new, even while its
/// id is among the recent commands (that record cannot tell a retry from another request).
#[test]
fn a_keyed_command_is_answered_within_the_retention_and_new_after_it() {
    let (retain, mut state, keyed) = keyed_at_1000(16);
    let plain = fresh_id();
    state.commit(&message(plain, 1_001, None), &[], 3, retain);
    assert!(
        state.recent_outcome(&keyed).is_some(),
        "still a recent command"
    );

    assert_eq!(
        state.prior(&keyed, Some("fp-1"), 1_100, retain),
        Prior::Answered(2)
    );
    assert_eq!(
        state.prior(&keyed, Some("fp-2"), 1_100, retain),
        Prior::KeyReused
    );
    assert_eq!(state.prior(&keyed, Some("fp-2"), 1_101, retain), Prior::New);
    assert_eq!(state.prior(&keyed, Some("fp-1"), 1_101, retain), Prior::New);
    assert_eq!(state.prior(&plain, None, 5_000, retain), Prior::Answered(3));
    assert_eq!(state.prior(&fresh_id(), None, 1_100, retain), Prior::New);
}

/// A keyed command's stored refusal is answered again for the retention (another request
/// under its key is refused as reused), survives a snapshot's round trip, and reads as an
/// unkeyed message that changed nothing to a build without the `refused` field.
#[test]
fn a_stored_refusal_answers_its_retries_and_is_an_empty_message_to_an_older_build() {
    let retain = Retain {
        recent: 16,
        keyed_secs: 100,
    };
    let refused = fresh_id();
    let mut msg = message(refused, 1_000, None);
    let refusal = crate::Refusal {
        code: "unknown_line".into(),
        message: "the cart has no line 1".into(),
    };
    msg.refused = Some(crate::Refused {
        fingerprint: Some("fp-1".into()),
        refusal: refusal.clone(),
    });
    let wire = msg.to_json();
    let mut state = CartState::new(cart_id());
    state.apply_message(&EventMessage::from_json(&wire).unwrap(), 5, retain);
    assert_eq!(
        state.prior(&refused, Some("fp-1"), 1_100, retain),
        Prior::Refused(&refusal)
    );
    assert_eq!(
        state.prior(&refused, Some("fp-2"), 1_100, retain),
        Prior::KeyReused
    );
    assert_eq!(
        state.prior(&refused, Some("fp-1"), 1_101, retain),
        Prior::New
    );
    assert_eq!(state.version, 5);
    let snapshot: CartState = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
    assert_eq!(snapshot, state);

    // An older build's envelope: the same fields without `refused`.
    let mut old: serde_json::Value = serde_json::from_slice(&wire).unwrap();
    old.as_object_mut().unwrap().remove("refused");
    assert_eq!(old["request_fingerprint"], serde_json::Value::Null);
    let mut older = CartState::new(cart_id());
    older.apply_message(&serde_json::from_value(old).unwrap(), 5, retain);
    assert!(
        older.keyed.is_empty(),
        "not a keyed answer to an older build"
    );
    assert_eq!(
        older.prior(&refused, Some("fp-1"), 1_100, retain),
        Prior::New
    );
}

/// An unkeyed command refused after an attempt whose outcome was unknown: its refusal is
/// stored (with no fingerprint) and answers that id for the retention, though the id is also
/// among the recent commands; the recent commands answer the others as before.
#[test]
fn an_unkeyed_refusal_answers_its_command_id() {
    let retain = Retain {
        recent: 16,
        keyed_secs: 100,
    };
    let (refused, plain) = (fresh_id(), fresh_id());
    let mut state = CartState::new(cart_id());
    state.commit(&message(plain, 1_000, None), &[], 1, retain);
    let mut msg = message(refused, 1_000, None);
    let refusal = crate::Refusal {
        code: "unknown_line".into(),
        message: "the cart has no line 1".into(),
    };
    msg.refused = Some(crate::Refused {
        fingerprint: None,
        refusal: refusal.clone(),
    });
    let wire = EventMessage::from_json(&msg.to_json()).unwrap();
    assert_eq!(wire, msg);
    state.apply_message(&wire, 2, retain);
    assert_eq!(
        state.prior(&refused, None, 1_100, retain),
        Prior::Refused(&refusal)
    );
    assert_eq!(state.prior(&plain, None, 1_100, retain), Prior::Answered(1));
    assert_eq!(state.keyed_live(1_100, retain), 1);
    // Past the retention the refusal is forgotten, and never answered as applied.
    assert_eq!(state.prior(&refused, None, 1_101, retain), Prior::New);
    assert!(state.recent_outcome(&refused).is_none());
    assert_eq!(state.revision, 2, "a message all the same");
}
