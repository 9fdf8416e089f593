//! The parts of the payment provider's order (Klarna Checkout v3 shape) that more than one
//! service reads: its lines, and the merchant data that names the cart and checkout attempt.
//! The runner creates and reads orders; the gateway reads the order the provider posts to the
//! validation callback before it completes a purchase. Both turn it into a
//! [`PaidOrder`] to check against the cart ([`cart_domain::Cart::check_paid`]).

use serde::{Deserialize, Serialize};

use cart_domain::{PaidOrder, lines_digest};

use crate::secret::Secret;

/// One provider order line is the cart's own checkout line: the same fields, in minor units
/// incl. VAT, with the tax rate in basis points (Klarna's percent with two implicit
/// decimals). What goes to the provider and what comes back read as one type, so the digest
/// of a paid order's lines is the attempt's own.
pub use cart_domain::event::CheckoutLine as OrderLine;

pub use cart_domain::cart::PAID_STATUS;

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

    /// The token of this cart's validation callbacks: HMAC-SHA256 under `key` (the runner's
    /// and the gateway's shared validation key) of tenant and cart, in hex. The runner puts it
    /// in the callback URL it gives the provider; the gateway approves a purchase only for a
    /// callback that carries its order's cart's token, so a caller who is not the provider
    /// cannot hold a shopper's cart. Not the attempt's: an order updated for a later attempt
    /// keeps working whether or not the provider takes the update's URLs.
    pub fn callback_token(&self, key: &Secret) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.expose().as_bytes());
        // A JSON array: no two (tenant, cart) pairs read as the same text.
        let signed =
            serde_json::to_string(&[&self.tenant, &self.cart_id]).expect("strings serialise");
        hex::encode(ring::hmac::sign(&key, signed.as_bytes()))
    }

    /// Whether `token` is [`Self::callback_token`], compared in constant time.
    pub fn callback_token_matches(&self, key: &Secret, token: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.callback_token(key).as_bytes().ct_eq(token.as_bytes()))
    }
}

/// What a provider order charges, in the cart's terms.
pub fn paid_order(
    merchant: &MerchantData,
    order_amount: i64,
    purchase_currency: &str,
    lines: &[OrderLine],
) -> PaidOrder {
    PaidOrder {
        attempt_id: merchant.attempt_id.clone(),
        amount: order_amount,
        currency: purchase_currency.to_owned(),
        lines_digest: lines_digest(lines),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_token_names_one_cart_under_one_key() {
        let m = |tenant: &str, cart: &str, attempt: &str| MerchantData {
            tenant: tenant.into(),
            cart_id: cart.into(),
            attempt_id: attempt.into(),
        };
        let key = Secret::from("validation-key");
        let token = m("t", "c", "a1").callback_token(&key);
        assert_eq!(token.len(), 64, "HMAC-SHA256 in hex: {token}");
        assert!(m("t", "c", "a1").callback_token_matches(&key, &token));
        for other in [m("u", "c", "a1"), m("t", "d", "a1")] {
            assert!(!other.callback_token_matches(&key, &token), "{other:?}");
        }
        // Every attempt of the cart: an order updated for a later one keeps its URL.
        assert!(m("t", "c", "a2").callback_token_matches(&key, &token));
        // The fields' boundaries are part of what is signed.
        assert_ne!(token, m("tc", "", "a1").callback_token(&key));
        assert!(!m("t", "c", "a1").callback_token_matches(&Secret::from("another"), &token));
        assert!(!m("t", "c", "a1").callback_token_matches(&key, &token[..63]));
        assert!(!m("t", "c", "a1").callback_token_matches(&key, ""));
        // Pinned: runners and gateways of different builds (a rolling upgrade) must agree.
        // HMAC-SHA256 of `["t","c"]`, as Python's `hmac` computes it.
        assert_eq!(
            token,
            "f8ae248cc9328b9e0c4b9b8c81c24476fa2ee418d8c67d14c3772670f7fae6ee"
        );
    }

    /// Lines that went to the provider and came back give the attempt's own digest.
    #[test]
    fn lines_round_trip_through_the_provider_shape_to_the_same_digest() {
        let line = OrderLine {
            kind: "physical".into(),
            reference: "SKU-1".into(),
            name: "A thing".into(),
            quantity: 2,
            unit_price: 12_500,
            tax_rate: cart_domain::TaxRate(2500),
            total_amount: 25_000,
            total_tax_amount: 5_000,
            total_discount_amount: 0,
        };
        // As the provider sends it back: Klarna's own field order and fields of its own.
        let back: OrderLine = serde_json::from_value(serde_json::json!({
            "type": "physical", "reference": "SKU-1", "name": "A thing", "quantity": 2,
            "unit_price": 12_500, "tax_rate": 2500, "total_amount": 25_000,
            "total_discount_amount": 0, "total_tax_amount": 5_000,
            "image_url": "https://img.example/1.jpg"
        }))
        .unwrap();
        assert_eq!(back, line);
        let sent = [back];
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
