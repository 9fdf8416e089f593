//! Bodies of `POST /v1/carts/{id}/commands`: one command `{"type": "AddItem", ...}` or a list
//! `{"commands": [...], "atomic": true}`.
//!
//! Commands are parsed in two steps (read `type`, then the fields of that type) so an error
//! names the field from the top of the body (`commands[1].quantity: ...`); a tagged serde enum
//! would lose the path. Commands only the checkout runner and the payment provider may send
//! are refused by name.

use cart_domain::Command;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{ApiError, CartId, ErrorCode};
use utoipa::ToSchema;

use crate::request::json::from_value;
use crate::storefront::dto::{ItemBody, MarkingBody, PickupPointBody, SubscriptionDetailsBody};

/// Sent by the runner and the payment provider, never by clients.
pub const INTERNAL: &[&str] = &["RecordProviderOrder", "ConfirmOrder", "FailCheckout"];

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemsCmd {
    pub items: Vec<ItemBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeQuantityCmd {
    pub line_id: u32,
    pub quantity: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineCmd {
    pub line_id: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyCmd {}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddDeliveryCmd {
    pub provider: String,
    /// Empty or absent: every line without a delivery.
    #[serde(default)]
    pub line_ids: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryCmd {
    pub delivery_id: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPickupPointCmd {
    pub delivery_id: u32,
    pub pickup_point: PickupPointBody,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyVoucherCmd {
    pub code: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoucherCmd {
    pub voucher_id: u32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetUserCmd {
    pub user_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeCartCmd {
    /// The anonymous cart whose items move into this one.
    pub source_cart_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetMarkingCmd {
    pub line_id: u32,
    pub marking: MarkingBody,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartCheckoutCmd {
    /// Identifies this checkout attempt end to end; the command id when absent.
    #[serde(default)]
    pub attempt_id: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoveSubscriptionDetailsCmd {
    pub id: String,
}

/// One command (documentation of the union; parsing is [`parse_command`]).
#[derive(Serialize, ToSchema)]
#[serde(tag = "type")]
#[allow(dead_code)]
pub enum CommandBody {
    AddItem(ItemBody),
    AddItems(ItemsCmd),
    ChangeQuantity(ChangeQuantityCmd),
    RemoveItem(LineCmd),
    SetItems(ItemsCmd),
    ClearCart(EmptyCmd),
    AddDelivery(AddDeliveryCmd),
    RemoveDelivery(DeliveryCmd),
    SetPickupPoint(SetPickupPointCmd),
    ApplyVoucher(ApplyVoucherCmd),
    RemoveVoucher(VoucherCmd),
    SetUser(SetUserCmd),
    MergeCart(MergeCartCmd),
    SetMarking(SetMarkingCmd),
    RemoveMarking(LineCmd),
    StartCheckout(StartCheckoutCmd),
    CancelCheckout(EmptyCmd),
    UpsertSubscriptionDetails(SubscriptionDetailsBody),
    RemoveSubscriptionDetails(RemoveSubscriptionDetailsCmd),
}

/// Several commands: `atomic` (the default) applies all or none as one commit; otherwise they
/// run one by one and each reports its own error.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandList {
    #[schema(value_type = Vec<CommandBody>)]
    pub commands: Vec<Value>,
    #[serde(default = "yes")]
    pub atomic: bool,
}

fn yes() -> bool {
    true
}

/// The body of the commands route (documentation).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CommandsRequest {
    One(CommandBody),
    Many(CommandList),
}

/// A parsed command and the JSON it came from (echoed as the reply's `mutation`).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub command: Command,
    pub echo: Value,
}

#[derive(Debug, Clone)]
pub enum Commands {
    One(Parsed),
    Many { commands: Vec<Parsed>, atomic: bool },
}

/// Parses a body; `default_country` fills items that name none.
/// The command types a client may send, in the domain's order.
fn client_command_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = Command::examples()
        .iter()
        .map(Command::name)
        .filter(|t| !INTERNAL.contains(t))
        .collect();
    types.dedup();
    types
}

pub fn parse(body: Value, default_country: &str, max: usize) -> Result<Commands, ApiError> {
    if body.get("commands").is_none() {
        return parse_command(body, "", default_country).map(Commands::One);
    }
    let list: CommandList = from_value(body, "")?;
    if list.commands.is_empty() {
        return Err(ApiError::invalid("commands: must not be empty"));
    }
    if list.commands.len() > max {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!(
                "commands: at most {max} commands per request, got {}",
                list.commands.len()
            ),
        ));
    }
    let commands = list
        .commands
        .into_iter()
        .enumerate()
        .map(|(i, v)| parse_command(v, &format!("commands[{i}]"), default_country))
        .collect::<Result<_, _>>()?;
    Ok(Commands::Many {
        commands,
        atomic: list.atomic,
    })
}

fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// One command at `path` (`""` or `commands[i]`).
pub fn parse_command(value: Value, path: &str, default_country: &str) -> Result<Parsed, ApiError> {
    let echo = value.clone();
    let Value::Object(mut fields) = value else {
        return Err(ApiError::invalid(format!(
            "{}: a command is a JSON object with a \"type\"",
            if path.is_empty() { "body" } else { path }
        )));
    };
    let type_path = field(path, "type");
    let kind = match fields.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(ApiError::invalid(format!("{type_path}: must be a string"))),
        None => {
            return Err(ApiError::invalid(format!(
                "{type_path}: missing field type"
            )));
        }
    };
    let rest = Value::Object(fields);
    let items = |items: Vec<ItemBody>| {
        items
            .iter()
            .map(|i| i.to_add_item(default_country))
            .collect()
    };
    let command = match kind.as_str() {
        "AddItem" => {
            Command::AddItem(from_value::<ItemBody>(rest, path)?.to_add_item(default_country))
        }
        "AddItems" => Command::AddItems {
            items: items(from_value::<ItemsCmd>(rest, path)?.items),
        },
        "SetItems" => Command::SetItems {
            items: items(from_value::<ItemsCmd>(rest, path)?.items),
        },
        "ChangeQuantity" => {
            let c: ChangeQuantityCmd = from_value(rest, path)?;
            Command::ChangeQuantity {
                line_id: c.line_id,
                quantity: c.quantity,
            }
        }
        "RemoveItem" => Command::RemoveItem {
            line_id: from_value::<LineCmd>(rest, path)?.line_id,
        },
        "ClearCart" => {
            from_value::<EmptyCmd>(rest, path)?;
            Command::ClearCart
        }
        "AddDelivery" => {
            let c: AddDeliveryCmd = from_value(rest, path)?;
            Command::AddDelivery {
                provider: c.provider,
                line_ids: c.line_ids,
            }
        }
        "RemoveDelivery" => Command::RemoveDelivery {
            delivery_id: from_value::<DeliveryCmd>(rest, path)?.delivery_id,
        },
        "SetPickupPoint" => {
            let c: SetPickupPointCmd = from_value(rest, path)?;
            Command::SetPickupPoint {
                delivery_id: c.delivery_id,
                pickup_point: c.pickup_point.into(),
            }
        }
        "ApplyVoucher" => Command::ApplyVoucher {
            code: from_value::<ApplyVoucherCmd>(rest, path)?.code,
        },
        "RemoveVoucher" => Command::RemoveVoucher {
            voucher_id: from_value::<VoucherCmd>(rest, path)?.voucher_id,
        },
        "SetUser" => Command::SetUser {
            user_id: from_value::<SetUserCmd>(rest, path)?.user_id,
        },
        "MergeCart" => {
            let c: MergeCartCmd = from_value(rest, path)?;
            let source_cart_id = CartId::parse(&c.source_cart_id)
                .map_err(|e| ApiError::invalid(format!("{}: {e}", field(path, "sourceCartId"))))?;
            // Items always come from the source cart, read by the aggregate.
            Command::MergeCart {
                source_cart_id,
                items: Vec::new(),
            }
        }
        "SetMarking" => {
            let c: SetMarkingCmd = from_value(rest, path)?;
            Command::SetMarking {
                line_id: c.line_id,
                marking: c.marking.into(),
            }
        }
        "RemoveMarking" => Command::RemoveMarking {
            line_id: from_value::<LineCmd>(rest, path)?.line_id,
        },
        "StartCheckout" => {
            let c: StartCheckoutCmd = from_value(rest, path)?;
            Command::StartCheckout {
                // Filled with the command id before sending when absent.
                attempt_id: c.attempt_id.unwrap_or_default(),
                country: c.country,
            }
        }
        "CancelCheckout" => {
            from_value::<EmptyCmd>(rest, path)?;
            Command::CancelCheckout
        }
        "UpsertSubscriptionDetails" => from_value::<SubscriptionDetailsBody>(rest, path)?.command(),
        "RemoveSubscriptionDetails" => Command::RemoveSubscriptionDetails {
            id: from_value::<RemoveSubscriptionDetailsCmd>(rest, path)?.id,
        },
        internal if INTERNAL.contains(&internal) => {
            return Err(ApiError::invalid(format!(
                "{type_path}: {internal} is an internal command (sent by the checkout runner or the payment provider), not accepted from clients"
            )));
        }
        other => {
            return Err(ApiError::invalid(format!(
                "{type_path}: unknown command type {other:?}; expected one of {}",
                client_command_types().join(", ")
            )));
        }
    };
    Ok(Parsed { command, echo })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: Value) -> Result<Command, String> {
        match parse(v, "se", 5).map_err(|e| e.message)? {
            Commands::One(p) => Ok(p.command),
            Commands::Many { .. } => panic!("expected one"),
        }
    }

    /// `/v1` speaks the domain's JSON command form: every command of the domain a client may
    /// send parses from its serde form into the same command, and the runner's commands are
    /// refused. A command added to the domain and forgotten here fails this test.
    #[test]
    fn every_client_command_of_the_domain_is_accepted_in_its_json_form() {
        for c in Command::examples() {
            let v = serde_json::to_value(&c).unwrap();
            let parsed = one(v.clone());
            if INTERNAL.contains(&c.name()) {
                let e = parsed.unwrap_err();
                assert!(e.contains("internal command"), "{}: {e}", c.name());
            } else {
                assert_eq!(parsed, Ok(c.clone()), "{v}");
            }
        }
    }

    #[test]
    fn one_command_or_a_list() {
        let c = one(json!({"type": "AddItem", "sku": "A", "quantity": 2})).unwrap();
        let Command::AddItem(i) = c else { panic!() };
        assert_eq!(
            (i.sku.as_str(), i.quantity, i.country.as_str()),
            ("A", 2, "se")
        );
        let Commands::Many { commands, atomic } = parse(
            json!({"commands": [{"type": "ClearCart"}, {"type": "RemoveItem", "lineId": 3}]}),
            "se",
            5,
        )
        .unwrap() else {
            panic!()
        };
        assert!(atomic);
        assert_eq!(commands[1].command, Command::RemoveItem { line_id: 3 });
        assert_eq!(commands[1].echo, json!({"type": "RemoveItem", "lineId": 3}));
    }

    #[test]
    fn errors_name_the_field_and_the_type() {
        let e = parse(
            json!({"commands": [{"type": "ClearCart"}, {"type": "ChangeQuantity", "lineId": 1, "quantity": -1}]}),
            "se",
            5,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "commands[1].quantity: invalid value: integer -1, expected u32"
        );
        let e =
            one(json!({"type": "ChangeQuantity", "lineId": 1, "quantity": 1, "x": 1})).unwrap_err();
        assert!(e.starts_with("x: unknown field x"), "{e}");
        let e = one(json!({"type": "FailCheckout", "attemptId": "a", "code": "c", "reason": "r"}))
            .unwrap_err();
        assert!(e.contains("FailCheckout is an internal command"), "{e}");
        let e = one(json!({"type": "Nope"})).unwrap_err();
        assert!(e.starts_with("type: unknown command type \"Nope\""), "{e}");
        // The list names what a client may send, and not the runner's commands.
        assert!(
            e.contains("expected one of AddItem, AddItems,")
                && e.contains("RemoveSubscriptionDetails")
                && !e.contains("ConfirmOrder"),
            "{e}"
        );
        assert!(
            one(json!({"sku": "A"}))
                .unwrap_err()
                .contains("missing field type")
        );
        assert!(one(json!([1])).is_err());
        let e = parse(json!({"commands": []}), "se", 5).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let many = json!({"commands": vec![json!({"type": "ClearCart"}); 6]});
        assert_eq!(
            parse(many, "se", 5).unwrap_err().code,
            ErrorCode::LimitExceeded
        );
        let e = one(json!({"type": "MergeCart", "sourceCartId": "a.b"})).unwrap_err();
        assert!(e.starts_with("sourceCartId: cart_id must be"), "{e}");
    }

    #[test]
    fn subscription_details_commands_parse_with_or_without_an_id() {
        let c = one(
            json!({"type": "UpsertSubscriptionDetails", "offeringCode": "5G",
                           "signingType": "bankid", "data": {"a": 1}}),
        )
        .unwrap();
        assert_eq!(
            c,
            Command::UpsertSubscriptionDetails {
                id: String::new(),
                offering_code: "5G".into(),
                signing_type: "bankid".into(),
                data: json!({"a": 1}),
            }
        );
        let c = one(json!({"type": "RemoveSubscriptionDetails", "id": "s1"})).unwrap();
        assert_eq!(c, Command::RemoveSubscriptionDetails { id: "s1".into() });
        let e =
            one(json!({"type": "UpsertSubscriptionDetails", "offeringCode": "5G"})).unwrap_err();
        assert!(e.contains("signingType"), "{e}");
    }
}
