//! The parts of the payment provider's order (Klarna Checkout v3 shape) that more than one
//! service reads: its lines, and the merchant data that names the cart and checkout attempt.
//! The runner creates and reads orders; the gateway reads the order the provider posts to the
//! validation callback before it completes a purchase. Both turn it into a
//! [`PaidOrder`] to check against the cart ([`cart_domain::Cart::check_paid`]).

use serde::{Deserialize, Serialize};

use cart_domain::event::CheckoutLine;
use cart_domain::{PaidOrder, TaxRate, lines_digest};

/// One provider order line (minor units incl. VAT, tax rate in basis points as Klarna's
/// percent with two implicit decimals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    /// `physical`, `shipping_fee`, `discount`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub reference: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    pub tax_rate: u32,
    pub total_amount: i64,
    #[serde(default)]
    pub total_discount_amount: i64,
    pub total_tax_amount: i64,
}

impl From<&CheckoutLine> for OrderLine {
    fn from(l: &CheckoutLine) -> Self {
        OrderLine {
            kind: l.kind.clone(),
            reference: l.reference.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
            tax_rate: l.tax_rate.0,
            total_amount: l.total_amount,
            total_discount_amount: l.total_discount_amount,
            total_tax_amount: l.total_tax_amount,
        }
    }
}

impl From<&OrderLine> for CheckoutLine {
    fn from(l: &OrderLine) -> Self {
        CheckoutLine {
            kind: l.kind.clone(),
            reference: l.reference.clone(),
            name: l.name.clone(),
            quantity: l.quantity,
            unit_price: l.unit_price,
            tax_rate: TaxRate(l.tax_rate),
            total_amount: l.total_amount,
            total_tax_amount: l.total_tax_amount,
            total_discount_amount: l.total_discount_amount,
        }
    }
}

/// What the runner stores in an order's `merchant_data` (as JSON text) to find the cart and
/// checkout attempt from a provider order. Updated with every attempt that updates the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantData {
    pub tenant: String,
    pub cart_id: String,
    pub attempt_id: String,
}

impl MerchantData {
    /// Reads an order's `merchant_data` (`None` when absent or not ours).
    pub fn parse(merchant_data: Option<&str>) -> Option<Self> {
        merchant_data.and_then(|d| serde_json::from_str(d).ok())
    }
}

/// What a provider order charges, in the cart's terms.
pub fn paid_order(
    merchant: &MerchantData,
    order_amount: i64,
    purchase_currency: &str,
    lines: &[OrderLine],
) -> PaidOrder {
    let lines: Vec<CheckoutLine> = lines.iter().map(CheckoutLine::from).collect();
    PaidOrder {
        attempt_id: merchant.attempt_id.clone(),
        amount: order_amount,
        currency: purchase_currency.to_owned(),
        lines_digest: lines_digest(&lines),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines that went to the provider and came back give the attempt's own digest.
    #[test]
    fn lines_round_trip_through_the_provider_shape_to_the_same_digest() {
        let line = CheckoutLine {
            kind: "physical".into(),
            reference: "SKU-1".into(),
            name: "A thing".into(),
            quantity: 2,
            unit_price: 12_500,
            tax_rate: TaxRate(2500),
            total_amount: 25_000,
            total_tax_amount: 5_000,
            total_discount_amount: 0,
        };
        let sent = [OrderLine::from(&line)];
        let merchant = MerchantData {
            tenant: "t".into(),
            cart_id: "c".into(),
            attempt_id: "a".into(),
        };
        let paid = paid_order(&merchant, 25_000, "SEK", &sent);
        assert_eq!(paid.lines_digest, lines_digest(&[line]));
        assert_eq!((paid.attempt_id.as_str(), paid.amount), ("a", 25_000));
        assert_eq!(
            MerchantData::parse(Some(&serde_json::to_string(&merchant).unwrap())),
            Some(merchant)
        );
        assert_eq!(MerchantData::parse(Some("not json")), None);
    }
}
