//! Command execution against a real nats-server: concurrency, exactly-once, the append fence,
//! cold loads and input validation.

mod common;

use std::collections::HashSet;

use cart_domain::CartState;
use cart_domain::ids::CommandId;
use common::*;
use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_client::CartServiceClient;
use shared::ErrorCode;
use tonic::transport::Channel;

#[tokio::test]
async fn fifty_concurrent_adds_to_one_cart_all_apply_exactly_once() {
    let Some(env) = env().await else { return };
    let node = env.node("n1", false).await;
    let client = connect(node.grpc_addr).await;
    let cart = "concurrent-1";
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut c = client.clone();
        tasks.spawn(async move {
            c.execute(exec(cart, CommandId::new(), add("TEST-SKU-456", 1)))
                .await
                .map(|r| r.into_inner().cart.unwrap().version)
        });
    }
    let mut versions = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let version = r.unwrap().expect("every add succeeds");
        assert!(
            versions.insert(version),
            "version {version} was returned twice"
        );
    }
    assert_eq!(versions.len(), 50);

    let messages = env.messages(cart).await;
    assert_eq!(messages.len(), 50, "one message per command");
    let revisions: Vec<u64> = messages.iter().map(|(_, m)| m.revision).collect();
    assert_eq!(revisions, (1..=50).collect::<Vec<_>>());
    assert!(
        messages.windows(2).all(|w| w[0].0 < w[1].0),
        "sequences strictly increase"
    );
    let reply_versions: HashSet<u64> = messages.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        reply_versions, versions,
        "replies name the committed versions"
    );

    let state = state_of(
        client
            .clone()
            .get_cart(get(cart))
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(quantity_of(&state, "TEST-SKU-456"), 50);
    assert_same(&state, &env.replay(cart).await, cart);
    node.drain().await.unwrap();
}

#[tokio::test]
async fn a_retried_command_applies_once_even_after_the_duplicate_window() {
    let mut streams = streams();
    streams.duplicate_window_secs = 1;
    let Some(env) = env_with(streams).await else {
        return;
    };
    let cart = "retry-1";
    let id = CommandId::new();

    // The same command (the same id) each time.
    let command = || exec(cart, id, add("TEST-SKU-123", 2));
    let (node, mut client) = env.node_and_client("n1", false).await;
    let first = client.execute(command()).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.event_types, vec!["ItemAdded"]);
    let second = client.execute(command()).await.unwrap().into_inner();
    assert!(second.duplicate);
    assert_eq!(second.cart, first.cart, "identical reply");

    // Wait (on a condition, not a timer) until JetStream has forgotten the id: a probe
    // published before now is no longer reported as a duplicate.
    let probe_subject = "cart.events.t1.window-probe";
    env.js
        .publish_with_headers(probe_subject, probe_headers(), "p".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let js = env.js.clone();
    shared::test_support::wait_until(
        || {
            let js = js.clone();
            async move {
                let ack = js
                    .publish_with_headers(probe_subject, probe_headers(), "p".into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                !ack.duplicate
            }
        },
        WAIT,
    )
    .await
    .expect("duplicate window passes");

    // A fresh node (cold cache) must still recognise the id from the cart's own history.
    node.drain().await.unwrap();
    let (node, mut client) = env.node_and_client("n2", false).await;
    let third = client.execute(command()).await.unwrap().into_inner();
    assert!(third.duplicate);
    assert_eq!(third.cart, first.cart, "identical reply after the window");
    assert_eq!(env.messages(cart).await.len(), 1, "one event in the stream");
    node.drain().await.unwrap();
}

fn probe_headers() -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert(shared::headers::NATS_MSG_ID, "window-probe");
    h
}

#[tokio::test]
async fn two_nodes_serving_one_cart_lose_no_update() {
    let Some(env) = env().await else { return };
    // Placement is off on both: each believes it may serve every cart (split brain).
    let a = env.node("a", false).await;
    let b = env.node("b", false).await;
    let clients = [connect(a.grpc_addr).await, connect(b.grpc_addr).await];
    let cart = "split-brain-1";
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut c = clients[i % 2].clone();
        tasks.spawn(async move {
            c.execute(exec(cart, CommandId::new(), add("TEST-SKU-AAA", 1)))
                .await
                .map(|_| ())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("every add succeeds on either node");
    }
    let replay = env.replay(cart).await;
    assert_eq!(quantity_of(&replay, "TEST-SKU-AAA"), 40, "no lost update");
    // Each node's cache may trail what the other wrote; a read that names the version it
    // needs (read-your-writes) catches up from the stream.
    let at_least = |version| {
        let mut req = get(cart);
        req.get_mut().min_version = Some(version);
        req
    };
    for mut c in clients {
        let req = at_least(replay.version);
        let state = state_of(c.get_cart(req).await.unwrap().into_inner());
        assert_same(&state, &replay, cart);
        // A version the stream does not have yet is not answered with an older cart.
        let req = at_least(replay.version + 1_000);
        let err = shared::ApiError::from_status(&c.get_cart(req).await.unwrap_err());
        assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
        assert!(err.message.contains("not yet at"), "{err}");
        assert!(
            err.retry_after.is_some(),
            "an answer, not an unreachable node: {err:?}"
        );
    }
    a.drain().await.unwrap();
    b.drain().await.unwrap();
}

#[tokio::test]
async fn cold_load_from_snapshot_and_tail_equals_full_replay() {
    let Some(env) = env().await else { return };
    let mut config = env.config("writer", false);
    config.snapshot_every = 3;
    let (writer, mut client) = started(config).await;
    let skus = [
        "TEST-SKU-123",
        "TEST-SKU-456",
        "BOOK-NOVEL-01",
        "FOOD-CHOC-100",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let carts: Vec<String> = (0..6).map(|i| format!("cold-{i}")).collect();
    for cart in &carts {
        for _ in 0..rng.u32(1..25) {
            let cmd = match rng.u32(0..5) {
                0 | 1 => add(skus[rng.usize(0..skus.len())], rng.u32(1..4)),
                2 => cart_domain::Command::ChangeQuantity {
                    line_id: rng.u32(1..4),
                    quantity: rng.u32(1..5),
                },
                3 => cart_domain::Command::RemoveItem {
                    line_id: rng.u32(1..4),
                },
                _ => cart_domain::Command::ApplyVoucher {
                    code: "WELCOME10".into(),
                },
            };
            // Rejections (unknown line, voucher minimum) are part of a random history.
            let _ = client.execute(exec(cart, CommandId::new(), cmd)).await;
        }
    }
    // Snapshots are written off the hot path: flush them, then load on a fresh node.
    writer.carts.flush_snapshots().await;
    let reader = env.node("reader", false).await;
    let mut cold = connect(reader.grpc_addr).await;
    for cart in &carts {
        let loaded = state_of(cold.get_cart(get(cart)).await.unwrap().into_inner());
        assert_same(&loaded, &env.replay(cart).await, cart);
    }
    writer.drain().await.unwrap();
    reader.drain().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_snapshot_is_ignored() {
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    let cart = "corrupt-snap";
    add_times(&mut client, cart, 3).await;
    node.drain().await.unwrap();
    let (kv, key) = env.snapshots(cart).await;
    // Garbage, then a snapshot claiming a version the stream never had for this cart.
    for bad in [
        b"not json".to_vec(),
        serde_json::to_vec(&serde_json::json!({
            "stream_seq": 999_999, "revision": 1,
            "state": {"cart": {"id": cart}, "version": 999_999, "revision": 1}
        }))
        .unwrap(),
    ] {
        kv.put(&key, bad.into()).await.unwrap();
        let (state, replayed) = cold_read(&env, cart).await;
        assert_eq!(quantity_of(&state, "TEST-SKU-123"), 3);
        assert_same(&state, &replayed, cart);
    }
}

/// `cart` as a fresh node (`n2`, drained after) loads it, and the replay of its stream.
async fn cold_read(env: &Env, cart: &str) -> (CartState, CartState) {
    let (node, mut client) = env.node_and_client("n2", false).await;
    let state = read(&mut client, cart).await;
    node.drain().await.unwrap();
    (state, env.replay(cart).await)
}

/// A snapshot written by a build whose checkouts did not keep what they charge would make
/// every payment of that checkout a mismatch: it is not used, the stream is.
#[tokio::test]
async fn a_snapshot_without_the_checkout_charge_is_folded_from_the_stream_instead() {
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    let cart = "old-snapshot";
    run(&mut client, cart, add("TEST-SKU-123", 2)).await;
    let start = cart_domain::Command::StartCheckout {
        attempt_id: "a1".into(),
        country: None,
    };
    run(&mut client, cart, start).await;
    node.drain().await.unwrap();
    let (kv, key) = env.snapshots(cart).await;
    let mut snapshot: serde_json::Value =
        serde_json::from_slice(&kv.get(&key).await.unwrap().expect("drain wrote a snapshot"))
            .unwrap();
    let checkout = snapshot["state"]["cart"]["checkout"]
        .as_object_mut()
        .unwrap();
    for field in ["amount", "currency", "lines_digest"] {
        checkout.remove(field).expect("the snapshot carries it");
    }
    kv.put(&key, serde_json::to_vec(&snapshot).unwrap().into())
        .await
        .unwrap();

    let (state, replayed) = cold_read(&env, cart).await;
    let checkout = state.cart.checkout.clone().unwrap();
    assert_eq!(
        (checkout.amount, &checkout.lines_digest),
        {
            let c = replayed.cart.checkout.as_ref().unwrap();
            (c.amount, &c.lines_digest)
        },
        "from the stream's CheckoutStarted"
    );
    assert!(checkout.amount > 0 && !checkout.lines_digest.is_empty());
    assert_same(&state, &replayed, cart);
}

#[tokio::test]
async fn expected_version_mismatch_is_a_conflict_and_appends_nothing() {
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    let cart = "if-match";
    let v = run(&mut client, cart, add("TEST-SKU-123", 1))
        .await
        .cart
        .unwrap()
        .version;
    let add_at = |version| {
        let mut req = exec(cart, CommandId::new(), add("TEST-SKU-123", 1));
        req.get_mut().expected_version = Some(version);
        req
    };
    let status = client.execute(add_at(v + 1000)).await.unwrap_err();
    assert_eq!(
        shared::ApiError::from_status(&status).code,
        ErrorCode::VersionConflict
    );
    client
        .execute(add_at(v))
        .await
        .expect("matching version succeeds");
    assert_eq!(env.messages(cart).await.len(), 2);
    node.drain().await.unwrap();
}

/// A command sent with the version it expects (`If-Match`) is stored, its answer is lost and
/// the retry reaches a node whose copy of the cart is older (a gateway's fallback, a shard
/// that moved). The node catches up and must then see that this very command made the
/// version it finds: the retry is answered as applied, not refused as a conflict (a client
/// told 412 would reload and send the change again, under a new key).
#[tokio::test]
async fn a_retry_with_if_match_on_a_node_behind_is_answered_as_applied() {
    let Some(env) = env().await else { return };
    let [(a, mut to_a), (b, mut to_b)] = env.two_unplaced().await;
    let cart = "if-match-retry";
    // `b` caches the cart at its first version; `a` moves it on.
    run(&mut to_b, cart, add("TEST-SKU-123", 1)).await;
    let at = run(&mut to_a, cart, add("TEST-SKU-123", 1))
        .await
        .cart
        .unwrap()
        .version;
    let (id, add_at) = (CommandId::new(), |id, version| {
        let mut req = exec(cart, id, add("TEST-SKU-456", 1));
        req.get_mut().expected_version = Some(version);
        req
    });
    let first = to_a.execute(add_at(id, at)).await.unwrap().into_inner();
    let retry = to_b
        .execute(add_at(id, at))
        .await
        .expect("the retry of an applied command is not a conflict")
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(retry.version, first.version);
    assert_eq!(env.messages(cart).await.len(), 3, "applied once");
    a.drain().await.unwrap();
    b.drain().await.unwrap();
}

/// A command whose answer was lost, retried after more than `recent` other commands: the
/// store still knows its id (the duplicate window), the cart no longer lists it. The retry is
/// answered as the duplicate it is, with the version it was applied at, not refused as a
/// different request (which would tell a caller whose command was applied that it was not).
#[tokio::test]
async fn a_retry_past_the_recent_commands_is_answered_as_applied() {
    let Some(env) = env().await else { return };
    let mut config = env.config("n1", false);
    config.recent_commands = 2;
    let (node, mut client) = started(config).await;
    let cart = "answer-lost";
    let id = CommandId::new();
    let first = client
        .execute(exec(cart, id, add("TEST-SKU-123", 1)))
        .await
        .unwrap()
        .into_inner();
    add_times(&mut client, cart, 3).await;
    let retry = client
        .execute(exec(cart, id, add("TEST-SKU-123", 1)))
        .await
        .expect("the retry of an applied command is not an error")
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(
        retry.version, first.version,
        "the version it was applied at"
    );
    assert_eq!(env.messages(cart).await.len(), 4, "applied once");
    node.drain().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_appends_nothing() {
    let Some(env) = env().await else { return };
    let mut config = env.config("n1", false);
    config.max_batch = 3;
    let (node, mut client) = started(config).await;
    let cart = "bad-input";
    let ok = || exec(cart, CommandId::new(), add("TEST-SKU-123", 1));

    let mut cases: Vec<(&str, tonic::Request<pb::ExecuteRequest>, ErrorCode, &str)> = Vec::new();
    let mut r = ok();
    r.get_mut().cart_id = "a.b".into();
    cases.push(("cart id", r, ErrorCode::InvalidArgument, "cart_id"));
    let mut r = ok();
    r.get_mut().command_id = "nope".into();
    cases.push(("command id", r, ErrorCode::InvalidArgument, "command_id"));
    let mut r = ok();
    r.get_mut().tenant = "Bad Tenant".into();
    cases.push(("tenant", r, ErrorCode::InvalidArgument, "tenant"));
    let mut r = ok();
    r.get_mut().tenant = "other".into();
    cases.push((
        "tenant mismatch",
        r,
        ErrorCode::PermissionDenied,
        "does not match",
    ));
    let mut r = ok();
    r.get_mut().command.clear();
    cases.push((
        "missing command",
        r,
        ErrorCode::InvalidArgument,
        "command is required",
    ));
    let mut r = ok();
    r.get_mut().command = br#"{"type": "Teleport"}"#.to_vec();
    cases.push((
        "unknown command",
        r,
        ErrorCode::InvalidArgument,
        "command: unknown variant `Teleport`",
    ));
    cases.push((
        "zero quantity",
        exec(cart, CommandId::new(), add("TEST-SKU-123", 0)),
        ErrorCode::InvalidArgument,
        "quantity must be 1..=999, got 0",
    ));
    cases.push((
        "unknown sku",
        exec(cart, CommandId::new(), add("NO-SUCH-SKU", 1)),
        ErrorCode::UnknownSku,
        "NO-SUCH-SKU",
    ));
    for (name, req, code, needle) in cases {
        let status = client.execute(req).await.unwrap_err();
        assert_refused(&status, code, needle, name);
    }

    let adds = |n: usize| batch(cart, &vec![add("TEST-SKU-123", 1); n]);
    let mut unreadable = adds(2);
    unreadable.get_mut().commands[1] = br#"{"type": "AddItem", "sku": 1}"#.to_vec();
    let batches = [
        (
            "empty batch",
            adds(0),
            ErrorCode::InvalidArgument,
            "commands must not be empty",
        ),
        (
            "batch over the limit",
            adds(4),
            ErrorCode::LimitExceeded,
            "at most 3 commands, got 4",
        ),
        (
            "batch naming the unreadable element",
            unreadable,
            ErrorCode::InvalidArgument,
            "commands[1]: invalid type: integer `1`",
        ),
    ];
    for (name, req, code, needle) in batches {
        let status = client.execute_batch(req).await.unwrap_err();
        assert_refused(&status, code, needle, name);
    }

    assert!(env.messages(cart).await.is_empty(), "nothing was appended");
    node.drain().await.unwrap();
}

#[tokio::test]
async fn a_batch_is_one_message_or_nothing() {
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    let cart = "batch-1";
    let reply = client
        .execute_batch(batch(
            cart,
            &[add("TEST-SKU-123", 1), add("TEST-SKU-456", 2)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.event_types, vec!["ItemAdded", "ItemAdded"]);
    let err = shared::ApiError::from_status(
        &client
            .execute_batch(batch(cart, &[add("TEST-SKU-AAA", 1), add("NOPE", 1)]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::UnknownSku);
    assert!(err.message.starts_with("commands[1] (AddItem)"), "{err}");
    let messages = env.messages(cart).await;
    assert_eq!(messages.len(), 1, "the failed batch appended nothing");
    assert_eq!(messages[0].1.events.len(), 2);
    node.drain().await.unwrap();
}

#[tokio::test]
async fn watch_cart_streams_each_commit() {
    use futures::StreamExt;
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    let cart = "watched";
    let mut stream = watch(&mut client, cart).await;
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.version, 0);
    for q in 1..=3 {
        let reply = run(&mut client, cart, add("TEST-SKU-123", 1)).await;
        let update = stream.next().await.unwrap().unwrap();
        assert_eq!(update.version, reply.cart.as_ref().unwrap().version);
        assert_eq!(quantity_of(&state_of(update), "TEST-SKU-123"), q);
    }
    node.drain().await.unwrap();
}

/// Watches of carts nobody writes to again, ended by their callers (a storefront closing its
/// event stream): the node keeps neither their tasks nor their carts' channels.
#[tokio::test]
async fn a_watch_its_caller_left_leaves_nothing_behind() {
    use futures::StreamExt;
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    for cart in ["left-1", "left-2", "left-3"] {
        let mut stream = watch(&mut client, cart).await;
        assert_eq!(stream.next().await.unwrap().unwrap().version, 0);
    }
    shared::test_support::wait_until(
        || async { node.carts.watchers().watched() == 0 },
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{} carts still watched after their callers left: {e}",
            node.carts.watchers().watched()
        )
    });
    node.drain().await.unwrap();
}

#[tokio::test]
async fn a_caller_asking_for_the_storefront_json_gets_the_cart_rendered_once_here() {
    let Some(env) = env().await else { return };
    let (_node, mut client) = env.node_and_client("n1", false).await;
    let cart = "rendered-1";
    let mut req = exec(cart, CommandId::new(), add("TEST-SKU-456", 2));
    req.get_mut().render = pb::Render::StorefrontJson.into();
    let reply = client.execute(req).await.unwrap().into_inner();
    assert!(reply.cart.is_none(), "no snapshot beside the rendered cart");
    assert!(reply.version > 0);

    // The bytes are the storefront view of the cart as a snapshot read shows it.
    let state = read(&mut client, cart).await;
    assert_eq!(
        String::from_utf8(reply.rendered).unwrap(),
        String::from_utf8(proto::convert::storefront_json(&state.cart)).unwrap()
    );
    let mut read = get(cart);
    read.get_mut().render = pb::Render::StorefrontJson.into();
    let read = client.get_cart(read).await.unwrap().into_inner();
    assert!(read.cart.is_empty());
    assert_eq!(read.version, reply.version);
    assert_eq!(read.rendered, proto::convert::storefront_json(&state.cart));
    let json: serde_json::Value = serde_json::from_slice(&read.rendered).unwrap();
    assert_eq!(json["items"][0]["qty"], 2, "{json}");
}

/// `CART_EVENTS` deleted and created again under a node that has the cart cached: the node's
/// copy is ahead of the stream. The next command reads the cart again from what the stream
/// holds (nothing: that history is gone) and applies, instead of failing on the fence until
/// the cart leaves the cache.
#[tokio::test]
async fn a_cart_cached_ahead_of_a_stream_created_again_is_read_again_not_stuck() {
    let Some(env) = env().await else { return };
    let (_node, mut client) = env.node_and_client("n1", false).await;
    let cart = "recreated";
    add_times(&mut client, cart, 3).await;
    shared::test_support::create_cart_events_again(&env.js, &env.streams).await;
    let reply = run(&mut client, cart, add("TEST-SKU-123", 2)).await;
    let state = state_of(reply.cart.expect("the snapshot"));
    assert_eq!(quantity_of(&state, "TEST-SKU-123"), 2);
    assert_eq!(state.version, 1, "the first message of the new stream");
    assert_same(&state, &env.replay(cart).await, cart);
}

/// As above, but the new stream has grown past the node's copy, and another node has changed
/// the cart there: the leader's last message of the cart is beyond the copy, which looks like
/// a copy that is merely behind. The copy's own message is not in the stream, so the node
/// reads the cart again instead of folding the new history onto the old one.
#[tokio::test]
async fn a_cart_cached_before_a_stream_created_again_that_grew_past_it_is_read_again() {
    let Some(env) = env().await else { return };
    let [(_n1, mut first), (_n2, mut second)] = env.two_unplaced().await;
    let cart = "recreated-grown";
    add_times(&mut first, cart, 3).await;
    shared::test_support::create_cart_events_again(&env.js, &env.streams).await;
    add_times(&mut second, "another-cart", 4).await;
    run(&mut second, cart, add("TEST-SKU-123", 2)).await;

    let reply = run(&mut first, cart, add("TEST-SKU-123", 1)).await;
    let state = state_of(reply.cart.expect("the snapshot"));
    assert_eq!(
        quantity_of(&state, "TEST-SKU-123"),
        3,
        "2 from the second node, then 1"
    );
    assert_same(&state, &env.replay(cart).await, cart);
}

/// As above, but the new stream holds messages of the cart from the very sequence of the
/// node's copy on (another node wrote them there): a message of the cart sits at the copy's
/// version, and still it is another one. The node compares the command that wrote it and
/// reads the cart again, instead of folding the new history's later messages onto lines of a
/// history that is gone.
#[tokio::test]
async fn a_cart_cached_before_a_stream_created_again_with_another_message_at_its_version_is_read_again()
 {
    let Some(env) = env().await else { return };
    let [(_n1, mut first), (_n2, mut second)] = env.two_unplaced().await;
    let cart = "recreated-same-sequence";
    add_times(&mut first, cart, 2).await;
    let copy = run(&mut first, cart, add("TEST-SKU-123", 1)).await.version;
    shared::test_support::create_cart_events_again(&env.js, &env.streams).await;
    add_times(&mut second, "another-cart", copy as usize - 1).await;
    let there = run(&mut second, cart, add("TEST-SKU-456", 2)).await.version;
    assert_eq!(
        there, copy,
        "the new stream's message of the cart is at the copy's sequence"
    );
    run(&mut second, cart, add("TEST-SKU-456", 1)).await;

    let reply = run(&mut first, cart, add("TEST-SKU-456", 1)).await;
    let state = state_of(reply.cart.expect("the snapshot"));
    assert_eq!(
        quantity_of(&state, "TEST-SKU-123"),
        0,
        "the lines of the deleted history are gone"
    );
    assert_eq!(
        quantity_of(&state, "TEST-SKU-456"),
        4,
        "2 and 1 from the second node, then 1"
    );
    assert_same(&state, &env.replay(cart).await, cart);
}

/// A cart that is ordered is not merged into another: its lines would be bought again. The
/// merge is refused and the target cart is left as it was.
#[tokio::test]
async fn an_ordered_cart_is_not_merged_into_another() {
    use cart_domain::Command as C;
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    run(&mut client, "bought", add("TEST-SKU-123", 1)).await;
    place_order(&mut client, "bought").await;

    run(&mut client, "target", add("TEST-SKU-456", 1)).await;
    let merge = C::MergeCart {
        source_cart_id: cart_domain::ids::CartId::parse("bought").unwrap(),
        items: Vec::new(),
    };
    let err = client
        .execute(exec("target", CommandId::new(), merge))
        .await
        .expect_err("an ordered cart is not merged");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("is ordered"), "{}", err.message());
    assert_eq!(
        env.messages("target").await.len(),
        1,
        "the target is unchanged"
    );
    node.drain().await.unwrap();
}

/// A merge reads its source cart as the stream has it: a copy this node cached before another
/// node changed the source (a fallback, a shard that moved) would merge without that change.
#[tokio::test]
async fn a_merge_reads_the_source_as_the_stream_has_it_not_as_cached() {
    use cart_domain::Command as C;
    let Some(env) = env().await else { return };
    let [(a, mut to_a), (b, mut to_b)] = env.two_unplaced().await;
    run(&mut to_a, "anonymous", add("TEST-SKU-123", 1)).await;
    run(&mut to_b, "anonymous", add("TEST-SKU-456", 2)).await;
    let merge = C::MergeCart {
        source_cart_id: cart_domain::ids::CartId::parse("anonymous").unwrap(),
        items: Vec::new(),
    };
    let merged = executed(
        &mut to_a,
        exec("user", CommandId::new(), merge),
        "the merge",
    )
    .await;
    assert_eq!(quantity_of(&merged, "TEST-SKU-123"), 1);
    assert_eq!(
        quantity_of(&merged, "TEST-SKU-456"),
        2,
        "the line added on the other node is merged too"
    );
    a.drain().await.unwrap();
    b.drain().await.unwrap();
}

/// Takes `cart` through checkout to a placed order (attempt `a1`, provider order `ko-1`).
async fn place_order(client: &mut CartServiceClient<Channel>, cart: &str) {
    use cart_domain::Command as C;
    let start = C::StartCheckout {
        attempt_id: "a1".into(),
        country: None,
    };
    run(client, cart, start).await;
    let recorded = C::RecordProviderOrder {
        attempt_id: "a1".into(),
        provider_order_id: "ko-1".into(),
        status: "checkout_incomplete".into(),
    };
    run(client, cart, recorded).await;
    let paid = read(client, cart)
        .await
        .cart
        .checkout
        .unwrap()
        .paid_in_full();
    let confirm = C::ConfirmOrder {
        provider_order_id: "ko-1".into(),
        order_reference: "R-1".into(),
        paid,
    };
    run(client, cart, confirm).await;
    assert!(
        read(client, cart).await.cart.order.is_some(),
        "{cart} is ordered"
    );
}

/// A merge whose answer was lost, retried after its source cart was ordered, is answered as
/// the merge it was, not refused for the source's new state: the client would take the
/// stored merge for a failed one.
#[tokio::test]
async fn a_merge_retried_after_its_source_was_ordered_is_answered_as_stored() {
    use cart_domain::Command as C;
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    run(&mut client, "guest", add("TEST-SKU-123", 2)).await;
    let merge = C::MergeCart {
        source_cart_id: cart_domain::ids::CartId::parse("guest").unwrap(),
        items: Vec::new(),
    };
    let id = CommandId::new();
    let first = executed(&mut client, exec("member", id, merge.clone()), "the merge").await;
    place_order(&mut client, "guest").await;

    let again = executed(
        &mut client,
        exec("member", id, merge.clone()),
        "the merge retried",
    )
    .await;
    assert_eq!(quantity_of(&again, "TEST-SKU-123"), 2);
    assert_eq!(again.version, first.version, "answered, not applied again");
    assert_eq!(env.messages("member").await.len(), 1, "one merge stored");

    // A new merge under If-Match of a version the cart is not at is refused for that first,
    // whatever its source.
    let mut stale = exec("member", CommandId::new(), merge);
    stale.get_mut().expected_version = Some(first.version + 7);
    let status = client.execute(stale).await.expect_err("a stale If-Match");
    assert_refused(
        &status,
        shared::ErrorCode::VersionConflict,
        "expected version",
        "stale",
    );
    node.drain().await.unwrap();
}

/// A `WatchCart` stream of `cart`.
async fn watch(
    client: &mut CartServiceClient<Channel>,
    cart: &str,
) -> tonic::Streaming<pb::CartSnapshot> {
    client
        .watch_cart(request(pb::WatchCartRequest {
            tenant: TENANT.into(),
            cart_id: cart.into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn carts_keeping_many_keyed_commands_weigh_more_in_the_cache_and_keep_them_when_evicted() {
    let Some(env) = env().await else { return };
    let mut config = env.config("n1", false);
    // Room for 20 three-line carts of ~1 KiB.
    config.cache_capacity = 20;
    let (node, mut client) = started(config).await;
    let keyed = |cart: &str, id: CommandId, fingerprint: &str| {
        let mut req = exec(cart, id, add("TEST-SKU-123", 1));
        req.get_mut().request_fingerprint = fingerprint.to_owned();
        req
    };
    // Eight carts, each one line and 23 keyed commands (~3 KiB of keys): 4 weights each.
    let first = CommandId::new();
    for c in 0..8 {
        for i in 0..23 {
            let id = if (c, i) == (0, 0) {
                first
            } else {
                CommandId::new()
            };
            let req = keyed(&format!("keyed-{c}"), id, &format!("fp-{c}-{i}"));
            client.execute(req).await.unwrap();
        }
    }
    let weight = node.carts.cache_weight().await;
    assert!(weight <= 20, "the cache weighs {weight}, over its capacity");
    let cached = node.carts.cached_carts();
    assert!(cached <= 5, "{cached} carts of 4 weights each fit in 20");

    // The first cart was evicted; loaded again, it still knows its keys: a retry of its
    // first keyed command is answered as applied, not applied again.
    let retry = client
        .execute(keyed("keyed-0", first, "fp-0-0"))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(env.messages("keyed-0").await.len(), 23, "applied once");
    node.drain().await.unwrap();
}
