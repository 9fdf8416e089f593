use super::*;
use shared::test_support::config_check::{assert_debug_hides, load_from_env};

#[test]
fn a_printed_config_does_not_show_api_keys_or_the_admin_token() {
    let mut cfg = Config {
        api_keys: "sk-live-key=tenant-a".into(),
        backoffice_keys: "office-key=tenant-a".into(),
        admin_token: "admin-s3cret".into(),
        ..Default::default()
    };
    cfg.nats.password = "nats-s3cret".into();
    let secrets = ["sk-live-key", "office-key", "admin-s3cret", "nats-s3cret"];
    assert_debug_hides(&cfg, &secrets, "http_addr");
}

#[test]
fn a_back_office_key_is_its_own_and_errors_do_not_show_keys() {
    let cfg = Config {
        api_keys: "shared-key=tenant-a".into(),
        backoffice_keys: "shared-key=tenant-a".into(),
        ..Default::default()
    };
    let e = cfg.check().unwrap_err().to_string();
    assert!(
        e.contains("backoffice_keys") && !e.contains("shared-key"),
        "{e}"
    );
    let cfg = Config {
        backoffice_keys: "s3cret-key-without-tenant".into(),
        ..Default::default()
    };
    let e = cfg.check().unwrap_err().to_string();
    assert!(e.contains("key=tenant") && !e.contains("s3cret"), "{e}");
}

#[test]
fn env_names_are_prefixed_and_lists_are_comma_separated() {
    let env = [
        ("GATEWAY_HTTP_ADDR", "0.0.0.0:9000"),
        ("GATEWAY_API_KEYS", "k1=tenant-a, k2=tenant-b"),
        ("GATEWAY_AGGREGATE_ADDRS", "10.0.0.1:50051,10.0.0.2:50051"),
        ("GATEWAY_COOKIE_SECURE", "true"),
        ("NATS_URL", "nats://n:4222"),
        ("HTTP_ADDR", "ignored"),
    ];
    let c: Config = load_from_env(&env);
    assert_eq!(c.http_addr, "0.0.0.0:9000");
    assert!(c.cookie_secure);
    assert_eq!(c.nats.url, "nats://n:4222");
    assert_eq!(c.nats.name, "gateway");
    assert_eq!(
        c.aggregate_addrs(),
        vec!["10.0.0.1:50051", "10.0.0.2:50051"]
    );
    let keys = c.api_keys().unwrap();
    assert_eq!(keys["k2"].as_str(), "tenant-b");
    c.check().unwrap();
}

#[test]
fn bad_values_name_the_field() {
    for (field, c) in [
        (
            "api_keys",
            Config {
                api_keys: "nokey".into(),
                ..Config::default()
            },
        ),
        (
            "default_tenant",
            Config {
                default_tenant: "Not Valid".into(),
                ..Config::default()
            },
        ),
        (
            "upstream_deadline_ms",
            Config {
                upstream_deadline_ms: 1,
                ..Config::default()
            },
        ),
    ] {
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    let c = Config {
        default_tenant: String::new(),
        ..Config::default()
    };
    assert_eq!(c.default_tenant().unwrap(), None);
}

#[test]
fn a_malformed_service_address_is_a_start_up_error_naming_the_variable() {
    let bad = "runner 50061";
    for (var, c) in [
        (
            "GATEWAY_PROJECTION_ADDR",
            Config {
                projection_addr: bad.into(),
                ..Config::default()
            },
        ),
        (
            "GATEWAY_RUNNER_ADDR",
            Config {
                runner_addr: bad.into(),
                ..Config::default()
            },
        ),
        (
            "GATEWAY_AGGREGATE_ADDRS",
            Config {
                aggregate_addrs: format!("10.0.0.1:50051,{bad}"),
                ..Config::default()
            },
        ),
    ] {
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains(var) && e.contains(bad), "{e}");
    }
    // Empty means off, not malformed.
    let off = Config {
        projection_addr: String::new(),
        runner_addr: " ".into(),
        aggregate_addrs: String::new(),
        ..Config::default()
    };
    off.check().unwrap();
}

/// A rotation: the new validation key beside the old, either signs a valid token.
#[test]
fn validation_keys_are_a_list_any_of_which_is_accepted() {
    use crate::request::context::Auth;
    let merchant = shared::provider_order::MerchantData {
        tenant: "t".into(),
        cart_id: "c".into(),
        attempt_id: "a".into(),
    };
    let c = Config {
        validation_key: "new-key, old-key".into(),
        ..Config::default()
    };
    let auth = Auth::new(None, HashMap::new(), "").with_validation_keys(c.validation_keys());
    for signer in ["new-key", "old-key"] {
        let token = merchant.callback_token(&signer.into());
        assert!(auth.callback_allowed(&merchant, Some(&token)), "{signer}");
    }
    let stranger = merchant.callback_token(&"another".into());
    assert!(!auth.callback_allowed(&merchant, Some(&stranger)));
    assert!(!auth.callback_allowed(&merchant, None));
    let open = Auth::new(None, HashMap::new(), "")
        .with_validation_keys(Config::default().validation_keys());
    assert!(
        open.callback_allowed(&merchant, None),
        "no keys: not checked"
    );
}

/// A checkout wait past proxies' timeouts would turn our 202 into a proxy's non-JSON 504.
#[test]
fn the_checkout_wait_is_bounded() {
    let at_most = Config {
        checkout_wait_ms: super::MAX_CHECKOUT_WAIT_MS,
        ..Config::default()
    };
    at_most.check().unwrap();
    let over = Config {
        checkout_wait_ms: super::MAX_CHECKOUT_WAIT_MS + 1,
        ..Config::default()
    };
    let e = over.check().unwrap_err().to_string();
    assert!(e.contains("checkout_wait_ms") && e.contains("25000"), "{e}");
}
