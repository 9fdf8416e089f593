//! Bodies of `POST /v1/carts/{id}/commands`: one command `{"type": "AddItem", ...}` or a list
//! `{"commands": [...], "atomic": true}`.
//!
//! A command is the domain's own JSON form ([`Command`]'s serde), decoded once, straight into
//! the domain type: a new command needs nothing here. Three things are added at this edge:
//! errors name the field from the top of the body (`commands[1].quantity: ...`, see
//! [`decode`]); unknown fields are refused at every depth, also inside the domain's lenient
//! nested types (see [`refuse_unknown`]); and what a client may leave out is filled in
//! (`country`) or refused (commands only the checkout runner sends, a merge's `items`).

use cart_domain::Command;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{ApiError, ErrorCode};
use utoipa::ToSchema;

use crate::request::json::{describe, from_value, refuse_unknown};

/// Sent by the runner, and for the payment provider's callbacks by the gateway itself; never
/// by clients.
pub const INTERNAL: &[&str] = &[
    "RecordProviderOrder",
    "ConfirmOrder",
    "FailCheckout",
    "ApprovePayment",
];

/// Several commands: `atomic` (the default) applies all or none as one commit; otherwise they
/// run one by one and each reports its own error (such a list takes no `Idempotency-Key`).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandList {
    #[schema(value_type = Vec<Command>)]
    pub commands: Vec<Value>,
    #[serde(default = "yes")]
    pub atomic: bool,
}

fn yes() -> bool {
    true
}

/// The body of the commands route (documentation). The runner's commands
/// (`RecordProviderOrder`, `ConfirmOrder`, `FailCheckout`) and a merge's `items` are refused
/// from clients.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CommandsRequest {
    One(Command),
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

/// The command types a client may send, in the domain's order (worked out once).
fn client_command_types() -> &'static [&'static str] {
    static TYPES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        let mut types: Vec<&'static str> = Command::examples()
            .iter()
            .map(Command::name)
            .filter(|t| !INTERNAL.contains(t))
            .collect();
        types.dedup();
        types
    });
    &TYPES
}

/// Parses a body; `default_country` fills items that name none.
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
    let Value::Object(fields) = &value else {
        return Err(ApiError::invalid(format!(
            "{}: a command is a JSON object with a \"type\"",
            if path.is_empty() { "body" } else { path }
        )));
    };
    let type_path = field(path, "type");
    let kind = match fields.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(ApiError::invalid(format!("{type_path}: must be a string"))),
        None => {
            return Err(ApiError::invalid(format!(
                "{type_path}: missing field type"
            )));
        }
    };
    if INTERNAL.contains(&kind) {
        return Err(ApiError::invalid(format!(
            "{type_path}: {kind} is an internal command (sent by the checkout runner or the payment provider), not accepted from clients"
        )));
    }
    if !client_command_types().contains(&kind) {
        return Err(ApiError::invalid(format!(
            "{type_path}: unknown command type {kind:?}; expected one of {}",
            client_command_types().join(", ")
        )));
    }
    let mut command = decode(&value, path)?;
    let written = serde_json::to_value(&command).map_err(|e| ApiError::internal(e.to_string()))?;
    refuse_unknown(&value, &written, path)?;
    fill_in(&mut command, path, default_country)?;
    Ok(Parsed {
        command,
        echo: value,
    })
}

/// What a client may leave out or must not send.
fn fill_in(command: &mut Command, path: &str, default_country: &str) -> Result<(), ApiError> {
    let items = match command {
        Command::AddItem(item) => std::slice::from_mut(item),
        Command::AddItems { items } | Command::SetItems { items } => items.as_mut_slice(),
        Command::MergeCart { items, .. } if !items.is_empty() => {
            return Err(ApiError::invalid(format!(
                "{}: the aggregate takes the items from the source cart; send sourceCartId only",
                field(path, "items")
            )));
        }
        _ => &mut [],
    };
    for item in items.iter_mut().filter(|i| i.country.is_empty()) {
        item.country = default_country.to_owned();
    }
    Ok(())
}

/// The most trial decodes spent finding the field an error is about.
const MAX_TRIALS: usize = 64;

/// Decodes a command with the domain's serde. serde reads an internally tagged enum through a
/// buffer, which loses the path of a wrong value (`invalid value: integer -1, expected u32`
/// without `quantity`); the field is found by taking values out one at a time: the one whose
/// removal changes the error is the one the error is about (a wrong value fails while the
/// fields are read, a missing one only after).
fn decode(value: &Value, path: &str) -> Result<Command, ApiError> {
    let err = match serde_json::from_value::<Command>(value.clone()) {
        Ok(command) => return Ok(command),
        Err(e) => e,
    };
    let error = err.to_string();
    // A missing field is reported once every field is read: only a nested object or list can
    // be where it is missing, so only those are searched.
    let scalars = !error.starts_with("missing field");
    let mut trials = 0;
    let mut at = Vec::new();
    while let Some(step) = culprit(value, &at, &error, scalars, &mut trials) {
        at.push(step);
    }
    let steps: String = at.iter().map(ToString::to_string).collect();
    let located = format!("{path}{steps}");
    Err(describe(located.trim_start_matches('.'), &err))
}

/// One step into a JSON value.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Key(k) => write!(f, ".{k}"),
            Step::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// The child of the node at `at` whose removal changes `error`, if any.
fn culprit(
    root: &Value,
    at: &[Step],
    error: &str,
    scalars: bool,
    trials: &mut usize,
) -> Option<Step> {
    let node = at.iter().try_fold(root, |v, s| match s {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(i),
    })?;
    let children: Vec<Step> = match node {
        Value::Object(m) => m
            .iter()
            .filter(|(k, v)| !(at.is_empty() && *k == "type") && (scalars || is_container(v)))
            .map(|(k, _)| Step::Key(k.clone()))
            .collect(),
        Value::Array(a) => (0..a.len())
            .filter(|&i| scalars || is_container(&a[i]))
            .map(Step::Index)
            .collect(),
        _ => return None,
    };
    children.into_iter().find(|child| {
        *trials += 1;
        if *trials > MAX_TRIALS {
            return false;
        }
        let mut trial = root.clone();
        remove(&mut trial, at, child);
        serde_json::from_value::<Command>(trial).map_err(|e| e.to_string()) != Err(error.to_owned())
    })
}

fn remove(root: &mut Value, at: &[Step], child: &Step) {
    let node = at.iter().try_fold(root, |v, s| match s {
        Step::Key(k) => v.get_mut(k),
        Step::Index(i) => v.get_mut(*i),
    });
    match (node, child) {
        (Some(Value::Object(m)), Step::Key(k)) => {
            m.remove(k);
        }
        (Some(Value::Array(a)), Step::Index(i)) => {
            a.remove(*i);
        }
        _ => {}
    }
}

fn is_container(v: &Value) -> bool {
    v.is_object() || v.is_array()
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

    /// The domain's serde loses the path inside a tagged command; the edge finds the field.
    #[test]
    fn errors_inside_a_command_name_the_nested_field() {
        let cases = [
            (
                json!({"type": "AddItems", "items": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": "x"}]}),
                "items[1].quantity: invalid type: string \"x\", expected u32",
            ),
            (
                json!({"type": "AddItems", "items": [{"sku": "A", "quantity": 1, "zz": 1}]}),
                "items[0].zz: unknown field zz, expected one of sku, quantity, country, storeId",
            ),
            (
                json!({"type": "AddItems", "items": [{"sku": "A"}]}),
                "items[0]: missing field quantity",
            ),
            (
                json!({"type": "ChangeQuantity", "quantity": 1}),
                "missing field lineId",
            ),
            (
                json!({"type": "SetPickupPoint", "deliveryId": 1, "pickupPoint": {"id": "P", "city": 7}}),
                "pickupPoint.city: invalid type: integer 7, expected a string",
            ),
            // The domain's nested types ignore unknown fields (they are shared with events);
            // the edge does not.
            (
                json!({"type": "SetPickupPoint", "deliveryId": 1, "pickupPoint": {"id": "P", "town": "x"}}),
                "pickupPoint.town: unknown field town",
            ),
            (
                json!({"type": "SetMarking", "lineId": 1, "marking": {"type": 1, "text": "a", "font": "x"}}),
                "marking.font: unknown field font",
            ),
            (
                json!({"type": "MergeCart", "sourceCartId": "1720000000000000", "items": [{"sku": "A", "quantity": 1}]}),
                "items: the aggregate takes the items from the source cart; send sourceCartId only",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(one(body.clone()).unwrap_err(), expected, "{body}");
        }
        let e = parse(
            json!({"commands": [{"type": "ClearCart"}, {"type": "AddItems", "items": [{"sku": 5, "quantity": 1}]}]}),
            "se",
            5,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "commands[1].items[0].sku: invalid type: integer 5, expected a string"
        );
        // A null is an absent optional field, and items without a country get the default.
        let c =
            one(json!({"type": "AddItem", "sku": "A", "quantity": 1, "storeId": null})).unwrap();
        assert_eq!(
            c,
            Command::AddItem(cart_domain::AddItem {
                sku: "A".into(),
                quantity: 1,
                country: "se".into(),
                store_id: None,
            })
        );
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
