//! Loading a catalog seed file (`deploy/catalog.json`) into the `CATALOG` bucket.

use async_nats::jetstream::kv;
use bytes::Bytes;
use cart_domain::TaxRate;
use cart_domain::catalog::{CatalogSeed, VoucherKind, normalize_voucher_code};
use shared::subjects::{delivery_key, sku_key, voucher_key};

/// What a seed run wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub products: usize,
    pub deliveries: usize,
    pub vouchers: usize,
}

/// Parse and validate a seed file; every problem is listed with the entry it concerns.
pub fn parse(json: &str) -> Result<CatalogSeed, String> {
    let seed: CatalogSeed =
        serde_json::from_str(json).map_err(|e| format!("catalog seed is not valid: {e}"))?;
    let mut problems = Vec::new();
    for p in &seed.products {
        if sku_key(&p.sku).is_err() {
            problems.push(format!(
                "product {:?}: sku must be letters, digits, '-' or '_'",
                p.sku
            ));
        }
        if p.price < 0 || p.org_price.is_some_and(|o| o < 0) {
            problems.push(format!("product {}: prices must not be negative", p.sku));
        }
        if p.tax_rate.0 > TaxRate::MAX {
            problems.push(format!(
                "product {}: tax_rate is in basis points (2500 = 25 %), got {}",
                p.sku, p.tax_rate.0
            ));
        }
        if p.name.trim().is_empty() {
            problems.push(format!("product {}: name is empty", p.sku));
        }
    }
    for d in &seed.deliveries {
        if delivery_key(&d.provider).is_err() {
            problems.push(format!("delivery {:?}: invalid provider name", d.provider));
        }
        if d.price < 0 || d.tax_rate.0 > TaxRate::MAX {
            problems.push(format!(
                "delivery {}: price must be >= 0 and tax_rate <= 10000",
                d.provider
            ));
        }
    }
    for v in &seed.vouchers {
        if voucher_key(&normalize_voucher_code(&v.code)).is_err() {
            problems.push(format!("voucher {:?}: invalid code", v.code));
        }
        match v.discount {
            VoucherKind::Fixed { amount } if amount <= 0 => {
                problems.push(format!("voucher {}: amount must be positive", v.code));
            }
            VoucherKind::Percent { basis_points } if basis_points == 0 || basis_points > 10_000 => {
                problems.push(format!(
                    "voucher {}: basis_points must be 1..=10000",
                    v.code
                ));
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(seed)
    } else {
        Err(format!(
            "catalog seed has problems:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// Write every entry (put: existing keys are overwritten, others are left alone).
pub async fn write(kv: &kv::Store, seed: &CatalogSeed) -> Result<SeedReport, async_nats::Error> {
    let mut report = SeedReport::default();
    for p in &seed.products {
        kv.put(sku_key(&p.sku)?, Bytes::from(serde_json::to_vec(p)?))
            .await?;
        report.products += 1;
    }
    for d in &seed.deliveries {
        kv.put(
            delivery_key(&d.provider)?,
            Bytes::from(serde_json::to_vec(d)?),
        )
        .await?;
        report.deliveries += 1;
    }
    for v in &seed.vouchers {
        let mut v = v.clone();
        v.code = normalize_voucher_code(&v.code);
        kv.put(voucher_key(&v.code)?, Bytes::from(serde_json::to_vec(&v)?))
            .await?;
        report.vouchers += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_is_valid_and_has_the_walkthrough_skus() {
        let json = include_str!("../../deploy/catalog.json");
        let seed = parse(json).unwrap();
        for sku in [
            "TEST-SKU-123",
            "TEST-SKU-456",
            "TEST-SKU-AAA",
            "TEST-SKU-BBB",
            "TEST-SKU-XYZ",
        ] {
            assert!(seed.products.iter().any(|p| p.sku == sku), "{sku} missing");
        }
        assert!(seed.deliveries.iter().any(|d| d.provider == "standard"));
    }

    #[test]
    fn problems_are_listed_per_entry() {
        let err = parse(
            r#"{"products": [{"sku": "a.b", "name": "x", "price": -1, "tax_rate": 25}],
                "vouchers": [{"code": "X", "discount": {"kind": "percent", "basis_points": 0}}]}"#,
        )
        .unwrap_err();
        assert!(err.contains("\"a.b\": sku must be"), "{err}");
        assert!(err.contains("prices must not be negative"), "{err}");
        assert!(err.contains("basis_points must be 1..=10000"), "{err}");
        assert!(
            parse("{\"products\": 1}")
                .unwrap_err()
                .contains("not valid")
        );
    }
}
