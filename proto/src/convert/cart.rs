//! `cart_domain::Cart` ⇄ `cart.v1.Cart` and its parts.
//!
//! Domain → proto works on references: the aggregate serves carts it keeps cached, and line
//! products sit behind a shared `Arc`, so their strings are copied either way.

use cart_domain::TaxRate;
use cart_domain::cart::{
    AppliedVoucher, Cart, Checkout, CheckoutStatus, Delivery, Line, LineProduct, Marking,
    MismatchedOrder, PickupPoint, PlacedOrder, SubscriptionDetails,
};
use cart_domain::catalog::VoucherKind;
use cart_domain::intern;
use shared::CartId;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{ConversionError, required};
use crate::cart::v1 as pb;
use crate::cart::v1::applied_voucher::Discount;

// ---- domain → proto ----

impl From<&Cart> for pb::Cart {
    fn from(c: &Cart) -> Self {
        pb::Cart {
            id: c.id.to_string(),
            currency: c.currency.clone(),
            lines: c.lines.iter().map(Into::into).collect(),
            deliveries: c.deliveries.iter().map(Into::into).collect(),
            vouchers: c.vouchers.iter().map(Into::into).collect(),
            user_id: c.user_id.clone(),
            checkout: c.checkout.as_deref().map(Into::into),
            provider_order_id: c.provider_order_id.clone(),
            payment_status: c.payment_status.clone(),
            order: c.order.as_deref().map(Into::into),
            mismatched_orders: c.mismatched_orders.iter().map(Into::into).collect(),
            subscription_details: c.subscription_details.iter().map(Into::into).collect(),
            next_line_id: c.next_line_id,
            next_delivery_id: c.next_delivery_id,
            next_voucher_id: c.next_voucher_id,
        }
    }
}

impl From<Cart> for pb::Cart {
    fn from(c: Cart) -> Self {
        (&c).into()
    }
}

impl From<&Line> for pb::Line {
    fn from(l: &Line) -> Self {
        pb::Line {
            id: l.id,
            quantity: l.quantity,
            product: Some(l.product.as_ref().into()),
            store_id: l.store_id.as_deref().map(str::to_owned),
            country: l.country.to_string(),
            marking: l.marking.as_deref().map(Into::into),
        }
    }
}

impl From<&LineProduct> for pb::LineProduct {
    fn from(p: &LineProduct) -> Self {
        pb::LineProduct {
            sku: p.sku.clone(),
            item_id: p.item_id,
            name: p.name.clone(),
            unit_price: p.unit_price,
            org_price: p.org_price,
            tax_rate: p.tax_rate.0,
            currency: p.currency.clone(),
            stock: p.stock,
            item_type: p.item_type.clone(),
            image: p.image.clone(),
            brand: p.brand.clone(),
            category: p.category.clone(),
            seller_id: p.seller_id.clone(),
            seller_name: p.seller_name.clone(),
            outlet: p.outlet.clone(),
        }
    }
}

impl From<&Marking> for pb::Marking {
    fn from(m: &Marking) -> Self {
        pb::Marking {
            r#type: m.kind,
            text: m.text.clone(),
        }
    }
}

impl From<Marking> for pb::Marking {
    fn from(m: Marking) -> Self {
        pb::Marking {
            r#type: m.kind,
            text: m.text,
        }
    }
}

impl From<&PickupPoint> for pb::PickupPoint {
    fn from(p: &PickupPoint) -> Self {
        p.clone().into()
    }
}

impl From<PickupPoint> for pb::PickupPoint {
    fn from(p: PickupPoint) -> Self {
        pb::PickupPoint {
            id: p.id,
            name: p.name,
            address: p.address,
            city: p.city,
            zip: p.zip,
            country: p.country,
        }
    }
}

impl From<&Delivery> for pb::Delivery {
    fn from(d: &Delivery) -> Self {
        pb::Delivery {
            id: d.id,
            provider: d.provider.clone(),
            line_ids: d.line_ids.clone(),
            price: d.price,
            tax_rate: d.tax_rate.0,
            pickup_point: d.pickup_point.as_ref().map(Into::into),
        }
    }
}

impl From<&AppliedVoucher> for pb::AppliedVoucher {
    fn from(v: &AppliedVoucher) -> Self {
        pb::AppliedVoucher {
            id: v.id,
            code: v.code.clone(),
            discount: Some(match v.discount {
                VoucherKind::Fixed { amount } => Discount::FixedAmount(amount),
                VoucherKind::Percent { basis_points } => Discount::PercentBasisPoints(basis_points),
            }),
            min_order: v.min_order,
            description: v.description.clone(),
            expires_at: v.expires_at.and_then(|t| t.format(&Rfc3339).ok()),
        }
    }
}

/// `failure_code` and `failure_reason` are empty unless the status is `Failed`.
impl From<&Checkout> for pb::Checkout {
    fn from(c: &Checkout) -> Self {
        let (status, failure_code, failure_reason) = match &c.status {
            CheckoutStatus::Started => (pb::CheckoutStatus::Started, "", ""),
            CheckoutStatus::OrderCreated => (pb::CheckoutStatus::OrderCreated, "", ""),
            CheckoutStatus::Failed { code, reason } => {
                (pb::CheckoutStatus::Failed, code.as_str(), reason.as_str())
            }
            CheckoutStatus::Cancelled => (pb::CheckoutStatus::Cancelled, "", ""),
            CheckoutStatus::Reopened => (pb::CheckoutStatus::Reopened, "", ""),
            CheckoutStatus::Completed => (pb::CheckoutStatus::Completed, "", ""),
        };
        pb::Checkout {
            attempt_id: c.attempt_id.clone(),
            status: status.into(),
            failure_code: failure_code.to_owned(),
            failure_reason: failure_reason.to_owned(),
            amount: c.amount,
            currency: c.currency.clone(),
            lines_digest: c.lines_digest.clone(),
        }
    }
}

impl From<&PlacedOrder> for pb::PlacedOrder {
    fn from(o: &PlacedOrder) -> Self {
        pb::PlacedOrder {
            provider_order_id: o.provider_order_id.clone(),
            order_reference: o.order_reference.clone(),
        }
    }
}

impl From<&MismatchedOrder> for pb::MismatchedOrder {
    fn from(m: &MismatchedOrder) -> Self {
        pb::MismatchedOrder {
            provider_order_id: m.provider_order_id.clone(),
            attempt_id: m.attempt_id.clone(),
            code: m.code.clone(),
            reason: m.reason.clone(),
        }
    }
}

impl From<&SubscriptionDetails> for pb::SubscriptionDetails {
    fn from(d: &SubscriptionDetails) -> Self {
        pb::SubscriptionDetails {
            id: d.id.clone(),
            offering_code: d.offering_code.clone(),
            signing_type: d.signing_type.clone(),
            data_json: d.data.to_string(),
        }
    }
}

// ---- proto → domain ----

impl TryFrom<pb::SubscriptionDetails> for SubscriptionDetails {
    type Error = ConversionError;

    fn try_from(d: pb::SubscriptionDetails) -> Result<Self, ConversionError> {
        Ok(SubscriptionDetails {
            id: d.id,
            offering_code: d.offering_code,
            signing_type: d.signing_type,
            data: super::json_field(&d.data_json, "data_json")?,
        })
    }
}

impl From<pb::MismatchedOrder> for MismatchedOrder {
    fn from(m: pb::MismatchedOrder) -> Self {
        MismatchedOrder {
            provider_order_id: m.provider_order_id,
            attempt_id: m.attempt_id,
            code: m.code,
            reason: m.reason,
        }
    }
}

/// Errors are rooted at `cart` (`cart.lines[0].product is required`).
impl TryFrom<pb::Cart> for Cart {
    type Error = ConversionError;

    fn try_from(c: pb::Cart) -> Result<Self, ConversionError> {
        decode(c).map_err(|e| e.at("cart"))
    }
}

/// A cart with error paths relative to the cart message (`lines[0].product`).
pub(super) fn decode(c: pb::Cart) -> Result<Cart, ConversionError> {
    let id = CartId::parse(&c.id).map_err(|e| ConversionError::invalid_id("id", e))?;
    let lines = c
        .lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| Line::try_from(l).map_err(|e| e.at(format_args!("lines[{i}]"))))
        .collect::<Result<_, _>>()?;
    let vouchers = c
        .vouchers
        .into_iter()
        .enumerate()
        .map(|(i, v)| AppliedVoucher::try_from(v).map_err(|e| e.at(format_args!("vouchers[{i}]"))))
        .collect::<Result<_, _>>()?;
    let checkout = c
        .checkout
        .map(Checkout::try_from)
        .transpose()
        .map_err(|e| e.at("checkout"))?;
    Ok(Cart {
        id,
        currency: c.currency,
        lines,
        deliveries: c.deliveries.into_iter().map(Into::into).collect(),
        vouchers,
        user_id: c.user_id,
        checkout: checkout.map(Box::new),
        provider_order_id: c.provider_order_id,
        payment_status: c.payment_status,
        order: c.order.map(|o| Box::new(o.into())),
        mismatched_orders: c.mismatched_orders.into_iter().map(Into::into).collect(),
        subscription_details: c
            .subscription_details
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                SubscriptionDetails::try_from(d)
                    .map_err(|e| e.at(format_args!("subscription_details[{i}]")))
            })
            .collect::<Result<_, _>>()?,
        next_line_id: c.next_line_id,
        next_delivery_id: c.next_delivery_id,
        next_voucher_id: c.next_voucher_id,
    })
}

/// The product goes through [`intern::share`], so lines read from the wire share one
/// allocation per distinct product exactly like lines built by `evolve`.
impl TryFrom<pb::Line> for Line {
    type Error = ConversionError;

    fn try_from(l: pb::Line) -> Result<Self, ConversionError> {
        let product = required(l.product, "product")?;
        Ok(Line {
            id: l.id,
            quantity: l.quantity,
            product: intern::share(product.into()),
            store_id: l.store_id.map(Into::into),
            country: l.country.into(),
            marking: l.marking.map(|m| Box::new(m.into())),
        })
    }
}

impl From<pb::LineProduct> for LineProduct {
    fn from(p: pb::LineProduct) -> Self {
        LineProduct {
            sku: p.sku,
            item_id: p.item_id,
            name: p.name,
            unit_price: p.unit_price,
            org_price: p.org_price,
            tax_rate: TaxRate(p.tax_rate),
            currency: p.currency,
            stock: p.stock,
            item_type: p.item_type,
            image: p.image,
            brand: p.brand,
            category: p.category,
            seller_id: p.seller_id,
            seller_name: p.seller_name,
            outlet: p.outlet,
        }
    }
}

impl From<pb::Marking> for Marking {
    fn from(m: pb::Marking) -> Self {
        Marking {
            kind: m.r#type,
            text: m.text,
        }
    }
}

impl From<pb::PickupPoint> for PickupPoint {
    fn from(p: pb::PickupPoint) -> Self {
        PickupPoint {
            id: p.id,
            name: p.name,
            address: p.address,
            city: p.city,
            zip: p.zip,
            country: p.country,
        }
    }
}

impl From<pb::Delivery> for Delivery {
    fn from(d: pb::Delivery) -> Self {
        Delivery {
            id: d.id,
            provider: d.provider,
            line_ids: d.line_ids,
            price: d.price,
            tax_rate: TaxRate(d.tax_rate),
            pickup_point: d.pickup_point.map(Into::into),
        }
    }
}

impl TryFrom<pb::AppliedVoucher> for AppliedVoucher {
    type Error = ConversionError;

    fn try_from(v: pb::AppliedVoucher) -> Result<Self, ConversionError> {
        let discount = match required(v.discount, "discount")? {
            Discount::FixedAmount(amount) => VoucherKind::Fixed { amount },
            Discount::PercentBasisPoints(basis_points) => VoucherKind::Percent { basis_points },
        };
        let expires_at = v
            .expires_at
            .map(|t| {
                OffsetDateTime::parse(&t, &Rfc3339).map_err(|e| ConversionError::InvalidTime {
                    path: "expires_at".to_owned(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok(AppliedVoucher {
            id: v.id,
            code: v.code,
            discount,
            min_order: v.min_order,
            description: v.description,
            expires_at,
        })
    }
}

/// `failure_code`/`failure_reason` are read only for `FAILED` and ignored otherwise, as the
/// field comments in the `.proto` say.
impl TryFrom<pb::Checkout> for Checkout {
    type Error = ConversionError;

    fn try_from(c: pb::Checkout) -> Result<Self, ConversionError> {
        let status = pb::CheckoutStatus::try_from(c.status).map_err(|_| {
            ConversionError::UnknownEnumValue {
                path: "status".to_owned(),
                enum_name: "cart.v1.CheckoutStatus",
                value: c.status,
            }
        })?;
        let status = match status {
            pb::CheckoutStatus::Unspecified => {
                return Err(ConversionError::Unspecified {
                    path: "status".to_owned(),
                    name: pb::CheckoutStatus::Unspecified.as_str_name(),
                });
            }
            pb::CheckoutStatus::Started => CheckoutStatus::Started,
            pb::CheckoutStatus::OrderCreated => CheckoutStatus::OrderCreated,
            pb::CheckoutStatus::Failed => CheckoutStatus::Failed {
                code: c.failure_code,
                reason: c.failure_reason,
            },
            pb::CheckoutStatus::Cancelled => CheckoutStatus::Cancelled,
            pb::CheckoutStatus::Reopened => CheckoutStatus::Reopened,
            pb::CheckoutStatus::Completed => CheckoutStatus::Completed,
        };
        Ok(Checkout {
            attempt_id: c.attempt_id,
            status,
            amount: c.amount,
            currency: c.currency,
            lines_digest: c.lines_digest,
        })
    }
}

impl From<pb::PlacedOrder> for PlacedOrder {
    fn from(o: pb::PlacedOrder) -> Self {
        PlacedOrder {
            provider_order_id: o.provider_order_id,
            order_reference: o.order_reference,
        }
    }
}
