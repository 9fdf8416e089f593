//! The decisions that change what is in the cart: lines, deliveries, vouchers, merges and
//! subscription details. Each emits through [`Decision::emit`], so later steps see earlier ones.

use std::sync::Arc;

use super::*;

impl Decision<'_, '_> {
    pub(super) fn add_item(&mut self, item: &AddItem) -> Result<(), DomainError> {
        let limits = self.limits();
        check_quantity("quantity", u64::from(item.quantity), limits.max_quantity)?;
        let country = country(&item.country)?;
        if let Some(store) = &item.store_id {
            self.text("storeId", store)?;
        }
        let product = self
            .ctx
            .catalog
            .product(&item.sku)
            .ok_or_else(|| DomainError::UnknownSku(item.sku.clone()))?;
        if let Some(cur) = &self.cart.currency
            && *cur != product.currency
        {
            return Err(DomainError::CurrencyMismatch {
                cart: cur.clone(),
                sku: item.sku.clone(),
                product: product.currency.clone(),
            });
        }
        if let Some(line) = self.cart.line_for(&item.sku, item.store_id.as_deref()) {
            let quantity = u64::from(line.quantity) + u64::from(item.quantity);
            check_quantity("quantity", quantity, limits.max_quantity)?;
            let line_id = line.id;
            self.emit(ItemQuantityChanged {
                line_id,
                quantity: quantity as u32,
            });
            return Ok(());
        }
        if self.cart.lines.len() >= limits.max_lines {
            return Err(DomainError::LimitExceeded {
                what: "lines",
                max: limits.max_lines,
            });
        }
        let line_id = self.cart.next_line_id;
        self.emit(ItemAdded {
            line_id,
            quantity: item.quantity,
            store_id: item.store_id.clone(),
            country,
            product: Arc::new(product.into()),
        });
        Ok(())
    }

    pub(super) fn remove_item(&mut self, line_id: u32) -> Result<(), DomainError> {
        self.line(line_id)?;
        let emptied: Vec<u32> = self
            .cart
            .deliveries
            .iter()
            .filter(|d| d.line_ids == [line_id])
            .map(|d| d.id)
            .collect();
        self.emit(ItemRemoved { line_id });
        for delivery_id in emptied {
            self.emit(DeliveryRemoved { delivery_id });
        }
        Ok(())
    }

    pub(super) fn add_delivery(
        &mut self,
        provider: &str,
        line_ids: Vec<u32>,
    ) -> Result<(), DomainError> {
        let option = self
            .ctx
            .catalog
            .delivery(provider)
            .ok_or_else(|| DomainError::UnknownDeliveryProvider(provider.to_owned()))?;
        if self.cart.deliveries.len() >= self.limits().max_deliveries {
            return Err(DomainError::LimitExceeded {
                what: "deliveries",
                max: self.limits().max_deliveries,
            });
        }
        let line_ids = if line_ids.is_empty() {
            let free: Vec<u32> = self
                .cart
                .lines
                .iter()
                .filter(|l| self.cart.delivery_of(l.id).is_none())
                .map(|l| l.id)
                .collect();
            if free.is_empty() {
                return Err(DomainError::InvalidState(
                    "every line already has a delivery (or the cart is empty)".to_owned(),
                ));
            }
            free
        } else {
            let mut seen = Vec::with_capacity(line_ids.len());
            for id in line_ids {
                self.line(id)?;
                if let Some(d) = self.cart.delivery_of(id) {
                    return Err(DomainError::LineAlreadyDelivered {
                        line_id: id,
                        delivery_id: d.id,
                    });
                }
                if !seen.contains(&id) {
                    seen.push(id);
                }
            }
            seen
        };
        if let Some(cur) = &self.cart.currency
            && *cur != option.currency
        {
            return Err(DomainError::CurrencyMismatch {
                cart: cur.clone(),
                sku: format!("delivery {provider}"),
                product: option.currency.clone(),
            });
        }
        let delivery_id = self.cart.next_delivery_id;
        self.emit(DeliveryAdded {
            delivery_id,
            provider: option.provider.clone(),
            line_ids,
            price: option.price,
            tax_rate: option.tax_rate,
        });
        Ok(())
    }

    pub(super) fn apply_voucher(&mut self, code: &str) -> Result<(), DomainError> {
        let code = normalize_voucher_code(code);
        self.text("code", &code)?;
        let def = self
            .ctx
            .catalog
            .voucher(&code)
            .ok_or_else(|| DomainError::UnknownVoucherCode(code.clone()))?;
        let not_applicable = |reason: String| DomainError::VoucherNotApplicable {
            code: code.clone(),
            reason,
        };
        if let Some(exp) = def.expires_at
            && self.ctx.now >= exp
        {
            return Err(not_applicable(format!("expired at {exp}")));
        }
        if self.cart.vouchers.iter().any(|v| v.definition.code == code) {
            return Err(not_applicable("is already applied".to_owned()));
        }
        // A voucher whose minimum order is not met yet stays on the cart, not applied; it
        // applies as soon as the cart qualifies (see `totals`).
        if self.cart.vouchers.len() >= self.limits().max_vouchers {
            return Err(DomainError::LimitExceeded {
                what: "vouchers",
                max: self.limits().max_vouchers,
            });
        }
        let voucher_id = self.cart.next_voucher_id;
        self.emit(VoucherApplied {
            voucher_id,
            definition: VoucherDefinition {
                code,
                ..def.clone()
            },
        });
        Ok(())
    }

    pub(super) fn merge(&mut self, source: &str, items: Vec<AddItem>) -> Result<(), DomainError> {
        if source == self.cart.id.as_str() {
            return Err(DomainError::invalid(
                "sourceCartId",
                "must be a different cart than the target",
            ));
        }
        let mut skipped = Vec::new();
        for item in &items {
            match self.add_item(item) {
                Err(DomainError::UnknownSku(sku)) => skipped.push(sku),
                other => other?,
            }
        }
        self.emit(CartMerged {
            source_cart_id: source.to_owned(),
            skipped_skus: skipped,
        });
        Ok(())
    }

    pub(super) fn upsert_subscription_details(
        &mut self,
        id: String,
        offering_code: String,
        signing_type: String,
        data: serde_json::Value,
    ) -> Result<(), DomainError> {
        let limits = self.limits();
        if id.is_empty() {
            return Err(DomainError::invalid(
                "id",
                "must be given (the gateway fills it in)",
            ));
        }
        self.text("offeringCode", &offering_code)?;
        self.text("signingType", &signing_type)?;
        if !data.is_object() {
            return Err(DomainError::invalid("data", "must be a JSON object"));
        }
        let size = serde_json::to_vec(&data).map_or(usize::MAX, |b| b.len());
        if size > limits.max_subscription_data_bytes {
            return Err(DomainError::invalid(
                "data",
                format!(
                    "must be at most {} bytes of JSON, got {size}",
                    limits.max_subscription_data_bytes
                ),
            ));
        }
        // Every stored event must read back: JSON parsers stop at a nesting depth (serde_json
        // at 128, counted from the envelope), so the data's own depth is kept well inside it.
        let depth = json_depth(&data);
        if depth > MAX_SUBSCRIPTION_DATA_DEPTH {
            return Err(DomainError::invalid(
                "data",
                format!("must nest at most {MAX_SUBSCRIPTION_DATA_DEPTH} levels, got {depth}"),
            ));
        }
        let existing = self.cart.subscription_details.iter().find(|d| d.id == id);
        if existing.is_none()
            && self.cart.subscription_details.len() >= limits.max_subscription_details
        {
            return Err(DomainError::LimitExceeded {
                what: "subscription details",
                max: limits.max_subscription_details,
            });
        }
        let unchanged = existing.is_some_and(|d| {
            d.offering_code == offering_code && d.signing_type == signing_type && d.data == data
        });
        if !unchanged {
            self.emit(SubscriptionDetailsUpserted {
                id,
                offering_code,
                signing_type,
                data,
            });
        }
        Ok(())
    }
}
