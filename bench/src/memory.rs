//! `memory` mode: heap bytes per cached cart (three lines each) over many carts, measured with
//! the counting allocator as the growth of live heap while a node loads them. Load throughput
//! is compared with the raw read of the same messages (baseline), like the other modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_client::CartClient;
use cart_domain::ids::{CartId, TenantId};
use cart_domain::{AddItem, Cart, Command, Context};
use proto::cart::v1 as pb;
use shared::headers::RequestContext;

use super::raw::{TENANT, append};
use super::{Report, Summary, alloc};
use tests::stack::Stack;

const SKUS: [&str; 3] = ["TEST-SKU-123", "BOOK-NOVEL-01", "FOOD-COFFEE-500"];

fn three_lines() -> Vec<cart_domain::Event> {
    let seed = aggregate::seed::parse(tests::stack::CATALOG_JSON).expect("catalog");
    let catalog = cart_domain::catalog::CatalogSnapshot::from_seed(seed);
    let ctx = Context {
        now: time::OffsetDateTime::now_utc(),
        catalog: &catalog,
        limits: Default::default(),
    };
    let items = SKUS
        .iter()
        .map(|s| AddItem {
            sku: (*s).into(),
            quantity: 2,
            country: "se".into(),
            store_id: None,
        })
        .collect();
    cart_domain::decide(
        &Cart::new(CartId::parse("x").unwrap()),
        Command::AddItems { items },
        &ctx,
    )
    .expect("catalog SKUs")
}

/// Load `ids[range]` through GetCart with `concurrency` tasks; returns (loads, elapsed).
async fn load(
    client: &CartClient,
    ids: &Arc<Vec<CartId>>,
    from: usize,
    to: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, ids) = (client.clone(), ids.clone());
        tasks.spawn(async move {
            let ctx = RequestContext::new(TenantId::parse(TENANT).unwrap());
            let mut i = from + w;
            while i < to {
                let req = pb::GetCartRequest {
                    tenant: TENANT.into(),
                    cart_id: ids[i].to_string(),
                    min_version: None,
                    render: pb::Render::Snapshot.into(),
                };
                client
                    .get_cart(&ctx, req)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                i += concurrency;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

pub async fn run(stack: &Stack, carts: usize, concurrency: usize) -> anyhow::Result<Report> {
    alloc::start_counting();
    alloc::ensure_installed()?;
    let run = super::run_id();
    let ids: Arc<Vec<CartId>> = Arc::new(
        (0..carts)
            .map(|i| CartId::parse(&format!("mem-{run}-{i}")).unwrap())
            .collect(),
    );
    eprintln!("preparing {carts} three-line carts …");
    let events = three_lines();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32usize {
        let (js, ids, events) = (stack.js.clone(), ids.clone(), events.clone());
        tasks.spawn(async move {
            for cart in ids.iter().skip(w).step_by(32) {
                append(&js, cart, 1, 0, &events).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }

    // Baseline: raw reads of the same carts' messages.
    let tenant = TenantId::parse(TENANT).unwrap();
    let sample = carts.min(5_000);
    let t = Instant::now();
    for cart in ids.iter().take(sample) {
        let subject = shared::subjects::cart_events(&tenant, cart);
        shared::nats::read_subject_after(
            &stack.client,
            shared::subjects::CART_EVENTS_STREAM,
            &subject,
            0,
            &Default::default(),
        )
        .await?;
    }
    let raw_elapsed = t.elapsed();

    let mut cfg = stack.aggregate_config("mem");
    cfg.placement = false;
    cfg.cache_capacity = carts as u64 * 2;
    cfg.snapshot_every = 0;
    let node = aggregate::start(cfg).await?;
    let client = CartClient::new(
        cart_client::ClientConfig::default(),
        None,
        vec![node.grpc_addr.to_string()],
    );
    let warm = (carts / 50).max(100).min(carts);
    load(&client, &ids, 0, warm, concurrency).await?;
    let before = alloc::allocated();
    let elapsed = load(&client, &ids, warm, carts, concurrency).await?;
    let after = alloc::allocated();
    let cached = node.carts.cached_carts();
    let per_cart = (after - before) as f64 / (carts - warm) as f64;
    node.drain().await?;

    let snapshot_json = {
        let mut state = cart_domain::CartState::new(ids[0].clone());
        let msg = cart_domain::EventMessage::new(
            shared::TenantId::default_tenant(),
            ids[0].clone(),
            cart_domain::ids::CommandId::new(),
            1,
            time::OffsetDateTime::now_utc(),
            &events,
        );
        state.commit(&msg, &events, 1, cart_domain::Retain::DEFAULT);
        serde_json::to_vec(&state)?.len()
    };
    let summary = |ops: usize, d: Duration| Summary {
        ops_per_s: ops as f64 / d.as_secs_f64().max(1e-9),
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
        ops: ops as u64,
    };
    let mut report = Report::new(
        "memory",
        concurrency,
        elapsed,
        summary(sample, raw_elapsed),
        summary(carts - warm, elapsed),
    );
    report.notes = vec![
        format!("bytes per cached 3-line cart: {per_cart:.0} (target ≤ 2048), over {} carts; cache holds {cached}", carts - warm),
        format!("for scale: one cart's snapshot JSON is {snapshot_json} bytes"),
        "baseline: sequential raw reads of cart messages; subject: concurrent cold GetCart loads (ops = carts loaded)".into(),
    ];
    report.memory_bytes_per_cart = Some(per_cart);
    Ok(report)
}
