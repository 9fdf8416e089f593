//! Commands: what a caller asks the cart to do (imperatives). The JSON form (camelCase,
//! `{"type": "AddItem", ...}`) is what `/v1/carts/{id}/commands` accepts for every command a
//! client may send (checked by a gateway test over [`Command::examples`]).

use serde::{Deserialize, Serialize};

use super::cart::{Cart, Marking, PickupPoint};
use super::error::DomainError;
use super::payment::{PaidOrder, bounded_text};
use crate::catalog::normalize_voucher_code;
use crate::ids::{CartId, KeyField};

/// Add `quantity` of `sku` (from `storeId`, for click-and-collect) shipped to `country`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddItem {
    pub sku: String,
    pub quantity: u32,
    #[serde(default)]
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

/// Its type name ([`Command::name`]) is the variant's name, as in the JSON `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Command {
    AddItem(AddItem),
    /// Several items in one atomic step (quantities of the same SKU add up).
    #[serde(rename_all = "camelCase")]
    AddItems {
        items: Vec<AddItem>,
    },
    #[serde(rename_all = "camelCase")]
    ChangeQuantity {
        line_id: u32,
        quantity: u32,
    },
    #[serde(rename_all = "camelCase")]
    RemoveItem {
        line_id: u32,
    },
    /// Replace all lines (and with them, deliveries) by `items`.
    #[serde(rename_all = "camelCase")]
    SetItems {
        items: Vec<AddItem>,
    },
    ClearCart,
    /// Deliver `line_ids` (empty = every line without a delivery) with `provider`.
    #[serde(rename_all = "camelCase")]
    AddDelivery {
        provider: String,
        #[serde(default)]
        line_ids: Vec<u32>,
    },
    #[serde(rename_all = "camelCase")]
    RemoveDelivery {
        delivery_id: u32,
    },
    #[serde(rename_all = "camelCase")]
    SetPickupPoint {
        delivery_id: u32,
        pickup_point: PickupPoint,
    },
    #[serde(rename_all = "camelCase")]
    ApplyVoucher {
        code: String,
    },
    #[serde(rename_all = "camelCase")]
    RemoveVoucher {
        voucher_id: u32,
    },
    /// Attach the cart to a signed-in user; `None` detaches it.
    #[serde(rename_all = "camelCase")]
    SetUser {
        user_id: Option<String>,
    },
    /// Merge an anonymous cart's items into this (the user's) cart; lines sum by SKU. The
    /// aggregate fills `items` from the source cart before deciding, and refuses a source that
    /// is ordered or being paid for (its lines would be bought again).
    #[serde(rename_all = "camelCase")]
    MergeCart {
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        source_cart_id: CartId,
        /// Never from a client (`/v1` refuses it): filled by the aggregate.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        items: Vec<AddItem>,
    },
    #[serde(rename_all = "camelCase")]
    SetMarking {
        line_id: u32,
        marking: Marking,
    },
    #[serde(rename_all = "camelCase")]
    RemoveMarking {
        line_id: u32,
    },
    /// Start (or restart) checkout. `attempt_id` identifies this attempt end to end.
    #[serde(rename_all = "camelCase")]
    StartCheckout {
        /// The command id when a client leaves it out.
        #[serde(default)]
        attempt_id: String,
        #[serde(default)]
        country: Option<String>,
    },
    /// Runner → cart: the provider order for an attempt exists.
    #[serde(rename_all = "camelCase")]
    RecordProviderOrder {
        attempt_id: String,
        provider_order_id: String,
        status: String,
    },
    /// Runner → cart: the provider says `provider_order_id` is paid. The order is placed
    /// when what was paid matches the checkout attempt and the cart (see
    /// `Cart::check_paid`); otherwise the mismatch is recorded (`OrderMismatched`).
    #[serde(rename_all = "camelCase")]
    ConfirmOrder {
        provider_order_id: String,
        order_reference: String,
        paid: PaidOrder,
    },
    /// Gateway → cart: the provider asks, before it completes the purchase of
    /// `provider_order_id` (its validation callback), whether what it would charge still
    /// matches the checkout attempt and the cart (`Cart::check_paid`). Refused when it does
    /// not; when it does, the cart holds still for the purchase (`PaymentApproved`): changes
    /// that would make the paid order differ are refused with `cart_locked` until the order is
    /// placed or the checkout fails, or [`crate::payment::PURCHASE_HOLD_SECS`] have passed.
    #[serde(rename_all = "camelCase")]
    ApprovePayment {
        provider_order_id: String,
        paid: PaidOrder,
    },
    /// Runner → cart: the provider refused the checkout.
    #[serde(rename_all = "camelCase")]
    FailCheckout {
        attempt_id: String,
        code: String,
        reason: String,
    },
    CancelCheckout,
    /// Add subscription details, or replace the ones with this `id`. The gateway fills an
    /// absent id with a fresh one (derived from the request, so a retry replaces, not adds).
    #[serde(rename_all = "camelCase")]
    UpsertSubscriptionDetails {
        #[serde(default)]
        id: String,
        offering_code: String,
        signing_type: String,
        #[serde(default = "empty_object")]
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        data: serde_json::Value,
    },
    #[serde(rename_all = "camelCase")]
    RemoveSubscriptionDetails {
        id: String,
    },
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Command {
    /// Every command type at least once, with optional fields set and unset: the samples the
    /// edges' contract tests run through their own parsers (gRPC, `/v1`), so an edge that
    /// does not know a command fails a test. `examples_cover_every_command_type` fails until a
    /// new variant has an example here.
    pub fn examples() -> Vec<Command> {
        let item = |sku: &str, store: Option<&str>| AddItem {
            sku: sku.into(),
            quantity: 2,
            country: "se".into(),
            store_id: store.map(Into::into),
        };
        vec![
            Command::AddItem(item("A", Some("store-1"))),
            Command::AddItems {
                items: vec![item("A", None), item("B", Some("s"))],
            },
            Command::ChangeQuantity {
                line_id: 3,
                quantity: 7,
            },
            Command::RemoveItem { line_id: 4 },
            Command::SetItems {
                items: vec![item("C", None)],
            },
            Command::ClearCart,
            Command::AddDelivery {
                provider: "postnord".into(),
                line_ids: vec![1, 2],
            },
            Command::RemoveDelivery { delivery_id: 1 },
            Command::SetPickupPoint {
                delivery_id: 1,
                pickup_point: PickupPoint {
                    id: "pp-1".into(),
                    name: Some("Ombud".into()),
                    address: None,
                    city: Some("Malmö".into()),
                    zip: Some("211 20".into()),
                    country: None,
                },
            },
            Command::ApplyVoucher {
                code: "SUMMER10".into(),
            },
            Command::RemoveVoucher { voucher_id: 2 },
            Command::SetUser {
                user_id: Some("u-1".into()),
            },
            Command::SetUser { user_id: None },
            Command::MergeCart {
                source_cart_id: CartId::parse("1720000000000000").expect("a valid cart id"),
                items: vec![],
            },
            Command::SetMarking {
                line_id: 1,
                marking: Marking {
                    kind: 2,
                    text: "Grattis!".into(),
                },
            },
            Command::RemoveMarking { line_id: 1 },
            Command::StartCheckout {
                attempt_id: "att-1".into(),
                country: Some("se".into()),
            },
            Command::StartCheckout {
                attempt_id: "att-2".into(),
                country: None,
            },
            Command::RecordProviderOrder {
                attempt_id: "att-1".into(),
                provider_order_id: "kco-1".into(),
                status: "checkout_incomplete".into(),
            },
            Command::ConfirmOrder {
                provider_order_id: "kco-1".into(),
                order_reference: "R-1".into(),
                paid: PaidOrder {
                    attempt_id: "att-1".into(),
                    amount: 24_900,
                    currency: "SEK".into(),
                    lines_digest: "d".repeat(32),
                },
            },
            Command::ApprovePayment {
                provider_order_id: "kco-1".into(),
                paid: PaidOrder {
                    attempt_id: "att-1".into(),
                    amount: 24_900,
                    currency: "SEK".into(),
                    lines_digest: "d".repeat(32),
                },
            },
            Command::FailCheckout {
                attempt_id: "att-1".into(),
                code: "provider_refused".into(),
                reason: "card declined".into(),
            },
            Command::CancelCheckout,
            Command::UpsertSubscriptionDetails {
                id: "sub-1".into(),
                offering_code: "5G".into(),
                signing_type: "bankid".into(),
                data: serde_json::json!({"msisdn": "0701234567"}),
            },
            Command::RemoveSubscriptionDetails { id: "sub-1".into() },
        ]
    }

    /// The command's type name (the JSON `type` and the `type` of a mutation reply).
    pub fn name(&self) -> &'static str {
        self.into()
    }

    /// Whether the command changes what the shopper would pay for. Such a command during a
    /// live checkout re-opens it (see [`super::decide`]).
    pub fn changes_contents(&self) -> bool {
        !matches!(
            self,
            Command::SetUser { .. }
                | Command::StartCheckout { .. }
                | Command::RecordProviderOrder { .. }
                | Command::ConfirmOrder { .. }
                | Command::ApprovePayment { .. }
                | Command::FailCheckout { .. }
                | Command::CancelCheckout
                | Command::UpsertSubscriptionDetails { .. }
                | Command::RemoveSubscriptionDetails { .. }
        )
    }

    /// Checks every value that becomes a KV key or subject token (SKUs, voucher codes,
    /// delivery providers, provider order ids, attempt ids): bounded and safe, so no NATS
    /// call is ever made with a value that could break it. The HTTP edge and every gRPC
    /// boundary call this before anything else; the error names the field.
    pub fn validate(&self) -> Result<(), DomainError> {
        fn check(field: KeyField, name: &'static str, v: &str) -> Result<(), DomainError> {
            field.check(name, v).map(|_| ()).map_err(DomainError::from)
        }
        fn items(list: &[AddItem]) -> Result<(), DomainError> {
            list.iter()
                .try_for_each(|i| check(KeyField::Sku, "items[].sku", &i.sku))
        }
        match self {
            Command::AddItem(i) => check(KeyField::Sku, "sku", &i.sku),
            Command::AddItems { items: list }
            | Command::SetItems { items: list }
            | Command::MergeCart { items: list, .. } => items(list),
            Command::AddDelivery { provider, .. } => {
                check(KeyField::DeliveryProvider, "provider", provider)
            }
            Command::ApplyVoucher { code } => {
                check(KeyField::VoucherCode, "code", &normalize_voucher_code(code))
            }
            // A new attempt's id is a token; commands about an existing attempt accept any
            // bounded id, since attempts started by earlier builds may have used any text.
            Command::StartCheckout { attempt_id, .. } => {
                check(KeyField::AttemptId, "attemptId", attempt_id)
            }
            Command::FailCheckout { attempt_id, .. } => bounded_text("attemptId", attempt_id),
            Command::RecordProviderOrder {
                attempt_id,
                provider_order_id,
                ..
            } => {
                bounded_text("attemptId", attempt_id)?;
                check(
                    KeyField::ProviderOrderId,
                    "providerOrderId",
                    provider_order_id,
                )
            }
            Command::ConfirmOrder {
                provider_order_id,
                paid,
                ..
            }
            | Command::ApprovePayment {
                provider_order_id,
                paid,
            } => {
                check(
                    KeyField::ProviderOrderId,
                    "providerOrderId",
                    provider_order_id,
                )?;
                paid.validate()
            }
            Command::ChangeQuantity { .. }
            | Command::RemoveItem { .. }
            | Command::ClearCart
            | Command::RemoveDelivery { .. }
            | Command::SetPickupPoint { .. }
            | Command::RemoveVoucher { .. }
            | Command::SetUser { .. }
            | Command::SetMarking { .. }
            | Command::RemoveMarking { .. }
            | Command::CancelCheckout => Ok(()),
            // Kept with the cart, never a key: bounded like an id.
            Command::UpsertSubscriptionDetails { id, .. }
            | Command::RemoveSubscriptionDetails { id } => {
                if id.is_empty() {
                    return Ok(()); // filled in by the gateway
                }
                check(KeyField::SubscriptionId, "id", id)
            }
        }
    }

    /// Catalog entries the decision will look up, so the caller can fetch exactly these.
    pub fn catalog_needs(&self) -> CatalogNeeds<'_> {
        let mut needs = CatalogNeeds::default();
        match self {
            Command::AddItem(i) => needs.skus.push(&i.sku),
            Command::AddItems { items }
            | Command::SetItems { items }
            | Command::MergeCart { items, .. } => {
                needs.skus.extend(items.iter().map(|i| i.sku.as_str()))
            }
            Command::AddDelivery { provider, .. } => needs.providers.push(provider),
            Command::ApplyVoucher { code } => needs.vouchers.push(code),
            _ => {}
        }
        needs
    }
}

/// See [`Command::catalog_needs`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogNeeds<'a> {
    pub skus: Vec<&'a str>,
    pub providers: Vec<&'a str>,
    pub vouchers: Vec<&'a str>,
}

/// Business limits. Defaults are what a typical storefront needs; the aggregate takes them
/// from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_quantity: u32,
    pub max_lines: usize,
    pub max_deliveries: usize,
    pub max_vouchers: usize,
    /// Longest free text (user id, marking text, pickup point fields, ids from the provider).
    pub max_text_len: usize,
    /// Most subscription details per cart.
    pub max_subscription_details: usize,
    /// Largest `data` of one subscription details entry, as JSON bytes.
    pub max_subscription_data_bytes: usize,
}

impl Cart {
    /// What a merge of this cart into another adds (`MergeCart`), as of `now` (Unix seconds):
    /// nothing from a cart that is ordered or being paid for, whose lines would be bought
    /// again.
    pub fn lines_to_merge(&self, now: i64) -> Result<Vec<AddItem>, DomainError> {
        let refused = |why: String| {
            Err(DomainError::InvalidState(format!(
                "cart {} {why}: its lines are not merged",
                self.id
            )))
        };
        if let Some(order) = &self.order {
            return refused(format!("is ordered (reference {})", order.order_reference));
        }
        if self.purchase_held(now).is_some() {
            return refused("is being paid for".to_owned());
        }
        Ok(self
            .lines
            .iter()
            .map(|l| AddItem {
                sku: l.product.sku.clone(),
                quantity: l.quantity,
                country: l.country.to_string(),
                store_id: l.store_id.as_deref().map(str::to_owned),
            })
            .collect())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_quantity: 999,
            max_lines: 100,
            max_deliveries: 10,
            max_vouchers: 5,
            max_text_len: 200,
            max_subscription_details: 10,
            max_subscription_data_bytes: 4096,
        }
    }
}

#[cfg(test)]
mod tests;
