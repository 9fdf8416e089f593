//! A rolling upgrade: a cart holding events of a newer build is served by an older node, which
//! skips what it cannot apply. That node must never write the cart as a snapshot, or every
//! node loading the snapshot would lose those events for good.

mod common;

use cart_domain::ids::{CartId, CommandId};
use cart_domain::{EventMessage, EventRecord};
use common::*;

/// One message of `cart` with one event, as a newer build appends it.
async fn published_by_a_newer_build(
    env: &Env,
    cart: &str,
    event_type: &str,
    v: u32,
    data: serde_json::Value,
) {
    let msg = EventMessage {
        cart_id: CartId::parse(cart).unwrap(),
        tenant: tenant(),
        command_id: CommandId::new(),
        revision: 1,
        occurred_at: time::OffsetDateTime::now_utc(),
        events: vec![EventRecord {
            event_type: event_type.into(),
            v,
            data,
        }],
        request_fingerprint: None,
        refused: None,
    };
    let subject = shared::subjects::cart_events(&tenant(), &msg.cart_id);
    env.js
        .publish(subject, msg.to_json().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cart_with_events_this_build_cannot_apply_is_never_snapshotted() {
    let Some(env) = env().await else { return };
    let config = aggregate::Config {
        snapshot_every: 1,
        ..env.config("old-build", false)
    };
    let (node, mut client) = started(config).await;

    // A newer build recorded an event type this one does not know.
    let future = "from-a-newer-build";
    published_by_a_newer_build(
        &env,
        future,
        "GiftWrapAdded",
        1,
        serde_json::json!({"lineId": 1}),
    )
    .await;

    let plain = "only-known-events";
    for cart in [future, plain] {
        for _ in 0..3 {
            client
                .execute(exec(cart, CommandId::new(), add("TEST-SKU-123", 1)))
                .await
                .unwrap_or_else(|e| panic!("{cart}: {e}"));
        }
    }
    node.carts.flush_snapshots().await;

    let kv = env.js.get_key_value("CART_SNAPSHOTS").await.unwrap();
    assert!(
        kv.get(format!("{TENANT}.{plain}")).await.unwrap().is_some(),
        "the control cart is snapshotted (snapshot_every 1)"
    );
    assert_eq!(
        kv.get(format!("{TENANT}.{future}")).await.unwrap(),
        None,
        "a cart missing a newer build's events must not be written as a snapshot"
    );
    // The commands themselves were served, on top of the stream's whole history.
    let stored = env.messages(future).await;
    assert_eq!(stored.len(), 4, "the newer build's message and three adds");
    node.drain().await.unwrap();
}

/// A rolling upgrade the other way round: a newer build wrote the cart's snapshot in a shape
/// with a field this build does not know. This build reads the cart from its stream instead,
/// serves it, and never overwrites that snapshot with one missing the field.
#[tokio::test]
async fn a_snapshot_of_a_newer_build_is_neither_used_nor_overwritten() {
    let Some(env) = env().await else { return };
    let config = |name: &str| aggregate::Config {
        snapshot_every: 1,
        ..env.config(name, false)
    };
    let cart = "snapshotted-by-a-newer-build";
    let (first, mut client) = started(config("first")).await;
    for _ in 0..2 {
        client
            .execute(exec(cart, CommandId::new(), add("TEST-SKU-123", 1)))
            .await
            .unwrap();
    }
    first.carts.flush_snapshots().await;
    first.drain().await.unwrap();

    // The newer build's snapshot: a higher shape, a field this build would drop.
    let kv = env.js.get_key_value("CART_SNAPSHOTS").await.unwrap();
    let key = format!("{TENANT}.{cart}");
    let mut newer: serde_json::Value =
        serde_json::from_slice(&kv.get(&key).await.unwrap().expect("a snapshot")).unwrap();
    assert_eq!(newer["schema"], aggregate::snapshot::STATE_SCHEMA);
    newer["schema"] = (aggregate::snapshot::STATE_SCHEMA + 1).into();
    newer["state"]["giftWrap"] = true.into();
    let newer = serde_json::to_vec(&newer).unwrap();
    kv.put(&key, newer.clone().into()).await.unwrap();

    let (second, mut client) = started(config("second")).await;
    let reply = client
        .execute(exec(cart, CommandId::new(), add("TEST-SKU-123", 1)))
        .await
        .expect("served from the stream");
    let state = state_of(reply.into_inner().cart.unwrap());
    assert_eq!(quantity_of(&state, "TEST-SKU-123"), 3);
    second.carts.flush_snapshots().await;
    assert_eq!(
        kv.get(&key).await.unwrap().map(|v| v.to_vec()),
        Some(newer),
        "the newer build's snapshot is left as it was"
    );
    second.drain().await.unwrap();
}

/// A newer version of an event this build knows (`ItemAdded` v99, from a newer build during a
/// rolling upgrade) leaves this build's copy without a line the stream has: a command decided
/// on it could add a second line with that line's id. The node refuses commands on the cart
/// (unavailable, with Retry-After) and appends nothing, while an unknown event type (a new
/// feature's own state) is still served, as above.
#[tokio::test]
async fn a_cart_holding_a_newer_version_of_a_known_event_decides_no_command() {
    let Some(env) = env().await else { return };
    let (node, mut client) = started(env.config("old-build", false)).await;
    let cart = "newer-item-added";
    let line = serde_json::json!({"lineId": 1, "sku": "TEST-SKU-123"});
    published_by_a_newer_build(&env, cart, "ItemAdded", 99, line).await;

    let status = client
        .execute(exec(cart, CommandId::new(), add("TEST-SKU-123", 1)))
        .await
        .expect_err("no command on a copy missing a line");
    assert_refused(
        &status,
        shared::ErrorCode::Unavailable,
        "newer build",
        "the add",
    );
    assert_eq!(env.messages(cart).await.len(), 1, "nothing appended");
    client.get_cart(get(cart)).await.expect("still readable");
    node.drain().await.unwrap();
}
