//! `cart_domain::Command` ⇄ `cart.v1.Command`, and the request constructors built on it.

use cart_domain::{AddItem, Command, PaidOrder};
use shared::{CartId, CommandId, TenantId};

use super::{ConversionError, required};
use crate::cart::v1 as pb;
use crate::cart::v1::command::Kind;

impl From<AddItem> for pb::AddItem {
    fn from(i: AddItem) -> Self {
        pb::AddItem {
            sku: i.sku,
            quantity: i.quantity,
            country: i.country,
            store_id: i.store_id,
        }
    }
}

/// Infallible: every wire `AddItem` is a domain `AddItem`; `decide` judges SKU and quantity.
impl From<pb::AddItem> for AddItem {
    fn from(i: pb::AddItem) -> Self {
        AddItem {
            sku: i.sku,
            quantity: i.quantity,
            country: i.country,
            store_id: i.store_id,
        }
    }
}

fn items_to_proto(items: Vec<AddItem>) -> Vec<pb::AddItem> {
    items.into_iter().map(Into::into).collect()
}

fn items_from_proto(items: Vec<pb::AddItem>) -> Vec<AddItem> {
    items.into_iter().map(Into::into).collect()
}

impl From<Command> for pb::Command {
    fn from(c: Command) -> Self {
        let kind = match c {
            Command::AddItem(i) => Kind::AddItem(i.into()),
            Command::AddItems { items } => Kind::AddItems(pb::AddItems {
                items: items_to_proto(items),
            }),
            Command::ChangeQuantity { line_id, quantity } => {
                Kind::ChangeQuantity(pb::ChangeQuantity { line_id, quantity })
            }
            Command::RemoveItem { line_id } => Kind::RemoveItem(pb::RemoveItem { line_id }),
            Command::SetItems { items } => Kind::SetItems(pb::SetItems {
                items: items_to_proto(items),
            }),
            Command::ClearCart => Kind::ClearCart(pb::ClearCart {}),
            Command::AddDelivery { provider, line_ids } => {
                Kind::AddDelivery(pb::AddDelivery { provider, line_ids })
            }
            Command::RemoveDelivery { delivery_id } => {
                Kind::RemoveDelivery(pb::RemoveDelivery { delivery_id })
            }
            Command::SetPickupPoint {
                delivery_id,
                pickup_point,
            } => Kind::SetPickupPoint(pb::SetPickupPoint {
                delivery_id,
                pickup_point: Some(pickup_point.into()),
            }),
            Command::ApplyVoucher { code } => Kind::ApplyVoucher(pb::ApplyVoucher { code }),
            Command::RemoveVoucher { voucher_id } => {
                Kind::RemoveVoucher(pb::RemoveVoucher { voucher_id })
            }
            Command::SetUser { user_id } => Kind::SetUser(pb::SetUser { user_id }),
            Command::MergeCart {
                source_cart_id,
                items,
            } => Kind::MergeCart(pb::MergeCart {
                source_cart_id: source_cart_id.to_string(),
                items: items_to_proto(items),
            }),
            Command::SetMarking { line_id, marking } => Kind::SetMarking(pb::SetMarking {
                line_id,
                marking: Some(marking.into()),
            }),
            Command::RemoveMarking { line_id } => {
                Kind::RemoveMarking(pb::RemoveMarking { line_id })
            }
            Command::StartCheckout {
                attempt_id,
                country,
            } => Kind::StartCheckout(pb::StartCheckout {
                attempt_id,
                country,
            }),
            Command::RecordProviderOrder {
                attempt_id,
                provider_order_id,
                status,
            } => Kind::RecordProviderOrder(pb::RecordProviderOrder {
                attempt_id,
                provider_order_id,
                status,
            }),
            Command::ConfirmOrder {
                provider_order_id,
                order_reference,
                paid,
            } => Kind::ConfirmOrder(pb::ConfirmOrder {
                provider_order_id,
                order_reference,
                paid: Some(pb::PaidOrder {
                    attempt_id: paid.attempt_id,
                    amount: paid.amount,
                    currency: paid.currency,
                    lines_digest: paid.lines_digest,
                }),
            }),
            Command::FailCheckout {
                attempt_id,
                code,
                reason,
            } => Kind::FailCheckout(pb::FailCheckout {
                attempt_id,
                code,
                reason,
            }),
            Command::CancelCheckout => Kind::CancelCheckout(pb::CancelCheckout {}),
            Command::UpsertSubscriptionDetails {
                id,
                offering_code,
                signing_type,
                data,
            } => Kind::UpsertSubscriptionDetails(pb::UpsertSubscriptionDetails {
                id,
                offering_code,
                signing_type,
                data_json: data.to_string(),
            }),
            Command::RemoveSubscriptionDetails { id } => {
                Kind::RemoveSubscriptionDetails(pb::RemoveSubscriptionDetails { id })
            }
        };
        pb::Command { kind: Some(kind) }
    }
}

/// Errors are rooted at `command` (`command.kind is required`); a batch names each element
/// with [`command_at`] instead.
impl TryFrom<pb::Command> for Command {
    type Error = ConversionError;

    fn try_from(c: pb::Command) -> Result<Self, ConversionError> {
        command_at(c, "command")
    }
}

/// [`TryFrom`] with the error path rooted at `root`, so `ExecuteBatch` can report
/// `commands[3].set_marking.marking is required` rather than a path that does not say which
/// command of the batch was wrong.
pub fn command_at(c: pb::Command, root: &str) -> Result<Command, ConversionError> {
    decode(c).map_err(|e| e.at(root))
}

fn decode(c: pb::Command) -> Result<Command, ConversionError> {
    let kind = required(c.kind, "kind")?;
    Ok(match kind {
        Kind::AddItem(i) => Command::AddItem(i.into()),
        Kind::AddItems(a) => Command::AddItems {
            items: items_from_proto(a.items),
        },
        Kind::ChangeQuantity(c) => Command::ChangeQuantity {
            line_id: c.line_id,
            quantity: c.quantity,
        },
        Kind::RemoveItem(r) => Command::RemoveItem { line_id: r.line_id },
        Kind::SetItems(s) => Command::SetItems {
            items: items_from_proto(s.items),
        },
        Kind::ClearCart(pb::ClearCart {}) => Command::ClearCart,
        Kind::AddDelivery(a) => Command::AddDelivery {
            provider: a.provider,
            line_ids: a.line_ids,
        },
        Kind::RemoveDelivery(r) => Command::RemoveDelivery {
            delivery_id: r.delivery_id,
        },
        Kind::SetPickupPoint(s) => Command::SetPickupPoint {
            delivery_id: s.delivery_id,
            pickup_point: required(s.pickup_point, "pickup_point")
                .map_err(|e| e.at("set_pickup_point"))?
                .into(),
        },
        Kind::ApplyVoucher(a) => Command::ApplyVoucher { code: a.code },
        Kind::RemoveVoucher(r) => Command::RemoveVoucher {
            voucher_id: r.voucher_id,
        },
        Kind::SetUser(s) => Command::SetUser { user_id: s.user_id },
        Kind::MergeCart(m) => Command::MergeCart {
            source_cart_id: CartId::parse(&m.source_cart_id)
                .map_err(|e| ConversionError::invalid_id("source_cart_id", e).at("merge_cart"))?,
            items: items_from_proto(m.items),
        },
        Kind::SetMarking(s) => Command::SetMarking {
            line_id: s.line_id,
            marking: required(s.marking, "marking")
                .map_err(|e| e.at("set_marking"))?
                .into(),
        },
        Kind::RemoveMarking(r) => Command::RemoveMarking { line_id: r.line_id },
        Kind::StartCheckout(s) => Command::StartCheckout {
            attempt_id: s.attempt_id,
            country: s.country,
        },
        Kind::RecordProviderOrder(r) => Command::RecordProviderOrder {
            attempt_id: r.attempt_id,
            provider_order_id: r.provider_order_id,
            status: r.status,
        },
        Kind::ConfirmOrder(c) => {
            let paid = required(c.paid, "paid").map_err(|e| e.at("confirm_order"))?;
            Command::ConfirmOrder {
                provider_order_id: c.provider_order_id,
                order_reference: c.order_reference,
                paid: PaidOrder {
                    attempt_id: paid.attempt_id,
                    amount: paid.amount,
                    currency: paid.currency,
                    lines_digest: paid.lines_digest,
                },
            }
        }
        Kind::FailCheckout(f) => Command::FailCheckout {
            attempt_id: f.attempt_id,
            code: f.code,
            reason: f.reason,
        },
        Kind::CancelCheckout(pb::CancelCheckout {}) => Command::CancelCheckout,
        Kind::UpsertSubscriptionDetails(u) => Command::UpsertSubscriptionDetails {
            id: u.id,
            offering_code: u.offering_code,
            signing_type: u.signing_type,
            data: super::json_field(&u.data_json, "upsert_subscription_details.data_json")?,
        },
        Kind::RemoveSubscriptionDetails(r) => Command::RemoveSubscriptionDetails { id: r.id },
    })
}

/// The command's type name without converting it (for metrics labels, logs and the
/// `mutations[].type` of a reply): the same string as `cart_domain::Command::name`.
/// `"Unknown"` when `kind` is absent, which is also how prost decodes a oneof variant added
/// by a newer client.
pub fn command_name(c: &pb::Command) -> &'static str {
    match &c.kind {
        None => "Unknown",
        Some(kind) => match kind {
            Kind::AddItem(_) => "AddItem",
            Kind::AddItems(_) => "AddItems",
            Kind::ChangeQuantity(_) => "ChangeQuantity",
            Kind::RemoveItem(_) => "RemoveItem",
            Kind::SetItems(_) => "SetItems",
            Kind::ClearCart(_) => "ClearCart",
            Kind::AddDelivery(_) => "AddDelivery",
            Kind::RemoveDelivery(_) => "RemoveDelivery",
            Kind::SetPickupPoint(_) => "SetPickupPoint",
            Kind::ApplyVoucher(_) => "ApplyVoucher",
            Kind::RemoveVoucher(_) => "RemoveVoucher",
            Kind::SetUser(_) => "SetUser",
            Kind::MergeCart(_) => "MergeCart",
            Kind::SetMarking(_) => "SetMarking",
            Kind::RemoveMarking(_) => "RemoveMarking",
            Kind::StartCheckout(_) => "StartCheckout",
            Kind::RecordProviderOrder(_) => "RecordProviderOrder",
            Kind::ConfirmOrder(_) => "ConfirmOrder",
            Kind::FailCheckout(_) => "FailCheckout",
            Kind::CancelCheckout(_) => "CancelCheckout",
            Kind::UpsertSubscriptionDetails(_) => "UpsertSubscriptionDetails",
            Kind::RemoveSubscriptionDetails(_) => "RemoveSubscriptionDetails",
        },
    }
}

/// Requests built from typed ids, so a caller cannot put an unvalidated string on the wire.
impl pb::ExecuteRequest {
    pub fn new(
        tenant: &TenantId,
        cart_id: &CartId,
        command_id: CommandId,
        expected_version: Option<u64>,
        command: Command,
    ) -> Self {
        pb::ExecuteRequest {
            tenant: tenant.to_string(),
            cart_id: cart_id.to_string(),
            command_id: command_id.to_string(),
            expected_version,
            command: Some(command.into()),
            request_fingerprint: String::new(),
            render: pb::Render::Snapshot.into(),
        }
    }

    /// The fingerprint of the client request whose `Idempotency-Key` the command id is
    /// derived from.
    pub fn keyed(mut self, fingerprint: Option<&str>) -> Self {
        self.request_fingerprint = fingerprint.unwrap_or_default().to_owned();
        self
    }

    /// Asks for the cart in `render` instead of the full snapshot.
    pub fn rendered(mut self, render: pb::Render) -> Self {
        self.render = render.into();
        self
    }
}

/// See [`pb::ExecuteRequest::new`]; the commands are applied atomically, in order.
impl pb::ExecuteBatchRequest {
    pub fn new(
        tenant: &TenantId,
        cart_id: &CartId,
        command_id: CommandId,
        expected_version: Option<u64>,
        commands: Vec<Command>,
    ) -> Self {
        pb::ExecuteBatchRequest {
            tenant: tenant.to_string(),
            cart_id: cart_id.to_string(),
            command_id: command_id.to_string(),
            expected_version,
            commands: commands.into_iter().map(Into::into).collect(),
            request_fingerprint: String::new(),
        }
    }

    /// See [`pb::ExecuteRequest::keyed`].
    pub fn keyed(mut self, fingerprint: Option<&str>) -> Self {
        self.request_fingerprint = fingerprint.unwrap_or_default().to_owned();
        self
    }
}
