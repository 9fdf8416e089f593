//! Random command sequences on many carts, decided by `cart_domain::decide` and published
//! exactly like the aggregate appends them: one JSON envelope per accepted command on
//! `cart.events.<tenant>.<cart_id>`, with the request-context headers, `cart-event-types`,
//! `Nats-Msg-Id` and `Nats-Expected-Last-Subject-Sequence`.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use cart_domain::catalog::{CatalogSeed, CatalogSnapshot};
use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::{AddItem, CartState, Command, Context, Event, EventMessage, Limits, decide};
use projection::write::changes::Incoming;
use shared::headers::RequestContext;
use time::OffsetDateTime;

/// A cart as the test knows it: its state and every message published for it.
#[derive(Clone)]
pub struct SimCart {
    pub tenant: TenantId,
    pub id: CartId,
    pub state: CartState,
    pub messages: Vec<(u64, EventMessage)>,
}

pub struct Generator {
    rng: fastrand::Rng,
    catalog: CatalogSnapshot,
    skus: Vec<String>,
    pub carts: Vec<SimCart>,
    /// Event time of the next message.
    pub clock: OffsetDateTime,
    /// Carts `step` leaves alone (indexes into `carts`).
    pub frozen: Vec<usize>,
    /// How much the clock advances per message (0: all messages at the same time).
    pub step: Duration,
}

const PROVIDERS: &[&str] = &["standard", "express", "postnord-pickup", "instore", "nope"];
const VOUCHERS: &[&str] = &["WELCOME10", "FIFTYOFF", "SUMMER2020", "NOPE"];

impl Generator {
    /// `carts_per_tenant` carts (`cart-000`, ...) in each of `tenants`; event times start a
    /// day ago and advance a second per message.
    pub fn new(seed: u64, tenants: &[&str], carts_per_tenant: usize) -> Self {
        let seed_file: CatalogSeed =
            serde_json::from_str(include_str!("../../../deploy/catalog.json")).unwrap();
        let catalog = CatalogSnapshot::from_seed(seed_file);
        let mut skus: Vec<String> = catalog.products.keys().cloned().collect();
        skus.sort();
        skus.push("NO-SUCH-SKU".into());
        let mut carts = Vec::new();
        for t in tenants {
            for i in 0..carts_per_tenant {
                let id = CartId::parse(&format!("cart-{i:03}")).unwrap();
                carts.push(SimCart {
                    tenant: TenantId::parse(t).unwrap(),
                    state: CartState::new(id.clone()),
                    id,
                    messages: Vec::new(),
                });
            }
        }
        Self {
            rng: fastrand::Rng::with_seed(seed),
            catalog,
            skus,
            carts,
            clock: OffsetDateTime::now_utc() - time::Duration::days(1),
            step: Duration::from_secs(1),
            frozen: Vec::new(),
        }
    }

    pub fn message_count(&self) -> usize {
        self.carts.iter().map(|c| c.messages.len()).sum()
    }

    fn add(&mut self) -> Command {
        let sku = self.skus[self.rng.usize(..self.skus.len())].clone();
        Command::AddItem(AddItem {
            sku,
            quantity: self.rng.u32(1..4),
            country: "se".into(),
            store_id: None,
        })
    }

    fn command(&mut self, index: usize) -> Command {
        let cart = &self.carts[index].state.cart;
        let name = cart.id.to_string();
        let line = match cart.lines.len() {
            0 => None,
            n => Some(cart.lines[self.rng.usize(..n)].id),
        };
        let attempt = cart.checkout.as_ref().map(|c| c.attempt_id.clone());
        // What a provider reports paid for the current attempt (placed when the cart still
        // matches it, recorded as a mismatch otherwise: both are events the views must fold).
        let paid = cart
            .checkout
            .as_deref()
            .map(cart_domain::cart::Checkout::paid_in_full)
            .unwrap_or_else(|| cart_domain::PaidOrder {
                attempt_id: "a0".into(),
                amount: 0,
                currency: "SEK".into(),
                lines_digest: String::new(),
            });
        let delivery = cart.deliveries.first().map(|d| d.id);
        let voucher = cart.vouchers.first().map(|v| v.id);
        let in_checkout = cart.payment_in_progress();
        // The cart's provider order: kept across attempts (the runner updates it) until a
        // paid one could not be placed.
        let order_id = cart
            .provider_order_id
            .clone()
            .unwrap_or_else(|| format!("ko-{name}-{}", paid.attempt_id));
        let roll = self.rng.u32(0..100);
        if in_checkout {
            // A shopper in checkout often pays; many change the cart first (re-opening it).
            return match roll {
                0..=44 => self.add(),
                45..=69 => Command::RecordProviderOrder {
                    attempt_id: attempt.unwrap_or_else(|| "a0".into()),
                    provider_order_id: order_id,
                    status: "checkout_incomplete".into(),
                },
                70..=89 => Command::ConfirmOrder {
                    provider_order_id: order_id,
                    order_reference: format!("ref-{name}"),
                    paid,
                },
                90..=94 => Command::CancelCheckout,
                _ => Command::FailCheckout {
                    attempt_id: attempt.unwrap_or_else(|| "a0".into()),
                    code: "declined".into(),
                    reason: "card declined".into(),
                },
            };
        }
        match (roll, line) {
            (0..=34, _) | (35..=55, None) => self.add(),
            (35..=44, Some(line_id)) => Command::ChangeQuantity {
                line_id,
                quantity: self.rng.u32(1..6),
            },
            (45..=51, Some(line_id)) => Command::RemoveItem { line_id },
            (52..=55, Some(_)) => Command::ClearCart,
            (56..=61, _) => Command::AddDelivery {
                provider: PROVIDERS[self.rng.usize(..PROVIDERS.len())].into(),
                line_ids: Vec::new(),
            },
            (62..=64, _) => Command::RemoveDelivery {
                delivery_id: delivery.unwrap_or(1),
            },
            (65..=70, _) => Command::ApplyVoucher {
                code: VOUCHERS[self.rng.usize(..VOUCHERS.len())].into(),
            },
            (71..=72, _) => Command::RemoveVoucher {
                voucher_id: voucher.unwrap_or(1),
            },
            (73..=77, _) => Command::SetUser {
                user_id: match self.rng.u32(0..4) {
                    0 => None,
                    n => Some(format!("user-{n}")),
                },
            },
            (78..=89, _) => Command::StartCheckout {
                attempt_id: format!("a{}", self.rng.u32(0..1000)),
                country: None,
            },
            // A late payment of an order the cart moved past (or never had): recorded as a
            // mismatch, never placed.
            (90..=95, _) => Command::ConfirmOrder {
                provider_order_id: order_id,
                order_reference: format!("ref-{name}"),
                paid,
            },
            (96..=97, _) => Command::CancelCheckout,
            _ => Command::FailCheckout {
                attempt_id: attempt.unwrap_or_else(|| "a0".into()),
                code: "declined".into(),
                reason: "card declined".into(),
            },
        }
    }

    /// Publishes one accepted command on a random cart that can still change.
    pub async fn step(&mut self, js: &jetstream::Context) -> u64 {
        loop {
            let index = self.pick();
            let cmd = self.command(index);
            if let Some(seq) = self.execute(js, index, cmd).await {
                return seq;
            }
        }
    }

    /// A random cart that can still change.
    fn pick(&mut self) -> usize {
        let open: Vec<usize> = (0..self.carts.len())
            .filter(|&i| !self.carts[i].state.cart.order_placed() && !self.frozen.contains(&i))
            .collect();
        assert!(!open.is_empty(), "every cart has an order; use more carts");
        open[self.rng.usize(..open.len())]
    }

    /// Like [`Generator::step`] without NATS (for tests of the writer alone): the message as
    /// it would be stored at stream sequence `seq`.
    pub fn step_offline(&mut self, seq: u64) -> Incoming {
        loop {
            let index = self.pick();
            let cmd = self.command(index);
            if let Some(inc) = self.execute_offline(index, cmd, seq) {
                return inc;
            }
        }
    }

    /// Like [`Generator::execute`] without NATS: the message as stored at sequence `seq`, or
    /// `None` when the command is rejected or changes nothing.
    pub fn execute_offline(&mut self, index: usize, cmd: Command, seq: u64) -> Option<Incoming> {
        let (events, msg) = self.decide_message(index, cmd, |_| {})?;
        let inc = Incoming::new(
            seq,
            shared::subjects::cart_events(&msg.tenant, &msg.cart_id),
            None,
            Bytes::from(msg.to_json()),
            1,
        );
        self.record(index, seq, &events, msg);
        Some(inc)
    }

    /// Publishes `n` accepted commands.
    pub async fn publish(&mut self, js: &jetstream::Context, n: usize) {
        for _ in 0..n {
            self.step(js).await;
        }
    }

    /// Checks out cart `index` and pays exactly what the attempt charges: its order is placed.
    /// True when it was (the cart had items and could still change).
    pub async fn place_order(&mut self, js: &jetstream::Context, index: usize) -> bool {
        let attempt = format!("placed-{index}");
        let start = Command::StartCheckout {
            attempt_id: attempt.clone(),
            country: None,
        };
        if self.execute(js, index, start).await.is_none() {
            return false;
        }
        let checkout = self.carts[index].state.cart.checkout.clone();
        let Some(c) = checkout.filter(|c| c.attempt_id == attempt) else {
            return false;
        };
        let confirm = Command::ConfirmOrder {
            provider_order_id: format!("ko-{attempt}"),
            order_reference: format!("ref-{attempt}"),
            paid: cart_domain::PaidOrder {
                attempt_id: c.attempt_id,
                amount: c.amount,
                currency: c.currency,
                lines_digest: c.lines_digest,
            },
        };
        self.execute(js, index, confirm).await.is_some()
            && self.carts[index].state.cart.order_placed()
    }

    /// Decides `cmd` on cart `index` and publishes its events; `None` when rejected or empty.
    pub async fn execute(
        &mut self,
        js: &jetstream::Context,
        index: usize,
        cmd: Command,
    ) -> Option<u64> {
        self.execute_with(js, index, cmd, |_| {}).await
    }

    /// Decides `cmd` on the cart of `tenant` named `cart` as the cart's last message (the
    /// generator leaves the cart alone from then on); returns the cart's index and the
    /// message's stream sequence.
    pub async fn execute_last(
        &mut self,
        js: &jetstream::Context,
        tenant: &str,
        cart: &str,
        cmd: Command,
    ) -> (usize, u64) {
        let index = self.index(tenant, cart);
        self.frozen.push(index);
        let seq = self.execute(js, index, cmd).await.expect("accepted");
        (index, seq)
    }

    /// [`Generator::execute`], with `edit` applied to the envelope before it is published.
    pub async fn execute_with(
        &mut self,
        js: &jetstream::Context,
        index: usize,
        cmd: Command,
        edit: impl FnOnce(&mut EventMessage),
    ) -> Option<u64> {
        let expected = self.carts[index].state.version;
        let (events, msg) = self.decide_message(index, cmd, edit)?;
        let seq = publish(js, &msg, expected).await;
        self.record(index, seq, &events, msg);
        Some(seq)
    }

    /// The message `cmd` appends to cart `index` (`None` when rejected or empty).
    fn decide_message(
        &self,
        index: usize,
        cmd: Command,
        edit: impl FnOnce(&mut EventMessage),
    ) -> Option<(Vec<Event>, EventMessage)> {
        let now = self.clock;
        let events = {
            let ctx = Context {
                now,
                catalog: &self.catalog,
                limits: Limits::default(),
            };
            decide(&self.carts[index].state.cart, cmd, &ctx).ok()?
        };
        if events.is_empty() {
            return None;
        }
        let cart = &self.carts[index];
        let mut msg = EventMessage::new(
            cart.tenant.clone(),
            cart.id.clone(),
            CommandId::new(),
            cart.state.revision + 1,
            now,
            &events,
        );
        edit(&mut msg);
        Some((events, msg))
    }

    /// Records `msg` as stored at `seq` and advances the clock.
    fn record(&mut self, index: usize, seq: u64, events: &[Event], msg: EventMessage) {
        let cart = &mut self.carts[index];
        cart.state
            .commit(&msg, events, seq, cart_domain::Retain::DEFAULT);
        cart.messages.push((seq, msg));
        self.clock += self.step;
    }

    /// The index of the cart `tenant`/`cart`.
    pub fn index(&self, tenant: &str, cart: &str) -> usize {
        self.carts
            .iter()
            .position(|c| c.tenant.as_str() == tenant && c.id.as_str() == cart)
            .expect("known cart")
    }
}

/// Appends `msg` the way the aggregate does and returns its stream sequence.
pub async fn publish(js: &jetstream::Context, msg: &EventMessage, expected: u64) -> u64 {
    let ctx = RequestContext::new(msg.tenant.clone());
    let subject = shared::subjects::cart_events(&msg.tenant, &msg.cart_id);
    let publish = shared::nats::event_publish(msg, &ctx, Some(expected));
    js.send_publish(subject, publish)
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence
}

/// Publishes a raw payload on a cart subject (a message no aggregate would write).
pub async fn publish_raw(
    js: &jetstream::Context,
    tenant: &str,
    cart: &str,
    payload: &'static [u8],
) -> u64 {
    let tenant = TenantId::parse(tenant).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    RequestContext::new(tenant.clone()).to_nats_headers(&mut headers);
    let subject = shared::subjects::cart_events(&tenant, &CartId::parse(cart).unwrap());
    js.publish_with_headers(subject, headers, Bytes::from_static(payload))
        .await
        .expect("publish")
        .await
        .expect("publish ack")
        .sequence
}
