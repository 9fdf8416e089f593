//! The Klarna Checkout v3 order shape (the fields this platform uses; unknown fields are kept
//! so a read-modify-write never drops what the provider added).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::domain::event::{CheckoutLine, CheckoutStarted};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    /// `physical`, `shipping_fee`, `discount`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub reference: String,
    pub name: String,
    pub quantity: u32,
    /// Minor units incl. VAT.
    pub unit_price: i64,
    /// Percent with two implicit decimals (2500 = 25 %), as Klarna defines it.
    pub tax_rate: u32,
    pub total_amount: i64,
    #[serde(default)]
    pub total_discount_amount: i64,
    pub total_tax_amount: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MerchantUrls {
    pub terms: String,
    pub checkout: String,
    pub confirmation: String,
    pub push: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub purchase_country: String,
    pub purchase_currency: String,
    pub locale: String,
    pub order_amount: i64,
    pub order_tax_amount: i64,
    pub order_lines: Vec<OrderLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_urls: Option<MerchantUrls>,
    /// The cart id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference1: Option<String>,
    /// The checkout attempt id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_reference2: Option<String>,
    /// `{"tenant": .., "cart_id": .., "attempt_id": ..}` as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_snippet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub klarna_reference: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What the runner stores in `merchant_data` to find the cart from a provider order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantData {
    pub tenant: String,
    pub cart_id: String,
    pub attempt_id: String,
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

/// The provider order for a checkout attempt, from the cart's durable intent.
pub fn order_for(
    tenant: &str,
    cart_id: &str,
    started: &CheckoutStarted,
    urls: MerchantUrls,
    locale: &str,
) -> Order {
    Order {
        purchase_country: started.country.to_ascii_uppercase(),
        purchase_currency: started.currency.clone(),
        locale: locale.to_owned(),
        order_amount: started.total_amount,
        order_tax_amount: started.total_tax_amount,
        order_lines: started.lines.iter().map(OrderLine::from).collect(),
        merchant_urls: Some(urls),
        merchant_reference1: Some(cart_id.to_owned()),
        merchant_reference2: Some(started.attempt_id.clone()),
        merchant_data: serde_json::to_string(&MerchantData {
            tenant: tenant.to_owned(),
            cart_id: cart_id.to_owned(),
            attempt_id: started.attempt_id.clone(),
        })
        .ok(),
        ..Order::default()
    }
}

impl Order {
    pub fn merchant(&self) -> Option<MerchantData> {
        self.merchant_data
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
    }

    /// Amounts agree with the lines (what the provider validates).
    pub fn check_amounts(&self) -> Result<(), String> {
        let total: i64 = self.order_lines.iter().map(|l| l.total_amount).sum();
        let tax: i64 = self.order_lines.iter().map(|l| l.total_tax_amount).sum();
        if total != self.order_amount {
            return Err(format!(
                "order_amount {} does not equal the sum of order_lines total_amount {total}",
                self.order_amount
            ));
        }
        if tax != self.order_tax_amount {
            return Err(format!(
                "order_tax_amount {} does not equal the sum of order_lines total_tax_amount {tax}",
                self.order_tax_amount
            ));
        }
        Ok(())
    }
}
