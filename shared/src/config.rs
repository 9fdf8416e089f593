//! Configuration loading, the same for every service: `T::default()` ← optional TOML file
//! named by `CART_CONFIG_FILE` ← environment variables.
//!
//! Environment variables are flat and upper-case: field `nats_url` is `NATS_URL`, and a field
//! of a nested struct is reached through its parent's name, so `nats.url` (a `NatsConfig`
//! embedded as `nats`) is also `NATS_URL` and `nats.connect_timeout_ms` is
//! `NATS_CONNECT_TIMEOUT_MS`. The mapping is computed from the shape of `T::default()`, so only
//! variables that name a real key are read, and a variable for a string field is always taken
//! as a string (`TENANT=123` stays `"123"`). Other values are parsed like TOML values
//! (`true`, `42`, `[a, b]`). Every error names the key and where the bad value came from.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Names the optional TOML file applied over the defaults.
pub const CONFIG_FILE_ENV: &str = "CART_CONFIG_FILE";

/// Configuration could not be loaded. `key` is the dotted path of the offending key (empty
/// when the problem is the file itself); the message says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Loads `T` from its defaults, the file named by `CART_CONFIG_FILE` (if set) and the process
/// environment.
pub fn load<T>() -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_from(config_file().as_deref(), std::env::vars())
}

/// The aggregates' prefix: their `AGGREGATE_SHARD_COUNT` is named by the services that must agree
/// with it (gateway, runner, the routing client).
pub const AGGREGATE_ENV_PREFIX: &str = "AGGREGATE";

/// A service's settings: `<ENV_PREFIX>_<FIELD>` variables over an optional file over the
/// defaults ([`load_service`]).
pub trait ServiceConfig: DeserializeOwned + Serialize + Default {
    /// The prefix of the service's own variables (`AGGREGATE` for `AGGREGATE_GRPC_ADDR`).
    const ENV_PREFIX: &'static str;
    /// The service's name in logs, traces and metrics.
    const SERVICE: &'static str;

    fn load() -> Result<Self, ConfigError> {
        load_service(Self::ENV_PREFIX)
    }

    /// What a start refuses these settings with when the service's own check found `problem`
    /// (a message naming the field): `invalid <service> config`, caused by the problem.
    fn invalid(problem: String) -> InvalidConfig {
        InvalidConfig {
            service: Self::SERVICE,
            problem: Problem(problem),
        }
    }
}

/// Settings a service cannot run with ([`ServiceConfig::invalid`]).
#[derive(Debug, thiserror::Error)]
#[error("invalid {service} config")]
pub struct InvalidConfig {
    pub service: &'static str,
    #[source]
    problem: Problem,
}

/// What the service's check found, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Problem(String);

/// Like [`load`], for a service whose own (top-level, non-section) fields are named with a
/// prefix: with prefix `AGGREGATE`, field `grpc_addr` is `AGGREGATE_GRPC_ADDR`, while nested
/// sections shared by every service keep their plain names (`NATS_URL`, `STREAMS_REPLICAS`),
/// and `AGGREGATE_NATS_URL` overrides `NATS_URL` for this service only. Several services can
/// then share one environment (scripts/dev) without their ports colliding.
pub fn load_service<T>(prefix: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_service_from(prefix, config_file().as_deref(), std::env::vars())
}

/// Logs a warning for each environment variable that looks like a setting of `T` (under
/// `prefix` or a shared section such as `NATS_`) but names none: usually a typo that would
/// otherwise be ignored without a word. Call once at start-up, after telemetry is set up.
pub fn warn_unknown_env<T>(prefix: &str)
where
    T: Serialize + Default,
{
    for key in unknown_env_keys::<T>(prefix, std::env::vars()) {
        tracing::warn!(
            key,
            prefix,
            "environment variable names no setting of this service (typo?); ignored"
        );
    }
}

/// Environment variables that look like configuration of this service (`<PREFIX>_*`) or of
/// a section it has (`NATS_*`, ...) but name no field: almost always a typo. Services log them
/// at start-up; deployment tests use this to check manifests against the code.
pub fn unknown_env_keys<T>(
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<String>
where
    T: Serialize + Default,
{
    let Ok(defaults) = serde_json::to_value(T::default()) else {
        return Vec::new();
    };
    let own = format!("{}_", prefix.to_ascii_uppercase());
    let sections = section_prefixes(&defaults);
    let mut unknown = Vec::new();
    for (name, _) in env {
        let key = if let Some(rest) = name.strip_prefix(&own) {
            rest.to_ascii_lowercase()
        } else if sections.iter().any(|s| name.starts_with(s.as_str())) {
            name.to_ascii_lowercase()
        } else {
            continue;
        };
        if resolve(&defaults, &key).is_none() {
            unknown.push(name);
        }
    }
    unknown.sort();
    unknown
}

/// The environment variable that sets a service's own `field`: `<PREFIX>_<FIELD>` (the rule
/// [`env_keys`] and [`load_service`] follow), for error messages that name it.
pub fn env_var(prefix: &str, field: &str) -> String {
    format!("{prefix}_{}", field.to_ascii_uppercase())
}

/// The items of a comma-separated setting (`NATS_URL`, `*_AGGREGATE_ADDRS`, ...), trimmed,
/// empty ones skipped.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// Every environment variable that sets a field of `T`: `<PREFIX>_<FIELD>` for its own
/// fields, `<SECTION>_<FIELD>` for a section's (`NATS_URL`, `STREAMS_...`). Sorted; the
/// docs/configuration.md is checked against it.
pub fn env_keys<T>(prefix: &str) -> Vec<String>
where
    T: Serialize + Default,
{
    fn walk(value: &serde_json::Value, name: String, out: &mut Vec<String>) {
        match value.as_object() {
            Some(fields) => {
                for (k, v) in fields {
                    walk(v, format!("{name}_{}", k.to_ascii_uppercase()), out);
                }
            }
            None => out.push(name),
        }
    }
    let mut keys = Vec::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(T::default()) {
        for (k, v) in &fields {
            let upper = k.to_ascii_uppercase();
            if v.is_object() {
                walk(v, upper, &mut keys);
            } else {
                keys.push(env_var(&prefix.to_ascii_uppercase(), k));
            }
        }
    }
    keys.sort();
    keys
}

/// The gRPC endpoint of a service address setting: `host:port`, or a URI with its scheme.
/// Every service reads addresses of others by this one rule, so a malformed one is a start-up
/// error naming the setting rather than a failure on every call.
pub fn grpc_endpoint(addr: &str) -> Result<tonic::transport::Endpoint, String> {
    let addr = addr.trim();
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| format!("{addr:?} is neither host:port nor a URI ({e})"))?;
    let uri = endpoint.uri();
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{addr:?} names no host"));
    }
    // `Uri` accepts any port text; the connection would fail on every call.
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let after_host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .strip_prefix(host)
        .unwrap_or_default();
    if !after_host.is_empty()
        && after_host
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(format!("the port of {addr:?} is not a number in 0..=65535"));
    }
    Ok(endpoint)
}

/// [`load_service`] with an explicit file and environment (for tests).
pub fn load_service_from<T>(
    prefix: &str,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let defaults = defaults_of::<T>()?;
    let sections = section_prefixes(&defaults);
    let own = format!("{}_", prefix.to_ascii_uppercase());
    let mut plain = Vec::new();
    let mut prefixed = Vec::new();
    for (name, value) in env {
        if let Some(rest) = name.strip_prefix(&own) {
            prefixed.push((rest.to_owned(), value));
        } else if sections.iter().any(|s| name.starts_with(s.as_str())) {
            plain.push((name, value));
        }
    }
    // Prefixed names come last so they win over the shared section names.
    plain.extend(prefixed);
    load_with(&defaults, file, plain)
}

/// [`load`] with explicit inputs (tests, tools).
pub fn load_from<T>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_with(&defaults_of::<T>()?, file, env)
}

/// `T` from `defaults` (`T::default()` as JSON, from [`defaults_of`]), the file and `env`.
fn load_with<T>(
    defaults: &serde_json::Value,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError {
                key: String::new(),
                message: format!(
                    "{CONFIG_FILE_ENV} names {}, which is not a readable file",
                    path.display()
                ),
            });
        }
        let toml = Toml::file_exact(path);
        let data = toml.data().map_err(|e| to_config_error(&e))?;
        if let Some(dict) = data.get(&Profile::Default) {
            reject_unknown_keys(dict, defaults, "", path)?;
        }
        figment = figment.merge(toml);
    }
    figment = figment.merge(EnvOverrides::new(defaults, env));
    figment.extract().map_err(|e| to_config_error(&e))
}

/// The file named by `CART_CONFIG_FILE`, if set and not empty.
fn config_file() -> Option<PathBuf> {
    std::env::var_os(CONFIG_FILE_ENV)
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
}

/// `T::default()` as JSON: the shape the environment variables are mapped onto.
fn defaults_of<T: Serialize + Default>() -> Result<serde_json::Value, ConfigError> {
    serde_json::to_value(T::default()).map_err(|e| ConfigError {
        key: String::new(),
        message: format!("defaults cannot be serialized: {e}"),
    })
}

/// `NATS_`, `STREAMS_`, ...: the env prefixes of the nested sections of a config.
fn section_prefixes(defaults: &serde_json::Value) -> Vec<String> {
    defaults
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, _)| format!("{}_", k.to_ascii_uppercase()))
                .collect()
        })
        .unwrap_or_default()
}

fn to_config_error(e: &figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let mut message = String::new();
    if !key.is_empty() {
        message.push_str(&format!("key `{key}`: "));
    }
    message.push_str(&e.to_string());
    ConfigError { key, message }
}

fn reject_unknown_keys(
    dict: &Dict,
    defaults: &serde_json::Value,
    prefix: &str,
    path: &Path,
) -> Result<(), ConfigError> {
    let Some(known) = defaults.as_object() else {
        return Ok(()); // a map-typed field: any key is fine
    };
    for (k, v) in dict {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match known.get(k) {
            None => {
                return Err(ConfigError {
                    message: format!("unknown key `{key}` in {}", path.display()),
                    key,
                });
            }
            Some(sub) if sub.is_object() => {
                if let Value::Dict(_, d) = v {
                    reject_unknown_keys(d, sub, &key, path)?;
                }
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Environment variables that name a key of `T`, as a figment provider.
struct EnvOverrides {
    dict: Dict,
}

impl EnvOverrides {
    fn new(defaults: &serde_json::Value, env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut dict = Dict::new();
        for (name, raw) in env {
            let lower = name.to_ascii_lowercase();
            if name != name.to_ascii_uppercase() {
                continue; // only upper-case names are configuration
            }
            let Some((path, leaf)) = resolve(defaults, &lower) else {
                continue;
            };
            let value = if leaf.is_string() {
                Value::from(raw)
            } else {
                raw.parse::<Value>().unwrap_or_else(|never| match never {})
            };
            insert(&mut dict, &path, value);
        }
        Self { dict }
    }
}

/// Finds the key path that env var name `lower` (lower-cased) denotes in `defaults`: an exact
/// field name wins, else `<parent>_<rest>` where `parent` is a nested struct.
fn resolve<'a>(
    defaults: &'a serde_json::Value,
    lower: &str,
) -> Option<(Vec<String>, &'a serde_json::Value)> {
    let obj = defaults.as_object()?;
    if let Some(v) = obj.get(lower) {
        return Some((vec![lower.to_owned()], v));
    }
    obj.iter().find_map(|(k, v)| {
        let rest = lower.strip_prefix(k.as_str())?.strip_prefix('_')?;
        let (mut path, leaf) = resolve(v, rest)?;
        path.insert(0, k.clone());
        Some((path, leaf))
    })
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_, keys: &[&str]| keys.join("_").to_ascii_uppercase())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.dict.clone())]))
    }
}

#[cfg(test)]
mod tests;
