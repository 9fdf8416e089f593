//! Money: integer minor units (öre/cents), VAT-inclusive prices, tax rates in basis points.
//!
//! VAT is extracted from a gross amount per line (`vat = gross × rate / (10000 + rate)`,
//! rounded half away from zero) and kept per rate, so carts with mixed rates stay exact:
//! every [`CartPrice`] satisfies `inc_vat == ex_vat + Σ vat`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A VAT rate in basis points: 2500 = 25 %, 1200 = 12 %, 600 = 6 %, 0 = exempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaxRate(pub u32);

impl TaxRate {
    /// Rates above 100 % are certainly a data error (e.g. a percentage given as 25.0 × 10000).
    pub const MAX: u32 = 10_000;

    /// The rate as the storefront keys VAT maps: percent with no trailing zeros
    /// (2500 → "25", 1250 → "12.5", 600 → "6").
    pub fn percent_key(self) -> String {
        self.key().as_str().to_owned()
    }

    /// [`TaxRate::percent_key`] without an allocation (prices are written on every command).
    pub fn key(self) -> PercentKey {
        use std::io::Write as _;
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        let mut key = PercentKey([0; 12], 0);
        let mut out = &mut key.0[..];
        let room = out.len();
        // u32::MAX / 100 has 8 digits: "42949672.95" fits in 12 bytes.
        let written = match frac {
            0 => write!(out, "{whole}"),
            f if f % 10 == 0 => write!(out, "{whole}.{}", f / 10),
            f => write!(out, "{whole}.{f:02}"),
        };
        written.expect("a percent key fits in 12 bytes");
        key.1 = (room - out.len()) as u8;
        key
    }

    /// Inverse of [`TaxRate::percent_key`].
    pub fn from_percent_key(s: &str) -> Option<TaxRate> {
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) if !f.is_empty() && f.len() <= 2 => (w, f),
            Some(_) => return None,
            None => (s, ""),
        };
        let whole: u32 = whole.parse().ok()?;
        let frac: u32 = match frac.len() {
            0 => 0,
            1 => frac.parse::<u32>().ok()? * 10,
            _ => frac.parse().ok()?,
        };
        let bp = whole.checked_mul(100)?.checked_add(frac)?;
        (bp <= Self::MAX).then_some(TaxRate(bp))
    }

    /// The VAT contained in a VAT-inclusive `gross` amount.
    pub fn vat_of_gross(self, gross: i64) -> i64 {
        div_round(
            i128::from(gross) * i128::from(self.0),
            10_000 + i128::from(self.0),
        )
    }
}

impl fmt::Display for TaxRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.key().as_str())
    }
}

/// A rate's percent key (`"25"`, `"12.5"`) on the stack; see [`TaxRate::key`].
#[derive(Clone, Copy)]
pub struct PercentKey([u8; 12], u8);

impl PercentKey {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0[..usize::from(self.1)]).expect("written from digits and '.'")
    }
}

/// `n / d` rounded half away from zero (`d > 0`).
pub(crate) fn div_round(n: i128, d: i128) -> i64 {
    let q = if n >= 0 {
        (2 * n + d) / (2 * d)
    } else {
        -((-2 * n + d) / (2 * d))
    };
    i64::try_from(q).expect("money amount out of i64 range")
}

/// A money amount as the storefront shows it: `{"exVat": .., "incVat": .., "vat": {"25": ..}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CartPrice {
    pub inc_vat: i64,
    pub vat: BTreeMap<TaxRate, i64>,
}

impl CartPrice {
    pub fn zero() -> Self {
        Self::default()
    }

    /// A VAT-inclusive amount at one rate, VAT extracted.
    pub fn from_gross(gross: i64, rate: TaxRate) -> Self {
        let mut vat = BTreeMap::new();
        vat.insert(rate, rate.vat_of_gross(gross));
        Self {
            inc_vat: gross,
            vat,
        }
    }

    pub fn ex_vat(&self) -> i64 {
        self.inc_vat - self.total_vat()
    }

    pub fn total_vat(&self) -> i64 {
        self.vat.values().sum()
    }

    pub fn add(&mut self, other: &CartPrice) {
        self.inc_vat += other.inc_vat;
        for (rate, amount) in &other.vat {
            *self.vat.entry(*rate).or_default() += amount;
        }
    }

    pub fn sub(&mut self, other: &CartPrice) {
        self.inc_vat -= other.inc_vat;
        for (rate, amount) in &other.vat {
            *self.vat.entry(*rate).or_default() -= amount;
        }
    }

    /// The VAT part as a price of its own: `incVat` = total VAT, `exVat` = 0, per-rate map
    /// kept (so `totalTax` obeys the same `incVat = exVat + Σ vat` rule as every price).
    pub fn tax_part(&self) -> CartPrice {
        CartPrice {
            inc_vat: self.total_vat(),
            vat: self.vat.clone(),
        }
    }
}

/// A money amount in minor units, as JSON: `{"exVat": .., "incVat": .., "vat": {"25": ..}}`.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
struct CartPriceWire {
    ex_vat: i64,
    inc_vat: i64,
    /// VAT per rate in percent (`"25"`, `"12.5"`).
    vat: BTreeMap<String, i64>,
}

/// Described as what it serializes to.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for CartPrice {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <CartPriceWire as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for CartPrice {
    fn name() -> std::borrow::Cow<'static, str> {
        "CartPrice".into()
    }
}

/// Written field by field as [`CartPriceWire`] would be, without building its map of `String`
/// keys (a price is written several times per line on every command's reply).
impl Serialize for CartPrice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut wire = s.serialize_struct("CartPrice", 3)?;
        wire.serialize_field("exVat", &self.ex_vat())?;
        wire.serialize_field("incVat", &self.inc_vat)?;
        wire.serialize_field("vat", &VatByKey(&self.vat))?;
        wire.end()
    }
}

/// The VAT map in the order of its string keys (`"12"` < `"25"` < `"6"`), as
/// `BTreeMap<String, _>` sorts them, not in the rates' numeric order.
struct VatByKey<'a>(&'a BTreeMap<TaxRate, i64>);

impl Serialize for VatByKey<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        if self.0.len() <= 1 {
            for (rate, amount) in self.0 {
                map.serialize_entry(rate.key().as_str(), amount)?;
            }
        } else {
            let mut keyed: Vec<(PercentKey, i64)> =
                self.0.iter().map(|(r, a)| (r.key(), *a)).collect();
            keyed.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            for (key, amount) in &keyed {
                map.serialize_entry(key.as_str(), amount)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for CartPrice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = CartPriceWire::deserialize(d)?;
        let mut vat = BTreeMap::new();
        for (k, v) in w.vat {
            let rate = TaxRate::from_percent_key(&k)
                .ok_or_else(|| D::Error::custom(format!("vat key {k:?} is not a percent rate")))?;
            vat.insert(rate, v);
        }
        let price = CartPrice {
            inc_vat: w.inc_vat,
            vat,
        };
        if price.ex_vat() != w.ex_vat {
            return Err(D::Error::custom(format!(
                "exVat {} does not equal incVat {} minus the VAT {}",
                w.ex_vat,
                w.inc_vat,
                price.total_vat()
            )));
        }
        Ok(price)
    }
}

/// Split `amount` over `weights` proportionally, exactly (largest remainder): the parts sum
/// to `amount`. Used to spread a discount over the VAT rates of the items it applies to.
pub fn allocate(amount: i64, weights: &[(TaxRate, i64)]) -> Vec<(TaxRate, i64)> {
    let total: i128 = weights.iter().map(|(_, w)| i128::from(*w)).sum();
    if total <= 0 || amount == 0 {
        return weights.iter().map(|(r, _)| (*r, 0)).collect();
    }
    let mut parts: Vec<(TaxRate, i64, i128)> = weights
        .iter()
        .map(|(r, w)| {
            let exact = i128::from(amount) * i128::from(*w);
            let floor = exact.div_euclid(total);
            (*r, floor as i64, exact.rem_euclid(total))
        })
        .collect();
    let mut left = amount - parts.iter().map(|p| p.1).sum::<i64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| parts[b].2.cmp(&parts[a].2).then(a.cmp(&b)));
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        parts[i].1 += 1;
        left -= 1;
    }
    parts.into_iter().map(|(r, v, _)| (r, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_price_is_written_as_its_wire_form_with_keys_in_string_order() {
        let mut price = CartPrice::from_gross(11200, TaxRate(1200));
        for (gross, rate) in [(12500, 2500), (10600, 600), (11250, 1250), (500, 0)] {
            price.add(&CartPrice::from_gross(gross, TaxRate(rate)));
        }
        let wire = |p: &CartPrice| CartPriceWire {
            ex_vat: p.ex_vat(),
            inc_vat: p.inc_vat,
            vat: p.vat.iter().map(|(r, a)| (r.percent_key(), *a)).collect(),
        };
        for p in [
            price.clone(),
            CartPrice::from_gross(9990, TaxRate(2500)),
            CartPrice::zero(),
        ] {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                serde_json::to_string(&wire(&p)).unwrap()
            );
        }
        assert_eq!(
            serde_json::to_string(&price).unwrap(),
            r#"{"exVat":40500,"incVat":46050,"vat":{"0":0,"12":1200,"12.5":1250,"25":2500,"6":600}}"#
        );
    }

    #[test]
    fn percent_keys() {
        for (bp, key) in [
            (2500, "25"),
            (1250, "12.5"),
            (600, "6"),
            (0, "0"),
            (1205, "12.05"),
        ] {
            assert_eq!(TaxRate(bp).percent_key(), key);
            assert_eq!(TaxRate(bp).key().as_str(), key);
            assert_eq!(TaxRate::from_percent_key(key), Some(TaxRate(bp)));
        }
        assert_eq!(TaxRate::from_percent_key("12."), None);
        assert_eq!(TaxRate::from_percent_key("x"), None);
        assert_eq!(TaxRate::from_percent_key("101"), None);
        assert_eq!(TaxRate(u32::MAX).key().as_str(), "42949672.95");
    }

    #[test]
    fn vat_extraction_swedish_rates() {
        // 125 kr incl. 25 % VAT contains 25 kr VAT.
        assert_eq!(TaxRate(2500).vat_of_gross(12500), 2500);
        // 112 kr incl. 12 % contains 12 kr.
        assert_eq!(TaxRate(1200).vat_of_gross(11200), 1200);
        // 99.90 kr incl. 25 %: 19.98 kr.
        assert_eq!(TaxRate(2500).vat_of_gross(9990), 1998);
        // Rounds half away from zero: 1 öre at 25 % → 0.2 → 0; 3 öre → 0.6 → 1.
        assert_eq!(TaxRate(2500).vat_of_gross(1), 0);
        assert_eq!(TaxRate(2500).vat_of_gross(3), 1);
        assert_eq!(TaxRate(2500).vat_of_gross(-3), -1);
        assert_eq!(TaxRate(0).vat_of_gross(12345), 0);
    }

    #[test]
    fn cart_price_json_shape() {
        let mut p = CartPrice::from_gross(12500, TaxRate(2500));
        p.add(&CartPrice::from_gross(11200, TaxRate(1200)));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"exVat": 20000, "incVat": 23700, "vat": {"25": 2500, "12": 1200}})
        );
        assert_eq!(serde_json::from_value::<CartPrice>(v).unwrap(), p);
        let bad = serde_json::json!({"exVat": 1, "incVat": 23700, "vat": {"25": 2500}});
        assert!(serde_json::from_value::<CartPrice>(bad).is_err());
    }

    #[test]
    fn allocate_is_exact_and_proportional() {
        let parts = allocate(1000, &[(TaxRate(2500), 3), (TaxRate(1200), 1)]);
        assert_eq!(parts, vec![(TaxRate(2500), 750), (TaxRate(1200), 250)]);
        let parts = allocate(
            100,
            &[(TaxRate(2500), 1), (TaxRate(1200), 1), (TaxRate(600), 1)],
        );
        assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), 100);
        assert_eq!(allocate(5, &[(TaxRate(2500), 0)]), vec![(TaxRate(2500), 0)]);
    }

    proptest! {
        #[test]
        fn allocation_sums_exactly(amount in 0i64..10_000_000, ws in proptest::collection::vec(0i64..1_000_000, 1..5)) {
            let weights: Vec<_> = ws.iter().enumerate().map(|(i, w)| (TaxRate(i as u32 * 100), *w)).collect();
            let parts = allocate(amount, &weights);
            if weights.iter().map(|w| w.1).sum::<i64>() > 0 {
                prop_assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), amount);
            }
            for (p, w) in parts.iter().zip(&weights) {
                if w.1 == 0 { prop_assert_eq!(p.1, 0); }
            }
        }

        #[test]
        fn price_arithmetic_keeps_the_identity(a in 0i64..100_000_000, b in 0i64..100_000_000, r in 0u32..=3000) {
            let mut p = CartPrice::from_gross(a, TaxRate(r));
            p.add(&CartPrice::from_gross(b, TaxRate(2500)));
            prop_assert_eq!(p.inc_vat, p.ex_vat() + p.total_vat());
            let back: CartPrice = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
            prop_assert_eq!(back, p);
        }
    }
}
