//! The deployment files checked against the code, since no container engine runs them in CI:
//! docker-compose.yml, deploy/k8s (kustomize), deploy/prometheus, deploy/grafana, deploy/nats.
//!
//! - Every environment variable a service gets names a real setting of its `Config`
//!   (`shared::config::unknown_env_keys`), the whole environment loads the way the binary loads
//!   it, and the loaded config passes the service's own `check()`.
//! - Settings that must agree across services do (shard count, stream settings, replicas 3 in
//!   Kubernetes); drain grace periods cover the drain timeouts in the configs.
//! - Probes, ports, selectors and references point at things that exist.
//! - Every metric name in the alerts and dashboards is a constant in some `*/src/metrics.rs`,
//!   used in the shape the exporter really renders (summaries with `quantile`, or buckets).
//! - NATS keeps `sync_interval: always` everywhere; the cluster config has one source,
//!   deploy/nats/cluster.conf, which the Kubernetes ConfigMap and `scripts/dev --cluster` use
//!   as it is, each setting the per-member variables it reads.
//! - Every service logs in to NATS as its own user of deploy/nats/accounts.conf with a password
//!   file only it gets, the NATS server gets every password accounts.conf reads, NATS and gRPC
//!   run with mutual TLS (the server verifies clients), and every secret and certificate is
//!   mounted read-only where the settings say.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::nats::NatsResourceSettings;

// ---------------------------------------------------------------------------------------------
// Files

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file (empty ones dropped), merge keys (`<<: *anchor`) applied, as
/// JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = read(path);
    yaml_serde::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = yaml_serde::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v.apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(&root().join(rel));
    assert_eq!(docs.len(), 1, "{rel} holds exactly one YAML document");
    docs.remove(0)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strs(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(s).collect(),
        Value::Null => Vec::new(),
        other => vec![s(other)],
    }
}

fn entries(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object().into_iter().flatten()
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A NATS config without its comments.
fn active_lines(conf: &str) -> String {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `key: value` in a NATS config (quotes removed).
fn conf_value(conf: &str, key: &str) -> Option<String> {
    active_lines(conf).lines().find_map(|l| {
        let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix(':')?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

fn assert_durable_nats_conf(conf: &str, what: &str) {
    let active = active_lines(conf);
    assert!(active.contains("jetstream"), "{what} enables JetStream");
    assert!(
        active.contains("sync_interval: always"),
        "{what} must fsync every write before acknowledging it (sync_interval: always)"
    );
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// `30s`, `1m30s`, `500ms` (docker compose durations).
fn compose_duration(text: &str) -> Duration {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            "ms"
        } else {
            match c {
                'h' => "h",
                'm' => "m",
                's' => "s",
                _ => panic!("bad duration {text:?}"),
            }
        };
        let n: f64 = num
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text:?}"));
        num.clear();
        total += Duration::from_secs_f64(match unit {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            _ => n / 1000.0,
        });
    }
    assert!(num.is_empty(), "duration {text:?} needs a unit");
    total
}

// ---------------------------------------------------------------------------------------------
// The services and their configuration

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
enum Service {
    Aggregate,
    Gateway,
    Projection,
    Runner,
}

impl Service {
    /// The service a container runs, from its command (`["aggregate", "serve"]`).
    fn from_command(command: &[String]) -> Option<Self> {
        let bin = command.first()?.rsplit('/').next()?;
        Some(match bin {
            "aggregate" => Self::Aggregate,
            "gateway" => Self::Gateway,
            "projection" => Self::Projection,
            "runner" => Self::Runner,
            _ => return None,
        })
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Aggregate => "AGGREGATE",
            Self::Gateway => "GATEWAY",
            Self::Projection => "PROJECTION",
            Self::Runner => "RUNNER",
        }
    }

    /// Loads the service's config from `env` exactly as its binary does, after checking that
    /// every variable means something to it; panics naming `what` otherwise.
    fn load(self, env: &[(String, String)], what: &str) -> Loaded {
        check_plain_vars(env, what);
        let p = self.prefix();
        match self {
            Self::Aggregate => {
                let c: aggregate::Config = load_config(p, env, what);
                c.check().unwrap_or_else(|e| panic!("{what}: {e}"));
                Loaded::Aggregate(c)
            }
            Self::Gateway => {
                let c: gateway::Config = load_config(p, env, what);
                c.check().unwrap_or_else(|e| panic!("{what}: {e}"));
                Loaded::Gateway(c)
            }
            Self::Projection => {
                let c: projection::Config = load_config(p, env, what);
                c.check().unwrap_or_else(|e| panic!("{what}: {e}"));
                Loaded::Projection(c)
            }
            Self::Runner => {
                let c: runner::Config = load_config(p, env, what);
                c.check().unwrap_or_else(|e| panic!("{what}: {e}"));
                Loaded::Runner(c)
            }
        }
    }
}

fn load_config<T>(prefix: &str, env: &[(String, String)], what: &str) -> T
where
    T: Serialize + DeserializeOwned + Default,
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
    shared::config::load_service_from(prefix, None, env.iter().cloned())
        .unwrap_or_else(|e| panic!("{what}: {e}"))
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
enum Loaded {
    Aggregate(aggregate::Config),
    Gateway(gateway::Config),
    Projection(projection::Config),
    Runner(runner::Config),
}

impl Loaded {
    fn service(&self) -> Service {
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
    fn assert_no_loopback(&self, what: &str) {
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

    /// Port of `/health`, `/ready`, `/metrics`.
    fn ops_port(&self) -> u16 {
        port_of(match self {
            Self::Aggregate(c) => &c.http_addr,
            Self::Gateway(c) => &c.http_addr,
            Self::Projection(c) => &c.http_addr,
            Self::Runner(c) => &c.http_addr,
        })
    }

    fn shard_count(&self) -> Option<u32> {
        match self {
            Self::Aggregate(c) => Some(c.shard_count),
            Self::Gateway(c) => Some(c.shard_count),
            Self::Projection(_) => None,
            Self::Runner(c) => Some(c.shard_count),
        }
    }

    fn streams(&self) -> &NatsResourceSettings {
        match self {
            Self::Aggregate(c) => &c.streams,
            Self::Gateway(c) => &c.streams,
            Self::Projection(c) => &c.streams,
            Self::Runner(c) => &c.streams,
        }
    }

    /// The least time between SIGTERM and SIGKILL that lets the service drain as configured.
    fn drain_time(&self) -> Duration {
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
}

/// Settings that must be equal in every service of one deployment.
fn assert_consistent(loaded: &[(String, Loaded)], what: &str) {
    let shards: BTreeSet<u32> = loaded.iter().filter_map(|(_, l)| l.shard_count()).collect();
    assert_eq!(
        shards.len(),
        1,
        "{what}: the shard count must be equal in every aggregate node, the gateway and the \
         runner: {:?}",
        loaded
            .iter()
            .map(|(n, l)| (n, l.shard_count()))
            .collect::<Vec<_>>()
    );
    let (first_name, first) = &loaded[0];
    for (name, l) in loaded {
        assert_eq!(
            l.streams(),
            first.streams(),
            "{what}: {name} and {first_name} disagree on the STREAMS_* settings (each service \
             validates the streams against its own)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every file parses; NATS configs

#[test]
fn every_yaml_and_json_file_parses() {
    let mut files = files_under(&root().join("deploy"));
    files.push(root().join("docker-compose.yml"));
    let mut parsed = 0;
    for path in &files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                assert!(!yaml_docs(path).is_empty(), "{} is empty", path.display());
                parsed += 1;
            }
            Some("json") => {
                serde_json::from_str::<Value>(&read(path))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                parsed += 1;
            }
            _ => {}
        }
    }
    assert!(
        parsed >= 15,
        "only {parsed} YAML/JSON files found under deploy/"
    );
}

/// The configs of deploy/nats a server runs: the single server and the cluster member in
/// plaintext (scripts/dev, the chaos suite), and each with mutual TLS for clients (compose,
/// Kubernetes).
const NATS_SERVER_CONFS: &[&str] = &[
    "nats.conf",
    "cluster.conf",
    "nats-tls.conf",
    "cluster-tls.conf",
];

/// Parts the server configs include: the accounts and users, and the client TLS block.
const NATS_FRAGMENTS: &[&str] = &["accounts.conf", "tls.conf"];

const NATS_DIR: &str = "deploy/nats";
const ACCOUNTS_CONF: &str = "deploy/nats/accounts.conf";

/// The files a NATS config includes (`include "file"`, relative to its directory).
fn conf_includes(conf: &str) -> Vec<String> {
    active_lines(conf)
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("include")?;
            rest.starts_with([' ', '\t'])
                .then(|| rest.trim().trim_matches(['"', '\'']).to_owned())
        })
        .collect()
}

/// `conf` with each `include "file"` replaced by that file's text (`lookup`), recursively: what
/// the server reads.
fn expand_includes(conf: &str, lookup: &dyn Fn(&str) -> String) -> String {
    let included = conf_includes(conf);
    conf.lines()
        .map(|line| {
            let active = line.split('#').next().unwrap_or("").trim();
            match included
                .iter()
                .find(|f| active.starts_with("include") && active.contains(f.as_str()))
            {
                Some(file) => expand_includes(&lookup(file), lookup),
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file of deploy/nats that `name` includes, directly or through another.
fn nats_includes_transitive(name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in conf_includes(&read(&root().join(NATS_DIR).join(name))) {
        out.extend(nats_includes_transitive(&f));
        out.insert(f);
    }
    out
}

/// A config of deploy/nats with its includes (from deploy/nats) expanded.
fn nats_conf_expanded(name: &str) -> String {
    let dir = root().join(NATS_DIR);
    expand_includes(&read(&dir.join(name)), &|f| read(&dir.join(f)))
}

#[test]
fn nats_configs_fsync_every_write() {
    let confs: Vec<PathBuf> = files_under(&root().join(NATS_DIR))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    let names: BTreeSet<String> = confs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let known: BTreeSet<String> = NATS_SERVER_CONFS
        .iter()
        .chain(NATS_FRAGMENTS)
        .map(|n| (*n).to_owned())
        .collect();
    assert_eq!(
        names, known,
        "deploy/nats has the single-server config and one config for every cluster member \
         (per-member values come from the environment, never from a second file), each also \
         with client TLS, and the fragments they include (accounts, TLS)"
    );
    let mut included = BTreeSet::new();
    for name in NATS_SERVER_CONFS {
        let conf = nats_conf_expanded(name);
        assert_durable_nats_conf(&conf, name);
        let mine = nats_includes_transitive(name);
        assert!(
            mine.contains("accounts.conf"),
            "{name} must include accounts.conf: without it every client is anonymous"
        );
        if name.ends_with("-tls.conf") {
            check_nats_tls_block(&conf, name);
        } else {
            assert!(
                tls_block(&conf).is_none(),
                "{name} stays plaintext (scripts/dev and the chaos suite run it); TLS belongs in \
                 its -tls.conf variant"
            );
        }
        included.extend(mine);
    }
    for fragment in NATS_FRAGMENTS {
        assert!(
            included.contains(*fragment),
            "{fragment} is included by no server config"
        );
    }
}

/// The cluster config every member runs (Kubernetes, `scripts/dev --cluster`).
const NATS_CLUSTER_CONF: &str = "deploy/nats/cluster.conf";

/// The `$NAME` references of a NATS config (comments and quoted strings such as
/// `"$JS.API.>"` ignored): nats-server resolves each from the environment when the config does
/// not define it.
fn conf_vars(conf: &str) -> BTreeSet<String> {
    let active = active_lines(conf);
    let mut vars = BTreeSet::new();
    let mut quoted = false;
    for (i, c) in active.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            continue;
        }
        let name: String = active[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!name.is_empty(), "a lone $ in a NATS config");
        vars.insert(name);
    }
    vars
}

/// `conf` with its `$NAME` references replaced by their values in `env`; panics naming `what`
/// when one is not set (the server would refuse to start).
fn resolve_conf(conf: &str, env: &BTreeMap<String, String>, what: &str) -> String {
    let vars = conf_vars(conf);
    let mut out = active_lines(conf);
    // Longest names first, so $NATS_ROUTE_1 is not cut at a shorter $NATS_ROUTE.
    let mut ordered: Vec<&String> = vars.iter().collect();
    ordered.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for var in ordered {
        let value = env.get(var).unwrap_or_else(|| {
            panic!("{what} does not set ${var}, which {NATS_CLUSTER_CONF} reads")
        });
        out = out.replace(&format!("${var}"), value);
    }
    out
}

#[test]
fn the_cluster_config_takes_every_member_value_from_the_environment() {
    let conf = read(&root().join(NATS_CLUSTER_CONF));
    let vars = conf_vars(&conf);
    for key in ["server_name", "listen", "http", "store_dir", "pid_file"] {
        let value =
            conf_value(&conf, key).unwrap_or_else(|| panic!("{key} in {NATS_CLUSTER_CONF}"));
        assert!(
            value.starts_with('$'),
            "{NATS_CLUSTER_CONF}: {key} differs per member (or between Kubernetes and \
             scripts/dev --cluster), so it comes from the environment, got {value:?}"
        );
    }
    let active = active_lines(&conf);
    assert!(
        active.contains("lame_duck_duration") && active.contains("no_advertise: true"),
        "{NATS_CLUSTER_CONF} keeps lame duck mode and explicit routes"
    );

    // scripts/dev --cluster runs this very file and sets every variable it reads.
    let dev = read(&root().join("scripts/dev"));
    assert!(
        dev.contains(&format!("\"$ROOT/{NATS_CLUSTER_CONF}\"")),
        "scripts/dev --cluster runs {NATS_CLUSTER_CONF}"
    );
    for var in &vars {
        assert!(
            dev.contains(&format!("{var}=")),
            "scripts/dev --cluster does not set ${var}, which {NATS_CLUSTER_CONF} reads"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docker compose

const COMPOSE_SERVICES: &[&str] = &[
    "nats",
    "seed",
    "aggregate-1",
    "aggregate-2",
    "gateway",
    "projection",
    "runner",
    "prometheus",
    "grafana",
    "jaeger",
];

fn compose() -> Value {
    yaml("docker-compose.yml")
}

fn compose_services(c: &Value) -> Vec<(&String, &Value)> {
    entries(&c["services"]).collect()
}

/// `${VAR:-default}` / `${VAR-default}` → default, `${VAR}` → "" (as on a machine that sets
/// none of them), `$$` → `$`.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text:?}"));
            let expr = &inner[..end];
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = &inner[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    out
}

fn compose_env(svc: &Value) -> Vec<(String, String)> {
    match &svc["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), interpolate(&s(v))))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|kv| {
                let kv = s(kv);
                let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                (k.to_owned(), interpolate(v))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn depends_on(svc: &Value) -> Vec<(String, String)> {
    match &svc["depends_on"] {
        Value::Array(names) => names
            .iter()
            .map(|n| (s(n), "service_started".to_owned()))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let cond = v["condition"].as_str().unwrap_or("service_started");
                (k.clone(), cond.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// (source, target) of every volume of a service, short or long syntax.
fn compose_mounts(svc: &Value) -> Vec<(String, String)> {
    items(&svc["volumes"])
        .map(|v| match v {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next().unwrap_or_default().to_owned();
                let target = parts.next().unwrap_or_default().to_owned();
                (source, target)
            }
            long => (s(&long["source"]), s(&long["target"])),
        })
        .collect()
}

/// The Rust services of the compose file, loaded from their environment.
fn compose_loaded(c: &Value) -> Vec<(String, Loaded)> {
    compose_services(c)
        .into_iter()
        .filter_map(|(name, svc)| {
            let service = Service::from_command(&strs(&svc["command"]))?;
            let what = format!("docker-compose.yml service {name}");
            let files = compose_files(c, svc, &what);
            let env = with_stand_ins(compose_env(svc), &|p| mounted(&files, p).is_some(), &what);
            Some((name.clone(), service.load(&env, &what)))
        })
        .collect()
}

#[test]
fn compose_runs_the_whole_stack() {
    let c = compose();
    let services = compose_services(&c);
    let names: BTreeSet<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    for required in COMPOSE_SERVICES {
        assert!(
            names.contains(required),
            "docker-compose.yml has no {required} service"
        );
    }
    for (name, svc) in &services {
        for (dep, cond) in depends_on(svc) {
            assert!(
                names.contains(dep.as_str()),
                "{name} depends on unknown {dep}"
            );
            let target = &c["services"][&dep];
            match cond.as_str() {
                "service_healthy" => assert!(
                    target["healthcheck"].is_object(),
                    "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                "service_completed_successfully" => assert_eq!(
                    s(&target["restart"]),
                    "no",
                    "{name} waits for {dep} to complete: {dep} must be one-shot"
                ),
                "service_started" => {}
                other => panic!("{name}: unknown depends_on condition {other}"),
            }
        }
        for (source, _) in compose_mounts(svc) {
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    root().join(&source).exists(),
                    "{name} mounts {source}, which does not exist"
                );
            }
        }
    }
    // One image for the four services; the command picks the service.
    for (name, svc) in &services {
        if s(&svc["image"]).starts_with("cart-platform") {
            let command = strs(&svc["command"]);
            assert!(
                Service::from_command(&command).is_some(),
                "{name} runs the platform image with an unknown command {command:?}"
            );
        }
    }
}

#[test]
fn compose_gateway_publishes_8080() {
    let c = compose();
    let gw = &c["services"]["gateway"];
    let port = port_of(env_get(&compose_env(gw), "GATEWAY_HTTP_ADDR").expect("GATEWAY_HTTP_ADDR"));
    let published: Vec<String> = strs(&gw["ports"]);
    // `[ip:]host:container`
    let pairs: Vec<(String, String)> = published
        .iter()
        .filter_map(|p| {
            let mut parts = p.rsplit(':');
            let container = parts.next()?.to_owned();
            Some((parts.next()?.to_owned(), container))
        })
        .collect();
    assert!(
        pairs.contains(&("8080".to_owned(), port.to_string())),
        "the gateway publishes host port 8080 to its listen port {port}: {published:?}"
    );
}

#[test]
fn compose_runner_publishes_its_mock_provider() {
    let c = compose();
    let runner = &c["services"]["runner"];
    let env = compose_env(runner);
    let addr = env_get(&env, "RUNNER_MOCK_PROVIDER_ADDR").expect("RUNNER_MOCK_PROVIDER_ADDR");
    assert!(
        addr.starts_with("0.0.0.0:"),
        "the mock provider listens on every interface, or the published port reaches nothing: {addr}"
    );
    let port = port_of(addr).to_string();
    let published: Vec<String> = strs(&runner["ports"]);
    assert!(
        published.contains(&format!("127.0.0.1:{port}:{port}")),
        "the runner publishes the mock provider's port {port} on host loopback: {published:?}"
    );
    let dockerfile = read(&root().join("Dockerfile"));
    let exposed: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert!(
        exposed.contains(&port.as_str()),
        "the image exposes {port}: {exposed:?}"
    );
}

#[test]
fn compose_nats_has_durable_jetstream() {
    let c = compose();
    let nats = &c["services"]["nats"];
    let image = s(&nats["image"]);
    assert!(
        image.starts_with("nats:2.12"),
        "official nats 2.12 image, got {image}"
    );
    let command = strs(&nats["command"]);
    let at = command
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .expect("nats runs with --config");
    let conf_path = &command[at + 1];
    let mounts = compose_mounts(nats);
    let (source, _) = mounts
        .iter()
        .find(|(_, target)| target == conf_path)
        .unwrap_or_else(|| panic!("nats mounts no file at {conf_path}"));
    assert!(
        source.starts_with("./deploy/nats/"),
        "nats uses a config from deploy/nats, got {source}"
    );
    let conf = compose_nats_conf(&c);
    assert_durable_nats_conf(&conf, source);
    let store = conf_value(&conf, "store_dir").expect("store_dir in the NATS config");
    assert!(
        mounts
            .iter()
            .any(|(src, target)| *target == store && !src.starts_with('.')),
        "the JetStream store {store} is on a named volume: {mounts:?}"
    );
    let health = strs(&nats["healthcheck"]["test"]).join(" ");
    assert!(
        health.contains("/healthz"),
        "nats health check uses /healthz: {health}"
    );
}

#[test]
fn compose_env_is_known_to_the_code_and_consistent() {
    let c = compose();
    let loaded = compose_loaded(&c);
    let kinds: BTreeSet<&str> = loaded.iter().map(|(_, l)| l.service().prefix()).collect();
    assert_eq!(
        kinds.len(),
        4,
        "compose runs all four Rust services, found {kinds:?}"
    );
    assert_consistent(&loaded, "docker-compose.yml");

    let names: BTreeSet<&String> = entries(&c["services"]).map(|(n, _)| n).collect();
    let mut node_ids = BTreeSet::new();
    for (name, l) in &loaded {
        let svc = &c["services"][name];
        let env = compose_env(svc);

        // Traces go to a collector that is part of the stack, over OTLP/gRPC.
        let otlp = env_get(&env, "OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|| panic!("{name} sets no OTEL_EXPORTER_OTLP_ENDPOINT"));
        let host = otlp
            .strip_prefix("http://")
            .and_then(|r| r.split(':').next())
            .unwrap_or_else(|| panic!("{name}: OTLP endpoint {otlp:?} is not http://host:port"));
        assert!(
            names.contains(&host.to_owned()),
            "{name}: OTLP endpoint host {host} is not a compose service"
        );
        assert_eq!(
            port_of(otlp),
            4317,
            "{name}: the exporter speaks OTLP/gRPC (port 4317)"
        );

        let command = strs(&svc["command"]);
        let serves = !command.iter().any(|a| a == "seed-catalog");
        if !serves {
            continue;
        }
        // Long-running services: reachable, drained on stop, health-checked on their ops port.
        l.assert_no_loopback(&format!("docker-compose.yml service {name}"));
        let grace = compose_duration(&s(&svc["stop_grace_period"]));
        assert!(
            grace >= l.drain_time(),
            "{name}: stop_grace_period {grace:?} is shorter than its drain ({:?})",
            l.drain_time()
        );
        let health = strs(&svc["healthcheck"]["test"]).join(" ");
        let ready = format!(":{}/ready", l.ops_port());
        assert!(
            health.contains(&ready),
            "{name}: the health check probes {ready}: {health}"
        );
        match l {
            Loaded::Aggregate(a) => {
                assert!(
                    node_ids.insert(a.node_id.clone()),
                    "two aggregate nodes share the node id {}",
                    a.node_id
                );
                let advertise = a
                    .advertise_addr
                    .as_deref()
                    .unwrap_or_else(|| panic!("{name} sets no AGGREGATE_ADVERTISE_ADDR"));
                let host = advertise.rsplit_once(':').map(|(h, _)| h).unwrap_or("");
                assert_eq!(
                    host, name,
                    "{name} advertises {advertise}: other containers reach it by its service name"
                );
                assert_eq!(
                    port_of(advertise),
                    port_of(&a.grpc_addr),
                    "{name}: advertised port"
                );
            }
            Loaded::Projection(p) => {
                let db = p.db_path();
                let dir = db.parent().expect("db path has a directory");
                assert!(
                    compose_mounts(svc)
                        .iter()
                        .any(|(src, target)| !src.starts_with('.') && Path::new(target) == dir),
                    "{name}: the SQLite file {} is on a named volume",
                    db.display()
                );
            }
            Loaded::Gateway(_) | Loaded::Runner(_) => {}
        }
    }
    assert!(node_ids.len() >= 2, "compose runs two aggregate nodes");
}

#[test]
fn prometheus_scrapes_every_service_and_loads_the_alerts() {
    let c = compose();
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in items(&prom["scrape_configs"]) {
        assert!(
            job["metrics_path"].is_null() || s(&job["metrics_path"]) == "/metrics",
            "services serve /metrics"
        );
        for sc in items(&job["static_configs"]) {
            targets.extend(strs(&sc["targets"]));
        }
    }
    for t in &targets {
        let host = t.split(':').next().unwrap_or_default();
        assert!(
            host == "localhost" || c["services"][host].is_object(),
            "prometheus scrapes {t}, which is not a compose service"
        );
    }
    for (name, l) in compose_loaded(&c) {
        if strs(&c["services"][&name]["command"]).contains(&"seed-catalog".to_owned()) {
            continue;
        }
        let want = format!("{name}:{}", l.ops_port());
        assert!(targets.contains(&want), "prometheus does not scrape {want}");
    }

    let mounts = compose_mounts(&c["services"]["prometheus"]);
    for rule_file in strs(&prom["rule_files"]) {
        let (source, _) = mounts
            .iter()
            .find(|(_, target)| *target == rule_file)
            .unwrap_or_else(|| panic!("prometheus loads {rule_file}, which is not mounted"));
        assert_eq!(source, "./deploy/prometheus/alerts.yml");
    }
    assert!(
        strs(&prom["rule_files"]).len() == 1,
        "prometheus loads the alert rules"
    );
}

// ---------------------------------------------------------------------------------------------
// The image

#[test]
fn the_image_ships_what_the_deployments_run() {
    let dockerfile = read(&root().join("Dockerfile"));
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("the Dockerfile runs cargo build");
    assert!(
        build.contains("--locked"),
        "the image builds Cargo.lock's versions"
    );
    for bin in ["aggregate", "gateway", "projection", "runner"] {
        assert!(
            build.contains(&format!("-p {bin}")),
            "the image builds {bin}"
        );
    }
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY deploy/"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.trim().parse::<u64>().ok())
        .expect("the image runs as a numeric non-root user");
    assert_ne!(user, 0);

    // The seed reads the catalog from where the image puts it.
    let c = compose();
    let mut seed_files: Vec<String> = entries(&c["services"])
        .map(|(_, svc)| strs(&svc["command"]))
        .chain(k8s_docs().iter().filter(|d| d.is_workload()).flat_map(|d| {
            items(&d.pod()["containers"])
                .map(|c| strs(&c["command"]))
                .collect::<Vec<_>>()
        }))
        .filter(|cmd| cmd.iter().any(|a| a == "seed-catalog"))
        .filter_map(|cmd| {
            let at = cmd.iter().position(|a| a == "--file")?;
            cmd.get(at + 1).cloned()
        })
        .collect();
    seed_files.dedup();
    assert!(
        !seed_files.is_empty(),
        "compose and Kubernetes seed the catalog"
    );
    for file in seed_files {
        assert!(
            copied.contains(&file.as_str()),
            "the seed reads {file}, which the Dockerfile does not copy ({copied:?})"
        );
    }

    // Kubernetes runs the services as the image's user.
    for doc in k8s_docs().iter().filter(|d| d.is_workload()) {
        let runs_image = items(&doc.pod()["containers"]).any(|c| s(&c["image"]) == "cart-platform");
        if runs_image {
            assert_eq!(
                doc.pod()["securityContext"]["runAsUser"].as_u64(),
                Some(user),
                "{}: runAsUser is the image's user",
                doc.what()
            );
        }
    }

    let ignored = read(&root().join(".dockerignore"));
    for dir in ["target/", ".git/", ".tools/", ".dev/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == dir),
            ".dockerignore keeps {dir} out of the build context"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

const K8S: &str = "deploy/k8s";

struct Doc {
    file: String,
    v: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.v["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.v["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn what(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }

    fn is_workload(&self) -> bool {
        matches!(self.kind(), "Deployment" | "StatefulSet" | "Job")
    }

    fn pod(&self) -> &Value {
        &self.v["spec"]["template"]["spec"]
    }

    fn pod_labels(&self) -> &Value {
        &self.v["spec"]["template"]["metadata"]["labels"]
    }
}

fn k8s_docs() -> Vec<Doc> {
    let kustomization = yaml(&format!("{K8S}/kustomization.yaml"));
    strs(&kustomization["resources"])
        .into_iter()
        .flat_map(|file| {
            yaml_docs(&root().join(K8S).join(&file))
                .into_iter()
                .map(move |v| Doc {
                    file: file.clone(),
                    v,
                })
        })
        .collect()
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| d.kind() == kind && d.name() == name)
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Where a container's variable comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Literal,
    Field(String),
    Secret,
    ConfigMap,
}

/// A container's environment as the kubelet builds it: `envFrom` first, then `env` (which wins),
/// references to Secrets/ConfigMaps resolved from the manifests, `$(VAR)` expanded.
fn container_env(docs: &[Doc], c: &Value, what: &str) -> Vec<(String, String, Source)> {
    let mut env: Vec<(String, String, Source)> = Vec::new();
    let data_of = |kind: &str, name: &str| -> BTreeMap<String, String> {
        let doc =
            find(docs, kind, name).unwrap_or_else(|| panic!("{what}: no {kind} named {name}"));
        let mut data = BTreeMap::new();
        for key in ["data", "stringData"] {
            for (k, v) in entries(&doc.v[key]) {
                data.insert(k.clone(), s(v));
            }
        }
        data
    };
    for from in items(&c["envFrom"]) {
        let (kind, source, r) = if from["configMapRef"].is_object() {
            ("ConfigMap", Source::ConfigMap, &from["configMapRef"])
        } else {
            ("Secret", Source::Secret, &from["secretRef"])
        };
        for (k, v) in data_of(kind, &s(&r["name"])) {
            env.push((k, v, source.clone()));
        }
    }
    for var in items(&c["env"]) {
        let name = s(&var["name"]);
        let from = &var["valueFrom"];
        let (value, source) = if !var["value"].is_null() || from.is_null() {
            let mut value = s(&var["value"]);
            for (k, v, _) in env.clone() {
                value = value.replace(&format!("$({k})"), &v);
            }
            (value, Source::Literal)
        } else if from["fieldRef"].is_object() {
            let path = s(&from["fieldRef"]["fieldPath"]);
            let sample = match path.as_str() {
                "metadata.name" => "pod-7d9f8-x2kqz",
                "status.podIP" => "10.1.2.3",
                other => panic!("{what}: unexpected fieldRef {other}"),
            };
            (sample.to_owned(), Source::Field(path))
        } else {
            let (kind, source, r) = if from["secretKeyRef"].is_object() {
                ("Secret", Source::Secret, &from["secretKeyRef"])
            } else {
                ("ConfigMap", Source::ConfigMap, &from["configMapKeyRef"])
            };
            let key = s(&r["key"]);
            let value = data_of(kind, &s(&r["name"]))
                .remove(&key)
                .unwrap_or_else(|| panic!("{what}: {kind} {} has no key {key}", s(&r["name"])));
            (value, source)
        };
        env.retain(|(k, _, _)| *k != name);
        env.push((name, value, source));
    }
    env
}

fn raw_env_value<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    items(&c["env"])
        .find(|v| v["name"] == name)
        .and_then(|v| v["value"].as_str())
}

fn container_port(c: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => items(&c["ports"])
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

/// The Rust services' containers, loaded from their resolved environment.
fn k8s_loaded(docs: &[Doc]) -> Vec<(&Doc, &Value, Loaded)> {
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| d.is_workload()) {
        for c in items(&doc.pod()["containers"]) {
            let Some(service) = Service::from_command(&strs(&c["command"])) else {
                continue;
            };
            let what = format!("{} container {}", doc.what(), s(&c["name"]));
            let env: Vec<(String, String)> = container_env(docs, c, &what)
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect();
            let files = k8s_files(docs, doc, c, &what);
            let env = with_stand_ins(env, &|p| files.contains_key(p), &what);
            out.push((doc, c, service.load(&env, &what)));
        }
    }
    out
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = yaml(&format!("{K8S}/kustomization.yaml"));
    let listed: BTreeSet<String> = strs(&kustomization["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = files_under(&root().join(K8S))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources must list exactly the manifests in {K8S}"
    );
    let namespace = s(&kustomization["namespace"]);
    let docs = k8s_docs();
    assert!(
        find(&docs, "Namespace", &namespace).is_some(),
        "the kustomization's namespace {namespace} is created by a manifest"
    );
    for doc in &docs {
        assert!(
            !doc.kind().is_empty() && !doc.name().is_empty() && doc.v["apiVersion"].is_string(),
            "{}: every document has apiVersion, kind and metadata.name",
            doc.file
        );
    }
}

#[test]
fn k8s_workloads_have_probes_limits_and_grace() {
    let docs = k8s_docs();
    let loaded = k8s_loaded(&docs);
    let workloads: Vec<&Doc> = docs
        .iter()
        .filter(|d| matches!(d.kind(), "Deployment" | "StatefulSet"))
        .collect();
    assert!(workloads.len() >= 5, "NATS and the four services");
    for doc in docs.iter().filter(|d| d.is_workload()) {
        let what = doc.what();
        let grace = doc.pod()["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(
            grace >= 30,
            "{what}: terminationGracePeriodSeconds {grace} < 30"
        );
        for c in items(&doc.pod()["containers"]) {
            let r = &c["resources"];
            for (section, key) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "memory"),
            ] {
                assert!(
                    !r[section][key].is_null(),
                    "{what} container {}: resources.{section}.{key} is missing",
                    s(&c["name"])
                );
            }
            if doc.kind() == "Job" {
                continue;
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(
                    c[probe]["httpGet"].is_object(),
                    "{what} container {}: no HTTP {probe}",
                    s(&c["name"])
                );
            }
        }
    }
    for (doc, c, l) in &loaded {
        let what = doc.what();
        if doc.kind() == "Job" {
            continue;
        }
        l.assert_no_loopback(&what);
        for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{what}: {probe} path");
            assert_eq!(
                container_port(c, &get["port"]),
                Some(l.ops_port()),
                "{what}: {probe} must hit the ops port the service listens on"
            );
        }
        let grace = Duration::from_secs(
            doc.pod()["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30),
        );
        assert!(
            grace >= l.drain_time(),
            "{what}: terminationGracePeriodSeconds {grace:?} is shorter than its drain ({:?})",
            l.drain_time()
        );
    }
    for service in [
        Service::Aggregate,
        Service::Gateway,
        Service::Projection,
        Service::Runner,
    ] {
        assert!(
            loaded
                .iter()
                .any(|(d, _, l)| d.kind() != "Job" && l.service() == service),
            "{K8S} runs no {service:?}"
        );
    }
}

#[test]
fn k8s_env_is_known_to_the_code_and_production_grade() {
    let docs = k8s_docs();
    let loaded = k8s_loaded(&docs);
    let named: Vec<(String, Loaded)> = loaded
        .into_iter()
        .map(|(d, c, l)| (format!("{} container {}", d.what(), s(&c["name"])), l))
        .collect();
    assert_consistent(&named, K8S);
    for (what, l) in &named {
        assert_eq!(
            l.streams().replicas,
            3,
            "{what}: production streams are replicated on all three NATS servers"
        );
    }
    // Aggregate nodes: a unique node id per pod and an address the other pods can dial.
    for doc in docs.iter().filter(|d| d.is_workload()) {
        for c in items(&doc.pod()["containers"]) {
            if Service::from_command(&strs(&c["command"])) != Some(Service::Aggregate)
                || doc.kind() == "Job"
            {
                continue;
            }
            let what = doc.what();
            let env = container_env(&docs, c, &what);
            let source_of = |raw: &str| {
                let var = raw.strip_prefix("$(")?.split(')').next()?;
                env.iter()
                    .find(|(k, _, _)| k == var)
                    .map(|(_, _, src)| src.clone())
            };
            let node_id = raw_env_value(c, "AGGREGATE_NODE_ID").unwrap_or("");
            assert_eq!(
                source_of(node_id),
                Some(Source::Field("metadata.name".into())),
                "{what}: AGGREGATE_NODE_ID must be the pod name ($(POD_NAME) from the downward \
                 API): replicas share the template, node ids must not"
            );
            let advertise = raw_env_value(c, "AGGREGATE_ADVERTISE_ADDR").unwrap_or("");
            assert_eq!(
                source_of(advertise),
                Some(Source::Field("status.podIP".into())),
                "{what}: AGGREGATE_ADVERTISE_ADDR must be $(POD_IP):<grpc port>"
            );
            let grpc = env
                .iter()
                .find(|(k, _, _)| k == "AGGREGATE_GRPC_ADDR")
                .map(|(_, v, _)| port_of(v))
                .unwrap_or(50051);
            assert_eq!(port_of(advertise), grpc, "{what}: advertised gRPC port");
        }
    }
}

/// The NATS StatefulSet, its server container, the config the container runs (from the
/// ConfigMap mounted where `--config` points, its includes expanded from the same ConfigMap),
/// and the ConfigMap.
fn k8s_nats(docs: &[Doc]) -> (&Doc, &Value, String, &Doc) {
    let sts = docs
        .iter()
        .find(|d| {
            d.kind() == "StatefulSet"
                && items(&d.pod()["containers"]).any(|c| s(&c["image"]).starts_with("nats:"))
        })
        .expect("NATS runs as a StatefulSet");
    let what = sts.what();
    let c = items(&sts.pod()["containers"])
        .find(|c| s(&c["image"]).starts_with("nats:"))
        .unwrap();
    let args = [strs(&c["command"]), strs(&c["args"])].concat();
    let at = args
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .expect("nats runs with --config");
    let conf_path = Path::new(&args[at + 1]);
    let mount = items(&c["volumeMounts"])
        .find(|m| conf_path.starts_with(s(&m["mountPath"])))
        .unwrap_or_else(|| panic!("{what}: nothing mounted at {}", conf_path.display()));
    let volume = items(&sts.pod()["volumes"])
        .find(|v| v["name"] == mount["name"])
        .expect("the config volume");
    let map = find(docs, "ConfigMap", &s(&volume["configMap"]["name"]))
        .expect("the NATS config is a ConfigMap");
    let key = conf_path.file_name().unwrap().to_string_lossy();
    let data = |key: &str| -> String {
        map.v["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no {key} (the server reads it)", map.what()))
            .to_owned()
    };
    let conf = expand_includes(&data(&key), &|f| data(f));
    (sts, c, conf, map)
}

#[test]
fn k8s_nats_config_is_deploy_nats_byte_for_byte() {
    let docs = k8s_docs();
    let (_, c, _, map) = k8s_nats(&docs);
    let what = map.what();
    let mut keys = BTreeSet::new();
    for (key, conf) in entries(&map.v["data"]) {
        keys.insert(key.clone());
        let path = root().join(NATS_DIR).join(key);
        assert!(
            path.is_file(),
            "{what}: {key} is not a file of {NATS_DIR} (the ConfigMap only copies them)"
        );
        let conf = s(conf);
        let source = read(&path);
        if conf != source {
            let line = conf
                .lines()
                .zip(source.lines())
                .position(|(a, b)| a != b)
                .map_or(conf.lines().count().min(source.lines().count()), |i| i);
            panic!(
                "{what} must hold {NATS_DIR}/{key} byte for byte (one source for the NATS \
                 config; set per-member values in the StatefulSet's env); first difference at \
                 line {}:\n  ConfigMap: {:?}\n  file:      {:?}",
                line + 1,
                conf.lines().nth(line),
                source.lines().nth(line)
            );
        }
    }
    // What the server runs: the cluster member with client TLS, and everything it includes.
    let args = [strs(&c["command"]), strs(&c["args"])].concat();
    let run = args
        .iter()
        .skip_while(|a| *a != "--config" && *a != "-c")
        .nth(1)
        .and_then(|p| Path::new(p).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .expect("nats runs with --config");
    assert_eq!(
        run, "cluster-tls.conf",
        "{what}: the servers run {NATS_DIR}/cluster-tls.conf (cluster.conf with client TLS)"
    );
    let mut needed = nats_includes_transitive(&run);
    needed.insert(run);
    assert!(
        needed.contains("cluster.conf") && needed.contains("accounts.conf"),
        "{needed:?}"
    );
    assert_eq!(
        keys, needed,
        "{what}: holds the file the server runs and every file it includes"
    );
}

#[test]
fn k8s_nats_is_a_durable_three_node_cluster() {
    let docs = k8s_docs();
    let (sts, c, raw_conf, map) = k8s_nats(&docs);
    let map_what = map.what();
    let what = sts.what();
    let replicas = sts.v["spec"]["replicas"].as_u64().unwrap_or(1);
    assert_eq!(replicas, 3, "{what}: three JetStream members");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert!(
            s(&c[probe]["httpGet"]["path"]).starts_with("/healthz"),
            "{what}: {probe} uses the server's /healthz"
        );
    }
    assert_durable_nats_conf(&raw_conf, &map_what);

    // The per-member values come from the container's environment: every variable the config
    // reads is set (the first member's pod name for the downward API's metadata.name).
    let member = format!("{}-0", sts.name());
    let env: BTreeMap<String, String> = container_env(&docs, c, &what)
        .into_iter()
        .map(|(k, v, source)| match source {
            Source::Field(path) if path == "metadata.name" => (k, member.clone()),
            _ => (k, v),
        })
        .collect();
    let conf = resolve_conf(&raw_conf, &env, &what);
    assert_eq!(
        conf_value(&conf, "server_name").as_deref(),
        Some(member.as_str()),
        "{what}: the server name is the pod name"
    );
    for (key, port) in [("listen", "client"), ("http", "monitor")] {
        let addr = conf_value(&conf, key).unwrap_or_else(|| panic!("{key}"));
        assert_eq!(
            Some(port_of(&addr)),
            container_port(c, &Value::String(port.into())),
            "{what}: {key} {addr} is the container's {port} port"
        );
    }
    let cluster_listen = conf
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("cluster"))
        .find_map(|l| {
            l.trim()
                .strip_prefix("listen:")
                .map(|v| v.trim().to_owned())
        })
        .expect("cluster { listen: ... }");
    assert_eq!(
        Some(port_of(&cluster_listen)),
        container_port(c, &Value::String("cluster".into())),
        "{what}: the route listener {cluster_listen} is the container's cluster port"
    );

    // JetStream's store is on the volume claim, one per member.
    let store = conf_value(&conf, "store_dir").expect("store_dir");
    let claims: Vec<String> = items(&sts.v["spec"]["volumeClaimTemplates"])
        .map(|t| s(&t["metadata"]["name"]))
        .collect();
    assert!(
        items(&c["volumeMounts"])
            .any(|m| s(&m["mountPath"]) == store && claims.contains(&s(&m["name"]))),
        "{what}: the JetStream store {store} is on a persistent volume claim"
    );

    // Routes name every member through the headless service.
    let headless = s(&sts.v["spec"]["serviceName"]);
    let svc = find(&docs, "Service", &headless).expect("the StatefulSet's service exists");
    assert_eq!(
        s(&svc.v["spec"]["clusterIP"]),
        "None",
        "{headless} is headless"
    );
    for i in 0..replicas {
        let route = format!("{}-{i}.{headless}:", sts.name());
        assert!(conf.contains(&route), "{what}: no route to {route}");
    }

    // Lame duck on stop: preStop signals through the pid file the config writes.
    let pid_file = conf_value(&conf, "pid_file").expect("pid_file");
    let pre_stop = strs(&c["lifecycle"]["preStop"]["exec"]["command"]).join(" ");
    assert!(
        pre_stop.contains(&format!("ldm={pid_file}")),
        "{what}: preStop enters lame duck mode through {pid_file}: {pre_stop}"
    );

    // The real server accepts the file with that environment (when one is installed; CI has
    // one).
    let Some(bin) = shared::test_support::server_binary_or_skip() else {
        return;
    };
    // Every file of the ConfigMap, the certificate paths pointing at stand-ins of the mounted
    // Secret (checked by k8s_nats_and_the_services_use_mutual_tls).
    let dir = tempfile::tempdir().unwrap();
    for (key, text) in entries(&map.v["data"]) {
        std::fs::write(dir.path().join(key), local_tls_paths(&s(text), "nats")).unwrap();
    }
    let args = [strs(&c["command"]), strs(&c["args"])].concat();
    let run = args
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("--config");
    let path = dir.path().join(Path::new(run).file_name().unwrap());
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(&path)
        .arg("-t")
        .envs(&env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nats-server -t rejects the Kubernetes config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn k8s_services_and_budgets_select_workloads() {
    let docs = k8s_docs();
    let workloads: Vec<&Doc> = docs
        .iter()
        .filter(|d| matches!(d.kind(), "Deployment" | "StatefulSet"))
        .collect();
    for doc in &workloads {
        assert!(
            labels_match(&doc.v["spec"]["selector"]["matchLabels"], doc.pod_labels()),
            "{}: selector.matchLabels must match the pod template's labels",
            doc.what()
        );
    }
    for svc in docs.iter().filter(|d| d.kind() == "Service") {
        let selector = &svc.v["spec"]["selector"];
        let targets: Vec<&&Doc> = workloads
            .iter()
            .filter(|w| labels_match(selector, w.pod_labels()))
            .collect();
        assert!(
            !targets.is_empty(),
            "{}: selector {selector} matches no workload",
            svc.what()
        );
        for port in items(&svc.v["spec"]["ports"]) {
            let target = if port["targetPort"].is_null() {
                &port["port"]
            } else {
                &port["targetPort"]
            };
            assert!(
                targets
                    .iter()
                    .any(|w| items(&w.pod()["containers"])
                        .any(|c| container_port(c, target).is_some())),
                "{}: target port {target} is not a port of the selected pods",
                svc.what()
            );
        }
    }
    for pdb in docs.iter().filter(|d| d.kind() == "PodDisruptionBudget") {
        let selector = &pdb.v["spec"]["selector"]["matchLabels"];
        let target = workloads
            .iter()
            .find(|w| labels_match(selector, w.pod_labels()))
            .unwrap_or_else(|| panic!("{}: selects no workload", pdb.what()));
        let replicas = target.v["spec"]["replicas"].as_u64().unwrap_or(1);
        if let Some(min) = pdb.v["spec"]["minAvailable"].as_u64() {
            assert!(
                min < replicas,
                "{}: minAvailable {min} with {replicas} replicas blocks every node drain",
                pdb.what()
            );
        }
    }
    for sts in workloads.iter().filter(|d| d.kind() == "StatefulSet") {
        let name = s(&sts.v["spec"]["serviceName"]);
        let svc = find(&docs, "Service", &name)
            .unwrap_or_else(|| panic!("{}: serviceName {name} is not a Service", sts.what()));
        assert_eq!(
            s(&svc.v["spec"]["clusterIP"]),
            "None",
            "{}: the governing Service {name} must be headless",
            sts.what()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics: alerts and dashboards

/// Metric names defined in the code: string constants of every `*/src/metrics.rs`, and how
/// the histograms among them (`describe_histogram!`) are rendered.
struct Known {
    names: BTreeSet<String>,
    histograms: BTreeMap<String, Shape>,
}

/// How the exporter renders one histogram.
#[derive(Debug, PartialEq)]
enum Shape {
    /// `_bucket{le=...}`, `_sum`, `_count`: aggregate with `histogram_quantile`.
    Buckets,
    /// A summary: `{quantile="..."}` per process, `_sum`, `_count`.
    Quantiles(BTreeSet<String>),
}

fn known_metrics() -> Known {
    let mut names = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(root()).unwrap() {
        let path = entry.unwrap().path().join("src/metrics.rs");
        if !path.is_file() {
            continue;
        }
        files += 1;
        let text = read(&path);
        let mut consts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            let Some((ident, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let value = value.split('"').next().unwrap_or_default().to_owned();
            consts.insert(ident.trim().to_owned(), value.clone());
            names.insert(value);
        }
        for part in text.split("describe_histogram!(").skip(1) {
            let ident = part.split(',').next().unwrap_or_default().trim();
            if let Some(name) = consts.get(ident) {
                histograms.insert(name.clone());
            }
        }
    }
    assert!(files >= 4, "found metrics.rs in only {files} crates");
    assert!(!histograms.is_empty(), "no histogram found in metrics.rs");
    Known {
        names,
        histograms: rendered_shapes(&histograms),
    }
}

/// A metric selector in a PromQL expression: the name and its `label op "value"` matchers.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// Every vector selector of a PromQL expression, parsed as Prometheus would (an expression it
/// cannot parse makes Prometheus reject the whole rule file). Grafana's interval variables are
/// replaced by a duration first. Also refuses `histogram_quantile` over an aggregation that
/// drops the `le` label (it would return nothing).
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    use promql_parser::parser::{Expr, LabelModifier};
    fn walk(e: &Expr, out: &mut Vec<Selector>) -> Result<(), String> {
        let selector = |vs: &promql_parser::parser::VectorSelector| Selector {
            metric: vs.name.clone().unwrap_or_default(),
            matchers: vs
                .matchers
                .matchers
                .iter()
                .map(|m| (m.name.clone(), m.op.to_string(), m.value.clone()))
                .collect(),
        };
        match e {
            Expr::Aggregate(a) => {
                walk(&a.expr, out)?;
                if let Some(param) = &a.param {
                    walk(param, out)?;
                }
            }
            Expr::Unary(u) => walk(&u.expr, out)?,
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)?;
            }
            Expr::Paren(p) => walk(&p.expr, out)?,
            Expr::Subquery(q) => walk(&q.expr, out)?,
            Expr::VectorSelector(vs) => out.push(selector(vs)),
            Expr::MatrixSelector(ms) => out.push(selector(&ms.vs)),
            Expr::Call(c) => {
                if c.func.name == "histogram_quantile"
                    && let Some(Expr::Aggregate(a)) = c.args.args.get(1).map(|a| a.as_ref())
                {
                    let keeps_le = match &a.modifier {
                        Some(LabelModifier::Include(by)) => by.labels.iter().any(|l| l == "le"),
                        Some(LabelModifier::Exclude(without)) => {
                            !without.labels.iter().any(|l| l == "le")
                        }
                        None => false,
                    };
                    if !keeps_le {
                        return Err("histogram_quantile over an aggregation without `le`".into());
                    }
                }
                for arg in &c.args.args {
                    walk(arg, out)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
        Ok(())
    }
    let mut text = expr.to_owned();
    for var in ["$__rate_interval", "$__interval", "$__range"] {
        text = text.replace(var, "5m");
    }
    let ast = promql_parser::parser::parse(&text)?;
    let mut out = Vec::new();
    walk(&ast, &mut out)?;
    Ok(out)
}

/// What the services' exporter really renders for each histogram: one value is recorded under
/// each name into the recorder `shared::telemetry` installs (the one every service uses), and
/// the rendered text says whether it became buckets or a summary.
fn rendered_shapes(histograms: &BTreeSet<String>) -> BTreeMap<String, Shape> {
    let handle = shared::telemetry::prometheus();
    for name in histograms {
        metrics::histogram!(name.clone()).record(0.01);
    }
    handle.run_upkeep();
    let text = handle.render();
    histograms
        .iter()
        .map(|name| {
            let shape = if text.contains(&format!("{name}_bucket{{")) {
                Shape::Buckets
            } else {
                let quantiles: BTreeSet<String> = text
                    .lines()
                    .filter(|l| l.starts_with(&format!("{name}{{")))
                    .filter_map(|l| l.split("quantile=\"").nth(1))
                    .filter_map(|q| q.split('"').next())
                    .map(str::to_owned)
                    .collect();
                assert!(
                    !quantiles.is_empty(),
                    "{name} rendered neither buckets nor quantiles:\n{text}"
                );
                Shape::Quantiles(quantiles)
            };
            (name.clone(), shape)
        })
        .collect()
}

/// Checks one PromQL expression against the code (names, histogram shape, label values).
fn check_expr(expr: &str, known: &Known, what: &str) {
    let prefixes: BTreeSet<String> = known
        .names
        .iter()
        .filter_map(|n| n.split_once('_').map(|(p, _)| format!("{p}_")))
        .collect();
    let results: BTreeSet<&str> = shared::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(["ok", "duplicate"])
        .collect();
    let mut used = 0;
    let parsed = selectors(expr).unwrap_or_else(|e| panic!("{what}: `{expr}` is not PromQL: {e}"));
    for sel in parsed {
        if sel.metric == "up" {
            used += 1;
            continue;
        }
        if !prefixes.iter().any(|p| sel.metric.starts_with(p.as_str())) {
            continue; // a function, keyword or label name
        }
        let (base, suffix) = ["_bucket", "_sum", "_count"]
            .into_iter()
            .find_map(|suf| {
                let base = sel.metric.strip_suffix(suf)?;
                known.histograms.contains_key(base).then_some((base, suf))
            })
            .unwrap_or((sel.metric.as_str(), ""));
        assert!(
            known.names.contains(base),
            "{what}: metric {} is not defined in any */src/metrics.rs (renamed?)",
            sel.metric
        );
        used += 1;
        // Only the series the exporter really renders for a histogram exist.
        let quantile = sel
            .matchers
            .iter()
            .find(|(label, _, _)| label == "quantile");
        match (known.histograms.get(base), suffix, quantile) {
            (None, _, None) | (Some(_), "_sum" | "_count", None) => {}
            (Some(Shape::Buckets), "_bucket", None) => {}
            (Some(Shape::Quantiles(q)), "", Some((_, _, value))) => assert!(
                q.contains(value),
                "{what}: {base} renders quantiles {q:?}, not {value}"
            ),
            (Some(Shape::Buckets), _, _) => panic!(
                "{what}: {} does not exist: {base} is rendered as a histogram \
                 (histogram_quantile over {base}_bucket, or _sum/_count)",
                sel.metric
            ),
            (Some(Shape::Quantiles(_)), _, _) => panic!(
                "{what}: {} does not exist: {base} is rendered as a summary \
                 ({base}{{quantile=\"0.99\"}}, or _sum/_count)",
                sel.metric
            ),
            (None, _, Some(_)) => panic!("{what}: {base} is not a histogram, it has no quantiles"),
        }
        for (label, op, value) in &sel.matchers {
            if base == "cart_aggregate_commands_total" && label == "result" {
                let alternatives: Vec<&str> = if op.ends_with('~') {
                    value.split('|').collect()
                } else {
                    vec![value.as_str()]
                };
                for alt in alternatives {
                    assert!(
                        results.contains(alt),
                        "{what}: result {alt:?} is never recorded (ok, duplicate or an \
                         ErrorCode string)"
                    );
                }
            }
        }
    }
    assert!(used > 0, "{what}: `{expr}` uses no known metric");
}

#[test]
fn alert_rules_use_metrics_that_exist() {
    let known = known_metrics();
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut names = BTreeSet::new();
    for group in items(&alerts["groups"]) {
        assert!(group["name"].is_string(), "every group has a name");
        for rule in items(&group["rules"]) {
            let name = s(&rule["alert"]);
            assert!(!name.is_empty(), "only alerting rules: {rule}");
            assert!(names.insert(name.clone()), "alert {name} defined twice");
            let severity = s(&rule["labels"]["severity"]);
            assert!(
                ["critical", "warning"].contains(&severity.as_str()),
                "{name}: severity critical or warning, got {severity:?}"
            );
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name} has a summary"
            );
            check_expr(&s(&rule["expr"]), &known, &name);
        }
    }
    for required in [
        "CartServiceDown",
        "CartNoAggregateOwnsShards",
        "CartCommandErrorRatioHigh",
        "CartVersionConflictRateHigh",
        "CartAppendLatencyHigh",
        "CartProjectionLagHigh",
        "CartProjectionDeadLetters",
        "CartRunnerDeadLetters",
        "CartCheckoutFailureRatioHigh",
        "CartProviderErrorRatioHigh",
        "CartRunnerInFlightStuck",
        "CartGateway5xxRatioHigh",
    ] {
        assert!(names.contains(required), "alerts.yml has no {required}");
    }
}

/// Every `expr` in a dashboard, and every datasource uid it refers to.
fn walk_dashboard<'a>(v: &'a Value, exprs: &mut Vec<&'a str>, uids: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr", Value::String(e)) => exprs.push(e),
                    ("datasource", ds) if ds["uid"].is_string() => {
                        uids.insert(s(&ds["uid"]));
                    }
                    _ => walk_dashboard(child, exprs, uids),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|c| walk_dashboard(c, exprs, uids)),
        _ => {}
    }
}

#[test]
fn grafana_is_provisioned_and_dashboards_use_metrics_that_exist() {
    let c = compose();
    let known = known_metrics();

    let datasources = yaml("deploy/grafana/provisioning/datasources/datasources.yml");
    let mut provisioned = BTreeSet::new();
    for ds in items(&datasources["datasources"]) {
        provisioned.insert(s(&ds["uid"]));
        let url = s(&ds["url"]);
        let host = url
            .strip_prefix("http://")
            .and_then(|r| r.split(':').next())
            .unwrap_or_default();
        assert!(
            c["services"][host].is_object(),
            "datasource {url} is not a compose service"
        );
    }

    // The dashboard provider reads the directory compose mounts the dashboards into.
    let providers = yaml("deploy/grafana/provisioning/dashboards/dashboards.yml");
    let mounts = compose_mounts(&c["services"]["grafana"]);
    for p in items(&providers["providers"]) {
        let path = s(&p["options"]["path"]);
        assert!(
            mounts
                .iter()
                .any(|(src, target)| *target == path && src == "./deploy/grafana/dashboards"),
            "grafana reads dashboards from {path}, where deploy/grafana/dashboards is not mounted"
        );
    }
    assert!(
        mounts
            .iter()
            .any(|(src, target)| src == "./deploy/grafana/provisioning"
                && target == "/etc/grafana/provisioning"),
        "grafana mounts the provisioning directory"
    );

    let mut titles = BTreeSet::new();
    let dashboards: Vec<PathBuf> = files_under(&root().join("deploy/grafana/dashboards"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    for path in dashboards {
        let dash: Value = serde_json::from_str(&read(&path)).unwrap();
        let what = path.display().to_string();
        assert!(dash["uid"].is_string(), "{what} has a fixed uid");
        titles.insert(s(&dash["title"]));
        let (mut exprs, mut uids) = (Vec::new(), BTreeSet::new());
        walk_dashboard(&dash, &mut exprs, &mut uids);
        assert!(exprs.len() >= 10, "{what}: only {} queries", exprs.len());
        for expr in exprs {
            check_expr(expr, &known, &what);
        }
        for uid in uids {
            assert!(
                provisioned.contains(&uid),
                "{what} uses datasource uid {uid}, which is not provisioned"
            );
        }
    }
    assert!(
        titles.contains("Cart platform overview"),
        "dashboards: {titles:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The checks themselves: a check that accepts everything would make the tests above vacuous.

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

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
#[should_panic(expected = "is not defined in any */src/metrics.rs")]
fn a_renamed_metric_is_rejected() {
    check_expr(
        "rate(cart_aggregate_comands_total[5m])",
        &known_metrics(),
        "renamed",
    );
}

#[test]
#[should_panic(expected = "is never recorded")]
fn a_result_label_the_aggregate_never_records_is_rejected() {
    check_expr(
        r#"cart_aggregate_commands_total{result=~"ok|boom"}"#,
        &known_metrics(),
        "bad result",
    );
}

#[test]
#[should_panic(expected = "projection_addr = 127.0.0.1:50062")]
fn a_default_loopback_address_is_rejected() {
    Service::Gateway
        .load(&env(&[("GATEWAY_HTTP_ADDR", "0.0.0.0:8080")]), "defaults")
        .assert_no_loopback("defaults");
}

#[test]
#[should_panic(expected = "does not exist")]
fn a_histogram_series_the_exporter_does_not_render_is_rejected() {
    let known = known_metrics();
    let shape = &known.histograms["cart_aggregate_append_duration_seconds"];
    let wrong = if *shape == Shape::Buckets {
        r#"cart_aggregate_append_duration_seconds{quantile="0.99"}"#
    } else {
        "rate(cart_aggregate_append_duration_seconds_bucket[5m])"
    };
    check_expr(wrong, &known, "wrong shape");
}

#[test]
#[should_panic(expected = "without `le`")]
fn a_quantile_over_buckets_without_le_is_rejected() {
    check_expr(
        "histogram_quantile(0.99, sum(rate(cart_aggregate_append_duration_seconds_bucket[5m])))",
        &known_metrics(),
        "no le",
    );
}

#[test]
#[should_panic(expected = "is not PromQL")]
fn a_query_prometheus_cannot_parse_is_rejected() {
    check_expr(
        "sum(rate(cart_aggregate_commands_total[5m])",
        &known_metrics(),
        "syntax",
    );
}

#[test]
fn the_parsers_read_what_compose_and_promql_write() {
    let p = Service::Projection.load(
        &env(&[
            ("PROJECTION_DB_PATH", "/x/p.db"),
            ("NATS_URL", "nats://n:4222"),
        ]),
        "ok",
    );
    assert_eq!(p.ops_port(), 9102);
    check_expr(
        "sum(rate(cart_runner_provider_request_duration_seconds_count[$__rate_interval]))",
        &known_metrics(),
        "a histogram's count",
    );
    assert_eq!(interpolate("a${X:-b}c${Y}d$$"), "abcd$");
    assert_eq!(compose_duration("1m30s"), Duration::from_secs(90));
    assert_eq!(compose_duration("500ms"), Duration::from_millis(500));
    let sels = selectors(r#"sum by (x) (rate(m_total{a="1", b=~"x|y"}[5m])) > 0.5"#).unwrap();
    let m = sels.iter().find(|s| s.metric == "m_total").unwrap();
    assert_eq!(m.matchers.len(), 2);
    assert_eq!(m.matchers[1], ("b".into(), "=~".into(), "x|y".into()));
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

/// Whether `selector` (`{matchLabels: ...}`, empty: everything) selects `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_object();
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions are not evaluated here"
    );
    wanted.is_none_or(|w| w.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A pod, as a network policy sees it: its labels, and whether it is in the platform's
/// namespace.
#[derive(Clone, Copy)]
struct Peer<'a> {
    labels: &'a Value,
    same_namespace: bool,
}

fn peer_matches(peer: &Value, pod: Peer<'_>) -> bool {
    if peer.get("ipBlock").is_some() {
        // Only addresses outside the cluster's private ranges (checked separately).
        return false;
    }
    let namespace_ok = match peer.get("namespaceSelector") {
        None => pod.same_namespace,
        Some(sel) => sel.as_object().is_some_and(|o| o.is_empty()),
    };
    let pod_ok = peer
        .get("podSelector")
        .is_none_or(|sel| selects(sel, pod.labels));
    namespace_ok && pod_ok
}

/// Whether the policies let traffic to `port` leave `from` (egress) and reach `to` (ingress).
fn policies_allow(policies: &[&Doc], from: Peer<'_>, to: Peer<'_>, port: u64) -> bool {
    let direction_allows = |subject: Peer<'_>, other: Peer<'_>, kind: &str, key: &str| {
        if !subject.same_namespace {
            return true; // outside the platform's namespace: not its policies' business
        }
        let selecting: Vec<&&Doc> = policies
            .iter()
            .filter(|p| selects(&p.v["spec"]["podSelector"], subject.labels))
            .filter(|p| strs(&p.v["spec"]["policyTypes"]).iter().any(|t| t == kind))
            .collect();
        if selecting.is_empty() {
            return true;
        }
        selecting.iter().any(|p| {
            items(&p.v["spec"][kind.to_ascii_lowercase().as_str()]).any(|rule| {
                let peers_ok = rule
                    .get(key)
                    .is_none_or(|peers| items(peers).any(|peer| peer_matches(peer, other)));
                let port_ok = rule
                    .get("ports")
                    .is_none_or(|ports| items(ports).any(|p| p["port"].as_u64() == Some(port)));
                peers_ok && port_ok
            })
        })
    };
    direction_allows(from, to, "Egress", "to") && direction_allows(to, from, "Ingress", "from")
}

#[test]
fn k8s_network_policy_denies_by_default_and_allows_only_the_architecture_flows() {
    let docs = k8s_docs();
    for doc in docs.iter().filter(|d| d.is_workload()) {
        assert_eq!(
            doc.pod()["automountServiceAccountToken"],
            Value::Bool(false),
            "{}: the pod needs no Kubernetes API token",
            doc.what()
        );
    }
    let policies: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == "NetworkPolicy")
        .collect();
    assert!(
        policies.iter().any(|p| {
            let spec = &p.v["spec"];
            spec["podSelector"]
                .as_object()
                .is_some_and(|o| o.is_empty())
                && strs(&spec["policyTypes"]) == ["Ingress", "Egress"]
                && spec.get("ingress").is_none()
                && spec.get("egress").is_none()
        }),
        "a default-deny policy selects every pod"
    );

    // Every workload, with the ports its containers listen on.
    let workloads: Vec<(&str, &Value, Vec<u64>)> = docs
        .iter()
        .filter(|d| d.is_workload())
        .map(|d| {
            let ports = items(&d.pod()["containers"])
                .flat_map(|c| items(&c["ports"]).filter_map(|p| p["containerPort"].as_u64()))
                .collect();
            (d.name(), d.pod_labels(), ports)
        })
        .collect();
    let name_of = |labels: &Value| s(&labels["app.kubernetes.io/name"]);
    let expected: BTreeSet<(String, String, u64)> = [
        ("aggregate", "nats", 4222),
        ("projection", "nats", 4222),
        ("runner", "nats", 4222),
        ("gateway", "nats", 4222),
        ("seed-catalog", "nats", 4222),
        ("nats", "nats", 6222),
        ("gateway", "aggregate", 50051),
        ("runner", "aggregate", 50051),
        ("gateway", "projection", 50062),
        ("gateway", "runner", 50061),
    ]
    .into_iter()
    .map(|(a, b, p)| (a.to_owned(), b.to_owned(), p))
    .collect();
    let mut allowed = BTreeSet::new();
    for (_, from, _) in &workloads {
        for (_, to, ports) in &workloads {
            for &port in ports {
                let inside = |labels| Peer {
                    labels,
                    same_namespace: true,
                };
                if policies_allow(&policies, inside(from), inside(to), port) {
                    allowed.insert((name_of(from), name_of(to), port));
                }
            }
        }
    }
    assert_eq!(allowed, expected, "pod-to-pod flows");

    // From outside the platform: the storefront API from anywhere; metrics for Prometheus.
    let nobody = serde_json::json!({});
    let prometheus = serde_json::json!({"app.kubernetes.io/name": "prometheus"});
    for (name, labels, ports) in &workloads {
        let to = Peer {
            labels,
            same_namespace: true,
        };
        for &port in ports {
            let stranger = Peer {
                labels: &nobody,
                same_namespace: false,
            };
            let public = policies_allow(&policies, stranger, to, port);
            assert_eq!(
                public,
                *name == "gateway" && port == 8080,
                "{name}:{port} from anywhere"
            );
            let scraper = Peer {
                labels: &prometheus,
                same_namespace: false,
            };
            let metrics = [9101, 9102, 9103, 8222, 8080].contains(&port);
            assert_eq!(
                policies_allow(&policies, scraper, to, port),
                metrics,
                "{name}:{port} from Prometheus"
            );
        }
    }
    // Only the runner leaves the cluster, and only for HTTPS to public addresses.
    for p in &policies {
        for rule in items(&p.v["spec"]["egress"]) {
            for peer in items(&rule["to"]).filter(|peer| peer.get("ipBlock").is_some()) {
                assert_eq!(p.name(), "runner", "{}: egress to addresses", p.name());
                let except = strs(&peer["ipBlock"]["except"]);
                for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
                    assert!(except.iter().any(|e| e == private), "{private} excepted");
                }
                let ports: Vec<u64> = items(&rule["ports"])
                    .filter_map(|p| p["port"].as_u64())
                    .collect();
                assert_eq!(ports, [443]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NATS users, secrets and mutual TLS

/// The users of deploy/nats/accounts.conf and the variable each one's password comes from
/// (`password: $NATS_PASSWORD_...`).
fn nats_users() -> BTreeMap<String, String> {
    let users: BTreeMap<String, String> =
        shared::test_support::users_of(&read(&root().join(ACCOUNTS_CONF)))
            .unwrap_or_else(|e| panic!("{ACCOUNTS_CONF}: {e}"))
            .into_iter()
            .collect();
    assert!(
        users.len() >= 6,
        "{ACCOUNTS_CONF} defines the services' users: {users:?}"
    );
    users
}

/// The NATS user a container logs in as, and the certificate (service name) it presents: its
/// service's, except the catalog seed (`aggregate seed-catalog`), which has a user of its own and
/// runs the aggregate binary with the aggregate's certificate.
fn identity(command: &[String]) -> Option<(&'static str, &'static str)> {
    let cert = match Service::from_command(command)? {
        Service::Aggregate => "aggregate",
        Service::Gateway => "gateway",
        Service::Projection => "projection",
        Service::Runner => "runner",
    };
    let user = if command.iter().any(|a| a == "seed-catalog") {
        "seed"
    } else {
        cert
    };
    Some((user, cert))
}

/// The users whose passwords scripts/nats-credentials makes (`USERS=(...)`).
fn credential_script_users() -> BTreeSet<String> {
    let script = read(&root().join("scripts/nats-credentials"));
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("USERS=("))
        .expect("scripts/nats-credentials lists its USERS=(...)");
    line.trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The settings of the last top-level `tls { ... }` block of an (expanded) NATS config, quotes
/// removed; `None` without one.
fn tls_block(conf: &str) -> Option<BTreeMap<String, String>> {
    let mut depth = 0i32;
    let mut current: Option<BTreeMap<String, String>> = None;
    let mut found = None;
    for line in active_lines(conf).lines() {
        let l = line.trim();
        let opens = l.matches('{').count() as i32;
        let closes = l.matches('}').count() as i32;
        if depth == 0 && current.is_none() {
            let starts_block = l.strip_prefix("tls").is_some_and(|rest| {
                rest.trim_start()
                    .trim_start_matches(':')
                    .trim_start()
                    .starts_with('{')
            });
            if starts_block {
                current = Some(BTreeMap::new());
            }
        } else if depth == 1
            && let Some(block) = current.as_mut()
            && let Some((k, v)) = l.split_once(':')
        {
            block.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
        }
        depth += opens - closes;
        if depth == 0 && current.is_some() {
            found = current.take();
        }
    }
    found
}

/// The client TLS block of a server config: present, with its files, and verifying clients.
fn check_nats_tls_block(conf: &str, what: &str) -> BTreeMap<String, String> {
    let tls = tls_block(conf).unwrap_or_else(|| {
        panic!("{what}: no top-level tls {{ }} block: clients would connect in plaintext")
    });
    assert_eq!(
        tls.get("verify").map(String::as_str),
        Some("true"),
        "{what}: the tls block must set verify: true (every client presents a certificate \
         signed by the CA: mutual TLS)"
    );
    for key in ["cert_file", "key_file", "ca_file"] {
        assert!(
            tls.get(key).is_some_and(|v| !v.is_empty()),
            "{what}: the tls block has no {key}"
        );
    }
    tls
}

/// A file (or directory) mounted into a compose container.
#[derive(Debug, Clone)]
struct Mounted {
    /// `./...` on the host (a bind mount or a file-based secret), or a named volume.
    source: String,
    read_only: bool,
    /// The compose secret it comes from.
    secret: Option<String>,
}

/// Everything mounted into a compose service, by path in the container: its volumes, and its
/// secrets (at `/run/secrets/<target>` unless the target is absolute; always read-only).
fn compose_files(c: &Value, svc: &Value, what: &str) -> BTreeMap<String, Mounted> {
    let mut out = BTreeMap::new();
    for v in items(&svc["volumes"]) {
        let (source, target, read_only) = match v {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                let options = parts.get(2).copied().unwrap_or("");
                (
                    parts[0].to_owned(),
                    parts.get(1).copied().unwrap_or("").to_owned(),
                    options.split(',').any(|o| o == "ro"),
                )
            }
            long => (
                s(&long["source"]),
                s(&long["target"]),
                long["read_only"] == Value::Bool(true),
            ),
        };
        out.insert(
            target,
            Mounted {
                source,
                read_only,
                secret: None,
            },
        );
    }
    for secret in items(&svc["secrets"]) {
        let (name, target) = match secret {
            Value::String(name) => (name.clone(), name.clone()),
            long => {
                let name = s(&long["source"]);
                let target = match &long["target"] {
                    Value::Null => name.clone(),
                    t => s(t),
                };
                (name, target)
            }
        };
        let target = if target.starts_with('/') {
            target
        } else {
            format!("/run/secrets/{target}")
        };
        let def = &c["secrets"][&name];
        assert!(
            def.is_object(),
            "{what}: uses secret {name}, which the top-level secrets do not define"
        );
        let source = s(&def["file"]);
        assert!(
            !source.is_empty(),
            "{what}: secret {name} must be file-based (file: ./.secrets/...)"
        );
        out.insert(
            target,
            Mounted {
                source,
                read_only: true,
                secret: Some(name),
            },
        );
    }
    out
}

/// The mount that provides `path` (the file itself, or a directory above it), with the source
/// of that very file.
fn mounted(files: &BTreeMap<String, Mounted>, path: &str) -> Option<Mounted> {
    files.iter().find_map(|(target, m)| {
        if target == path {
            return Some(m.clone());
        }
        let rest = Path::new(path).strip_prefix(target).ok()?;
        Some(Mounted {
            source: format!("{}/{}", m.source.trim_end_matches('/'), rest.display()),
            ..m.clone()
        })
    })
}

/// Where compose's NATS server reads its config (`--config`).
fn compose_nats_config_path(nats: &Value) -> String {
    let command = strs(&nats["command"]);
    let at = command
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .expect("nats runs with --config");
    command[at + 1].clone()
}

/// The config compose's NATS server runs, its includes expanded through the mounts: each file
/// must be mounted read-only from deploy/nats where the server looks for it.
fn compose_nats_conf(c: &Value) -> String {
    let nats = &c["services"]["nats"];
    let what = "docker-compose.yml service nats";
    let files = compose_files(c, nats, what);
    let conf_path = compose_nats_config_path(nats);
    let dir = Path::new(&conf_path).parent().unwrap().to_path_buf();
    let read_mounted = |container: &str| -> String {
        let m = mounted(&files, container)
            .unwrap_or_else(|| panic!("{what}: reads {container}, which is not mounted"));
        assert!(
            m.read_only,
            "{what}: {container} must be mounted read-only (:ro)"
        );
        assert!(
            m.source.starts_with(&format!("./{NATS_DIR}/")),
            "{what}: {container} comes from {NATS_DIR}, got {}",
            m.source
        );
        read(&root().join(&m.source))
    };
    expand_includes(&read_mounted(&conf_path), &|f| {
        read_mounted(&dir.join(f).display().to_string())
    })
}

/// A file a Kubernetes container sees through a Secret or ConfigMap volume.
#[derive(Debug, Clone)]
struct K8sFile {
    kind: String,
    name: String,
    key: String,
    read_only: bool,
    mode: u64,
}

/// A file mode as Kubernetes reads the YAML (YAML 1.1: `0440` is octal; the test's parser keeps
/// a leading-zero number as a string).
fn file_mode(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => {
            let digits = text.strip_prefix("0o").unwrap_or(text);
            u64::from_str_radix(digits, 8).ok()
        }
        _ => None,
    }
}

/// The files a container sees from its Secret and ConfigMap volumes, by path.
fn k8s_files(docs: &[Doc], doc: &Doc, c: &Value, what: &str) -> BTreeMap<String, K8sFile> {
    let mut out = BTreeMap::new();
    for m in items(&c["volumeMounts"]) {
        // Not a pod volume: a StatefulSet's volume claim.
        let Some(volume) = items(&doc.pod()["volumes"]).find(|v| v["name"] == m["name"]) else {
            continue;
        };
        let (kind, source, name) = if volume["secret"].is_object() {
            let src = &volume["secret"];
            ("Secret", src, s(&src["secretName"]))
        } else if volume["configMap"].is_object() {
            let src = &volume["configMap"];
            ("ConfigMap", src, s(&src["name"]))
        } else {
            continue;
        };
        let object = find(docs, kind, &name).unwrap_or_else(|| {
            panic!(
                "{what}: volume {} is {kind} {name}, which no manifest defines",
                m["name"]
            )
        });
        let has = |key: &str| {
            ["data", "stringData"]
                .iter()
                .any(|d| !object.v[*d][key].is_null())
        };
        let keys: Vec<(String, String, Option<u64>)> = if source["items"].is_array() {
            items(&source["items"])
                .map(|i| (s(&i["key"]), s(&i["path"]), file_mode(&i["mode"])))
                .collect()
        } else {
            ["data", "stringData"]
                .iter()
                .flat_map(|d| entries(&object.v[*d]).map(|(k, _)| (k.clone(), k.clone(), None)))
                .collect()
        };
        let default_mode = file_mode(&source["defaultMode"]).unwrap_or(0o644);
        let mount_path = s(&m["mountPath"]);
        let sub_path = s(&m["subPath"]);
        for (key, path, mode) in keys {
            assert!(has(&key), "{what}: {kind} {name} has no key {key}");
            let file = if sub_path.is_empty() {
                format!("{}/{path}", mount_path.trim_end_matches('/'))
            } else if sub_path == path {
                mount_path.clone()
            } else {
                continue;
            };
            out.insert(
                file,
                K8sFile {
                    kind: kind.to_owned(),
                    name: name.clone(),
                    key,
                    read_only: m["readOnly"] == Value::Bool(true),
                    mode: mode.unwrap_or(default_mode),
                },
            );
        }
    }
    out
}

/// Local files standing in for what a container gets mounted (the services open their TLS
/// files at start, in `check()`): a certificate set made like `aggregate certs` does, and a
/// password file.
fn stand_ins() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = shared::certs::Authority::new("deploy_config test CA").unwrap();
        ca.write_set(dir.path(), &shared::certs::SET, &[]).unwrap();
        std::fs::write(dir.path().join("password"), "pStandIn0").unwrap();
        dir
    })
    .path()
}

/// The stand-in of the file variable `var` (`..._CA_FILE`, `..._CERT_FILE`, ...) for the
/// certificate of `name`.
fn stand_in(var: &str, name: &str) -> String {
    let file = if var.ends_with("PASSWORD_FILE") {
        "password".to_owned()
    } else if var.ends_with("_CA_FILE") {
        "ca.pem".to_owned()
    } else if var.ends_with("_KEY_FILE") {
        format!("{name}-key.pem")
    } else if var.ends_with("_CERT_FILE") {
        format!("{name}.pem")
    } else {
        panic!("no stand-in for {var}")
    };
    stand_ins().join(file).display().to_string()
}

/// Variables naming a file a service reads: its NATS password and TLS files, its gRPC TLS files.
fn is_file_var(key: &str) -> bool {
    (key.starts_with("NATS_") || key.starts_with("GRPC_TLS_")) && key.ends_with("_FILE")
}

/// `env` with every file a service reads replaced by a local stand-in, after checking that the
/// container has it mounted (`is_mounted`); panics naming `what` otherwise.
fn with_stand_ins(
    env: Vec<(String, String)>,
    is_mounted: &dyn Fn(&str) -> bool,
    what: &str,
) -> Vec<(String, String)> {
    env.into_iter()
        .map(|(k, v)| {
            if !is_file_var(&k) || v.is_empty() {
                return (k, v);
            }
            assert!(
                is_mounted(&v),
                "{what}: {k}={v} is not mounted in the container (the service cannot start \
                 without it)"
            );
            let local = stand_in(&k, "aggregate");
            (k, local)
        })
        .collect()
}

/// `conf` with the files of its tls blocks pointing at the stand-ins of `name`'s certificate.
fn local_tls_paths(conf: &str, name: &str) -> String {
    let mut out = String::new();
    for line in conf.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let tls_file = [
            ("cert_file", "_CERT_FILE"),
            ("key_file", "_KEY_FILE"),
            ("ca_file", "_CA_FILE"),
        ]
        .into_iter()
        .find(|(key, _)| {
            trimmed
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        });
        match tls_file {
            Some((key, var)) => {
                out.push_str(&format!("{indent}{key}: \"{}\"", stand_in(var, name)))
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The client side of NATS TLS: every server URL is TLS (`tls://` or `NATS_TLS_REQUIRED`) and
/// names the NATS server by the name in its certificate (`aggregate certs` names the `nats`
/// certificate `nats`, plus localhost; the client verifies the host it dials).
fn check_nats_url_tls(env: &[(String, String)], what: &str, is_nats: &dyn Fn(&str) -> bool) {
    let url = env_get(env, "NATS_URL").unwrap_or_default();
    let required = env_get(env, "NATS_TLS_REQUIRED") == Some("true");
    assert!(!url.trim().is_empty(), "{what}: no NATS_URL");
    assert!(
        shared::certs::SET.contains(&"nats"),
        "aggregate certs makes the NATS server's certificate"
    );
    for u in url.split(',').map(str::trim) {
        let (scheme, rest) = u.split_once("://").unwrap_or(("nats", u));
        assert!(
            scheme == "tls" || required,
            "{what}: NATS_URL {u} is plaintext (use tls:// or NATS_TLS_REQUIRED=true)"
        );
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        assert!(
            is_nats(host),
            "{what}: NATS_URL host {host} is not the NATS server"
        );
        assert_eq!(
            host, "nats",
            "{what}: the client verifies the server as {host}, but the server's certificate \
             (`aggregate certs`: nats.pem) names `nats`"
        );
    }
}

/// Every Rust service of the compose file logs in as its own user, with a password file only it
/// gets; the server gets every password accounts.conf reads.
fn check_compose_nats_users(c: &Value) {
    let users = nats_users();
    let nats = &c["services"]["nats"];
    let env_files: Vec<String> = items(&nats["env_file"])
        .map(|f| if f.is_object() { s(&f["path"]) } else { s(f) })
        .chain(nats["env_file"].as_str().map(str::to_owned))
        .collect();
    let server_env = env_files
        .iter()
        .find(|f| f.ends_with("/nats-server.env"))
        .unwrap_or_else(|| {
            panic!(
                "docker-compose.yml: nats has no env_file DIR/nats-server.env (what \
                 `scripts/nats-credentials DIR` writes: every NATS_PASSWORD_*), got {env_files:?}"
            )
        });
    let dir = server_env.trim_end_matches("/nats-server.env");
    let dir = dir.strip_prefix("./").unwrap_or(dir);
    let script = read(&root().join("scripts/nats-credentials"));
    assert!(
        script.contains("NATS_PASSWORD_%s") && script.contains("${user^^}"),
        "scripts/nats-credentials writes NATS_PASSWORD_<USER> lines"
    );
    let made = credential_script_users();
    let set_directly = compose_env(nats);
    for (user, var) in &users {
        let from_script =
            made.contains(user) && *var == format!("NATS_PASSWORD_{}", user.to_uppercase());
        assert!(
            from_script || env_get(&set_directly, var).is_some(),
            "docker-compose.yml: the nats server does not get ${var} (the password of {user} in \
             {ACCOUNTS_CONF}): {server_env} has NATS_PASSWORD_<USER> for {made:?} only, and \
             the server refuses to start without it"
        );
    }

    let mut seen = BTreeSet::new();
    for (name, svc) in compose_services(c) {
        let Some((user, _)) = identity(&strs(&svc["command"])) else {
            continue;
        };
        let what = format!("docker-compose.yml service {name}");
        let env = compose_env(svc);
        let got = env_get(&env, "NATS_USER").unwrap_or_else(|| {
            panic!("{what}: no NATS_USER (the server refuses anonymous clients)")
        });
        assert_eq!(
            got, user,
            "{what}: logs in to NATS as {got:?}; its user is {user:?}"
        );
        assert!(
            users.contains_key(user),
            "{what}: NATS_USER {user} is not a user of {ACCOUNTS_CONF}"
        );
        assert!(
            env_get(&env, "NATS_PASSWORD").is_none_or(str::is_empty),
            "{what}: the password comes from a file (NATS_PASSWORD_FILE), not the environment"
        );
        let file = env_get(&env, "NATS_PASSWORD_FILE")
            .unwrap_or_else(|| panic!("{what}: no NATS_PASSWORD_FILE"));
        let files = compose_files(c, svc, &what);
        let m = mounted(&files, file)
            .unwrap_or_else(|| panic!("{what}: NATS_PASSWORD_FILE={file} is not mounted"));
        assert!(
            m.secret.is_some(),
            "{what}: {file} must be a compose secret (read-only under /run/secrets), got {}",
            m.source
        );
        let own = format!("./{dir}/{user}.password");
        assert_eq!(
            m.source, own,
            "{what}: {file} (secret {:?}) holds the password of another user: {user}'s is {own}",
            m.secret
        );
        for (target, other) in &files {
            let source = other.source.strip_prefix("./").unwrap_or(&other.source);
            assert!(
                !source.starts_with(&format!("{dir}/")) || other.source == own,
                "{what}: {target} is {}: a service gets only its own password",
                other.source
            );
        }
        seen.insert(user);
    }
    for user in ["aggregate", "gateway", "projection", "runner", "seed"] {
        assert!(seen.contains(user), "no compose service logs in as {user}");
    }
}

/// NATS runs with mutual TLS and every Rust service presents its own certificate to NATS and to
/// the other services' gRPC endpoints; the files come from `aggregate certs`, read-only.
fn check_compose_tls(c: &Value) {
    let what = "docker-compose.yml service nats";
    let conf = compose_nats_conf(c);
    let tls = check_nats_tls_block(&conf, what);
    let nats = &c["services"]["nats"];
    let nats_files = compose_files(c, nats, what);
    let ca = mounted(&nats_files, &tls["ca_file"]).unwrap_or_else(|| {
        panic!(
            "{what}: reads {} (ca_file), which is not mounted",
            tls["ca_file"]
        )
    });
    let dir = ca
        .source
        .strip_suffix("/ca.pem")
        .unwrap_or_else(|| {
            panic!(
                "{what}: the CA is ca.pem of `aggregate certs`, got {}",
                ca.source
            )
        })
        .to_owned();
    for (key, file) in [
        ("ca_file", "ca.pem"),
        ("cert_file", "nats.pem"),
        ("key_file", "nats-key.pem"),
    ] {
        let path = &tls[key];
        let m = mounted(&nats_files, path)
            .unwrap_or_else(|| panic!("{what}: reads {path} ({key}), which is not mounted"));
        assert!(m.read_only, "{what}: {path} must be mounted read-only");
        assert_eq!(
            m.source,
            format!("{dir}/{file}"),
            "{what}: {key} is {file} of `aggregate certs`"
        );
    }
    let is_nats = |host: &str| s(&c["services"][host]["image"]).starts_with("nats:");
    let mut checked = 0;
    for (name, svc) in compose_services(c) {
        let Some((_, cert)) = identity(&strs(&svc["command"])) else {
            continue;
        };
        let what = format!("docker-compose.yml service {name}");
        let env = compose_env(svc);
        let files = compose_files(c, svc, &what);
        check_nats_url_tls(&env, &what, &is_nats);
        for (prefix, link) in [
            ("NATS_TLS", "its NATS connection"),
            ("GRPC_TLS", "its gRPC"),
        ] {
            for (suffix, file) in [
                ("CA_FILE", "ca.pem".to_owned()),
                ("CERT_FILE", format!("{cert}.pem")),
                ("KEY_FILE", format!("{cert}-key.pem")),
            ] {
                let var = format!("{prefix}_{suffix}");
                let path = env_get(&env, &var)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| {
                        panic!("{what}: {var} is not set: {link} runs without mutual TLS")
                    });
                let m = mounted(&files, path)
                    .unwrap_or_else(|| panic!("{what}: {var}={path} is not mounted"));
                assert!(m.read_only, "{what}: {path} must be mounted read-only");
                assert_eq!(
                    m.source,
                    format!("{dir}/{file}"),
                    "{what}: {var} must be {file} of `aggregate certs` (the {cert} certificate: \
                     its common name is who the service is)"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "the seed and the five service containers");

    // The generated files stay out of git, and the header says how to make them.
    let dir = dir.strip_prefix("./").unwrap_or(&dir).to_owned();
    for (name, def) in entries(&c["secrets"]) {
        let file = s(&def["file"]);
        assert!(
            file.starts_with("./.secrets/"),
            "docker-compose.yml: secret {name} is {file}, outside .secrets/ (which git ignores)"
        );
    }
    let ignored = read(&root().join(".gitignore"));
    assert!(
        ignored
            .lines()
            .any(|l| [".secrets", ".secrets/", "/.secrets", "/.secrets/"].contains(&l.trim())),
        ".gitignore must ignore .secrets/ (NATS passwords and TLS keys)"
    );
    let header: String = read(&root().join("docker-compose.yml"))
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let passwords = c["secrets"]
        .as_object()
        .and_then(|m| {
            m.values()
                .map(|d| s(&d["file"]))
                .find(|f| f.ends_with(".password"))
        })
        .expect("password secrets");
    let password_dir = Path::new(passwords.strip_prefix("./").unwrap_or(&passwords))
        .parent()
        .unwrap()
        .display()
        .to_string();
    for step in [
        format!("scripts/nats-credentials {password_dir}"),
        format!("certs --out {dir}"),
    ] {
        assert!(
            header.contains(&step),
            "docker-compose.yml's header must give the preparation step `{step}`"
        );
    }
}

/// Bind mounts (configs, secrets, certificates) are read-only in every compose service.
fn check_compose_read_only(c: &Value) {
    for (name, svc) in compose_services(c) {
        let what = format!("docker-compose.yml service {name}");
        for (target, m) in compose_files(c, svc, &what) {
            if m.source.starts_with('.') || m.source.starts_with('/') {
                assert!(
                    m.read_only,
                    "{what}: {} is mounted at {target} writable: add :ro",
                    m.source
                );
            }
        }
    }
}

#[test]
fn compose_services_log_in_to_nats_as_their_own_users() {
    check_compose_nats_users(&compose());
}

#[test]
fn compose_runs_nats_and_grpc_with_mutual_tls() {
    check_compose_tls(&compose());
}

#[test]
fn compose_mounts_configs_and_secrets_read_only() {
    check_compose_read_only(&compose());
}

/// The NATS server passes its own config check with the files compose mounts, the passwords of
/// every user, and the certificates.
#[test]
fn compose_nats_config_passes_the_servers_own_check() {
    let c = compose();
    let nats = &c["services"]["nats"];
    let what = "docker-compose.yml service nats";
    // Reads and checks every mounted file it includes.
    compose_nats_conf(&c);
    let Some(bin) = shared::test_support::server_binary_or_skip() else {
        return;
    };
    let conf_path = compose_nats_config_path(nats);
    let conf_dir = Path::new(&conf_path).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (target, m) in compose_files(&c, nats, what) {
        let Ok(name) = Path::new(&target).strip_prefix(conf_dir) else {
            continue;
        };
        if m.source.starts_with(&format!("./{NATS_DIR}/")) {
            let text = local_tls_paths(&read(&root().join(&m.source)), "nats");
            std::fs::write(dir.path().join(name), text).unwrap();
        }
    }
    let passwords: Vec<(String, String)> = nats_users()
        .into_values()
        .map(|var| (var, "pStandIn0".to_owned()))
        .collect();
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(dir.path().join(Path::new(&conf_path).file_name().unwrap()))
        .arg("-t")
        .envs(passwords)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nats-server -t rejects the compose config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every Rust workload logs in as its own user with only its own password mounted; the server
/// gets every password accounts.conf reads.
fn check_k8s_nats_users(docs: &[Doc]) {
    let users = nats_users();
    let (sts, nats, _, _) = k8s_nats(docs);
    let what = sts.what();
    let env = container_env(docs, nats, &what);
    let mut secret = None;
    for (user, var) in &users {
        assert!(
            env.iter()
                .any(|(k, _, src)| k == var && *src == Source::Secret),
            "{what}: the server does not get ${var} (the password of {user} in {ACCOUNTS_CONF}) \
             from a Secret: it refuses to start without it"
        );
        let from = items(&nats["env"])
            .find(|e| e["name"] == *var)
            .map(|e| s(&e["valueFrom"]["secretKeyRef"]["name"]));
        secret = secret.or(from);
    }
    let secret = secret.expect("the passwords' Secret");

    let mut seen = BTreeSet::new();
    for doc in docs.iter().filter(|d| d.is_workload()) {
        for c in items(&doc.pod()["containers"]) {
            let Some((user, _)) = identity(&strs(&c["command"])) else {
                continue;
            };
            let what = format!("{} container {}", doc.what(), s(&c["name"]));
            let env = container_env(docs, c, &what);
            let get = |key: &str| {
                env.iter()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, v, _)| v.as_str())
            };
            let got = get("NATS_USER").unwrap_or_else(|| {
                panic!("{what}: no NATS_USER (the server refuses anonymous clients)")
            });
            assert_eq!(
                got, user,
                "{what}: logs in to NATS as {got:?}; its user is {user:?}"
            );
            let own = users
                .get(user)
                .unwrap_or_else(|| panic!("{what}: {user} is not a user of {ACCOUNTS_CONF}"));
            assert!(
                get("NATS_PASSWORD").is_none_or(str::is_empty),
                "{what}: the password comes from a file (NATS_PASSWORD_FILE), not the environment"
            );
            for var in items(&c["env"]) {
                assert!(
                    s(&var["valueFrom"]["secretKeyRef"]["name"]) != secret,
                    "{what}: {} comes from Secret {secret}: a pod reads its own password from \
                     the mounted file only",
                    s(&var["name"])
                );
            }
            for from in items(&c["envFrom"]) {
                assert!(
                    s(&from["secretRef"]["name"]) != secret,
                    "{what}: envFrom Secret {secret} hands the pod every password"
                );
            }
            let file = get("NATS_PASSWORD_FILE")
                .unwrap_or_else(|| panic!("{what}: no NATS_PASSWORD_FILE"));
            let files = k8s_files(docs, doc, c, &what);
            for (path, f) in &files {
                assert!(
                    f.kind != "Secret" || f.name != secret || f.key == *own,
                    "{what}: {path} is {} of Secret {secret}: a pod gets only its own password \
                     (a secret volume with items: [{{key: {own}}}])",
                    f.key
                );
            }
            let f = files
                .get(file)
                .unwrap_or_else(|| panic!("{what}: NATS_PASSWORD_FILE={file} is not mounted"));
            assert!(
                f.read_only,
                "{what}: {file} is mounted without readOnly: true"
            );
            assert_eq!(
                (f.kind.as_str(), f.name.as_str(), f.key.as_str()),
                ("Secret", secret.as_str(), own.as_str()),
                "{what}: {file} holds the password of another user: {user}'s is {own} of \
                 Secret {secret}"
            );
            seen.insert(user);
        }
    }
    for user in ["aggregate", "gateway", "projection", "runner", "seed"] {
        assert!(
            seen.contains(user),
            "no Kubernetes workload logs in as {user}"
        );
    }
}

/// NATS runs with mutual TLS from Secret cart-tls-nats; every Rust workload presents its own
/// certificate (Secret cart-tls-<service>) to NATS and to the other services' gRPC endpoints.
fn check_k8s_tls(docs: &[Doc]) {
    let (sts, nats, conf, _) = k8s_nats(docs);
    let what = sts.what();
    let tls = check_nats_tls_block(&conf, &what);
    let nats_files = k8s_files(docs, sts, nats, &what);
    let secret_key = |key: &str| match key {
        "ca_file" | "CA_FILE" => "ca.crt",
        "cert_file" | "CERT_FILE" => "tls.crt",
        _ => "tls.key",
    };
    let check_secret = |name: &str, what: &str| {
        let secret =
            find(docs, "Secret", name).unwrap_or_else(|| panic!("{what}: no Secret {name}"));
        assert_eq!(
            s(&secret.v["type"]),
            "kubernetes.io/tls",
            "{what}: Secret {name} is a kubernetes.io/tls Secret"
        );
    };
    for key in ["ca_file", "cert_file", "key_file"] {
        let path = &tls[key];
        let f = nats_files.get(path).unwrap_or_else(|| {
            panic!("{what}: the server reads {path} ({key}), which is not mounted")
        });
        assert!(
            f.read_only,
            "{what}: {path} is mounted without readOnly: true"
        );
        assert_eq!(
            (f.kind.as_str(), f.name.as_str(), f.key.as_str()),
            ("Secret", "cart-tls-nats", secret_key(key)),
            "{what}: {key} comes from the NATS server's Secret"
        );
    }
    check_secret("cart-tls-nats", &what);

    let is_nats = |host: &str| {
        find(docs, "Service", host)
            .is_some_and(|svc| labels_match(&svc.v["spec"]["selector"], sts.pod_labels()))
    };
    let mut checked = 0;
    for doc in docs.iter().filter(|d| d.is_workload()) {
        for c in items(&doc.pod()["containers"]) {
            let Some((_, cert)) = identity(&strs(&c["command"])) else {
                continue;
            };
            let what = format!("{} container {}", doc.what(), s(&c["name"]));
            let env: Vec<(String, String)> = container_env(docs, c, &what)
                .into_iter()
                .map(|(k, v, _)| (k, v))
                .collect();
            check_nats_url_tls(&env, &what, &is_nats);
            let files = k8s_files(docs, doc, c, &what);
            let secret = format!("cart-tls-{cert}");
            for (prefix, link) in [
                ("NATS_TLS", "its NATS connection"),
                ("GRPC_TLS", "its gRPC"),
            ] {
                for suffix in ["CA_FILE", "CERT_FILE", "KEY_FILE"] {
                    let var = format!("{prefix}_{suffix}");
                    let path = env_get(&env, &var)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| {
                            panic!("{what}: {var} is not set: {link} runs without mutual TLS")
                        });
                    let f = files
                        .get(path)
                        .unwrap_or_else(|| panic!("{what}: {var}={path} is not mounted"));
                    assert!(
                        f.read_only,
                        "{what}: {path} is mounted without readOnly: true"
                    );
                    assert_eq!(
                        (f.kind.as_str(), f.name.as_str(), f.key.as_str()),
                        ("Secret", secret.as_str(), secret_key(suffix)),
                        "{what}: {var} must be {} of Secret {secret} (the {cert} certificate: its \
                         common name is who the service is)",
                        secret_key(suffix)
                    );
                }
            }
            check_secret(&secret, &what);
            checked += 1;
        }
    }
    assert!(checked >= 5, "the seed Job and the four services");
}

/// Secret and ConfigMap volumes are mounted read-only, and secret files are readable by the
/// pod's group only (the group the pod's fsGroup gives them: the user is not root).
fn check_k8s_read_only(docs: &[Doc]) {
    for doc in docs.iter().filter(|d| d.is_workload()) {
        for c in items(&doc.pod()["containers"]) {
            let what = format!("{} container {}", doc.what(), s(&c["name"]));
            for m in items(&c["volumeMounts"]) {
                let volume = items(&doc.pod()["volumes"]).find(|v| v["name"] == m["name"]);
                let Some(volume) = volume else { continue };
                let kind = ["secret", "configMap", "projected"]
                    .into_iter()
                    .find(|k| volume[*k].is_object());
                if let Some(kind) = kind {
                    assert_eq!(
                        m["readOnly"],
                        Value::Bool(true),
                        "{what}: {kind} volume {} is mounted at {} without readOnly: true",
                        m["name"],
                        s(&m["mountPath"])
                    );
                }
            }
            let fs_group = doc.pod()["securityContext"]["fsGroup"].as_u64();
            for (path, f) in k8s_files(docs, doc, c, &what) {
                if f.kind != "Secret" {
                    continue;
                }
                assert_eq!(
                    f.mode & 0o007,
                    0,
                    "{what}: {path} (mode {:o}) is readable by any user of the node's pods",
                    f.mode
                );
                assert!(
                    f.mode & 0o040 != 0 && fs_group.is_some(),
                    "{what}: {path} (mode {:o}) is owned by root: the pod's non-root user reads it \
                     through its group (mode 0440 and the pod's securityContext.fsGroup)",
                    f.mode
                );
            }
        }
    }
}

#[test]
fn k8s_services_log_in_to_nats_as_their_own_users() {
    check_k8s_nats_users(&k8s_docs());
}

#[test]
fn k8s_nats_and_the_services_use_mutual_tls() {
    check_k8s_tls(&k8s_docs());
}

#[test]
fn k8s_secrets_and_configs_are_mounted_read_only() {
    check_k8s_read_only(&k8s_docs());
}

#[test]
fn k8s_nats_users_secret_has_every_password() {
    let docs = k8s_docs();
    let secret = find(&docs, "Secret", "nats-users").expect("Secret nats-users");
    for (user, var) in nats_users() {
        assert!(
            !secret.v["stringData"][&var].is_null() || !secret.v["data"][&var].is_null(),
            "{}: no key {var} (the password of {user})",
            secret.what()
        );
    }
}

// The checks above fail on a broken deployment, with a message that says what is wrong.

fn compose_service_mut<'a>(c: &'a mut Value, name: &str) -> &'a mut Value {
    &mut c["services"][name]
}

fn k8s_doc_mut<'a>(docs: &'a mut [Doc], kind: &str, name: &str) -> &'a mut Value {
    &mut docs
        .iter_mut()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .v
}

#[test]
#[should_panic(expected = "NATS_PASSWORD_FILE=/run/secrets/nats-password is not mounted")]
fn a_compose_service_without_its_password_is_rejected() {
    let mut c = compose();
    let secrets = compose_service_mut(&mut c, "runner")["secrets"]
        .as_array_mut()
        .unwrap();
    secrets.retain(|s| s["source"] != "nats-password-runner");
    check_compose_nats_users(&c);
}

#[test]
#[should_panic(expected = "holds the password of another user")]
fn a_compose_service_with_another_users_password_is_rejected() {
    let mut c = compose();
    for secret in compose_service_mut(&mut c, "gateway")["secrets"]
        .as_array_mut()
        .unwrap()
    {
        if secret["source"] == "nats-password-gateway" {
            secret["source"] = "nats-password-runner".into();
        }
    }
    check_compose_nats_users(&c);
}

#[test]
#[should_panic(expected = "GRPC_TLS_CERT_FILE is not set")]
fn a_compose_service_without_grpc_tls_is_rejected() {
    let mut c = compose();
    compose_service_mut(&mut c, "gateway")["environment"]
        .as_object_mut()
        .unwrap()
        .remove("GRPC_TLS_CERT_FILE");
    check_compose_tls(&c);
}

#[test]
#[should_panic(expected = "is plaintext")]
fn a_plaintext_nats_url_is_rejected() {
    let mut c = compose();
    let env = compose_service_mut(&mut c, "projection")["environment"]
        .as_object_mut()
        .unwrap();
    env.insert("NATS_URL".into(), "nats://nats:4222".into());
    env.remove("NATS_TLS_REQUIRED");
    check_compose_tls(&c);
}

#[test]
#[should_panic(expected = "is not mounted in the container")]
fn a_setting_naming_an_unmounted_file_is_rejected() {
    let mut c = compose();
    compose_service_mut(&mut c, "projection")["secrets"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["target"] != "tls.key");
    compose_loaded(&c);
}

#[test]
#[should_panic(expected = "writable: add :ro")]
fn a_writable_compose_config_mount_is_rejected() {
    let mut c = compose();
    for v in compose_service_mut(&mut c, "nats")["volumes"]
        .as_array_mut()
        .unwrap()
    {
        if let Some(text) = v.as_str().filter(|t| t.contains("accounts.conf")) {
            *v = text.trim_end_matches(":ro").into();
        }
    }
    check_compose_read_only(&c);
}

#[test]
#[should_panic(expected = "verify: true")]
fn a_nats_server_that_does_not_verify_clients_is_rejected() {
    let conf =
        read(&root().join(NATS_DIR).join("tls.conf")).replace("verify: true", "verify: false");
    check_nats_tls_block(&conf, "tls.conf");
}

#[test]
#[should_panic(expected = "does not get $NATS_PASSWORD_SEED")]
fn a_k8s_nats_server_missing_a_password_is_rejected() {
    let mut docs = k8s_docs();
    let sts = k8s_doc_mut(&mut docs, "StatefulSet", "nats");
    sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["name"] != "NATS_PASSWORD_SEED");
    check_k8s_nats_users(&docs);
}

#[test]
#[should_panic(expected = "a pod gets only its own password")]
fn a_k8s_pod_given_another_password_is_rejected() {
    let mut docs = k8s_docs();
    let deployment = k8s_doc_mut(&mut docs, "Deployment", "aggregate");
    for v in deployment["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
    {
        if v["name"] == "nats-password" {
            v["secret"]["items"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"key": "NATS_PASSWORD_ADMIN", "path": "admin"}));
        }
    }
    check_k8s_nats_users(&docs);
}

#[test]
#[should_panic(expected = "without readOnly: true")]
fn a_writable_k8s_secret_mount_is_rejected() {
    let mut docs = k8s_docs();
    let deployment = k8s_doc_mut(&mut docs, "Deployment", "runner");
    for m in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array_mut()
        .unwrap()
    {
        if m["name"] == "tls" {
            m["readOnly"] = false.into();
        }
    }
    check_k8s_read_only(&docs);
}

#[test]
#[should_panic(expected = "of Secret cart-tls-gateway (the gateway certificate")]
fn a_k8s_service_presenting_another_certificate_is_rejected() {
    let mut docs = k8s_docs();
    let deployment = k8s_doc_mut(&mut docs, "Deployment", "gateway");
    for v in deployment["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
    {
        if v["name"] == "tls" {
            v["secret"]["secretName"] = "cart-tls-runner".into();
        }
    }
    check_k8s_tls(&docs);
}
