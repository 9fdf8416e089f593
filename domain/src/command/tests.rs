//! The commands' JSON form and the checks of values that become keys.

use super::*;

#[test]
fn json_form() {
    let c: Command = serde_json::from_value(serde_json::json!(
        {"type": "AddItem", "sku": "A", "quantity": 2, "country": "se", "storeId": "s1"}
    ))
    .unwrap();
    assert_eq!(
        c,
        Command::AddItem(AddItem {
            sku: "A".into(),
            quantity: 2,
            country: "se".into(),
            store_id: Some("s1".into())
        })
    );
    let c: Command = serde_json::from_value(
        serde_json::json!({"type": "ChangeQuantity", "lineId": 1, "quantity": 3}),
    )
    .unwrap();
    assert_eq!(c.name(), "ChangeQuantity");
    let c: Command = serde_json::from_value(serde_json::json!({"type": "ClearCart"})).unwrap();
    assert_eq!(c, Command::ClearCart);
    let err = serde_json::from_value::<Command>(
        serde_json::json!({"type": "ChangeQuantity", "lineId": 1, "quantity": 3, "x": 1}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `x`"), "{err}");
    let err = serde_json::from_value::<Command>(
        serde_json::json!({"type": "ChangeQuantity", "lineId": 1, "quantity": -3}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("-3"), "{err}");
    assert!(serde_json::from_value::<Command>(serde_json::json!({"type": "Nope"})).is_err());
}

#[test]
fn values_that_become_keys_are_validated_and_the_error_names_the_field() {
    let long = "A".repeat(5000);
    let bad = [
        (
            Command::AddItem(AddItem {
                sku: long.clone(),
                quantity: 1,
                country: "se".into(),
                store_id: None,
            }),
            "sku",
        ),
        (
            Command::AddDelivery {
                provider: long.clone(),
                line_ids: vec![],
            },
            "provider",
        ),
        (Command::ApplyVoucher { code: long.clone() }, "code"),
        (
            Command::StartCheckout {
                attempt_id: "a.b".into(),
                country: None,
            },
            "attemptId",
        ),
    ];
    for (c, field) in bad {
        let e = c.validate().unwrap_err();
        assert!(
            matches!(&e, DomainError::InvalidField { field: f, .. } if *f == field),
            "{e}"
        );
        assert!(e.to_string().len() < 300, "the message is bounded: {e}");
    }
    assert!(
        Command::ApplyVoucher {
            code: " welcome10 ".into()
        }
        .validate()
        .is_ok()
    );
    assert!(Command::ClearCart.validate().is_ok());
}

#[test]
fn needs_and_content_changes() {
    let c = Command::AddItems {
        items: vec![
            AddItem {
                sku: "A".into(),
                quantity: 1,
                country: "se".into(),
                store_id: None,
            },
            AddItem {
                sku: "B".into(),
                quantity: 1,
                country: "se".into(),
                store_id: None,
            },
        ],
    };
    assert_eq!(c.catalog_needs().skus, vec!["A", "B"]);
    assert!(c.changes_contents());
    assert!(!Command::SetUser { user_id: None }.changes_contents());
    assert_eq!(
        Command::ApplyVoucher { code: "X".into() }
            .catalog_needs()
            .vouchers,
        vec!["X"]
    );
}
