//! Domain tests: given (events) / when (command) / then (events or error), property tests and
//! the pinned JSON contract.

mod checkout;
mod commands;
mod contract;
mod properties;

use time::macros::datetime;

use super::*;
use crate::catalog::{
    CatalogSnapshot, DeliveryOption, Product, ProductLabels, VoucherDefinition, VoucherKind,
};
use crate::ids::CartId;

pub(super) fn product(sku: &str, price: i64, rate: u32) -> Product {
    Product {
        sku: sku.into(),
        item_id: price as u64,
        name: format!("Product {sku}"),
        price,
        org_price: None,
        tax_rate: TaxRate(rate),
        currency: "SEK".into(),
        stock: 10,
        labels: ProductLabels {
            image: Some(format!("https://img.example/{sku}.jpg")),
            ..ProductLabels::default()
        },
        item_type: "product".into(),
    }
}

pub(super) fn catalog() -> CatalogSnapshot {
    let mut c = CatalogSnapshot::default();
    for p in [
        product("TEST-SKU-123", 12500, 2500),
        product("TEST-SKU-456", 9990, 2500),
        product("BOOK-1", 22400, 600),
        product("FOOD-1", 11200, 1200),
    ] {
        c.products.insert(p.sku.clone(), p.into());
    }
    let mut bare = product("NOIMAGE-1", 1000, 2500);
    bare.labels.image = None;
    c.products.insert(bare.sku.clone(), bare.into());
    let mut eur = product("EURO-1", 1000, 2500);
    eur.currency = "EUR".into();
    c.products.insert(eur.sku.clone(), eur.into());
    c.deliveries.insert(
        "standard".into(),
        DeliveryOption {
            provider: "standard".into(),
            name: None,
            price: 4900,
            tax_rate: TaxRate(2500),
            currency: "SEK".into(),
        }
        .into(),
    );
    c.deliveries.insert(
        "express".into(),
        DeliveryOption {
            provider: "express".into(),
            name: None,
            price: 9900,
            tax_rate: TaxRate(2500),
            currency: "SEK".into(),
        }
        .into(),
    );
    for (code, kind, min, exp) in [
        ("TEN", VoucherKind::Percent { basis_points: 1000 }, 0, None),
        ("FIFTY", VoucherKind::Fixed { amount: 5000 }, 0, None),
        ("TWOHUNDRED", VoucherKind::Fixed { amount: 20000 }, 0, None),
        ("BIG", VoucherKind::Fixed { amount: 1000 }, 100_000, None),
        (
            "OLD",
            VoucherKind::Fixed { amount: 1000 },
            0,
            Some(datetime!(2020-01-01 0:00 UTC)),
        ),
        // Valid at `ctx`'s now, expired an hour later.
        (
            "SOON",
            VoucherKind::Fixed { amount: 1000 },
            0,
            Some(datetime!(2026-11-23 13:00 UTC)),
        ),
    ] {
        c.vouchers.insert(
            code.into(),
            VoucherDefinition {
                code: code.into(),
                discount: kind,
                description: None,
                min_order: min,
                expires_at: exp,
            }
            .into(),
        );
    }
    c
}

pub(super) fn ctx(catalog: &CatalogSnapshot) -> Context<'_> {
    Context {
        now: datetime!(2026-11-23 12:00 UTC),
        catalog,
        limits: Limits::default(),
    }
}

pub(super) fn cart_id() -> CartId {
    CartId::parse("1720000000000000").unwrap()
}

pub(super) fn add(sku: &str, quantity: u32) -> AddItem {
    AddItem {
        sku: sku.into(),
        quantity,
        country: "se".into(),
        store_id: None,
    }
}

/// `ChangeQuantity` of line `line_id` to `quantity`.
pub(super) fn cq(line_id: u32, quantity: u32) -> Command {
    Command::ChangeQuantity { line_id, quantity }
}

/// `AddDelivery` by `provider` for `line_ids` (none: every line).
pub(super) fn delivery(provider: &str, line_ids: &[u32]) -> Command {
    Command::AddDelivery {
        provider: provider.into(),
        line_ids: line_ids.to_vec(),
    }
}

/// `ApplyVoucher` with `code`.
pub(super) fn voucher(code: &str) -> Command {
    Command::ApplyVoucher { code: code.into() }
}

/// `StartCheckout` as attempt `attempt`, in the cart's own country.
pub(super) fn checkout(attempt: &str) -> Command {
    Command::StartCheckout {
        attempt_id: attempt.into(),
        country: None,
    }
}

/// A pickup point `id` with every field set.
pub(super) fn pickup(id: &str) -> PickupPoint {
    PickupPoint {
        id: id.into(),
        name: Some("Locker 5".into()),
        address: Some("Main St 1".into()),
        city: Some("Stockholm".into()),
        zip: Some("11122".into()),
        country: Some("SE".into()),
    }
}

/// `SetPickupPoint` of delivery `delivery_id` to `pickup_point`.
pub(super) fn set_pickup(delivery_id: u32, pickup_point: PickupPoint) -> Command {
    Command::SetPickupPoint {
        delivery_id,
        pickup_point,
    }
}

/// `SetUser` to `user_id` (none: detach).
pub(super) fn set_user(user_id: Option<&str>) -> Command {
    Command::SetUser {
        user_id: user_id.map(Into::into),
    }
}

/// `SetMarking` of line `line_id` to a marking of `kind` reading `text`.
pub(super) fn marking(line_id: u32, kind: u32, text: &str) -> Command {
    Command::SetMarking {
        line_id,
        marking: Marking {
            kind,
            text: text.into(),
        },
    }
}

/// `UpsertSubscriptionDetails` `id` for `offering_code`, signed by `signing_type`.
pub(super) fn subscription(
    id: &str,
    offering_code: &str,
    signing_type: &str,
    data: serde_json::Value,
) -> Command {
    Command::UpsertSubscriptionDetails {
        id: id.into(),
        offering_code: offering_code.into(),
        signing_type: signing_type.into(),
        data,
    }
}

/// The provider's answer to `attempt`: its order `order`, not paid yet.
pub(super) fn record(attempt: &str, order: &str) -> Command {
    Command::RecordProviderOrder {
        attempt_id: attempt.into(),
        provider_order_id: order.into(),
        status: "checkout_incomplete".into(),
    }
}

/// The provider refused checkout attempt `attempt` with `code` because of `reason`.
pub(super) fn fail(attempt: &str, code: &str, reason: &str) -> Command {
    Command::FailCheckout {
        attempt_id: attempt.into(),
        code: code.into(),
        reason: reason.into(),
    }
}

/// The provider reports its order `order` paid (`paid`), to be placed as `reference`.
pub(super) fn confirm_order(order: &str, reference: &str, paid: PaidOrder) -> Command {
    Command::ConfirmOrder {
        provider_order_id: order.into(),
        order_reference: reference.into(),
        paid,
    }
}

/// Fold commands into a cart, panicking on rejection (test set-up).
pub(super) fn given(commands: Vec<Command>) -> Cart {
    let cat = catalog();
    let ctx = ctx(&cat);
    let mut cart = Cart::new(cart_id());
    for c in commands {
        let name = c.name();
        for e in decide(&cart, c, &ctx).unwrap_or_else(|e| panic!("given {name}: {e}")) {
            cart = evolve(cart, &e);
        }
    }
    cart
}

pub(super) fn when(cart: &Cart, command: Command) -> Result<Vec<Event>, DomainError> {
    let cat = catalog();
    decide(cart, command, &ctx(&cat))
}

/// What a faithful provider reports as paid for `cart`'s current checkout attempt.
pub(super) fn paid_for(cart: &Cart) -> PaidOrder {
    let c = cart
        .checkout
        .as_ref()
        .expect("the cart has a checkout attempt");
    PaidOrder {
        attempt_id: c.attempt_id.clone(),
        amount: c.amount,
        currency: c.currency.clone(),
        lines_digest: c.lines_digest.clone(),
    }
}

pub(super) fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::type_name).collect()
}
