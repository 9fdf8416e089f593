//! proptest strategies for domain values, covering every optional field set and unset, every
//! enum variant and every oneof arm.

use cart_domain::cart::{
    AppliedVoucher, Cart, Checkout, CheckoutStatus, Delivery, Line, LineProduct, Marking,
    MismatchedOrder, PickupPoint, PlacedOrder, SubscriptionDetails,
};
use cart_domain::catalog::{ProductLabels, VoucherDefinition, VoucherKind};
use cart_domain::{AddItem, CartState, Command, LineOptions, PaidOrder, TaxRate};
use proptest::option;
use proptest::prelude::*;
use shared::CartId;

/// Any printable text, including non-ASCII, kept short so cases stay fast.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

/// `N` independent optional texts, for the runs of optional string fields.
fn opt_texts<const N: usize>() -> impl Strategy<Value = [Option<String>; N]> {
    proptest::array::uniform(opt_text())
}

pub fn cart_id() -> impl Strategy<Value = CartId> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| CartId::parse(&s).expect("strategy yields valid ids"))
}

fn marking() -> impl Strategy<Value = Marking> {
    (any::<u32>(), text()).prop_map(|(kind, text)| Marking { kind, text })
}

fn pickup_point() -> impl Strategy<Value = PickupPoint> {
    (text(), opt_texts()).prop_map(|(id, [name, address, city, zip, country])| PickupPoint {
        id,
        name,
        address,
        city,
        zip,
        country,
    })
}

fn product() -> impl Strategy<Value = LineProduct> {
    (
        (
            text(),
            any::<u64>(),
            text(),
            any::<i64>(),
            option::of(any::<i64>()),
            any::<u32>(),
            text(),
            any::<i64>(),
        ),
        (text(), opt_texts()),
    )
        .prop_map(
            |(
                (sku, item_id, name, unit_price, org_price, tax_rate, currency, stock),
                (item_type, [image, brand, category, seller_id, seller_name, outlet]),
            )| LineProduct {
                sku,
                item_id,
                name,
                unit_price,
                org_price,
                tax_rate: TaxRate(tax_rate),
                currency,
                stock,
                item_type,
                labels: ProductLabels {
                    image,
                    brand,
                    category,
                    seller_id,
                    seller_name,
                    outlet,
                },
                json: Default::default(),
            },
        )
}

fn line() -> impl Strategy<Value = Line> {
    (
        any::<u32>(),
        any::<u32>(),
        product(),
        opt_text(),
        text(),
        option::of(marking()),
    )
        .prop_map(|(id, quantity, product, store_id, country, marking)| Line {
            id,
            quantity,
            product: std::sync::Arc::new(product),
            store_id: store_id.map(Into::into),
            country: country.into(),
            // Options added later keep their defaults here.
            #[allow(clippy::needless_update)]
            options: LineOptions {
                marking: marking.map(Box::new),
                ..LineOptions::default()
            },
        })
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        any::<u32>(),
        text(),
        proptest::collection::vec(any::<u32>(), 0..4),
        any::<i64>(),
        any::<u32>(),
        option::of(pickup_point()),
    )
        .prop_map(
            |(id, provider, line_ids, price, tax_rate, pickup_point)| Delivery {
                id,
                provider,
                line_ids,
                price,
                tax_rate: TaxRate(tax_rate),
                pickup_point,
            },
        )
}

fn voucher() -> impl Strategy<Value = AppliedVoucher> {
    let kind = prop_oneof![
        any::<i64>().prop_map(|amount| VoucherKind::Fixed { amount }),
        any::<u32>().prop_map(|basis_points| VoucherKind::Percent { basis_points }),
    ];
    let expires = proptest::option::of((0i64..4_102_444_800, 0i64..1_000_000_000).prop_map(
        |(secs, nanos)| {
            time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + time::Duration::nanoseconds(nanos)
        },
    ));
    (
        any::<u32>(),
        text(),
        kind,
        any::<i64>(),
        opt_text(),
        expires,
    )
        .prop_map(
            |(id, code, discount, min_order, description, expires_at)| AppliedVoucher {
                id,
                definition: VoucherDefinition {
                    code,
                    discount,
                    description,
                    min_order,
                    expires_at,
                },
            },
        )
}

pub fn checkout_status() -> impl Strategy<Value = CheckoutStatus> {
    prop_oneof![
        Just(CheckoutStatus::Started),
        Just(CheckoutStatus::OrderCreated),
        (text(), text()).prop_map(|(code, reason)| CheckoutStatus::Failed { code, reason }),
        Just(CheckoutStatus::Cancelled),
        Just(CheckoutStatus::Reopened),
        Just(CheckoutStatus::Completed),
    ]
}

pub fn checkout() -> impl Strategy<Value = Checkout> {
    (
        text(),
        checkout_status(),
        any::<i64>(),
        text(),
        text(),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(attempt_id, status, amount, currency, lines_digest, earlier_attempts)| Checkout {
                attempt_id,
                status,
                amount,
                currency,
                lines_digest,
                earlier_attempts,
            },
        )
}

/// JSON objects of a few scalar members.
fn json_object() -> impl Strategy<Value = serde_json::Value> {
    proptest::collection::btree_map("[a-z]{1,5}", any::<i64>(), 0..3).prop_map(|m| {
        serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, v.into())).collect())
    })
}

fn subscription_details() -> impl Strategy<Value = SubscriptionDetails> {
    (text(), text(), text(), json_object()).prop_map(|(id, offering_code, signing_type, data)| {
        SubscriptionDetails {
            id,
            offering_code,
            signing_type,
            data,
        }
    })
}

fn mismatched_order() -> impl Strategy<Value = MismatchedOrder> {
    proptest::array::uniform(text()).prop_map(|[provider_order_id, attempt_id, code, reason]| {
        MismatchedOrder {
            provider_order_id,
            attempt_id,
            code,
            reason,
        }
    })
}

fn paid_order() -> impl Strategy<Value = PaidOrder> {
    (text(), any::<i64>(), text(), text()).prop_map(
        |(attempt_id, amount, currency, lines_digest)| PaidOrder {
            attempt_id,
            amount,
            currency,
            lines_digest,
        },
    )
}

fn placed_order() -> impl Strategy<Value = PlacedOrder> {
    (text(), text()).prop_map(|(provider_order_id, order_reference)| PlacedOrder {
        provider_order_id,
        order_reference,
    })
}

pub fn cart() -> impl Strategy<Value = Cart> {
    (
        (
            cart_id(),
            opt_text(),
            proptest::collection::vec(line(), 0..4),
            proptest::collection::vec(delivery(), 0..3),
            proptest::collection::vec(voucher(), 0..3),
            opt_text(),
        ),
        (
            option::of(checkout()),
            opt_text(),
            opt_text(),
            option::of(placed_order()),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(mismatched_order(), 0..3),
            proptest::collection::vec(subscription_details(), 0..3),
        ),
    )
        .prop_map(
            |(
                (id, currency, lines, deliveries, vouchers, user_id),
                (
                    checkout,
                    provider_order_id,
                    payment_status,
                    order,
                    next_line_id,
                    next_delivery_id,
                    next_voucher_id,
                    mismatched_orders,
                    subscription_details,
                ),
            )| Cart {
                id,
                currency,
                lines,
                deliveries,
                vouchers,
                user_id,
                checkout: checkout.map(Box::new),
                provider_order_id,
                payment_status,
                order: order.map(Box::new),
                subscription_details,
                mismatched_orders,
                next_line_id,
                next_delivery_id,
                next_voucher_id,
            },
        )
}

/// A state without `recent`, the part a snapshot does not carry.
pub fn state() -> impl Strategy<Value = CartState> {
    (cart(), any::<u64>(), any::<u64>()).prop_map(|(cart, version, revision)| CartState {
        cart,
        version,
        revision,
        recent: Default::default(),
        keyed: Vec::new(),
    })
}

fn add_item() -> impl Strategy<Value = AddItem> {
    (text(), any::<u32>(), text(), opt_text()).prop_map(|(sku, quantity, country, store_id)| {
        AddItem {
            sku,
            quantity,
            country,
            store_id,
        }
    })
}

fn items() -> impl Strategy<Value = Vec<AddItem>> {
    proptest::collection::vec(add_item(), 0..4)
}

/// Every command variant. Two groups because `prop_oneof!` takes at most ten strategies of
/// different types.
pub fn command() -> impl Strategy<Value = Command> {
    let contents = prop_oneof![
        add_item().prop_map(Command::AddItem),
        items().prop_map(|items| Command::AddItems { items }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(line_id, quantity)| Command::ChangeQuantity { line_id, quantity }),
        any::<u32>().prop_map(|line_id| Command::RemoveItem { line_id }),
        items().prop_map(|items| Command::SetItems { items }),
        Just(Command::ClearCart),
        (text(), proptest::collection::vec(any::<u32>(), 0..4))
            .prop_map(|(provider, line_ids)| Command::AddDelivery { provider, line_ids }),
        any::<u32>().prop_map(|delivery_id| Command::RemoveDelivery { delivery_id }),
        (any::<u32>(), pickup_point()).prop_map(|(delivery_id, pickup_point)| {
            Command::SetPickupPoint {
                delivery_id,
                pickup_point,
            }
        }),
        text().prop_map(|code| Command::ApplyVoucher { code }),
    ];
    let rest = prop_oneof![
        any::<u32>().prop_map(|voucher_id| Command::RemoveVoucher { voucher_id }),
        opt_text().prop_map(|user_id| Command::SetUser { user_id }),
        (cart_id(), items()).prop_map(|(source_cart_id, items)| Command::MergeCart {
            source_cart_id,
            items
        }),
        (any::<u32>(), marking())
            .prop_map(|(line_id, marking)| Command::SetMarking { line_id, marking }),
        any::<u32>().prop_map(|line_id| Command::RemoveMarking { line_id }),
        (text(), opt_text()).prop_map(|(attempt_id, country)| Command::StartCheckout {
            attempt_id,
            country
        }),
        (text(), text(), text()).prop_map(|(attempt_id, provider_order_id, status)| {
            Command::RecordProviderOrder {
                attempt_id,
                provider_order_id,
                status,
            }
        }),
        (text(), text(), paid_order()).prop_map(|(provider_order_id, order_reference, paid)| {
            Command::ConfirmOrder {
                provider_order_id,
                order_reference,
                paid,
            }
        }),
        (text(), text(), text()).prop_map(|(attempt_id, code, reason)| Command::FailCheckout {
            attempt_id,
            code,
            reason
        }),
        Just(Command::CancelCheckout),
        (text(), text(), text(), json_object()).prop_map(
            |(id, offering_code, signing_type, data)| Command::UpsertSubscriptionDetails {
                id,
                offering_code,
                signing_type,
                data,
            }
        ),
        text().prop_map(|id| Command::RemoveSubscriptionDetails { id }),
    ];
    prop_oneof![contents, rest]
}
