//! QueryService: tenant isolation inside the queries, filters, keyset pagination (every cart
//! exactly once), validation errors naming the field; `/health`, `/ready`, `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cart_domain::Command;
use common::{Generator, WAIT, expected};
use projection::{CommitAction, Hooks};
use proto::projection::v1 as pb;
use proto::projection::v1::query_service_client::QueryServiceClient;
use shared::test_support::wait_until;
use tonic::transport::Channel;

fn list(tenant: &str, page_size: u32) -> pb::ListCartsRequest {
    pb::ListCartsRequest {
        tenant: tenant.into(),
        page_size,
        ..Default::default()
    }
}

/// Every page of a listing, in order (each page at most the page size).
async fn all_carts(
    q: &mut QueryServiceClient<Channel>,
    req: pb::ListCartsRequest,
) -> Vec<pb::CartRecord> {
    let max = projection::read::page::size(req.page_size) as usize;
    pages(|token| {
        let (mut q, mut req) = (q.clone(), req.clone());
        async move {
            req.page_token = token;
            let page = q.list_carts(req).await.unwrap().into_inner();
            assert!(page.carts.len() <= max);
            (page.carts, page.next_page_token)
        }
    })
    .await
}

/// Every item of a paged query: `page(token)` answers a page's items and the token of the
/// next page (empty after the last).
async fn pages<T, F, Fut>(mut page: F) -> Vec<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = (Vec<T>, String)>,
{
    let (mut out, mut token) = (Vec::new(), String::new());
    for _ in 0..1_000 {
        let (items, next) = page(token).await;
        out.extend(items);
        if next.is_empty() {
            return out;
        }
        token = next;
    }
    panic!("pagination does not end");
}

fn assert_invalid(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains(field), "{status:?}");
}

#[tokio::test]
async fn tenants_only_see_their_own_carts() {
    let Some(env) = common::env().await else {
        return;
    };
    let mut generator = Generator::new(21, &["t1", "t2"], 10);
    // cart-000 exists for t1 only: t2's cart-000 never gets a message.
    let t2_first = generator.index("t2", "cart-000");
    generator.frozen.push(t2_first);
    let t1_first = generator.index("t1", "cart-000");
    generator
        .execute(
            &env.js,
            t1_first,
            Command::SetUser {
                user_id: Some("user-1".into()),
            },
        )
        .await
        .unwrap();
    generator.publish(&env.js, 120).await;
    // Two projections side by side, each with its own durable and database.
    let a = env.start(env.config("a"), Hooks::default()).await;
    let b = env.start(env.config("b"), Hooks::default()).await;
    env.caught_up(&a).await;
    env.caught_up(&b).await;
    let want = expected(&generator.carts);
    common::assert_views(&a.db_path, &want);
    common::assert_views(&b.db_path, &want);
    b.stop().await.unwrap();

    let mut q = common::query(&a).await;
    let get = |tenant: &str, cart: &str| pb::GetCartRequest {
        tenant: tenant.into(),
        cart_id: cart.into(),
    };
    let own = q
        .get_cart(get("t1", "cart-000"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (own.tenant.as_str(), own.cart_id.as_str()),
        ("t1", "cart-000")
    );
    let other = q.get_cart(get("t2", "cart-000")).await.unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound, "{other:?}");

    for tenant in ["t1", "t2"] {
        let carts = all_carts(&mut q, list(tenant, 0)).await;
        let got: BTreeSet<String> = carts.iter().map(|c| c.cart_id.clone()).collect();
        let want_ids: BTreeSet<String> = want
            .carts
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, c)| c.clone())
            .collect();
        assert!(carts.iter().all(|c| c.tenant == tenant));
        assert_eq!(got, want_ids, "{tenant}");
    }
    let t2 = all_carts(&mut q, list("t2", 0)).await;
    assert!(!t2.iter().any(|c| c.cart_id == "cart-000"));

    // SKU demand and orders count only the tenant's own carts.
    let demand = q
        .sku_demand(pb::SkuDemandRequest {
            tenant: "t2".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut units = std::collections::BTreeMap::<String, u64>::new();
    for ((t, _), cart) in &want.carts {
        if t == "t2" && cart.status == "open" {
            for line in &cart.lines {
                *units.entry(line.sku.clone()).or_default() += u64::from(line.quantity);
            }
        }
    }
    let got: std::collections::BTreeMap<String, u64> = demand
        .skus
        .iter()
        .map(|s| (s.sku.clone(), s.quantity))
        .collect();
    assert_eq!(got, units);
    let orders = q
        .list_orders(pb::ListOrdersRequest {
            tenant: "t2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(orders.orders.iter().all(|o| o.tenant == "t2"));

    // The tenant is required, validated, and must agree with x-tenant-id.
    assert_invalid(q.get_cart(get("", "cart-000")).await.unwrap_err(), "tenant");
    assert_invalid(
        q.get_cart(get("T1!", "cart-000")).await.unwrap_err(),
        "tenant",
    );
    assert_invalid(
        q.get_cart(get("t1", "bad.id")).await.unwrap_err(),
        "cart_id",
    );
    assert_invalid(q.list_carts(list("", 0)).await.unwrap_err(), "tenant");
    let mut spoof = tonic::Request::new(get("t2", "cart-001"));
    spoof
        .metadata_mut()
        .insert(shared::headers::TENANT_ID, "t1".parse().unwrap());
    let denied = q.get_cart(spoof).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    a.stop().await.unwrap();
}

/// The read model keeps a cart's subscription details, keyed by id, as the cart shows them.
#[tokio::test]
async fn the_cart_view_keeps_subscription_details() {
    let Some(env) = common::env().await else {
        return;
    };
    let mut generator = Generator::new(7, &["t1"], 3);
    let index = generator.index("t1", "cart-001");
    for (id, code) in [("sub-1", "5G"), ("sub-2", "TV"), ("sub-1", "5G-PLUS")] {
        let upsert = Command::UpsertSubscriptionDetails {
            id: id.into(),
            offering_code: code.into(),
            signing_type: "bankid".into(),
            data: serde_json::json!({"msisdn": "0701234567"}),
        };
        generator.execute(&env.js, index, upsert).await.unwrap();
    }
    let remove = Command::RemoveSubscriptionDetails { id: "sub-2".into() };
    generator.execute(&env.js, index, remove).await.unwrap();
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    let mut q = common::query(&running).await;
    let cart = common::get_cart(&mut q, "t1", "cart-001").await;
    let details: serde_json::Value = serde_json::from_str(&cart.subscription_details_json).unwrap();
    assert_eq!(
        details,
        serde_json::json!({"sub-1": {"id": "sub-1", "offeringCode": "5G-PLUS",
            "signingType": "bankid", "data": {"msisdn": "0701234567"}}})
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn pagination_returns_every_cart_exactly_once_in_order() {
    let Some((env, mut generator)) = common::env_published(33, &["t1"], 60, 150).await else {
        return;
    };
    // Many carts share one event time: the cart id breaks the tie.
    generator.step = Duration::ZERO;
    generator.publish(&env.js, 80).await;
    // At least one placed order, whatever the random walk did.
    let placed = {
        let mut placed = false;
        for index in 0..generator.carts.len() {
            if generator.place_order(&env.js, index).await {
                placed = true;
                break;
            }
        }
        placed
    };
    assert!(placed, "some cart could be checked out");
    let running = env
        .start_caught_up(env.config("main"), Hooks::default())
        .await;
    let want = expected(&generator.carts);
    let mut q = common::query(&running).await;

    let mut order: Vec<(i64, String)> = want
        .carts
        .iter()
        .map(|((_, id), c)| (c.updated_ns, id.clone()))
        .collect();
    order.sort_by(|a, b| b.cmp(a));
    let want_ids: Vec<String> = order.into_iter().map(|(_, id)| id).collect();
    for size in [1, 7, 500] {
        let got: Vec<String> = all_carts(&mut q, list("t1", size))
            .await
            .into_iter()
            .map(|c| c.cart_id)
            .collect();
        assert_eq!(got, want_ids, "page size {size}");
    }

    // Filters combine with pagination.
    let filtered = |status: &str| {
        let mut ids: Vec<String> = want
            .carts
            .iter()
            .filter(|(_, c)| match status {
                // Event times are a day old: every open cart with items is abandoned.
                "abandoned" => c.status == "open" && c.item_count > 0,
                "open" => c.status == "open" && c.item_count == 0,
                s => c.status == s,
            })
            .map(|((_, id), _)| id.clone())
            .collect();
        ids.sort();
        ids
    };
    for status in ["open", "checkout", "ordered", "abandoned"] {
        let mut req = list("t1", 4);
        req.status = Some(status.into());
        let carts = all_carts(&mut q, req).await;
        assert!(carts.iter().all(|c| c.status == status), "{status}");
        let mut got: Vec<String> = carts.into_iter().map(|c| c.cart_id).collect();
        got.sort();
        assert_eq!(got, filtered(status), "{status}");
    }
    assert!(
        !filtered("ordered").is_empty() && !filtered("abandoned").is_empty(),
        "the generator covers both: ordered {:?}, abandoned {:?}",
        filtered("ordered"),
        filtered("abandoned")
    );
    let mut req = list("t1", 3);
    req.user_id = Some("user-2".into());
    let mut got: Vec<String> = all_carts(&mut q, req)
        .await
        .into_iter()
        .map(|c| c.cart_id)
        .collect();
    got.sort();
    let mut by_user: Vec<String> = want
        .carts
        .iter()
        .filter(|(_, c)| c.user_id.as_deref() == Some("user-2"))
        .map(|((_, id), _)| id.clone())
        .collect();
    by_user.sort();
    assert_eq!(got, by_user);
    let newest = want.carts.values().map(|c| c.updated_ns).max().unwrap();
    let mut req = list("t1", 5);
    req.updated_since = Some(
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(newest))
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    let recent = all_carts(&mut q, req).await;
    let at_newest = want
        .carts
        .values()
        .filter(|c| c.updated_ns == newest)
        .count();
    assert_eq!(recent.len(), at_newest);

    // Abandoned carts: the configured default (1 h) vs a longer idle time.
    let abandoned = |idle_seconds, page_token: String| pb::AbandonedCartsRequest {
        tenant: "t1".into(),
        idle_seconds,
        page_size: 5,
        page_token,
    };
    let mut got = pages(|token| {
        let mut q = q.clone();
        async move {
            let page = q.abandoned_carts(abandoned(0, token)).await.unwrap();
            let page = page.into_inner();
            (
                page.carts.into_iter().map(|c| c.cart_id).collect(),
                page.next_page_token,
            )
        }
    })
    .await;
    got.sort();
    assert_eq!(got, filtered("abandoned"));
    let none = q
        .abandoned_carts(abandoned(3 * 86_400, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(none.carts.is_empty());

    // Orders page through exactly once too.
    let mut orders = pages(|page_token| {
        let mut q = q.clone();
        let req = pb::ListOrdersRequest {
            tenant: "t1".into(),
            since: None,
            page_size: 2,
            page_token,
        };
        async move {
            let page = q.list_orders(req).await.unwrap().into_inner();
            (
                page.orders.into_iter().map(|o| o.cart_id).collect(),
                page.next_page_token,
            )
        }
    })
    .await;
    let mut want_orders: Vec<String> = want.orders.keys().map(|(_, id)| id.clone()).collect();
    orders.sort();
    want_orders.sort();
    assert_eq!(orders, want_orders);

    // Bad input names the field.
    let mut bad = list("t1", 5);
    bad.page_token = "zz".into();
    assert_invalid(q.list_carts(bad).await.unwrap_err(), "page_token");
    let mut bad = list("t1", 5);
    bad.status = Some("lost".into());
    assert_invalid(q.list_carts(bad).await.unwrap_err(), "status");
    let mut bad = list("t1", 5);
    bad.updated_since = Some("yesterday".into());
    assert_invalid(q.list_carts(bad).await.unwrap_err(), "updated_since");
    // A value of any size is refused, and not echoed whole.
    let long = "x".repeat(5000);
    for set in [
        (|r: &mut pb::ListCartsRequest, v: &str| r.user_id = Some(v.into()))
            as fn(&mut pb::ListCartsRequest, &str),
        |r, v| r.status = Some(v.into()),
        |r, v| r.updated_since = Some(v.into()),
    ] {
        let mut bad = list("t1", 5);
        set(&mut bad, &long);
        let status = q.list_carts(bad).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().len() < 500, "{}", status.message());
    }
    let mut bad = list("t1", 5);
    bad.page_token = "aéa".into();
    assert_invalid(q.list_carts(bad).await.unwrap_err(), "page_token");
    let first = q.list_carts(list("t1", 2)).await.unwrap().into_inner();
    let wrong_listing = q
        .list_orders(pb::ListOrdersRequest {
            tenant: "t1".into(),
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_invalid(wrong_listing, "page_token");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn health_ready_and_metrics_tell_the_truth() {
    let Some((env, _)) = common::env_published(2, &["t1"], 5, 30).await else {
        return;
    };
    let mut config = env.config("main");
    config.ready_max_lag = 0;
    // The first batch is held before its commit: the projection is behind the stream.
    let (hooks, reached, release) = common::hold_commit(1, CommitAction::Commit);
    let running = env.start(config, hooks).await;
    let base = format!("http://{}", running.http_addr);
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    tokio::task::spawn_blocking(move || reached.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("the first batch reaches its commit");
    // 503 naming the lag (not only some other check that is not ready yet).
    wait_until(
        || async {
            let Ok(r) = reqwest::get(format!("{base}/ready")).await else {
                return false;
            };
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            status == 503 && body["checks"]["lag"]["ok"] == false
        },
        WAIT,
    )
    .await
    .expect("/ready fails on the lag while the batch is held");
    release.send(()).unwrap();
    env.caught_up(&running).await;
    shared::test_support::http::wait_for_status(
        &reqwest::Client::new(),
        &format!("{base}/ready"),
        200,
        WAIT,
        "ready once caught up",
    )
    .await;
    let ready: serde_json::Value = reqwest::get(format!("{base}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for check in ["nats", "consumer", "lag", "rebuild"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
    }
    common::assert_metrics(
        &running,
        &[
            "cart_projection_lag_messages",
            "cart_projection_applied_sequence",
            "cart_projection_messages_applied_total",
            "cart_projection_batch_duration_seconds",
        ],
    )
    .await;
    running.stop().await.unwrap();
}

/// The projection reads the platform's JetStream gauges (`PROJECTION_JETSTREAM_STATS_SECS`)
/// with its own connection: its view's durable shows up with nothing pending once caught up,
/// and every scrape carries the process series.
#[tokio::test]
async fn metrics_carry_the_jetstream_gauges_and_the_process() {
    let Some((env, _)) = common::env_published(5, &["t1"], 5, 25).await else {
        return;
    };
    let config = projection::Config {
        jetstream_stats_secs: 1,
        ..env.config("jsstats")
    };
    let running = env.start_caught_up(config, Hooks::default()).await;
    let durable = r#"{stream="CART_EVENTS",consumer="projection-jsstats"}"#;
    let wanted = [
        format!("cart_jetstream_consumer_num_pending{durable} 0"),
        format!("cart_jetstream_consumer_num_ack_pending{durable} 0"),
        r#"cart_jetstream_stream_max_bytes{stream="KV_CART_NODES"} -1"#.to_owned(),
    ];
    let seen = wait_until(
        || async {
            let text = common::metrics(&running).await;
            wanted.iter().all(|w| text.contains(w.as_str()))
        },
        WAIT,
    )
    .await;
    if let Err(e) = seen {
        panic!("{e}: {wanted:?} in\n{}", common::metrics(&running).await);
    }
    common::assert_metrics(
        &running,
        &["process_resident_memory_bytes", "process_open_fds"],
    )
    .await;
    running.stop().await.unwrap();
}
