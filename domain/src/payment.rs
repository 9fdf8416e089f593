//! What a shopper pays for, and the check that what is placed is what was paid.
//!
//! A checkout attempt (`CheckoutStarted`) fixes the lines, amount and currency handed to the
//! payment provider; the cart keeps the attempt's amount, currency and a digest of its lines.
//! Before the provider completes a purchase (its validation callback) and again when a paid
//! order comes back (`ConfirmOrder`), [`Cart::check_paid`] compares the provider's order with
//! the attempt, and the attempt with the cart as it is now. Only when all of them agree is the
//! order placed; anything else is a mismatch with a reason, never a silent order.

use serde::{Deserialize, Serialize};

use super::cart::{Cart, Checkout, CheckoutStatus};
use super::error::DomainError;
use super::event::{CheckoutLine, lines_digest};
use super::totals::totals;

/// The provider order lines of a cart as it is now, with their totals (incl. VAT, minor units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutLines {
    pub lines: Vec<CheckoutLine>,
    pub total_amount: i64,
    pub total_tax_amount: i64,
    pub currency: String,
}

/// The order lines the provider is asked to charge for `cart`: one per line, one per delivery
/// and one per voucher and VAT rate (negative).
pub fn checkout_lines(cart: &Cart) -> CheckoutLines {
    let t = totals(cart);
    let mut lines = Vec::with_capacity(cart.lines.len() + cart.deliveries.len());
    for (line, price) in cart.lines.iter().zip(&t.lines) {
        lines.push(CheckoutLine {
            kind: "physical".to_owned(),
            reference: line.product.sku.clone(),
            name: line.product.name.clone(),
            quantity: line.quantity,
            unit_price: line.product.unit_price,
            tax_rate: line.product.tax_rate,
            total_amount: price.inc_vat,
            total_tax_amount: price.total_vat(),
            total_discount_amount: 0,
        });
    }
    for (d, price) in cart.deliveries.iter().zip(&t.deliveries) {
        lines.push(CheckoutLine {
            kind: "shipping_fee".to_owned(),
            reference: d.provider.clone(),
            name: d.provider.clone(),
            quantity: 1,
            unit_price: d.price,
            tax_rate: d.tax_rate,
            total_amount: price.inc_vat,
            total_tax_amount: price.total_vat(),
            total_discount_amount: 0,
        });
    }
    for (v, parts) in cart.vouchers.iter().zip(&t.voucher_parts) {
        for &(rate, gross) in parts.iter().filter(|p| p.1 != 0) {
            let vat = rate.vat_of_gross(gross);
            lines.push(CheckoutLine {
                kind: "discount".to_owned(),
                reference: v.definition.code.clone(),
                name: format!("Voucher {}", v.definition.code),
                quantity: 1,
                unit_price: -gross,
                tax_rate: rate,
                total_amount: -gross,
                total_tax_amount: -vat,
                total_discount_amount: 0,
            });
        }
    }
    CheckoutLines {
        lines,
        total_amount: t.total.inc_vat,
        total_tax_amount: t.total.total_vat(),
        currency: cart.currency.clone().unwrap_or_default(),
    }
}

/// What the payment provider says was (or is about to be) paid, read from its order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaidOrder {
    /// The checkout attempt the provider order was created or last updated for (from its
    /// merchant data).
    pub attempt_id: String,
    /// `order_amount`: minor units incl. VAT.
    pub amount: i64,
    pub currency: String,
    /// [`lines_digest`] of the provider order's lines.
    pub lines_digest: String,
}

impl PaidOrder {
    /// What a provider order says is bounded before it is compared or recorded: the attempt
    /// id (any text of an earlier build's attempts, at most 256 bytes, no control
    /// characters), a three-letter currency and a digest token.
    pub fn validate(&self) -> Result<(), DomainError> {
        bounded_text("paid.attemptId", &self.attempt_id)?;
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_alphabetic())) {
            return Err(DomainError::InvalidField {
                field: "paid.currency",
                rule: "must be a three-letter currency code such as \"SEK\"".into(),
            });
        }
        if self.lines_digest.len() > 64 || !crate::ids::is_token(&self.lines_digest) {
            return Err(DomainError::InvalidField {
                field: "paid.linesDigest",
                rule: "must be a digest of at most 64 hexadecimal digits".into(),
            });
        }
        Ok(())
    }
}

/// An id from an earlier checkout attempt (or the provider) that never becomes a subject:
/// at most 256 bytes without control characters.
pub(crate) fn bounded_text(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
        return Err(DomainError::InvalidField {
            field,
            rule: "must be 1..=256 bytes without control characters".into(),
        });
    }
    Ok(())
}

/// Why a paid order cannot be placed on the cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMismatch {
    /// Stable, short: `order_placed`, `no_checkout`, `order_differs`, `attempt_changed`,
    /// `amount_differs`, `lines_differ`, `cart_changed` (the metric label and the event's
    /// `code`).
    pub code: &'static str,
    pub reason: String,
}

impl crate::cart::Checkout {
    /// The payment of exactly what this attempt asks for (a provider that charged it).
    pub fn paid_in_full(&self) -> PaidOrder {
        PaidOrder {
            attempt_id: self.attempt_id.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            lines_digest: self.lines_digest.clone(),
        }
    }
}

impl PaymentMismatch {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// How long a cart holds still for a purchase the provider asked to complete
/// ([`CheckoutStatus::PaymentApproved`]) when neither the order nor a failure comes back: then
/// it can change again (a paid order that arrives later is checked against the cart as it is).
/// Long enough for a lost push to be caught by reconciliation (it reads an approved order at
/// 2, 4 and 8 minutes after the approval by default); short enough that a shopper whose purchase did not go through
/// (the provider got no answer from the validation) is not kept from the cart for long.
pub const PURCHASE_HOLD_SECS: i64 = 10 * 60;

impl Cart {
    /// The provider order whose purchase the cart holds still for at `now` (Unix seconds): one
    /// approved less than [`PURCHASE_HOLD_SECS`] ago and neither placed nor failed since.
    pub fn purchase_held(&self, now: i64) -> Option<&str> {
        match self.checkout.as_deref() {
            Some(Checkout {
                status: CheckoutStatus::PaymentApproved { approved_at },
                ..
            }) if now < approved_at.saturating_add(PURCHASE_HOLD_SECS) => {
                self.provider_order_id.as_deref()
            }
            _ => None,
        }
    }

    /// The checkout attempt `paid` pays for, when the provider's order, that attempt and the
    /// cart as it is now all agree on what is charged.
    pub fn check_paid(
        &self,
        provider_order_id: &str,
        paid: &PaidOrder,
    ) -> Result<&Checkout, PaymentMismatch> {
        if let Some(order) = &self.order {
            return Err(PaymentMismatch::new(
                "order_placed",
                format!(
                    "the cart's order is already placed (reference {})",
                    order.order_reference
                ),
            ));
        }
        let checkout = self.checkout.as_ref().ok_or_else(|| {
            PaymentMismatch::new("no_checkout", "the cart has no checkout attempt")
        })?;
        if let Some(own) = &self.provider_order_id
            && own != provider_order_id
        {
            return Err(PaymentMismatch::new(
                "order_differs",
                format!(
                    "the cart's checkout uses provider order {own:?}, not {provider_order_id:?}"
                ),
            ));
        }
        if checkout.attempt_id != paid.attempt_id {
            return Err(PaymentMismatch::new(
                "attempt_changed",
                format!(
                    "the provider order is for checkout attempt {:?}, the cart's checkout is attempt {:?}",
                    paid.attempt_id, checkout.attempt_id
                ),
            ));
        }
        if checkout.amount != paid.amount || checkout.currency != paid.currency {
            return Err(PaymentMismatch::new(
                "amount_differs",
                format!(
                    "the provider order charges {} {}, the checkout attempt {} {}",
                    paid.amount, paid.currency, checkout.amount, checkout.currency
                ),
            ));
        }
        if checkout.lines_digest != paid.lines_digest {
            return Err(PaymentMismatch::new(
                "lines_differ",
                "the provider order's lines differ from the checkout attempt's",
            ));
        }
        let now = checkout_lines(self);
        if now.total_amount != checkout.amount
            || now.currency != checkout.currency
            || lines_digest(&now.lines) != checkout.lines_digest
        {
            return Err(PaymentMismatch::new(
                "cart_changed",
                format!(
                    "the cart changed after checkout started: it now totals {} {}, the paid attempt {} {}",
                    now.total_amount, now.currency, checkout.amount, checkout.currency
                ),
            ));
        }
        Ok(checkout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::TaxRate;

    fn line(reference: &str, quantity: u32, total: i64) -> CheckoutLine {
        CheckoutLine {
            kind: "physical".into(),
            reference: reference.into(),
            name: format!("name of {reference}"),
            quantity,
            unit_price: total / i64::from(quantity),
            tax_rate: TaxRate(2500),
            total_amount: total,
            total_tax_amount: total / 5,
            total_discount_amount: 0,
        }
    }

    #[test]
    fn the_digest_covers_what_is_charged_in_any_order() {
        let a = line("A", 1, 1000);
        let b = line("B", 2, 500);
        let d = lines_digest(&[a.clone(), b.clone()]);
        assert_eq!(d, lines_digest(&[b.clone(), a.clone()]));
        let renamed = CheckoutLine {
            name: "other".into(),
            ..a.clone()
        };
        assert_eq!(d, lines_digest(&[renamed, b.clone()]));
        let more = CheckoutLine {
            quantity: 2,
            ..a.clone()
        };
        assert_ne!(d, lines_digest(&[more, b.clone()]));
        assert_ne!(d, lines_digest(&[a]));
        assert_eq!(d.len(), 32);
    }
}
