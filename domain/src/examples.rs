//! One command of every type ([`Command::examples`]), for the contract tests of every edge.

use crate::cart::{Marking, PickupPoint};
use crate::command::{AddItem, Command};
use crate::ids::CartId;
use crate::payment::PaidOrder;

impl Command {
    /// Every command type at least once, with optional fields set and unset: the samples the
    /// edges' contract tests run through their own parsers (gRPC, `/v1`), so an edge that
    /// does not know a command fails a test. `examples_cover_every_command_type` fails until a
    /// new variant has an example here.
    pub fn examples() -> Vec<Command> {
        let item = |sku: &str, store: Option<&str>| AddItem {
            sku: sku.into(),
            quantity: 2,
            country: "se".into(),
            store_id: store.map(Into::into),
        };
        vec![
            Command::AddItem(item("A", Some("store-1"))),
            Command::AddItems {
                items: vec![item("A", None), item("B", Some("s"))],
            },
            Command::ChangeQuantity {
                line_id: 3,
                quantity: 7,
            },
            Command::RemoveItem { line_id: 4 },
            Command::SetItems {
                items: vec![item("C", None)],
            },
            Command::ClearCart,
            Command::AddDelivery {
                provider: "postnord".into(),
                line_ids: vec![1, 2],
            },
            Command::RemoveDelivery { delivery_id: 1 },
            Command::SetPickupPoint {
                delivery_id: 1,
                pickup_point: PickupPoint {
                    id: "pp-1".into(),
                    name: Some("Ombud".into()),
                    address: None,
                    city: Some("Malmö".into()),
                    zip: Some("211 20".into()),
                    country: None,
                },
            },
            Command::ApplyVoucher {
                code: "SUMMER10".into(),
            },
            Command::RemoveVoucher { voucher_id: 2 },
            Command::SetUser {
                user_id: Some("u-1".into()),
            },
            Command::SetUser { user_id: None },
            Command::MergeCart {
                source_cart_id: CartId::parse("1720000000000000").expect("a valid cart id"),
                items: vec![],
            },
            Command::SetMarking {
                line_id: 1,
                marking: Marking {
                    kind: 2,
                    text: "Grattis!".into(),
                },
            },
            Command::RemoveMarking { line_id: 1 },
            Command::StartCheckout {
                attempt_id: "att-1".into(),
                country: Some("se".into()),
            },
            Command::StartCheckout {
                attempt_id: "att-2".into(),
                country: None,
            },
            Command::RecordProviderOrder {
                attempt_id: "att-1".into(),
                provider_order_id: "kco-1".into(),
                status: "checkout_incomplete".into(),
            },
            Command::ConfirmOrder {
                provider_order_id: "kco-1".into(),
                order_reference: "R-1".into(),
                paid: PaidOrder {
                    attempt_id: "att-1".into(),
                    amount: 24_900,
                    currency: "SEK".into(),
                    lines_digest: "d".repeat(32),
                },
            },
            Command::FailCheckout {
                attempt_id: "att-1".into(),
                code: "provider_refused".into(),
                reason: "card declined".into(),
            },
            Command::CancelCheckout,
            Command::UpsertSubscriptionDetails {
                id: "sub-1".into(),
                offering_code: "5G".into(),
                signing_type: "bankid".into(),
                data: serde_json::json!({"msisdn": "0701234567"}),
            },
            Command::RemoveSubscriptionDetails { id: "sub-1".into() },
        ]
    }
}
