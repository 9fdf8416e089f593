//! The cart's state and `evolve`: the state is the left fold of its events.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::{self, Event};
// Value types that events carry live with them.
pub use super::event::{Marking, PickupPoint};
pub use super::line_product::LineProduct;
use super::money::TaxRate;
use crate::catalog::VoucherDefinition;
use crate::ids::CartId;

/// The shape of the cart's state as this build stores it (in the aggregate's snapshots).
/// Bump it with every field added to the cart or anything in it: a build that reads a
/// snapshot of a newer shape would drop that field without a word and, writing the cart's
/// next snapshot, lose it for the newer build too, so it ignores such a snapshot (the stream
/// has every event) and never writes that cart as one.
pub const STATE_SCHEMA: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub id: u32,
    pub quantity: u32,
    #[serde(serialize_with = "crate::line_product::json_once")]
    pub product: Arc<LineProduct>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<Box<str>>,
    #[serde(default)]
    pub country: Box<str>,
    /// What the shopper set on the line, inline in the JSON (`"marking": {..}`).
    #[serde(flatten)]
    pub options: LineOptions,
}

/// What a shopper sets on one line besides the product and quantity. It is written inline,
/// in the cart's JSON and in both cart views (`items[].marking`), so a new per-line option is
/// one field here (and its event's arm in [`Cart::apply`]). Keep each option small (boxed):
/// every cached line carries the struct.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// camelCase as the views are (the stored cart's own fields are snake_case).
#[serde(rename_all = "camelCase")]
pub struct LineOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marking: Option<Box<Marking>>,
}

impl Line {
    pub fn total_gross(&self) -> i64 {
        self.product.unit_price * i64::from(self.quantity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u32,
    pub provider: String,
    pub line_ids: Vec<u32>,
    pub price: i64,
    pub tax_rate: TaxRate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_point: Option<PickupPoint>,
}

/// A voucher on the cart: its id there and the catalog's definition as it was when it was
/// applied (an expired one is taken off the cart when a checkout starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedVoucher {
    pub id: u32,
    #[serde(flatten)]
    pub definition: VoucherDefinition,
}

/// Subscription details the storefront attached to the cart (upserted by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionDetails {
    pub id: String,
    pub offering_code: String,
    pub signing_type: String,
    /// A JSON object, as the storefront sent it.
    #[serde(default)]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckoutStatus {
    /// The runner is creating (or updating) the provider order.
    Started,
    /// The provider order exists; the shopper is paying.
    OrderCreated,
    /// The provider asked to complete the purchase and the cart matched: it holds still for
    /// the purchase from `approved_at` (Unix seconds) for [`crate::payment::PURCHASE_HOLD_SECS`].
    PaymentApproved {
        approved_at: i64,
    },
    Failed {
        code: String,
        reason: String,
    },
    Cancelled,
    /// The cart changed during checkout; the next checkout updates the same provider order.
    Reopened,
    /// The order is placed.
    Completed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub attempt_id: String,
    #[serde(flatten)]
    pub status: CheckoutStatus,
    /// What the attempt asks the provider to charge (minor units incl. VAT), its currency and
    /// [`event::lines_digest`] of its lines: a paid order is checked against them.
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub lines_digest: String,
    /// The cart's attempts before this one, newest last (at most
    /// [`Checkout::EARLIER_ATTEMPTS_KEPT`]): an id is never started twice, since the runner's
    /// results and feedback for an attempt are keyed by its id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_attempts: Vec<String>,
}

impl Checkout {
    pub const EARLIER_ATTEMPTS_KEPT: usize = 16;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub provider_order_id: String,
    pub order_reference: String,
}

/// A provider order paid for the cart that was not placed, and why (see `OrderMismatched`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MismatchedOrder {
    pub provider_order_id: String,
    pub attempt_id: String,
    pub code: String,
    pub reason: String,
}

/// A cart: lines, deliveries, vouchers, user and checkout progress. Totals are derived
/// ([`super::totals`]), never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub id: CartId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default)]
    pub lines: Vec<Line>,
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
    #[serde(default)]
    pub vouchers: Vec<AppliedVoucher>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Boxed, like `order`: most cached carts have neither, and a box keeps every cached cart
    /// ~170 bytes smaller (the JSON is the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<Box<Checkout>>,
    /// The provider order of this cart, kept across checkout attempts so a re-opened checkout
    /// updates it instead of creating a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Box<PlacedOrder>>,
    /// Subscription details, in the order they were first added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscription_details: Vec<SubscriptionDetails>,
    /// Provider orders paid for this cart that could not be placed (newest last, at most
    /// [`Cart::MAX_MISMATCHED_ORDERS`]): a repeated push of one of them changes nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatched_orders: Vec<MismatchedOrder>,
    #[serde(default = "one")]
    pub next_line_id: u32,
    #[serde(default = "one")]
    pub next_delivery_id: u32,
    #[serde(default = "one")]
    pub next_voucher_id: u32,
}

fn one() -> u32 {
    1
}

impl Cart {
    /// How many mismatched provider orders a cart remembers.
    pub const MAX_MISMATCHED_ORDERS: usize = 8;

    pub fn new(id: CartId) -> Self {
        Self {
            id,
            currency: None,
            lines: Vec::new(),
            deliveries: Vec::new(),
            vouchers: Vec::new(),
            user_id: None,
            checkout: None,
            provider_order_id: None,
            payment_status: None,
            order: None,
            subscription_details: Vec::new(),
            mismatched_orders: Vec::new(),
            next_line_id: 1,
            next_delivery_id: 1,
            next_voucher_id: 1,
        }
    }

    pub fn line(&self, id: u32) -> Option<&Line> {
        self.lines.iter().find(|l| l.id == id)
    }

    pub fn delivery(&self, id: u32) -> Option<&Delivery> {
        self.deliveries.iter().find(|d| d.id == id)
    }

    /// The line holding `sku` from `store_id`, if any (adding it again increases its quantity).
    pub fn line_for(&self, sku: &str, store_id: Option<&str>) -> Option<&Line> {
        self.lines
            .iter()
            .find(|l| l.product.sku == sku && l.store_id.as_deref() == store_id)
    }

    /// The delivery a line is assigned to, if any.
    pub fn delivery_of(&self, line_id: u32) -> Option<&Delivery> {
        self.deliveries
            .iter()
            .find(|d| d.line_ids.contains(&line_id))
    }

    /// The mismatch recorded for a paid provider order, if it was not placed.
    pub fn mismatch(&self, provider_order_id: &str) -> Option<&MismatchedOrder> {
        self.mismatched_orders
            .iter()
            .find(|m| m.provider_order_id == provider_order_id)
    }

    pub fn items_gross(&self) -> i64 {
        self.lines.iter().map(Line::total_gross).sum()
    }

    pub fn order_placed(&self) -> bool {
        self.order.is_some()
    }

    /// The provider order is being created (go-cart-actor `processing`).
    pub fn processing(&self) -> bool {
        matches!(
            self.checkout.as_deref(),
            Some(Checkout {
                status: CheckoutStatus::Started,
                ..
            })
        )
    }

    /// A checkout attempt is live: the shopper is (about to be) paying.
    pub fn payment_in_progress(&self) -> bool {
        self.live_checkout().is_some()
    }

    /// The live checkout attempt (its order being created, waiting for payment, or being
    /// paid): the one a new checkout request continues instead of starting another.
    pub fn live_checkout(&self) -> Option<&Checkout> {
        self.checkout.as_deref().filter(|c| {
            matches!(
                c.status,
                CheckoutStatus::Started
                    | CheckoutStatus::OrderCreated
                    | CheckoutStatus::PaymentApproved { .. }
            )
        })
    }

    fn checkout_mut(&mut self, attempt_id: &str) -> Option<&mut Checkout> {
        self.checkout
            .as_deref_mut()
            .filter(|c| c.attempt_id == attempt_id)
    }
}

/// Apply one event. Total: every event that `decide` can emit is valid for the state it was
/// decided on, and an event naming something that no longer exists changes nothing.
pub fn evolve(mut cart: Cart, event: &Event) -> Cart {
    apply(&mut cart, event);
    cart
}

/// In-place form of [`evolve`], used on hot paths to avoid moving the cart.
pub fn apply(cart: &mut Cart, event: &Event) {
    match event {
        Event::ItemAdded(e) => {
            cart.currency
                .get_or_insert_with(|| e.product.currency.clone());
            cart.next_line_id = cart.next_line_id.max(e.line_id + 1);
            cart.lines.push(Line {
                id: e.line_id,
                quantity: e.quantity,
                product: Arc::clone(&e.product),
                store_id: e.store_id.as_deref().map(Into::into),
                country: e.country.as_str().into(),
                options: LineOptions::default(),
            });
        }
        Event::ItemQuantityChanged(e) => {
            if let Some(l) = cart.lines.iter_mut().find(|l| l.id == e.line_id) {
                l.quantity = e.quantity;
            }
        }
        Event::ItemRemoved(e) => {
            cart.lines.retain(|l| l.id != e.line_id);
            for d in &mut cart.deliveries {
                d.line_ids.retain(|id| *id != e.line_id);
            }
            if cart.lines.is_empty() {
                cart.currency = None;
            }
        }
        Event::CartCleared(_) => {
            cart.lines.clear();
            cart.deliveries.clear();
            cart.currency = None;
            // As go-cart-actor does: a cleared (or replaced) cart numbers its lines and
            // deliveries from 1 again, so `POST /cart/set` then `{"items":[1,2]}` works.
            cart.next_line_id = 1;
            cart.next_delivery_id = 1;
        }
        Event::DeliveryAdded(e) => {
            cart.next_delivery_id = cart.next_delivery_id.max(e.delivery_id + 1);
            cart.deliveries.push(Delivery {
                id: e.delivery_id,
                provider: e.provider.clone(),
                line_ids: e.line_ids.clone(),
                price: e.price,
                tax_rate: e.tax_rate,
                pickup_point: None,
            });
        }
        Event::DeliveryRemoved(e) => cart.deliveries.retain(|d| d.id != e.delivery_id),
        Event::PickupPointSet(e) => {
            if let Some(d) = cart.deliveries.iter_mut().find(|d| d.id == e.delivery_id) {
                d.pickup_point = Some(e.pickup_point.clone());
            }
        }
        Event::VoucherApplied(e) => {
            cart.next_voucher_id = cart.next_voucher_id.max(e.voucher_id + 1);
            cart.vouchers.push(AppliedVoucher {
                id: e.voucher_id,
                definition: e.definition.clone(),
            });
        }
        Event::VoucherRemoved(e) => cart.vouchers.retain(|v| v.id != e.voucher_id),
        Event::UserSet(e) => cart.user_id = e.user_id.clone(),
        Event::CartMerged(_) => {}
        Event::MarkingSet(e) => {
            if let Some(l) = cart.lines.iter_mut().find(|l| l.id == e.line_id) {
                l.options.marking = Some(Box::new(e.marking.clone()));
            }
        }
        Event::MarkingRemoved(e) => {
            if let Some(l) = cart.lines.iter_mut().find(|l| l.id == e.line_id) {
                l.options.marking = None;
            }
        }
        Event::CheckoutStarted(e) => {
            let mut earlier_attempts = Vec::new();
            if let Some(before) = cart.checkout.take() {
                earlier_attempts = before.earlier_attempts;
                if before.attempt_id != e.attempt_id {
                    earlier_attempts.push(before.attempt_id);
                }
                let over = earlier_attempts
                    .len()
                    .saturating_sub(Checkout::EARLIER_ATTEMPTS_KEPT);
                earlier_attempts.drain(..over);
            }
            cart.checkout = Some(Box::new(Checkout {
                attempt_id: e.attempt_id.clone(),
                status: CheckoutStatus::Started,
                amount: e.total_amount,
                currency: e.currency.clone(),
                lines_digest: event::lines_digest(&e.lines),
                earlier_attempts,
            }));
            if e.provider_order_id.is_some() {
                cart.provider_order_id.clone_from(&e.provider_order_id);
            }
            cart.payment_status = Some("pending".to_owned());
        }
        Event::CheckoutReopened(e) => {
            if let Some(c) = cart.checkout_mut(&e.attempt_id) {
                c.status = CheckoutStatus::Reopened;
                cart.payment_status = None;
            }
        }
        Event::ProviderOrderRecorded(e) => {
            cart.provider_order_id = Some(e.provider_order_id.clone());
            if let Some(c) = cart.checkout_mut(&e.attempt_id)
                && c.status == CheckoutStatus::Started
            {
                c.status = CheckoutStatus::OrderCreated;
                cart.payment_status = Some(e.status.clone());
            }
        }
        Event::PaymentApproved(e) => {
            if let Some(c) = cart.checkout_mut(&e.attempt_id)
                && matches!(
                    c.status,
                    CheckoutStatus::Started
                        | CheckoutStatus::OrderCreated
                        | CheckoutStatus::Reopened
                )
            {
                c.status = CheckoutStatus::PaymentApproved {
                    approved_at: e.approved_at,
                };
            }
        }
        Event::CheckoutFailed(e) => {
            if let Some(c) = cart.checkout_mut(&e.attempt_id) {
                c.status = CheckoutStatus::Failed {
                    code: e.code.clone(),
                    reason: e.reason.clone(),
                };
                cart.payment_status = Some("failed".to_owned());
            }
        }
        Event::CheckoutCancelled(e) => {
            if let Some(c) = cart.checkout_mut(&e.attempt_id) {
                c.status = CheckoutStatus::Cancelled;
                cart.payment_status = Some("cancelled".to_owned());
            }
        }
        Event::OrderPlaced(e) => {
            cart.order = Some(Box::new(PlacedOrder {
                provider_order_id: e.provider_order_id.clone(),
                order_reference: e.order_reference.clone(),
            }));
            cart.provider_order_id = Some(e.provider_order_id.clone());
            if let Some(c) = cart.checkout.as_mut() {
                c.status = CheckoutStatus::Completed;
            }
            cart.payment_status = Some(PAID_STATUS.to_owned());
        }
        Event::SubscriptionDetailsUpserted(e) => {
            let details = SubscriptionDetails {
                id: e.id.clone(),
                offering_code: e.offering_code.clone(),
                signing_type: e.signing_type.clone(),
                data: e.data.clone(),
            };
            match cart.subscription_details.iter_mut().find(|d| d.id == e.id) {
                Some(existing) => *existing = details,
                None => cart.subscription_details.push(details),
            }
        }
        Event::SubscriptionDetailsRemoved(e) => cart.subscription_details.retain(|d| d.id != e.id),
        Event::OrderMismatched(e) => {
            if cart.mismatched_orders.len() >= Cart::MAX_MISMATCHED_ORDERS {
                cart.mismatched_orders.remove(0);
            }
            cart.mismatched_orders.push(MismatchedOrder {
                provider_order_id: e.provider_order_id.clone(),
                attempt_id: e.attempt_id.clone(),
                code: e.code.clone(),
                reason: e.reason.clone(),
            });
            if cart.order.is_some() {
                return;
            }
            // The paid order is complete at the provider and can no longer be updated: the
            // next checkout creates a new one.
            if cart.provider_order_id.as_deref() == Some(e.provider_order_id.as_str()) {
                cart.provider_order_id = None;
            }
            if let Some(c) = cart.checkout_mut(&e.attempt_id) {
                c.status = CheckoutStatus::Failed {
                    code: PAYMENT_MISMATCH.to_owned(),
                    reason: e.reason.clone(),
                };
                cart.payment_status = Some(PAYMENT_MISMATCH.to_owned());
            }
        }
    }
}

/// The checkout failure code and payment status of a paid order that could not be placed.
pub const PAYMENT_MISMATCH: &str = "payment_mismatch";
/// The provider's status of a paid order (any other is unpaid), a placed cart's payment status.
pub const PAID_STATUS: &str = "checkout_complete";
