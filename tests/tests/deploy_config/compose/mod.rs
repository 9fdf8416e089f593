//! docker-compose.yml: the whole stack on one machine. Reading it as compose does: a service's
//! environment (interpolated), volumes and secrets, the Rust services as containers, and the
//! config the NATS server reads through its mounts.
//! The checks: [`stack`] (services, ports, volumes, settings), [`security`] (users, TLS,
//! read-only mounts).

mod security;
mod stack;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::{config_arg, entries, items, read, root, s, strs, yaml};
use crate::containers::{Container, Deployment, File, Origin, load_all};
use crate::nats::{NATS_DIR, expand_includes};
use crate::services::Loaded;

pub const COMPOSE: Deployment = Deployment {
    name: "docker-compose.yml",
    unit: "service",
    read_only: ":ro, or a secret",
};

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

/// A compose service: its name and definition.
pub type Svc<'a> = (&'a String, &'a Value);

pub fn compose() -> Value {
    yaml("docker-compose.yml")
}

pub fn compose_services(c: &Value) -> Vec<Svc<'_>> {
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

pub fn compose_env(svc: &Value) -> Vec<(String, String)> {
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

/// (source, target, read-only) of every volume of a service, short or long syntax.
fn volumes(svc: &Value) -> Vec<(String, String, bool)> {
    items(&svc["volumes"])
        .map(|v| match v {
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
        })
        .collect()
}

/// (source, target) of every volume of a service.
pub fn compose_mounts(svc: &Value) -> Vec<(String, String)> {
    volumes(svc).into_iter().map(|(s, t, _)| (s, t)).collect()
}

/// The secrets of a service, by path in the container (`/run/secrets/<target>` unless the
/// target is absolute): the host file each holds.
fn secrets(c: &Value, svc: &Value, what: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
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
        out.insert(target, source);
    }
    out
}

/// Everything mounted into a compose service, by path in the container: its volumes, and its
/// secrets (always read-only).
fn compose_files(c: &Value, svc: &Value, what: &str) -> BTreeMap<String, File> {
    let mut out = BTreeMap::new();
    for (source, target, read_only) in volumes(svc) {
        let origin = Origin::Host(source);
        out.insert(target, File { origin, read_only });
    }
    for (target, source) in secrets(c, svc, what) {
        let origin = Origin::Host(source);
        out.insert(
            target,
            File {
                origin,
                read_only: true,
            },
        );
    }
    out
}

/// One service of the compose file as a container.
pub fn compose_container<'a>(c: &Value, (name, svc): Svc<'a>) -> Container<Svc<'a>> {
    let what = format!("docker-compose.yml service {name}");
    Container {
        deployment: &COMPOSE,
        files: compose_files(c, svc, &what),
        command: strs(&svc["command"]),
        env: compose_env(svc),
        what,
        at: (name, svc),
    }
}

/// The services of the compose file that run a Rust service.
pub fn compose_containers(c: &Value) -> Vec<Container<Svc<'_>>> {
    compose_services(c)
        .into_iter()
        .map(|svc| compose_container(c, svc))
        .filter(|svc| svc.identity().is_some())
        .collect()
}

/// The Rust services of the compose file, loaded from their environment.
pub fn compose_loaded(c: &Value) -> Vec<(Container<Svc<'_>>, Loaded)> {
    load_all(compose_containers(c))
}

/// The NATS server of the compose file.
fn compose_nats(c: &Value) -> Container<Svc<'_>> {
    let nats = entries(&c["services"]).find(|(n, _)| *n == "nats");
    compose_container(c, nats.expect("a nats service"))
}

/// The config compose's NATS server runs, its includes expanded through the mounts: each file
/// must be mounted read-only from deploy/nats where the server looks for it.
fn compose_nats_conf(c: &Value) -> String {
    let nats = compose_nats(c);
    let conf_path = config_arg(&nats.command);
    let dir = Path::new(&conf_path).parent().unwrap().to_path_buf();
    let read_mounted = |container: &str| -> String {
        let setting = if container == conf_path {
            "--config"
        } else {
            "include"
        };
        let m = nats.mounted_read_only(setting, container);
        let Origin::Host(source) = m.origin else {
            unreachable!("compose mounts from the host")
        };
        assert!(
            source.starts_with(&format!("./{NATS_DIR}/")),
            "{}: {container} comes from {NATS_DIR}, got {source}",
            nats.what
        );
        read(&root().join(&source))
    };
    expand_includes(&read_mounted(&conf_path), &|f| {
        read_mounted(&dir.join(f).display().to_string())
    })
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
