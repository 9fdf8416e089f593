use super::*;

#[test]
fn tenant_rules() {
    assert!(TenantId::parse("default").is_ok());
    assert!(TenantId::parse("shop-1_se").is_ok());
    for bad in ["", "Shop", "a.b", "a*", "a>", "a b", "-x", &"x".repeat(64)] {
        let err = TenantId::parse(bad).unwrap_err();
        assert_eq!(err.field, "tenant", "{bad}");
    }
}

#[test]
fn cart_id_accepts_go_cart_actor_ids_and_rejects_subject_breakers() {
    assert_eq!(
        CartId::parse("1720000000000000").unwrap().as_str(),
        "1720000000000000"
    );
    assert!(CartId::parse("abc-DEF_123").is_ok());
    for bad in ["", "a.b", "*", ">", "a b", "a\tb", "ä", &"1".repeat(65)] {
        let err = CartId::parse(bad).unwrap_err();
        assert_eq!(err.field, "cart_id");
        assert!(err.to_string().contains("cart_id must be"), "{err}");
    }
}

#[test]
#[cfg(feature = "generate")]
fn generated_cart_ids_are_numeric_unique_and_ordered() {
    let a = CartId::generate();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        assert!(seen.insert(CartId::generate()));
    }
    let b = CartId::generate();
    assert!(a.as_str().bytes().all(|c| c.is_ascii_digit()));
    assert!(a.as_str().parse::<u128>().unwrap() < b.as_str().parse::<u128>().unwrap());
    assert!(CartId::parse(a.as_str()).is_ok());
}

#[test]
fn key_fields_are_bounded_tokens() {
    assert_eq!(
        KeyField::Sku.check("sku", "TEST-SKU-123"),
        Ok("TEST-SKU-123")
    );
    let order = "a".repeat(128);
    assert!(KeyField::ProviderOrderId.check("o", &order).is_ok());
    for (field, bad) in [
        (KeyField::Sku, "x".repeat(65)),
        (KeyField::Sku, "a.b".to_owned()),
        (KeyField::VoucherCode, "A B".to_owned()),
        (KeyField::DeliveryProvider, String::new()),
        (KeyField::AttemptId, "x".repeat(5000)),
        (KeyField::ProviderOrderId, "o".repeat(129)),
    ] {
        let e = field.check("items[1].sku", &bad).unwrap_err();
        assert_eq!(e.field, "items[1].sku");
        assert!(e.value.chars().count() <= 81, "the value is cut: {e}");
    }
    assert!(!is_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
}

#[test]
#[cfg(feature = "generate")]
fn minted_command_ids_are_uuid_v7() {
    let c = CommandId::new();
    assert_eq!(c.as_uuid().get_version_num(), 7);
    assert_eq!(CommandId::parse(&c.to_string()).unwrap(), c);
}

#[test]
fn command_ids() {
    let c = CommandId::derived(&["c"]);
    assert_eq!(CommandId::parse(&c.to_string()).unwrap(), c);
    assert!(CommandId::parse("00000000-0000-0000-0000-000000000000").is_err());
    assert!(CommandId::parse("not-a-uuid").is_err());
    assert_eq!(
        CommandId::derived(&["a", "b"]),
        CommandId::derived(&["a", "b"])
    );
    assert_ne!(CommandId::derived(&["a", "b"]), CommandId::derived(&["ab"]));
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<CommandId>(&json).unwrap(), c);
}

#[test]
fn trace_and_span_ids() {
    assert!(TraceId::parse(&"0".repeat(32)).is_err());
    assert!(SpanId::parse(&"0".repeat(16)).is_err());
    assert_eq!(
        TraceId::parse("4BF92F3577B34DA6A3CE929D0E0E4736")
            .unwrap()
            .as_str(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(TraceId::parse("xyz").is_err());
}

#[test]
#[cfg(feature = "generate")]
fn generated_trace_and_span_ids_parse() {
    assert!(TraceId::parse(TraceId::generate().as_str()).is_ok());
    assert!(SpanId::parse(SpanId::generate().as_str()).is_ok());
}

#[test]
fn correlation_ids() {
    assert!(CorrelationId::parse("req-1").is_ok());
    assert!(CorrelationId::parse("has space").is_err());
    assert!(CorrelationId::parse("").is_err());
    assert!(CorrelationId::parse(&"a".repeat(129)).is_err());
}

#[test]
fn serde_validates() {
    assert!(serde_json::from_str::<CartId>("\"a.b\"").is_err());
    assert_eq!(
        serde_json::to_string(&TenantId::parse("t1").unwrap()).unwrap(),
        "\"t1\""
    );
}
