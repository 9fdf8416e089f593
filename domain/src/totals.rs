//! Derived totals. `total = Σ lines + Σ deliveries − Σ voucher discounts`, every part a
//! [`CartPrice`] with VAT kept per rate: VAT is computed per line and per delivery, and each
//! discount is spread over the VAT rates of the items in proportion to their value.

use std::collections::BTreeMap;

use super::cart::{AppliedVoucher, Cart};
use super::money::{CartPrice, TaxRate, allocate, div_round};
use crate::catalog::VoucherKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// One per cart line, in line order.
    pub lines: Vec<CartPrice>,
    pub items: CartPrice,
    /// One per delivery, in delivery order.
    pub deliveries: Vec<CartPrice>,
    pub delivery_total: CartPrice,
    /// One per voucher, in voucher order (zero when the voucher's minimum is not met).
    pub vouchers: Vec<CartPrice>,
    /// Each voucher's discount split by VAT rate: `(rate, VAT-inclusive amount)`.
    pub voucher_parts: Vec<Vec<(TaxRate, i64)>>,
    pub discount: CartPrice,
    pub total: CartPrice,
}

impl Totals {
    /// The VAT part of the total (`totalTax`).
    pub fn tax(&self) -> CartPrice {
        self.total.tax_part()
    }
}

pub fn totals(cart: &Cart) -> Totals {
    let lines: Vec<CartPrice> = cart
        .lines
        .iter()
        .map(|l| CartPrice::from_gross(l.total_gross(), l.product.tax_rate))
        .collect();
    let mut items = CartPrice::zero();
    let mut gross_by_rate: BTreeMap<TaxRate, i64> = BTreeMap::new();
    for (line, price) in cart.lines.iter().zip(&lines) {
        items.add(price);
        *gross_by_rate.entry(line.product.tax_rate).or_default() += line.total_gross();
    }

    let deliveries: Vec<CartPrice> = cart
        .deliveries
        .iter()
        .map(|d| CartPrice::from_gross(d.price, d.tax_rate))
        .collect();
    let mut delivery_total = CartPrice::zero();
    for d in &deliveries {
        delivery_total.add(d);
    }

    let weights: Vec<(TaxRate, i64)> = gross_by_rate.into_iter().collect();
    let mut remaining = items.inc_vat;
    let mut discount = CartPrice::zero();
    let mut vouchers = Vec::with_capacity(cart.vouchers.len());
    let mut voucher_parts = Vec::with_capacity(cart.vouchers.len());
    for v in &cart.vouchers {
        let amount = voucher_amount(v, items.inc_vat).min(remaining);
        remaining -= amount;
        let parts = allocate(amount, &weights);
        let mut price = CartPrice::zero();
        for &(rate, part) in &parts {
            price.add(&CartPrice::from_gross(part, rate));
        }
        discount.add(&price);
        vouchers.push(price);
        voucher_parts.push(parts);
    }

    let mut total = items.clone();
    total.add(&delivery_total);
    total.sub(&discount);
    total.vat.retain(|_, v| *v != 0);

    Totals {
        lines,
        items,
        deliveries,
        delivery_total,
        vouchers,
        voucher_parts,
        discount,
        total,
    }
}

/// The discount a voucher gives on `items_gross` before capping, 0 while its rules are not
/// met (see [`unmet_rules`]).
fn voucher_amount(v: &AppliedVoucher, items_gross: i64) -> i64 {
    if !unmet_rules(v, items_gross, "").is_empty() {
        return 0;
    }
    match v.definition.discount {
        VoucherKind::Fixed { amount } => amount.max(0),
        VoucherKind::Percent { basis_points } => div_round(
            i128::from(items_gross) * i128::from(basis_points.min(10_000)),
            10_000,
        ),
    }
}

/// What a voucher on the cart still needs before it applies, as sentences a shopper can read
/// (empty: it applies). Vouchers are re-evaluated on every change, because totals are derived.
pub fn unmet_rules(v: &AppliedVoucher, items_gross: i64, currency: &str) -> Vec<String> {
    let mut rules = Vec::new();
    if items_gross < v.definition.min_order.max(1) {
        rules.push(if v.definition.min_order > 0 {
            format!(
                "min_order: the items must total at least {}, they total {}",
                major(v.definition.min_order, currency),
                major(items_gross.max(0), currency)
            )
        } else {
            "items: the cart has no items".to_owned()
        });
    }
    rules
}

/// What a voucher gives, for a shopper: its catalog description, or one made from its kind.
pub fn describe_voucher(v: &AppliedVoucher, currency: &str) -> String {
    if let Some(d) = &v.definition.description {
        return d.clone();
    }
    match v.definition.discount {
        VoucherKind::Percent { basis_points } => {
            let whole = basis_points / 100;
            match basis_points % 100 {
                0 => format!("{whole} % off"),
                frac => format!("{whole}.{frac:02} % off"),
            }
        }
        VoucherKind::Fixed { amount } => format!("{} off", major(amount, currency)),
    }
}

/// Minor units as major ones with two decimals, and the currency when known (`300.00 SEK`).
fn major(amount: i64, currency: &str) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let a = amount.unsigned_abs();
    let text = format!("{sign}{}.{:02}", a / 100, a % 100);
    if currency.is_empty() {
        text
    } else {
        format!("{text} {currency}")
    }
}
