//! The Klarna Checkout v3 order shape (the fields this platform uses; unknown fields are kept
//! so a read-modify-write never drops what the provider added).

use cart_domain::PaidOrder;
use cart_domain::event::CheckoutStarted;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::provider_order::paid_order;
pub use shared::provider_order::{MerchantData, OrderLine};
use shared::workflow::ProviderOrderSummary;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MerchantUrls {
    pub terms: String,
    pub checkout: String,
    pub confirmation: String,
    pub push: String,
    /// Called by the provider before it completes a purchase; a `303` refuses it (the cart
    /// no longer matches the order). Must be HTTPS with the real provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
}

/// Order options this platform sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderOptions {
    /// Without a successful answer from the validation callback the purchase is not
    /// completed (Klarna otherwise approves it after 3 s without an answer).
    #[serde(default)]
    pub require_validate_callback_success: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<OrderOptions>,
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

/// The provider order for the checkout attempt `merchant` names, from the cart's durable
/// intent.
pub fn order_for(
    merchant: &MerchantData,
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
        order_lines: started.lines.clone(),
        options: urls.validation.is_some().then(|| OrderOptions {
            require_validate_callback_success: true,
            extra: Map::new(),
        }),
        merchant_urls: Some(urls),
        merchant_reference1: Some(merchant.cart_id.clone()),
        merchant_reference2: Some(merchant.attempt_id.clone()),
        merchant_data: serde_json::to_string(merchant).ok(),
        ..Order::default()
    }
}

impl Order {
    /// What the platform records of the order (and the raw order beside it).
    pub fn summary(self) -> ProviderOrderSummary {
        let raw = serde_json::to_value(&self).unwrap_or_default();
        ProviderOrderSummary {
            order_id: self.order_id.unwrap_or_default(),
            status: self.status.unwrap_or_default(),
            html_snippet: self.html_snippet.unwrap_or_default(),
            order_amount: self.order_amount,
            purchase_currency: self.purchase_currency,
            raw,
        }
    }

    pub fn merchant(&self) -> Option<MerchantData> {
        MerchantData::parse(self.merchant_data.as_deref())
    }

    /// What the order charges, for the checkout attempt its merchant data names.
    pub fn paid(&self, merchant: &MerchantData) -> PaidOrder {
        paid_order(
            merchant,
            self.order_amount,
            &self.purchase_currency,
            &self.order_lines,
        )
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
