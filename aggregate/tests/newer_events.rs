//! A rolling upgrade: a cart holding events of a newer build is served by an older node, which
//! skips what it cannot apply. That node must never write the cart as a snapshot, or every
//! node loading the snapshot would lose those events for good.

mod common;

use cart_domain::ids::{CartId, CommandId};
use cart_domain::{EventMessage, EventRecord};
use common::*;

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
    let msg = EventMessage {
        cart_id: CartId::parse(future).unwrap(),
        tenant: tenant(),
        command_id: CommandId::new(),
        revision: 1,
        occurred_at: time::OffsetDateTime::now_utc(),
        events: vec![EventRecord {
            event_type: "GiftWrapAdded".into(),
            v: 1,
            data: serde_json::json!({"lineId": 1}),
        }],
        request_fingerprint: None,
    };
    let subject = shared::subjects::cart_events(&tenant(), &msg.cart_id);
    env.js
        .publish(subject, msg.to_json().into())
        .await
        .unwrap()
        .await
        .unwrap();

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
