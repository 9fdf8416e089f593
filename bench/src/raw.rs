//! The baseline: plain JetStream appends of cart-sized event messages with the same headers and
//! the same `Nats-Expected-Last-Subject-Sequence` fence the aggregate uses, one subject per
//! worker. Also the raw writers other modes use to prepare data quickly.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::{Command, Event, EventMessage};
use shared::headers::RequestContext;
use shared::nats::event_publish;

use super::{Measured, Worker, drive};

pub const TENANT: &str = "bench";

/// Events of `AddItem(sku, 1)` decided against an empty cart: a realistic `ItemAdded`.
pub fn item_added(sku: &str) -> Vec<Event> {
    let seed = aggregate::seed::parse(tests::stack::CATALOG_JSON).expect("catalog");
    let catalog = cart_domain::catalog::CatalogSnapshot::from_seed(seed);
    let cart = cart_domain::Cart::new(CartId::parse("x").unwrap());
    let ctx = cart_domain::Context {
        now: time::OffsetDateTime::now_utc(),
        catalog: &catalog,
        limits: Default::default(),
    };
    cart_domain::decide(
        &cart,
        Command::AddItem(cart_domain::AddItem {
            sku: sku.into(),
            quantity: 1,
            country: "se".into(),
            store_id: None,
        }),
        &ctx,
    )
    .expect("catalog SKU")
}

/// Publish one event message the way the aggregate does.
pub async fn append(
    js: &jetstream::Context,
    cart: &CartId,
    revision: u64,
    expected: u64,
    events: &[Event],
) -> anyhow::Result<u64> {
    let tenant = TenantId::parse(TENANT).unwrap();
    let (subject, publish) = cart_event_publish(&tenant, cart, revision, events, Some(expected));
    let ack = js.send_publish(subject, publish).await?.await?;
    Ok(ack.sequence)
}

/// Revision `revision` of `cart` as the aggregate publishes it, under a new command id: its
/// subject and the message, fenced on the cart's last sequence when `expected` is given.
pub fn cart_event_publish(
    tenant: &TenantId,
    cart: &CartId,
    revision: u64,
    events: &[Event],
    expected: Option<u64>,
) -> (String, PublishMessage) {
    let msg = EventMessage::new(
        tenant.clone(),
        cart.clone(),
        CommandId::new(),
        revision,
        time::OffsetDateTime::now_utc(),
        events,
    );
    let publish = event_publish(&msg, &RequestContext::new(tenant.clone()), expected);
    (shared::subjects::cart_events(tenant, cart), publish)
}

struct RawWorker {
    js: jetstream::Context,
    cart: CartId,
    revision: u64,
    last: u64,
    events: Vec<Event>,
}

impl Worker for RawWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        self.last = append(
            &self.js,
            &self.cart,
            self.revision + 1,
            self.last,
            &self.events,
        )
        .await?;
        self.revision += 1;
        Ok(())
    }
}

/// `concurrency` workers, each appending to its own cart subject.
pub async fn baseline(
    js: &jetstream::Context,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let run = super::run_id();
    let events = item_added("TEST-SKU-456");
    let workers = (0..concurrency)
        .map(|i| RawWorker {
            js: js.clone(),
            cart: CartId::parse(&format!("raw-{run}-{i}")).unwrap(),
            revision: 0,
            last: 0,
            events: events.clone(),
        })
        .collect();
    drive(workers, warmup, duration).await
}
