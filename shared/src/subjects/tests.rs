use super::*;

fn t(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn c(s: &str) -> CartId {
    CartId::parse(s).unwrap()
}

/// Strings that must never be accepted as a variable token.
const BAD_TOKENS: &[&str] = &["", "a.b", "*", ">", "a*", "a>", "a b", "a\tb", "a\nb", "ä"];

#[test]
fn cart_events_round_trip() {
    let s = cart_events(&t("acme"), &c("1720000000000000"));
    assert_eq!(s, "cart.events.acme.1720000000000000");
    let parsed = CartEventSubject::parse(&s).unwrap();
    assert_eq!(
        parsed,
        CartEventSubject::new(&t("acme"), &c("1720000000000000"))
    );
    assert_eq!(parsed.to_string(), s);
    assert_eq!(cart_events_for_tenant(&t("acme")), "cart.events.acme.*");
    assert_eq!(cart_events_any_tenant(&c("c-1")), "cart.events.*.c-1");
    assert_eq!(CART_EVENTS_ALL, "cart.events.>");
}

#[test]
fn cart_events_parse_rejects() {
    for bad in [
        "cart.events.acme",
        "cart.events.acme.c1.extra",
        "cart.event.acme.c1",
        "cart.events.ACME.c1",
        "cart.events.acme.*",
        "cart.events.acme.>",
        "cart.events..c1",
        "xcart.events.acme.c1",
        "cart.eventsacme.c1",
    ] {
        let err = CartEventSubject::parse(bad).unwrap_err();
        assert_eq!(err.what, "cart event subject", "{bad}");
    }
}

#[test]
fn workflow_round_trip() {
    let tenant = t("acme");
    let cmd = workflow_command(&tenant, "checkout", "att-1").unwrap();
    assert_eq!(cmd, "workflow.commands.acme.checkout.att-1");
    let ev = workflow_event(&tenant, "checkout", "att-1").unwrap();
    assert_eq!(ev, "workflow.events.acme.checkout.att-1");
    for (s, stream) in [
        (&cmd, WorkflowStream::Commands),
        (&ev, WorkflowStream::Events),
    ] {
        let p = WorkflowSubject::parse(s).unwrap();
        assert_eq!(p.stream, stream);
        assert_eq!(p.tenant, tenant);
        assert_eq!((p.kind.as_str(), p.id.as_str()), ("checkout", "att-1"));
        assert_eq!(&p.to_string(), s);
    }
    assert_eq!(
        workflow_kind_filter(WorkflowStream::Commands, "checkout").unwrap(),
        "workflow.commands.*.checkout.*"
    );
}

#[test]
fn workflow_rejects_bad_tokens() {
    for bad in BAD_TOKENS {
        assert!(workflow_command(&t("a"), bad, "id").is_err(), "{bad:?}");
        assert!(workflow_event(&t("a"), "kind", bad).is_err(), "{bad:?}");
        assert!(workflow_kind_filter(WorkflowStream::Events, bad).is_err());
    }
    for bad in [
        "workflow.commands.acme.checkout",
        "workflow.commands.acme.checkout.id.x",
        "workflow.other.acme.checkout.id",
        "workflow.events.acme.*.id",
        "workflow.events.Acme.k.id",
    ] {
        assert!(WorkflowSubject::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn dead_letters_round_trip() {
    let s = dead_letter("projection-carts", &t("acme"), &c("c1")).unwrap();
    assert_eq!(s, "dlq.projection-carts.acme.c1");
    let p = DeadLetterSubject::parse(&s).unwrap();
    assert_eq!(p.consumer, "projection-carts");
    assert_eq!(p.tenant, t("acme"));
    assert_eq!(p.cart_id, c("c1"));
    assert_eq!(p.to_string(), s);
    assert_eq!(
        dead_letters_of("runner-checkout").unwrap(),
        "dlq.runner-checkout.>"
    );
    for bad in BAD_TOKENS {
        assert!(dead_letter(bad, &t("a"), &c("c")).is_err(), "{bad:?}");
        assert!(dead_letters_of(bad).is_err());
    }
    assert!(DeadLetterSubject::parse("dlq.x.acme").is_err());
    assert!(DeadLetterSubject::parse("dlq.*.acme.c1").is_err());
    assert_eq!(DEAD_LETTERS_ALL, "dlq.>");
}

#[test]
fn kv_keys_round_trip() {
    let k = snapshot_key(&t("acme"), &c("c-1"));
    assert_eq!(k, "acme.c-1");
    assert_eq!(parse_snapshot_key(&k).unwrap(), (t("acme"), c("c-1")));
    assert!(parse_snapshot_key("acme").is_err());
    assert!(parse_snapshot_key("acme.c.1").is_err());

    assert_eq!(placement_key(17), "shards.17");
    assert_eq!(parse_placement_key("shards.17").unwrap(), 17);
    for bad in [
        "shards.",
        "shards.07",
        "shards.-1",
        "shards.x",
        "shard.1",
        "shards.1.2",
    ] {
        assert!(parse_placement_key(bad).is_err(), "{bad}");
    }

    assert_eq!(node_key("node-a_1").unwrap(), "node-a_1");
    assert_eq!(parse_node_key("node-a_1").unwrap(), "node-a_1");

    assert_eq!(sku_key("SKU-123").unwrap(), "sku.SKU-123");
    assert_eq!(delivery_key("postnord").unwrap(), "delivery.postnord");
    assert_eq!(voucher_key("SUMMER_10").unwrap(), "voucher.SUMMER_10");
    for (key, expect) in [
        ("sku.SKU-123", CatalogKey::Sku("SKU-123".into())),
        ("delivery.postnord", CatalogKey::Delivery("postnord".into())),
        ("voucher.SUMMER_10", CatalogKey::Voucher("SUMMER_10".into())),
    ] {
        let parsed = CatalogKey::parse(key).unwrap();
        assert_eq!(parsed, expect);
        assert_eq!(parsed.to_string(), key);
    }
    for bad in ["sku", "gift.x", "sku.a.b", "sku.", "voucher.*"] {
        assert!(CatalogKey::parse(bad).is_err(), "{bad}");
    }
    for bad in BAD_TOKENS {
        assert!(node_key(bad).is_err(), "{bad:?}");
        assert!(sku_key(bad).is_err(), "{bad:?}");
        assert!(delivery_key(bad).is_err(), "{bad:?}");
        assert!(voucher_key(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn resource_names() {
    assert_eq!(CART_EVENTS_STREAM, "CART_EVENTS");
    assert_eq!(WORKFLOW_COMMANDS_STREAM, "WORKFLOW_COMMANDS");
    assert_eq!(WORKFLOW_EVENTS_STREAM, "WORKFLOW_EVENTS");
    assert_eq!(DEAD_LETTERS_STREAM, "DEAD_LETTERS");
    assert_eq!(projection_durable("carts").unwrap(), "projection-carts");
    assert!(projection_durable("a.b").is_err());
    assert_eq!(RUNNER_CHECKOUT_DURABLE, "runner-checkout");
    assert_eq!(RUNNER_PUSH_DURABLE, "runner-push");
    assert_eq!(
        direct_get_api("CART_EVENTS").unwrap(),
        "$JS.API.DIRECT.GET.CART_EVENTS"
    );
    assert!(direct_get_api("A.B").is_err());
}

#[test]
fn errors_name_what_and_why() {
    let err = workflow_command(&t("a"), "bad.kind", "x").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("workflow kind"), "{msg}");
    assert!(msg.contains("bad.kind"), "{msg}");
    let api: crate::ApiError = err.into();
    assert_eq!(api.code, crate::ErrorCode::InvalidArgument);
}
