//! The node as a service: ownership replies, drain through the admin RPC, catalog changes,
//! and the ops endpoints.

mod common;

use cart_domain::ids::CommandId;
use common::*;
use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_client::CartServiceClient;
use shared::ErrorCode;
use shared::test_support::wait_until;

type Client = CartServiceClient<tonic::transport::Channel>;

#[tokio::test]
async fn a_non_owner_answers_not_owner_with_the_owners_address() {
    let Some(env) = env().await else { return };
    // A cart whose shard `a` owns for good, asked of `b`.
    let pair = env.pair("owned").await;
    let (cart, mut to_b) = (pair.cart.clone(), pair.to_b.clone());
    let status = to_b
        .execute(exec(&cart, CommandId::new(), add("TEST-SKU-123", 1)))
        .await
        .unwrap_err();
    let err = shared::ApiError::from_status(&status);
    assert_eq!(err.code, ErrorCode::NotOwner);
    assert_eq!(
        err.owner_addr.as_deref(),
        Some(pair.a.grpc_addr.to_string().as_str())
    );
    assert!(
        env.messages(&cart).await.is_empty(),
        "the non-owner appended nothing"
    );
    // The same request with the fallback flag (owner unreachable) is served.
    let req = fallback(exec(&cart, CommandId::new(), add("TEST-SKU-123", 1)));
    to_b.execute(req).await.expect("served as a fallback");
    pair.drain().await;
}

/// Nodes `a` and `b` and a cart (named after `prefix`) that its owner `a` has served, so holds
/// in its cache; with clients of `a` and `b`.
async fn owner_cached(env: &Env, prefix: &str) -> (Pair, String, Client, Client) {
    let pair = env.pair(prefix).await;
    let cart = pair.cart.clone();
    let (mut to_a, to_b) = (pair.to_a.clone(), pair.to_b.clone());
    to_a.execute(exec(&cart, CommandId::new(), add("TEST-SKU-123", 1)))
        .await
        .expect("the owner serves and caches the cart");
    (pair, cart, to_a, to_b)
}

/// A gateway that could not reach the owner has another node serve the change; the owner,
/// reachable again, must not answer a read from its older copy.
#[tokio::test]
async fn the_owner_reads_past_a_change_another_node_served_as_a_fallback() {
    let Some(env) = env().await else { return };
    let (pair, cart, mut to_a, mut to_b) = owner_cached(&env, "stale").await;
    let cached = state_of(to_a.get_cart(get(&cart)).await.unwrap().into_inner());
    let req = fallback(exec(&cart, CommandId::new(), add("TEST-SKU-456", 2)));
    let elsewhere = executed(&mut to_b, req, "served as a fallback").await;
    assert!(elsewhere.version > cached.version);
    let read = state_of(to_a.get_cart(get(&cart)).await.unwrap().into_inner());
    assert_eq!(
        read.version, elsewhere.version,
        "the owner read past its copy"
    );
    assert_eq!(quantity_of(&read, "TEST-SKU-456"), 2);
    pair.drain().await;
}

/// A retry whose first attempt another node stored (its answer lost on the way) reaches the
/// owner, whose older copy would refuse it: the owner answers with the stored outcome instead
/// of telling the client the change was not made.
#[tokio::test]
async fn a_retry_the_owners_older_copy_would_refuse_is_answered_with_the_stored_outcome() {
    a_retry_on_an_older_copy_is_answered_as_stored(false).await;
}

/// The same with an `Idempotency-Key`: a refusal the owner would store is fenced by its
/// append, which finds the stored change instead.
#[tokio::test]
async fn a_keyed_retry_the_owners_older_copy_would_refuse_is_answered_with_the_stored_outcome() {
    a_retry_on_an_older_copy_is_answered_as_stored(true).await;
}

async fn a_retry_on_an_older_copy_is_answered_as_stored(keyed: bool) {
    let Some(env) = env().await else { return };
    let (pair, cart, mut to_a, mut to_b) = owner_cached(&env, "refused").await;
    let req = fallback(exec(&cart, CommandId::new(), add("TEST-SKU-456", 2)));
    let added = executed(&mut to_b, req, "served as a fallback").await;
    let line_id = added
        .cart
        .lines
        .iter()
        .find(|l| l.product.sku == "TEST-SKU-456")
        .unwrap()
        .id;
    // One removal (one command id), sent twice.
    let remove = CommandId::new();
    let removal = || {
        let removal = cart_domain::Command::RemoveItem { line_id };
        keyed_if(exec(&cart, remove, removal), keyed)
    };
    let removed = to_b
        .execute(fallback(removal()))
        .await
        .expect("served as a fallback")
        .into_inner();
    // The retry of the removal, at the owner (which never saw the line).
    let retried = to_a
        .execute(removal())
        .await
        .expect("the retry is answered as done, not refused")
        .into_inner();
    assert!(retried.duplicate, "answered as the stored outcome");
    let (stored, retried) = (
        state_of(removed.cart.unwrap()),
        state_of(retried.cart.unwrap()),
    );
    assert_eq!(retried.version, stored.version);
    assert_eq!(quantity_of(&retried, "TEST-SKU-456"), 0);
    assert_eq!(quantity_of(&retried, "TEST-SKU-123"), 1);
    assert_eq!(env.messages(&cart).await.len(), 3, "nothing appended again");
    pair.drain().await;
}

/// The slow node of a zombie's race: a change reaches the owner, whose copy is behind (the cart
/// was cleared, the change refused and the line added again elsewhere, each served as a
/// fallback). Its decision on the old copy is fenced out by the append; deciding again on the
/// cart as it is now would apply the change the client was told was refused. The stored
/// refusal answers it instead. The change is keyed (the client retried under its key), or
/// unkeyed and refused on the routing client's retry after its first attempt timed out.
#[tokio::test]
async fn a_node_deciding_a_keyed_change_on_an_old_copy_finds_its_refusal_stored() {
    the_slow_node_finds_the_refusal(true).await;
}

#[tokio::test]
async fn a_node_deciding_a_change_retried_after_a_timeout_finds_its_refusal_stored() {
    the_slow_node_finds_the_refusal(false).await;
}

async fn the_slow_node_finds_the_refusal(keyed: bool) {
    let Some(env) = env().await else { return };
    let (pair, cart, mut to_a, mut to_b) = owner_cached(&env, "zombie").await;
    let id = CommandId::new();
    let change = || {
        let change = cart_domain::Command::ChangeQuantity {
            line_id: 1,
            quantity: 3,
        };
        keyed_if(exec(&cart, id, change), keyed)
    };
    let clear = fallback(exec(
        &cart,
        CommandId::new(),
        cart_domain::Command::ClearCart,
    ));
    executed(&mut to_b, clear, "cleared elsewhere").await;
    let mut retry = fallback(change());
    if !keyed {
        let after_timeout = "timeout".parse().unwrap();
        retry
            .metadata_mut()
            .insert(shared::headers::EARLIER_ATTEMPT_UNKNOWN, after_timeout);
    }
    let refused = shared::ApiError::from_status(&to_b.execute(retry).await.unwrap_err());
    assert_eq!(refused.code, ErrorCode::UnknownLine, "{refused}");
    assert!(!refused.replayed);
    let again = fallback(exec(&cart, CommandId::new(), add("TEST-SKU-456", 1)));
    let added = executed(&mut to_b, again, "line 1 again").await;
    assert_eq!(
        added.cart.lines[0].id, 1,
        "line ids start over after a clear"
    );

    // The first attempt, at the owner.
    let late = shared::ApiError::from_status(&to_a.execute(change()).await.unwrap_err());
    assert_eq!(
        (late.code, late.replayed),
        (ErrorCode::UnknownLine, true),
        "{late}"
    );
    assert_eq!(late.message, refused.message);
    let read = state_of(to_a.get_cart(get(&cart)).await.unwrap().into_inner());
    assert_eq!(
        read.cart.lines[0].quantity, 1,
        "the refused change is not applied"
    );
    assert_eq!(read.version, added.version, "nothing appended since");
    shared::test_support::assert_contains_all(
        &metrics(&pair.b).await,
        &[r#"cart_aggregate_refusals_stored_total{code="unknown_line"} 1"#],
        "the stored refusal is counted",
    );
    pair.drain().await;
}

#[tokio::test]
async fn the_admin_drain_rpc_hands_off_and_stops_the_node() {
    use proto::cart::v1::aggregate_admin_client::AggregateAdminClient;
    let Some(env) = env().await else { return };
    let a = env.node("a", true).await;
    let b = env.node("b", true).await;
    let pb_ = b.placement.clone().unwrap();
    wait_until(
        || async { pb_.owned_shards() > 0 && pb_.owned_shards() < 64 },
        WAIT,
    )
    .await
    .unwrap();
    let mut admin = AggregateAdminClient::connect(format!("http://{}", a.grpc_addr))
        .await
        .unwrap();
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.node_id, "a");
    assert!(!status.draining && status.owned_shards > 0);
    let drained = admin.drain(pb::DrainRequest {}).await.unwrap().into_inner();
    assert_eq!(drained.owned_shards, 0, "every shard was handed off");
    tokio::time::timeout(WAIT, a.wait())
        .await
        .expect("the node stops after draining")
        .unwrap();
    assert_eq!(pb_.owned_shards(), 64, "the other node owns everything");
    b.drain().await.unwrap();
}

/// Add one `sku` to a fresh cart (`{prefix}-1`, `{prefix}-2`, ..) until `done` accepts the
/// outcome (a catalog change reaches the node through its KV watch). Returns the last cart.
async fn add_until(
    client: &CartServiceClient<tonic::transport::Channel>,
    prefix: &str,
    sku: &str,
    done: impl Fn(Result<pb::ExecuteResponse, tonic::Status>) -> bool,
    what: &str,
) -> String {
    let mut n = 0;
    let mut cart = String::new();
    wait_until(
        || {
            n += 1;
            cart = format!("{prefix}-{n}");
            let (mut client, cart) = (client.clone(), cart.clone());
            let outcome = async move {
                client
                    .execute(exec(&cart, CommandId::new(), add(sku, 1)))
                    .await
                    .map(tonic::Response::into_inner)
            };
            let done = &done;
            async move { done(outcome.await) }
        },
        WAIT,
    )
    .await
    .expect(what);
    cart
}

#[tokio::test]
async fn catalog_changes_reach_decisions_through_the_kv_watch() {
    let Some(env) = env().await else { return };
    let (node, mut client) = env.node_and_client("n1", false).await;
    let price = |s: &cart_domain::CartState, sku: &str| {
        s.cart
            .lines
            .iter()
            .find(|l| l.product.sku == sku)
            .map(|l| l.product.unit_price)
    };
    let req = exec("price-a", CommandId::new(), add("TEST-SKU-AAA", 1));
    let first = executed(&mut client, req, "added").await;
    assert_eq!(price(&first, "TEST-SKU-AAA"), Some(12900));
    // The merchandiser changes the price.
    let kv = env.js.get_key_value("CATALOG").await.unwrap();
    let mut product: cart_domain::catalog::Product =
        serde_json::from_slice(&kv.get("sku.TEST-SKU-AAA").await.unwrap().unwrap()).unwrap();
    product.price = 9900;
    let valid: bytes::Bytes = serde_json::to_vec(&product).unwrap().into();
    kv.put("sku.TEST-SKU-AAA", valid.clone()).await.unwrap();
    add_until(
        &client,
        "price-b",
        "TEST-SKU-AAA",
        |r| price(&state_of(r.unwrap().cart.unwrap()), "TEST-SKU-AAA") == Some(9900),
        "new adds use the new price",
    )
    .await;
    // The line added before keeps the price the shopper saw (a fact in its event).
    let again = read(&mut client, "price-a").await;
    assert_eq!(price(&again, "TEST-SKU-AAA"), Some(12900));

    // An entry broken by hand is reported at every use (the cache keeps the decoded entry,
    // never a broken one as if absent), and a fix is picked up through the watch.
    kv.put("sku.TEST-SKU-AAA", "{\"sku\": 12".into())
        .await
        .unwrap();
    let refused = add_until(
        &client,
        "price-c",
        "TEST-SKU-AAA",
        |r| match r {
            Err(status) => {
                let err = shared::ApiError::from_status(&status);
                assert_eq!(err.code, ErrorCode::Internal, "{status:?}");
                assert!(
                    err.message.contains("sku.TEST-SKU-AAA is not valid"),
                    "{err:?}"
                );
                true
            }
            Ok(_) => false,
        },
        "adds of the broken SKU are refused",
    )
    .await;
    assert!(
        env.messages(&refused).await.is_empty(),
        "a refused add appends nothing"
    );
    kv.put("sku.TEST-SKU-AAA", valid).await.unwrap();
    add_until(
        &client,
        "price-d",
        "TEST-SKU-AAA",
        |r| r.is_ok(),
        "the fixed entry serves adds again",
    )
    .await;
    node.drain().await.unwrap();
}

#[tokio::test]
async fn ops_endpoints_report_health_readiness_and_metrics() {
    let Some(env) = env().await else { return };
    let node = env.node("n1", true).await;
    let base = format!("http://{}", node.http_addr);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = format!("{base}/ready");
    wait_for_status(&http, &ready, 200, "ready once shards are claimed").await;
    let ready: serde_json::Value = http.get(&ready).send().await.unwrap().json().await.unwrap();
    for check in ["nats", "streams", "placement"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
    }
    let mut client = connect(node.grpc_addr).await;
    run(&mut client, "metered", add("TEST-SKU-123", 1)).await;
    // The second command finds the cart cached (the series kept as handles record too).
    run(&mut client, "metered", add("TEST-SKU-123", 1)).await;
    shared::test_support::assert_contains_all(
        &metrics(&node).await,
        &[
            r#"cart_aggregate_commands_total{type="AddItem",result="ok"} 2"#,
            r#"cart_aggregate_command_duration_seconds_count{type="AddItem"} 2"#,
            "cart_aggregate_append_duration_seconds",
            "cart_aggregate_owned_shards",
            "cart_aggregate_cache_hits_total 1",
            "cart_aggregate_cached_carts 1",
            "cart_aggregate_commands_in_flight",
        ],
        "/metrics",
    );
    // The cache's weight (one cart of one line weighs 1) against its capacity, reported every
    // second.
    let capacity = format!(
        "cart_aggregate_cache_capacity {}\n",
        node.carts.config().cache_capacity
    );
    let weighed = wait_until(
        || async {
            let m = metrics(&node).await;
            m.contains("cart_aggregate_cache_weight 1\n") && m.contains(&capacity)
        },
        std::time::Duration::from_secs(10),
    )
    .await;
    assert!(weighed.is_ok(), "{}", metrics(&node).await);
    node.drain().await.unwrap();
}
