//! Cart events: facts in the past tense, each with a type name and a version.
//!
//! On the wire an event is `{"type": "ItemAdded", "v": 2, "data": {...}}` inside an
//! [`EventMessage`] (one message per accepted command). Decoding is tolerant: unknown fields are
//! ignored, old versions are upcast to the current shape ([`upcast`]), and an unknown type is a
//! distinct error ([`EventDecodeError::UnknownType`]) that consumers count and skip.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::catalog::VoucherDefinition;
use crate::line_product::LineProduct;
use crate::money::TaxRate;

mod envelope;
pub use envelope::{EventDecodeError, EventMessage, EventRecord, Refusal, Refused};

/// A line is added, with the product facts the shopper saw (recorded, so replaying a cart
/// never consults the catalog). The facts are written inline in the event's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemAdded {
    pub line_id: u32,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
    #[serde(default)]
    pub country: String,
    /// Shared with the line it adds (see [`LineProduct`]).
    #[serde(flatten)]
    pub product: Arc<LineProduct>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemQuantityChanged {
    pub line_id: u32,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRemoved {
    pub line_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CartCleared {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAdded {
    pub delivery_id: u32,
    pub provider: String,
    pub line_ids: Vec<u32>,
    /// Price incl. VAT, minor units, from the delivery-pricing config at decide time.
    pub price: i64,
    pub tax_rate: TaxRate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRemoved {
    pub delivery_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickupPointSet {
    pub delivery_id: u32,
    pub pickup_point: PickupPoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoucherApplied {
    pub voucher_id: u32,
    /// The catalog's definition of the voucher when it was applied.
    #[serde(flatten)]
    pub definition: VoucherDefinition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoucherRemoved {
    pub voucher_id: u32,
}

/// Subscription details (e.g. a phone contract offered with an item) added or replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionDetailsUpserted {
    pub id: String,
    pub offering_code: String,
    pub signing_type: String,
    /// The storefront's own data for it (a JSON object), kept as given.
    #[serde(default)]
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionDetailsRemoved {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSet {
    /// `None` clears the user (logout).
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartMerged {
    pub source_cart_id: String,
    /// SKUs of the source cart that are no longer sold and were left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_skus: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkingSet {
    pub line_id: u32,
    pub marking: Marking,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkingRemoved {
    pub line_id: u32,
}

/// One order line as handed to the payment provider (Klarna order line shape, minor units).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutLine {
    /// `physical`, `shipping_fee` or `discount`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reference: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    pub tax_rate: TaxRate,
    pub total_amount: i64,
    pub total_tax_amount: i64,
    #[serde(default)]
    pub total_discount_amount: i64,
}

/// The durable intent to take payment: the runner's outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutStarted {
    pub attempt_id: String,
    /// The provider order created by an earlier attempt of this cart: update it, don't create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_order_id: Option<String>,
    pub currency: String,
    pub country: String,
    pub total_amount: i64,
    pub total_tax_amount: i64,
    pub lines: Vec<CheckoutLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutReopened {
    pub attempt_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderOrderRecorded {
    pub attempt_id: String,
    pub provider_order_id: String,
    /// The provider's order status, e.g. `checkout_incomplete`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutFailed {
    pub attempt_id: String,
    pub code: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutCancelled {
    pub attempt_id: String,
}

/// The order is placed: what the checkout attempt charged, which the provider confirmed as
/// paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub provider_order_id: String,
    pub order_reference: String,
    pub total_amount: i64,
    pub currency: String,
    /// The paid checkout attempt (absent in events recorded before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
}

/// The provider asked to complete the purchase of `provider_order_id` for checkout attempt
/// `attempt_id` and the cart matched it: the cart holds still for the purchase from
/// `approved_at` (Unix seconds) until the order is placed or fails, or the hold runs out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentApproved {
    pub attempt_id: String,
    pub provider_order_id: String,
    pub approved_at: i64,
}

/// A provider order was paid for this cart but cannot be placed: it does not match the
/// checkout attempt, or the cart changed after the attempt (see `Cart::check_paid`). The
/// runner leaves the provider order unacknowledged (or cancels it) and an operator decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMismatched {
    pub provider_order_id: String,
    /// The attempt the paid provider order is for.
    pub attempt_id: String,
    pub paid_amount: i64,
    pub currency: String,
    /// Why, as `PaymentMismatch::code` (`cart_changed`, `amount_differs`, ...).
    pub code: String,
    pub reason: String,
}

macro_rules! events {
    ($( $name:ident = $version:literal ),* $(,)?) => {
        /// Every event the cart knows, in its current version.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $( $name($name), )*
        }

        impl Event {
            /// Every event type name with its current version.
            pub const TYPES: &'static [(&'static str, u32)] = &[$( (stringify!($name), $version), )*];

            pub fn type_name(&self) -> &'static str {
                match self { $( Event::$name(_) => stringify!($name), )* }
            }

            pub fn version(&self) -> u32 {
                match self { $( Event::$name(_) => $version, )* }
            }

            pub fn encode(&self) -> EventRecord {
                let data = match self {
                    $( Event::$name(e) => serde_json::to_value(e), )*
                }
                .expect("event payloads always serialize");
                EventRecord { event_type: self.type_name().to_owned(), v: self.version(), data }
            }

            pub fn decode(record: &EventRecord) -> Result<Event, EventDecodeError> {
                let current = Self::TYPES
                    .iter()
                    .find(|(t, _)| *t == record.event_type)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| EventDecodeError::UnknownType(record.event_type.clone()))?;
                if record.v > current {
                    return Err(EventDecodeError::FutureVersion {
                        event_type: record.event_type.clone(),
                        v: record.v,
                        current,
                    });
                }
                // The current version is read in place; only an old one is copied to upcast.
                let upcast_data;
                let data = if record.v == current {
                    &record.data
                } else {
                    upcast_data = upcast(&record.event_type, record.v, record.data.clone())?;
                    &upcast_data
                };
                let invalid = |e: serde_json::Error| EventDecodeError::Invalid {
                    event_type: record.event_type.clone(),
                    v: record.v,
                    reason: e.to_string(),
                };
                match record.event_type.as_str() {
                    $( stringify!($name) => <$name as ::serde::Deserialize>::deserialize(data).map(Event::$name).map_err(invalid), )*
                    other => Err(EventDecodeError::UnknownType(other.to_owned())),
                }
            }
        }

        $(
            impl From<$name> for Event {
                fn from(e: $name) -> Event { Event::$name(e) }
            }
        )*
    };
}

events! {
    ItemAdded = 2,
    ItemQuantityChanged = 1,
    ItemRemoved = 1,
    CartCleared = 1,
    DeliveryAdded = 1,
    DeliveryRemoved = 1,
    PickupPointSet = 1,
    VoucherApplied = 1,
    VoucherRemoved = 1,
    UserSet = 1,
    CartMerged = 1,
    MarkingSet = 1,
    MarkingRemoved = 1,
    CheckoutStarted = 1,
    CheckoutReopened = 1,
    ProviderOrderRecorded = 1,
    CheckoutFailed = 1,
    CheckoutCancelled = 1,
    PaymentApproved = 1,
    OrderPlaced = 1,
    OrderMismatched = 1,
    SubscriptionDetailsUpserted = 1,
    SubscriptionDetailsRemoved = 1,
}

/// An `ItemAdded` v1 `tax` (a VAT percentage: `25`, `12.5`, `"25"`) in basis points; `None`
/// for anything else, which a silent 0 % (or 250,000 basis points) would turn into the wrong
/// VAT on every receipt of the cart.
fn v1_tax_rate(tax: &Value) -> Option<u32> {
    let percent = match tax {
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        other => other.as_f64()?,
    };
    let bp = (percent * 100.0).round();
    ((0.0..=f64::from(crate::money::TaxRate::MAX)).contains(&bp)).then_some(bp as u32)
}

/// The upcasting hook: turns an older version's `data` into the current shape, one step at a
/// time. Add a match arm when an event's version is bumped; never change an old arm.
pub fn upcast(event_type: &str, mut v: u32, mut data: Value) -> Result<Value, EventDecodeError> {
    let current = Event::TYPES
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, v)| *v)
        .unwrap_or(v);
    while v < current {
        data = match (event_type, v) {
            // ItemAdded v1 (the go-cart-actor event log shape) carried `price` and `tax` as a
            // VAT percentage and no currency; v2 names them `unit_price` and `tax_rate` (basis
            // points) and records the currency.
            ("ItemAdded", 1) => {
                let mut obj = match data {
                    Value::Object(o) => o,
                    _ => {
                        return Err(EventDecodeError::Invalid {
                            event_type: event_type.into(),
                            v,
                            reason: "data is not an object".into(),
                        });
                    }
                };
                if let Some(price) = obj.remove("price") {
                    obj.insert("unit_price".into(), price);
                }
                if let Some(tax) = obj.remove("tax") {
                    let bp = v1_tax_rate(&tax).ok_or_else(|| EventDecodeError::Invalid {
                        event_type: event_type.into(),
                        v,
                        reason: format!(
                            "tax {tax} is not a VAT percentage from 0 to 100 (such as 25 or 12.5)"
                        ),
                    })?;
                    obj.insert("tax_rate".into(), Value::from(bp));
                }
                obj.entry("currency").or_insert_with(|| Value::from("SEK"));
                Value::Object(obj)
            }
            _ => {
                return Err(EventDecodeError::Invalid {
                    event_type: event_type.into(),
                    v,
                    reason: format!("no upcaster from version {v}"),
                });
            }
        };
        v += 1;
    }
    Ok(data)
}

/// A gift or engraving marking on a line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Marking {
    #[serde(rename = "type")]
    pub kind: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PickupPoint {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// A stable digest of what order lines charge for: type, reference, quantity, unit price, tax
/// rate and amounts of every line, in any order (names are left out: they change nothing that
/// is paid). The same lines give the same digest in every build and on every node.
pub fn lines_digest(lines: &[CheckoutLine]) -> String {
    const NAMESPACE: Uuid = Uuid::from_u128(0x2d4e_91c0_7f3a_4c55_8e61_b0a9_13d7_c6f2);
    let mut canonical: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
                l.kind,
                l.reference,
                l.quantity,
                l.unit_price,
                l.tax_rate.0,
                l.total_amount,
                l.total_tax_amount,
                l.total_discount_amount
            )
        })
        .collect();
    canonical.sort_unstable();
    Uuid::new_v5(&NAMESPACE, canonical.join("\u{1e}").as_bytes())
        .simple()
        .to_string()
}
