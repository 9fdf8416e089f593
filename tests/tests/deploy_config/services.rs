//! The four Rust services and their configuration: which service a container runs, and its
//! config loaded from an environment exactly as its binary loads it, after checking that every
//! variable means something to it.

use shared::config::ServiceConfig as _;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::nats::NatsResourceSettings;

use crate::common::{entries, env, port_of, read, root};

/// Variables a service reads outside its `Config` (telemetry, the config file), plus the
/// helpers Kubernetes manifests use to build values (`$(POD_IP)`).
const PLAIN_VARS: &[&str] = &[
    "RUST_LOG",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    shared::config::CONFIG_FILE_ENV,
    "POD_NAME",
    "POD_IP",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Aggregate,
    Gateway,
    Projection,
    Runner,
}

impl Service {
    pub const ALL: [Self; 4] = [
        Self::Aggregate,
        Self::Gateway,
        Self::Projection,
        Self::Runner,
    ];

    /// The service a container runs, from its command (`["aggregate", "serve"]`).
    pub fn from_command(command: &[String]) -> Option<Self> {
        let bin = command.first()?.rsplit('/').next()?;
        Self::ALL.into_iter().find(|s| s.name() == bin)
    }

    /// Its binary, and the name of its certificate.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aggregate => "aggregate",
            Self::Gateway => "gateway",
            Self::Projection => "projection",
            Self::Runner => "runner",
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Self::Aggregate => "AGGREGATE",
            Self::Gateway => "GATEWAY",
            Self::Projection => "PROJECTION",
            Self::Runner => "RUNNER",
        }
    }

    /// Loads the service's config from `env` exactly as its binary does, after checking that
    /// every variable means something to it; panics naming `what` otherwise.
    pub fn load(self, env: &[(String, String)], what: &str) -> Loaded {
        check_plain_vars(env, what);
        let p = self.prefix();
        match self {
            Self::Aggregate => {
                Loaded::Aggregate(load_config(p, env, what, aggregate::Config::check))
            }
            Self::Gateway => Loaded::Gateway(load_config(p, env, what, gateway::Config::check)),
            Self::Projection => {
                Loaded::Projection(load_config(p, env, what, projection::Config::check))
            }
            Self::Runner => Loaded::Runner(load_config(p, env, what, runner::Config::check)),
        }
    }
}

/// The NATS user a container logs in as, and the certificate (service name) it presents: its
/// service's, except the catalog seed (`aggregate seed-catalog`), which has a user of its own and
/// runs the aggregate binary with the aggregate's certificate.
pub fn identity(command: &[String]) -> Option<(&'static str, &'static str)> {
    let cert = Service::from_command(command)?.name();
    let user = if command.iter().any(|a| a == "seed-catalog") {
        "seed"
    } else {
        cert
    };
    Some((user, cert))
}

/// The config of the service with `prefix` from `env`, after checking that every variable is one
/// of its settings, and then with the service's own `check`.
fn load_config<T, E>(
    prefix: &str,
    env: &[(String, String)],
    what: &str,
    check: fn(&T) -> Result<(), E>,
) -> T
where
    T: Serialize + DeserializeOwned + Default,
    E: std::fmt::Display,
{
    let unknown = shared::config::unknown_env_keys::<T>(prefix, env.iter().cloned());
    assert!(
        unknown.is_empty(),
        "{what}: {unknown:?} name no setting of the {prefix} config (typo, or a setting that \
         does not exist in the code)"
    );
    // Names outside the prefix and the config's sections are silently ignored by the loader,
    // so they must be one of the few variables read elsewhere.
    let defaults = serde_json::to_value(T::default()).unwrap();
    let sections: Vec<String> = entries(&defaults)
        .filter(|(_, v)| v.is_object())
        .map(|(k, _)| format!("{}_", k.to_ascii_uppercase()))
        .collect();
    let own = format!("{prefix}_");
    let stray: Vec<&String> = env
        .iter()
        .map(|(k, _)| k)
        .filter(|k| {
            !k.starts_with(&own)
                && !sections.iter().any(|s| k.starts_with(s.as_str()))
                && !PLAIN_VARS.contains(&k.as_str())
        })
        .collect();
    assert!(
        stray.is_empty(),
        "{what}: {stray:?} are read by nothing in the {prefix} service (its settings are \
         {own}*, {sections:?}, or {PLAIN_VARS:?})"
    );
    let config = shared::config::load_service_from(prefix, None, env.iter().cloned())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    check(&config).unwrap_or_else(|e| panic!("{what}: {e}"));
    config
}

/// The variables read by `shared::telemetry`, with values it accepts.
fn check_plain_vars(env: &[(String, String)], what: &str) {
    for (k, v) in env {
        match k.as_str() {
            "LOG_FORMAT" => assert!(
                ["json", "pretty", ""].contains(&v.trim()),
                "{what}: LOG_FORMAT must be json or pretty, got {v:?}"
            ),
            "RUST_LOG" => {
                shared::telemetry::env_filter(Some(v)).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
pub enum Loaded {
    Aggregate(aggregate::Config),
    Gateway(gateway::Config),
    Projection(projection::Config),
    Runner(runner::Config),
}

impl Loaded {
    pub fn service(&self) -> Service {
        match self {
            Self::Aggregate(_) => Service::Aggregate,
            Self::Gateway(_) => Service::Gateway,
            Self::Projection(_) => Service::Projection,
            Self::Runner(_) => Service::Runner,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Aggregate(c) => serde_json::to_value(c),
            Self::Gateway(c) => serde_json::to_value(c),
            Self::Projection(c) => serde_json::to_value(c),
            Self::Runner(c) => serde_json::to_value(c),
        }
        .expect("configs serialize")
    }

    /// Fails on addresses left on the loopback interface (usually a default nobody
    /// overrode): a container listening there is unreachable, one dialling there reaches
    /// nothing. Except the embedded mock provider (in-process) and the pages the shopper's
    /// browser opens (the merchant pages, and the checkout page a refused purchase returns to).
    pub fn assert_no_loopback(&self, what: &str) {
        const ALLOWED: &[&str] = &[
            "mock_provider_addr",
            "merchant.terms",
            "merchant.checkout",
            "merchant.confirmation",
            "checkout_page_url",
        ];
        fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    for (k, child) in map {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        walk(child, &p, found);
                    }
                }
                Value::Array(list) => list.iter().for_each(|c| walk(c, path, found)),
                Value::String(text)
                    if ["127.0.0.1", "localhost", "[::1]"]
                        .iter()
                        .any(|l| text.contains(l))
                        && !ALLOWED.contains(&path) =>
                {
                    found.push(format!("{path} = {text}"));
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        walk(&self.to_json(), "", &mut found);
        assert!(
            found.is_empty(),
            "{what}: loopback addresses (listen on 0.0.0.0, dial other containers by name): \
             {found:?}"
        );
    }

    /// The pages the provider sends the shopper's browser to (after paying, back to the
    /// checkout, after a refused purchase) are the storefront's pages, not the gateway's JSON
    /// routes under `/cart/` (the shopper would see raw JSON, and a redirect to
    /// `/cart/checkout` would start a checkout attempt).
    pub fn assert_shopper_pages(&self, what: &str) {
        let pages: Vec<(&str, &str)> = match self {
            Self::Runner(c) => vec![
                ("MERCHANT_CHECKOUT", &c.merchant.checkout),
                ("MERCHANT_CONFIRMATION", &c.merchant.confirmation),
            ],
            Self::Gateway(c) => vec![("GATEWAY_CHECKOUT_PAGE_URL", &c.checkout_page_url)],
            _ => vec![],
        };
        for (setting, url) in pages {
            let path = reqwest::Url::parse(url)
                .unwrap_or_else(|e| panic!("{what}: {setting} {url:?}: {e}"))
                .path()
                .to_owned();
            assert!(
                !path.starts_with("/cart/"),
                "{what}: {setting} {url:?} is a gateway API route, not a storefront page"
            );
        }
    }

    /// Port of `/health`, `/ready`, `/metrics`.
    pub fn ops_port(&self) -> u16 {
        port_of(match self {
            Self::Aggregate(c) => &c.http_addr,
            Self::Gateway(c) => &c.http_addr,
            Self::Projection(c) => &c.http_addr,
            Self::Runner(c) => &c.http_addr,
        })
    }

    pub fn shard_count(&self) -> Option<u32> {
        match self {
            Self::Aggregate(c) => Some(c.shard_count),
            Self::Gateway(c) => Some(c.shard_count),
            Self::Projection(_) => None,
            Self::Runner(c) => Some(c.shard_count),
        }
    }

    pub fn streams(&self) -> &NatsResourceSettings {
        match self {
            Self::Aggregate(c) => &c.streams,
            Self::Gateway(c) => &c.streams,
            Self::Projection(c) => &c.streams,
            Self::Runner(c) => &c.streams,
        }
    }

    /// The least time between SIGTERM and SIGKILL that lets the service drain as configured.
    pub fn drain_time(&self) -> Duration {
        let margin = Duration::from_secs(5);
        margin
            + match self {
                Self::Aggregate(c) => {
                    Duration::from_secs(c.drain_handoff_secs + c.drain_in_flight_secs)
                }
                Self::Gateway(c) => c.upstream_deadline(),
                Self::Projection(c) => c.fetch_wait(),
                Self::Runner(c) => c.consumer.ack_wait(),
            }
    }

    /// A long-running service's container: reachable (no loopback address), and given the time
    /// to drain between SIGTERM and SIGKILL (`grace`, set by `setting`).
    pub fn assert_serves(&self, grace: Duration, setting: &str, what: &str) {
        self.assert_no_loopback(what);
        assert!(
            grace >= self.drain_time(),
            "{what}: {setting} {grace:?} is shorter than its drain ({:?})",
            self.drain_time()
        );
    }
}

// The checks fail on a broken environment.

#[test]
#[should_panic(expected = "name no setting of the AGGREGATE config")]
fn a_misspelled_setting_is_rejected() {
    Service::Aggregate.load(&env(&[("AGGREGATE_SHARDS", "8")]), "typo");
}

#[test]
#[should_panic(expected = "are read by nothing in the RUNNER service")]
fn a_variable_no_service_reads_is_rejected() {
    Service::Runner.load(&env(&[("NAT_URL", "nats://x:4222")]), "stray");
}

#[test]
#[should_panic(expected = "shard_count must be at least 1")]
fn a_value_the_service_refuses_is_rejected() {
    Service::Gateway.load(&env(&[("GATEWAY_SHARD_COUNT", "0")]), "bad value");
}

#[test]
#[should_panic(expected = "projection_addr = 127.0.0.1:50062")]
fn a_default_loopback_address_is_rejected() {
    Service::Gateway
        .load(&env(&[("GATEWAY_HTTP_ADDR", "0.0.0.0:8080")]), "defaults")
        .assert_no_loopback("defaults");
}

#[test]
fn the_docs_document_every_environment_variable() {
    // The configuration reference the README points to (with the checkout's provider
    // settings), and the projection's README for `PROJECTION_*`.
    let readme = [
        "docs/configuration.md",
        "docs/checkout.md",
        "projection/README.md",
    ]
    .iter()
    .map(|p| read(&root().join(p)))
    .collect::<String>();
    let mut missing = Vec::new();
    let services = [
        (
            aggregate::Config::ENV_PREFIX,
            shared::config::env_keys::<aggregate::Config>(aggregate::Config::ENV_PREFIX),
        ),
        (
            gateway::Config::ENV_PREFIX,
            shared::config::env_keys::<gateway::Config>(gateway::Config::ENV_PREFIX),
        ),
        (
            projection::Config::ENV_PREFIX,
            shared::config::env_keys::<projection::Config>(projection::Config::ENV_PREFIX),
        ),
        (
            runner::Config::ENV_PREFIX,
            shared::config::env_keys::<runner::Config>(runner::Config::ENV_PREFIX),
        ),
    ];
    for (service, keys) in services {
        assert!(!keys.is_empty(), "{service} has settings");
        for key in keys {
            if !readme.contains(&format!("`{key}`")) {
                missing.push(format!("{service}: {key}"));
            }
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document:\n{}",
        missing.join("\n")
    );
}
