//! `cold-load` mode: how long a node takes to load a cart it has not cached, for carts with a
//! long history (1,000 messages). The baseline is the raw read of the same messages (one batch
//! direct get, no decoding); the subject is `GetCart` on a fresh node (full replay), and the
//! notes add the common case: snapshot plus a short tail.

use std::sync::Arc;
use std::time::Duration;

use cart_client::CartClient;
use cart_domain::ids::{CartId, TenantId};
use cart_domain::{Event, event::ItemQuantityChanged};
use proto::cart::v1 as pb;
use shared::headers::RequestContext;

use super::raw::{TENANT, append, item_added};
use super::{Report, sequential};
use tests::stack::Stack;

/// Write `events` messages to each cart: an `ItemAdded`, then quantity changes.
async fn prepare(stack: &Stack, carts: &[CartId], from: u64, events: u64) -> anyhow::Result<()> {
    let added = item_added("TEST-SKU-456");
    let carts = Arc::new(carts.to_vec());
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16usize {
        let (js, carts, added) = (stack.js.clone(), carts.clone(), added.clone());
        tasks.spawn(async move {
            for cart in carts.iter().skip(worker).step_by(16) {
                let mut last = last_sequence(&js, cart).await?;
                for revision in from + 1..=from + events {
                    let evs = if revision == 1 {
                        added.clone()
                    } else {
                        vec![Event::ItemQuantityChanged(ItemQuantityChanged {
                            line_id: 1,
                            quantity: (revision % 900 + 1) as u32,
                        })]
                    };
                    last = append(&js, cart, revision, last, &evs).await?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

async fn last_sequence(js: &async_nats::jetstream::Context, cart: &CartId) -> anyhow::Result<u64> {
    let tenant = TenantId::parse(TENANT).unwrap();
    let subject = shared::subjects::cart_events(&tenant, cart);
    let stream = js.get_stream(shared::subjects::CART_EVENTS_STREAM).await?;
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(m.sequence),
        Err(_) => Ok(0),
    }
}

async fn load_all(client: &CartClient, carts: &[CartId]) -> super::Measured {
    let ctx = RequestContext::new(TenantId::parse(TENANT).unwrap());
    sequential(carts.len(), |i| {
        let req = pb::GetCartRequest {
            tenant: TENANT.into(),
            cart_id: carts[i].to_string(),
            min_version: None,
            render: pb::Render::Snapshot.into(),
        };
        let (client, ctx) = (client.clone(), ctx.clone());
        async move {
            client
                .get_cart(&ctx, req)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}"))
        }
    })
    .await
}

fn node_client(node: &aggregate::Running) -> CartClient {
    CartClient::new(
        cart_client::ClientConfig::default(),
        None,
        vec![node.grpc_addr.to_string()],
    )
}

pub async fn run(stack: &Stack, carts: usize, events: u64) -> anyhow::Result<Report> {
    let run = super::run_id();
    let ids: Vec<CartId> = (0..carts)
        .map(|i| CartId::parse(&format!("cold-{run}-{i}")).unwrap())
        .collect();
    eprintln!("preparing {carts} carts × {events} messages …");
    prepare(stack, &ids, 0, events).await?;

    let tenant = TenantId::parse(TENANT).unwrap();
    let baseline = sequential(ids.len(), |i| {
        let subject = shared::subjects::cart_events(&tenant, &ids[i]);
        let client = stack.client.clone();
        async move {
            let got = shared::nats::read_subject_after(
                &client,
                shared::subjects::CART_EVENTS_STREAM,
                &subject,
                0,
                &shared::nats::BatchGetOptions {
                    batch: shared::nats::direct_get::MAX_BATCH,
                    timeout: Duration::from_secs(5),
                },
            )
            .await?;
            anyhow::ensure!(got.len() as u64 == events, "read {} messages", got.len());
            Ok(())
        }
    })
    .await;

    // Full replay on a fresh node (no snapshot exists yet).
    let mut cfg = stack.aggregate_config("cold-a");
    cfg.placement = false;
    let node = aggregate::start(cfg).await?;
    let full = load_all(&node_client(&node), &ids).await;
    // Those loads offered snapshots; write them, add a realistic tail, load on a fresh node.
    node.carts.flush_snapshots().await;
    node.drain().await?;
    let tail = 25;
    prepare(stack, &ids, events, tail).await?;
    let mut cfg = stack.aggregate_config("cold-b");
    cfg.placement = false;
    let node = aggregate::start(cfg).await?;
    let snap = load_all(&node_client(&node), &ids).await;
    node.drain().await?;

    let base = baseline.summary();
    let subject = full.summary();
    let with_snapshot = snap.summary();
    let mut report = Report::new(
        "cold-load",
        1,
        baseline.elapsed + full.elapsed,
        base,
        subject,
    );
    report.notes = vec![
        format!("{carts} carts of {events} messages; loads are sequential, one cart at a time"),
        "baseline: batch direct get of the cart's messages (no decoding)".into(),
        "subject: GetCart on a node that never saw the cart (no snapshot: full replay)".into(),
        format!(
            "snapshot + {tail}-message tail on a fresh node: p50 {:.3} ms, p99 {:.3} ms",
            with_snapshot.p50_ms, with_snapshot.p99_ms
        ),
    ];
    if let Some(e) = full.first_error.or(snap.first_error) {
        report.notes.push(format!("first error: {e}"));
    }
    Ok(report)
}
