//! `decide`: the business rules. Given the current cart, a command and a [`Context`] (time,
//! catalog facts, limits), return the events to record or the reason for refusing.
//!
//! Rules that span the checkout:
//! - Once the order is placed, every change is refused with `cart_locked`.
//! - While a checkout attempt is live (`paymentInProgress`), a change to the contents is
//!   allowed and **re-opens** the checkout: the events start with `CheckoutReopened`, and the
//!   next `StartCheckout` carries the existing provider order id so the runner updates that
//!   order instead of creating another.
//! - Once the provider's validation approved a purchase (`ApprovePayment`), the cart holds
//!   still until the order is placed or fails, or `PURCHASE_HOLD_SECS` pass: changes to the
//!   contents, another attempt and a cancel are refused with `cart_locked`.
//! - Runner/provider commands (`RecordProviderOrder`, `FailCheckout`, `ConfirmOrder`,
//!   `ApprovePayment`) that repeat what already happened decide to no events: redelivery is
//!   harmless.

use time::OffsetDateTime;

use crate::cart::{Cart, CheckoutStatus, PickupPoint, apply};
use crate::catalog::{Catalog, VoucherDefinition, normalize_voucher_code};
use crate::command::{AddItem, Command, Limits};
use crate::error::DomainError;
use crate::event::*;
use crate::payment::{PaidOrder, PaymentMismatch, checkout_lines};

mod contents;
mod fields;

pub use fields::{MAX_SUBSCRIPTION_DATA_DEPTH, country};
use fields::{check_quantity, json_depth, non_empty};

/// Everything a decision may consult besides the cart: no clock, catalog or randomness is
/// reached any other way.
pub struct Context<'a> {
    pub now: OffsetDateTime,
    pub catalog: &'a dyn Catalog,
    pub limits: Limits,
}

/// Decide a command against `cart`. An empty `Ok` means "nothing to record" (the command
/// repeats what already happened).
pub fn decide(cart: &Cart, command: Command, ctx: &Context<'_>) -> Result<Vec<Event>, DomainError> {
    if let Some(order) = &cart.order {
        return match command {
            Command::ConfirmOrder {
                ref provider_order_id,
                ..
            } if *provider_order_id == order.provider_order_id
                || cart.mismatch(provider_order_id).is_some() =>
            {
                Ok(Vec::new())
            }
            // Another order paid for a cart whose order is placed: money taken, nothing to
            // place it on. Recorded, never dropped.
            Command::ConfirmOrder {
                provider_order_id,
                paid,
                ..
            } => {
                let m = cart
                    .check_paid(&provider_order_id, &paid)
                    .expect_err("a cart with a placed order never matches a payment");
                Ok(vec![mismatched(provider_order_id, paid, m)])
            }
            Command::RecordProviderOrder {
                provider_order_id, ..
            } if provider_order_id == order.provider_order_id => Ok(Vec::new()),
            Command::FailCheckout { .. } => Ok(Vec::new()),
            _ => Err(DomainError::OrderPlaced(order.order_reference.clone())),
        };
    }
    // While the provider completes an approved purchase, nothing may make the paid order
    // differ from the cart: no change to what is paid for, no other attempt, no cancel.
    let holds = command.changes_contents()
        || matches!(
            command,
            Command::StartCheckout { .. } | Command::CancelCheckout
        );
    if holds && let Some(order) = cart.purchase_held(ctx.now.unix_timestamp()) {
        return Err(DomainError::PurchaseInProgress(order.to_owned()));
    }
    let mut d = Decision {
        cart: cart.clone(),
        events: Vec::new(),
        ctx,
    };
    if command.changes_contents()
        && let Some(c) = &cart.checkout
        && cart.payment_in_progress()
    {
        d.emit(CheckoutReopened {
            attempt_id: c.attempt_id.clone(),
        });
    }
    d.run(command)?;
    Ok(d.events)
}

/// A working copy: each emitted event is applied at once, so later steps of the same command
/// see its effect (e.g. two `AddItems` entries for one SKU add up).
struct Decision<'a, 'c> {
    cart: Cart,
    events: Vec<Event>,
    ctx: &'a Context<'c>,
}

impl Decision<'_, '_> {
    fn emit(&mut self, e: impl Into<Event>) {
        let e = e.into();
        apply(&mut self.cart, &e);
        self.events.push(e);
    }

    fn limits(&self) -> Limits {
        self.ctx.limits
    }

    fn run(&mut self, command: Command) -> Result<(), DomainError> {
        match command {
            Command::AddItem(item) => self.add_item(&item),
            Command::AddItems { items } => {
                non_empty(&items, "items")?;
                items.iter().try_for_each(|i| self.add_item(i))
            }
            Command::SetItems { items } => {
                if !self.cart.lines.is_empty() || !self.cart.deliveries.is_empty() {
                    self.emit(CartCleared {});
                }
                items.iter().try_for_each(|i| self.add_item(i))
            }
            Command::ChangeQuantity { line_id, quantity } => {
                self.line(line_id)?;
                check_quantity("quantity", u64::from(quantity), self.limits().max_quantity)?;
                if self.cart.line(line_id).map(|l| l.quantity) != Some(quantity) {
                    self.emit(ItemQuantityChanged { line_id, quantity });
                }
                Ok(())
            }
            Command::RemoveItem { line_id } => self.remove_item(line_id),
            Command::ClearCart => {
                if !self.cart.lines.is_empty() || !self.cart.deliveries.is_empty() {
                    self.emit(CartCleared {});
                }
                Ok(())
            }
            Command::AddDelivery { provider, line_ids } => self.add_delivery(&provider, line_ids),
            Command::RemoveDelivery { delivery_id } => {
                self.delivery(delivery_id)?;
                self.emit(DeliveryRemoved { delivery_id });
                Ok(())
            }
            Command::SetPickupPoint {
                delivery_id,
                pickup_point,
            } => {
                self.delivery(delivery_id)?;
                let pickup_point = self.pickup_point(pickup_point)?;
                if self
                    .cart
                    .delivery(delivery_id)
                    .and_then(|d| d.pickup_point.as_ref())
                    != Some(&pickup_point)
                {
                    self.emit(PickupPointSet {
                        delivery_id,
                        pickup_point,
                    });
                }
                Ok(())
            }
            Command::ApplyVoucher { code } => self.apply_voucher(&code),
            Command::RemoveVoucher { voucher_id } => {
                if !self.cart.vouchers.iter().any(|v| v.id == voucher_id) {
                    return Err(DomainError::UnknownVoucher(voucher_id));
                }
                self.emit(VoucherRemoved { voucher_id });
                Ok(())
            }
            Command::SetUser { user_id } => {
                if let Some(u) = &user_id {
                    self.text("userId", u)?;
                }
                if self.cart.user_id != user_id {
                    self.emit(UserSet { user_id });
                }
                Ok(())
            }
            Command::MergeCart {
                source_cart_id,
                items,
            } => self.merge(source_cart_id.as_str(), items),
            Command::SetMarking { line_id, marking } => {
                self.line(line_id)?;
                self.text("marking.text", &marking.text)?;
                if self
                    .cart
                    .line(line_id)
                    .and_then(|l| l.options.marking.as_deref())
                    != Some(&marking)
                {
                    self.emit(MarkingSet { line_id, marking });
                }
                Ok(())
            }
            Command::RemoveMarking { line_id } => {
                if self.line(line_id)?.options.marking.is_some() {
                    self.emit(MarkingRemoved { line_id });
                }
                Ok(())
            }
            Command::StartCheckout {
                attempt_id,
                country,
            } => self.start_checkout(attempt_id, country),
            Command::RecordProviderOrder {
                attempt_id,
                provider_order_id,
                status,
            } => {
                self.text("attemptId", &attempt_id)?;
                self.text("providerOrderId", &provider_order_id)?;
                self.text("status", &status)?;
                let already = self.cart.provider_order_id.as_deref() == Some(&provider_order_id)
                    && !matches!(
                        &self.cart.checkout,
                        Some(c) if c.attempt_id == attempt_id && c.status == CheckoutStatus::Started
                    );
                // Nothing to record (a redelivery, a replay or a second runner can bring an old
                // result back) for an order that was paid and not placed (complete at the
                // provider, it can never be updated again, and a checkout showing it could
                // never be paid), or for an older attempt once the current one is past waiting
                // for its order (its own order is the one shown).
                let settled = self.cart.mismatch(&provider_order_id).is_some()
                    || matches!(
                        &self.cart.checkout,
                        Some(c) if c.attempt_id != attempt_id && c.status != CheckoutStatus::Started
                    );
                if !already && !settled {
                    self.emit(ProviderOrderRecorded {
                        attempt_id,
                        provider_order_id,
                        status,
                    });
                }
                Ok(())
            }
            Command::FailCheckout {
                attempt_id,
                code,
                reason,
            } => {
                let live = matches!(&self.cart.checkout, Some(c) if c.attempt_id == attempt_id)
                    && self.cart.payment_in_progress();
                // An approved purchase is being completed: a failure of an earlier call for
                // the attempt (a redelivered update the completed order refused) must not
                // release the cart before the paid order comes back.
                if live && let Some(order) = self.cart.purchase_held(self.ctx.now.unix_timestamp())
                {
                    return Err(DomainError::PurchaseInProgress(order.to_owned()));
                }
                if live {
                    self.emit(CheckoutFailed {
                        attempt_id,
                        code,
                        reason,
                    });
                }
                Ok(())
            }
            Command::CancelCheckout => match &self.cart.checkout {
                Some(c) if self.cart.payment_in_progress() => {
                    let attempt_id = c.attempt_id.clone();
                    self.emit(CheckoutCancelled { attempt_id });
                    Ok(())
                }
                _ => Err(DomainError::InvalidState(
                    "no checkout is in progress".to_owned(),
                )),
            },
            Command::UpsertSubscriptionDetails {
                id,
                offering_code,
                signing_type,
                data,
            } => self.upsert_subscription_details(id, offering_code, signing_type, data),
            Command::RemoveSubscriptionDetails { id } => {
                if !self.cart.subscription_details.iter().any(|d| d.id == id) {
                    return Err(DomainError::UnknownSubscriptionDetails(id));
                }
                self.emit(SubscriptionDetailsRemoved { id });
                Ok(())
            }
            Command::ApprovePayment {
                provider_order_id,
                paid,
            } => self.approve_payment(provider_order_id, &paid),
            Command::ConfirmOrder {
                provider_order_id,
                order_reference,
                paid,
            } => {
                self.text("orderReference", &order_reference)?;
                if self.cart.mismatch(&provider_order_id).is_some() {
                    // A repeated push of a paid order already recorded as mismatched.
                    return Ok(());
                }
                let event: Event = match self.cart.check_paid(&provider_order_id, &paid) {
                    Ok(attempt) => OrderPlaced {
                        provider_order_id,
                        order_reference,
                        total_amount: attempt.amount,
                        currency: attempt.currency.clone(),
                        attempt_id: Some(attempt.attempt_id.clone()),
                    }
                    .into(),
                    Err(m) => mismatched(provider_order_id, paid, m),
                };
                self.emit(event);
                Ok(())
            }
        }
    }

    /// The provider's validation callback: approved when what it would charge matches the
    /// live attempt and the cart (then the cart holds still for the purchase), refused
    /// otherwise. Asked again while held, it changes nothing.
    fn approve_payment(
        &mut self,
        provider_order_id: String,
        paid: &PaidOrder,
    ) -> Result<(), DomainError> {
        let now = self.ctx.now.unix_timestamp();
        let checkout = self
            .cart
            .check_paid(&provider_order_id, paid)
            .map_err(|m| DomainError::PaymentRefused {
                code: m.code,
                reason: m.reason,
            })?;
        let attempt_id = checkout.attempt_id.clone();
        match &checkout.status {
            CheckoutStatus::Failed { .. }
            | CheckoutStatus::Cancelled
            | CheckoutStatus::Completed => Err(DomainError::PaymentRefused {
                code: "checkout_closed",
                reason: format!("checkout attempt {attempt_id:?} has ended"),
            }),
            CheckoutStatus::PaymentApproved { .. } if self.cart.purchase_held(now).is_some() => {
                Ok(())
            }
            _ => {
                self.emit(PaymentApproved {
                    attempt_id,
                    provider_order_id,
                    approved_at: now,
                });
                Ok(())
            }
        }
    }

    fn start_checkout(
        &mut self,
        attempt_id: String,
        country_override: Option<String>,
    ) -> Result<(), DomainError> {
        self.text("attemptId", &attempt_id)?;
        if let Some(c) = &self.cart.checkout
            && c.attempt_id == attempt_id
        {
            // The same attempt again (a retried request): nothing new to record.
            return Ok(());
        }
        if let Some(c) = &self.cart.checkout
            && c.earlier_attempts.contains(&attempt_id)
        {
            return Err(DomainError::invalid(
                "attemptId",
                format!(
                    "{attempt_id:?} was used by an earlier checkout of this cart; each checkout needs a new one"
                ),
            ));
        }
        if self.cart.lines.is_empty() {
            return Err(DomainError::InvalidState(
                "cannot check out an empty cart".to_owned(),
            ));
        }
        let country = match country_override {
            Some(c) => country(&c)?,
            None => self.cart.lines[0].country.to_string(),
        };
        // What is charged is what applies now: a voucher that expired while it sat on the cart
        // comes off (in the same commit, so the cart shows why the total changed).
        let expired: Vec<u32> = self
            .cart
            .vouchers
            .iter()
            .filter(|v| {
                v.definition
                    .expires_at
                    .is_some_and(|exp| self.ctx.now >= exp)
            })
            .map(|v| v.id)
            .collect();
        for voucher_id in expired {
            self.emit(VoucherRemoved { voucher_id });
        }
        let priced = checkout_lines(&self.cart);
        self.emit(CheckoutStarted {
            attempt_id,
            provider_order_id: self.cart.provider_order_id.clone(),
            currency: priced.currency,
            country,
            total_amount: priced.total_amount,
            total_tax_amount: priced.total_tax_amount,
            lines: priced.lines,
        });
        Ok(())
    }

    fn line(&self, id: u32) -> Result<&crate::cart::Line, DomainError> {
        self.cart.line(id).ok_or(DomainError::UnknownLine(id))
    }

    fn delivery(&self, id: u32) -> Result<&crate::cart::Delivery, DomainError> {
        self.cart
            .delivery(id)
            .ok_or(DomainError::UnknownDelivery(id))
    }

    fn text(&self, field: &'static str, s: &str) -> Result<(), DomainError> {
        let max = self.limits().max_text_len;
        if s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                field,
                format!("must be 1..={max} characters without control characters"),
            ));
        }
        Ok(())
    }

    fn pickup_point(&self, p: PickupPoint) -> Result<PickupPoint, DomainError> {
        self.text("pickupPoint.id", &p.id)?;
        for (field, v) in [
            ("pickupPoint.name", &p.name),
            ("pickupPoint.address", &p.address),
            ("pickupPoint.city", &p.city),
            ("pickupPoint.zip", &p.zip),
            ("pickupPoint.country", &p.country),
        ] {
            if let Some(v) = v {
                self.text(field, v)?;
            }
        }
        Ok(p)
    }
}

fn mismatched(provider_order_id: String, paid: PaidOrder, m: PaymentMismatch) -> Event {
    OrderMismatched {
        provider_order_id,
        attempt_id: paid.attempt_id,
        paid_amount: paid.amount,
        currency: paid.currency,
        code: m.code.to_owned(),
        reason: m.reason,
    }
    .into()
}
