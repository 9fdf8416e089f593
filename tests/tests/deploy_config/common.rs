//! Reading the deployment files (YAML with merge keys, JSON) as JSON values, the accessors the
//! checks use on them, and the edits the tests make to break a deployment on purpose.

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use tests::workspace_root as root;

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What follows `prefix` on each line of the repository's Dockerfile that starts with it, in
/// order (`"USER "` gives the user of every `USER` instruction).
pub fn dockerfile_after(prefix: &str) -> Vec<String> {
    read(&root().join("Dockerfile"))
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(str::to_owned)
        .collect()
}

/// Every document of a YAML file (empty ones dropped), merge keys (`<<: *anchor`) applied, as
/// JSON values.
pub fn yaml_docs(path: &Path) -> Vec<Value> {
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

/// The one document of a YAML file, by path from the workspace root.
pub fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(&root().join(rel));
    assert_eq!(docs.len(), 1, "{rel} holds exactly one YAML document");
    docs.remove(0)
}

/// Every file below `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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

/// The files below `rel` (from the workspace root) whose extension is one of `extensions`.
pub fn files_with(rel: &str, extensions: &[&str]) -> Vec<PathBuf> {
    files_under(&root().join(rel))
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
        })
        .collect()
}

/// A file's name, without its directory.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A scalar as text (`null` as empty).
pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A list of scalars (or one scalar) as text.
pub fn strs(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(s).collect(),
        Value::Null => Vec::new(),
        other => vec![s(other)],
    }
}

pub fn entries(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object().into_iter().flatten()
}

pub fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

/// The value of `key` in an environment (the last one set, as a process sees it).
pub fn env_get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// An environment from literal pairs.
pub fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The file a NATS server's arguments run (`--config FILE` or `-c FILE`).
pub fn config_arg(args: &[String]) -> String {
    let at = args
        .iter()
        .position(|a| a == "--config" || a == "-c")
        .expect("nats runs with --config");
    args[at + 1].clone()
}

/// The items of the JSON array `list` that `pick` selects, to be broken on purpose.
pub fn picked(list: &mut Value, pick: impl Fn(&Value) -> bool) -> impl Iterator<Item = &mut Value> {
    list.as_array_mut()
        .expect("a list")
        .iter_mut()
        .filter(move |v| pick(v))
}

/// Removes the items of the JSON array `list` that `pick` selects.
pub fn remove_where(list: &mut Value, pick: impl Fn(&Value) -> bool) {
    list.as_array_mut().expect("a list").retain(|v| !pick(v));
}

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
