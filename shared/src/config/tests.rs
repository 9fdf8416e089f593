use super::*;
use crate::nats::NatsConfig;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
struct Sample {
    nats: NatsConfig,
    http_port: u16,
    default_tenant: String,
    verbose: bool,
    admin_token: Option<String>,
    shard_count: u32,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            nats: NatsConfig::default(),
            http_port: 8080,
            default_tenant: "default".into(),
            verbose: false,
            admin_token: None,
            shard_count: 64,
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write_toml(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn defaults_without_file_or_env() {
    let c: Sample = load_from(None, env(&[("PATH", "/bin"), ("HOME", "/root")])).unwrap();
    assert_eq!(c, Sample::default());
}

#[test]
fn env_overrides_flat_and_nested_keys() {
    let c: Sample = load_from(
        None,
        env(&[
            ("HTTP_PORT", "9090"),
            ("NATS_URL", "nats://n1:4222,nats://n2:4222"),
            ("NATS_CONNECT_TIMEOUT_MS", "750"),
            ("VERBOSE", "true"),
            ("ADMIN_TOKEN", "s3cret"),
            ("DEFAULT_TENANT", "123"),
            ("http_port", "1"), // lower-case names are not configuration
        ]),
    )
    .unwrap();
    assert_eq!(c.http_port, 9090);
    assert_eq!(c.nats.url, "nats://n1:4222,nats://n2:4222");
    assert_eq!(c.nats.connect_timeout_ms, 750);
    assert_eq!(c.nats.name, "cart");
    assert!(c.verbose);
    assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
    // A numeric-looking value for a string field stays a string.
    assert_eq!(c.default_tenant, "123");
}

#[test]
fn file_then_env_precedence() {
    let f = write_toml("http_port = 7000\nshard_count = 128\n[nats]\nname = \"gateway\"\n");
    let c: Sample = load_from(Some(f.path()), env(&[("SHARD_COUNT", "256")])).unwrap();
    assert_eq!(c.http_port, 7000, "file over default");
    assert_eq!(c.nats.name, "gateway", "nested table");
    assert_eq!(c.shard_count, 256, "env over file");
}

#[test]
fn bad_env_value_names_key_and_variable() {
    let err = load_from::<Sample>(None, env(&[("HTTP_PORT", "eighty")])).unwrap_err();
    assert_eq!(err.key, "http_port");
    assert!(err.message.contains("HTTP_PORT"), "{err}");
    assert!(err.message.contains("environment variable"), "{err}");

    let err = load_from::<Sample>(None, env(&[("NATS_REQUEST_TIMEOUT_MS", "-5")])).unwrap_err();
    assert_eq!(err.key, "nats.request_timeout_ms");
    assert!(err.message.contains("NATS_REQUEST_TIMEOUT_MS"), "{err}");
}

#[test]
fn bad_file_values_and_unknown_keys_are_named() {
    let f = write_toml("http_port = \"x\"\n");
    let err = load_from::<Sample>(Some(f.path()), env(&[])).unwrap_err();
    assert_eq!(err.key, "http_port");
    assert!(
        err.message.contains(&f.path().display().to_string()),
        "{err}"
    );

    let f = write_toml("htp_port = 1\n");
    let err = load_from::<Sample>(Some(f.path()), env(&[])).unwrap_err();
    assert_eq!(err.key, "htp_port");
    assert!(err.message.contains("unknown key"), "{err}");

    let f = write_toml("[nats]\nurll = \"x\"\n");
    let err = load_from::<Sample>(Some(f.path()), env(&[])).unwrap_err();
    assert_eq!(err.key, "nats.urll");

    let f = write_toml("http_port = \n");
    let err = load_from::<Sample>(Some(f.path()), env(&[])).unwrap_err();
    assert!(err.message.contains("TOML"), "{err}");
}

#[test]
fn missing_named_file_is_an_error() {
    let err = load_from::<Sample>(Some(Path::new("/nonexistent/cart.toml")), env(&[])).unwrap_err();
    assert!(err.message.contains(CONFIG_FILE_ENV), "{err}");
    assert!(err.message.contains("/nonexistent/cart.toml"), "{err}");
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
fn load_reads_process_env_and_config_file_env() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("cart.toml", "http_port = 7100\n")?;
        jail.set_env(CONFIG_FILE_ENV, "cart.toml");
        jail.set_env("SHARD_COUNT", "12");
        let c: Sample = load().map_err(|e| e.to_string())?;
        assert_eq!(c.http_port, 7100);
        assert_eq!(c.shard_count, 12);
        Ok(())
    });
}

#[test]
fn service_prefix_for_own_fields_and_plain_names_for_sections() {
    let c: Sample = load_service_from(
        "svc",
        None,
        env(&[
            ("SVC_DEFAULT_TENANT", "acme"),
            ("DEFAULT_TENANT", "ignored-without-prefix"),
            ("NATS_URL", "nats://shared:4222"),
            ("OTHER_NATS_URL", "nats://not-mine:4222"),
        ]),
    )
    .unwrap();
    assert_eq!(c.default_tenant, "acme");
    assert_eq!(c.nats.url, "nats://shared:4222");
    let c: Sample = load_service_from(
        "SVC",
        None,
        env(&[
            ("NATS_URL", "nats://shared:4222"),
            ("SVC_NATS_URL", "nats://mine:4222"),
        ]),
    )
    .unwrap();
    assert_eq!(c.nats.url, "nats://mine:4222", "the prefixed name wins");
}

#[test]
fn unknown_env_keys_are_reported() {
    let unknown = unknown_env_keys::<Sample>(
        "SVC",
        env(&[
            ("SVC_HTTP_PORT", "1"),
            ("SVC_HTTP_PROT", "1"),
            ("NATS_URL", "x"),
            ("NATS_URLS", "x"),
            ("PATH", "/bin"),
        ]),
    );
    assert_eq!(
        unknown,
        vec!["NATS_URLS".to_owned(), "SVC_HTTP_PROT".to_owned()]
    );
}

#[test]
fn a_service_address_is_host_port_or_a_uri() {
    for ok in [
        "127.0.0.1:50061",
        "runner:50061",
        "http://runner:50061",
        " [::1]:1 ",
    ] {
        assert!(super::grpc_endpoint(ok).is_ok(), "{ok}");
    }
    for bad in [
        "runner 50061",
        "http://",
        "127.0.0.1:port",
        "a:1,b:2",
        "[::1]:99999",
    ] {
        assert!(super::grpc_endpoint(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_named_variable_is_the_one_that_sets_the_field() {
    assert_eq!(env_var("GATEWAY", "shard_count"), "GATEWAY_SHARD_COUNT");
    let keys = env_keys::<Sample>("GATEWAY");
    for field in ["shard_count", "default_tenant", "http_port"] {
        assert!(
            keys.contains(&env_var("GATEWAY", field)),
            "{field}: {keys:?}"
        );
    }
}
