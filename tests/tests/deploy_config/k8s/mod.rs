//! deploy/k8s (kustomize): reading the manifests, a container's environment and files as the
//! kubelet builds them, and the NATS StatefulSet with the config it runs. The checks:
//! [`workloads`] (manifests, probes, settings, selectors), [`nats`] (the NATS cluster),
//! [`network`] (network policies), [`security`] (users, TLS, read-only mounts),
//! [`nats_box`] (the operators' on-demand `nats` CLI pod).

mod nats;
mod nats_box;
mod network;
mod security;
mod workloads;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common::{config_arg, entries, items, root, s, strs, yaml, yaml_docs};
use crate::containers::{Container, Deployment, File, Origin, load_all};
use crate::nats::expand_includes;
use crate::services::Loaded;

pub const K8S: &str = "deploy/k8s";

/// Manifests of deploy/k8s applied by hand when needed, not by the kustomization.
pub const ON_DEMAND: &[&str] = &["nats-box.yaml"];

pub const KUBERNETES: Deployment = Deployment {
    name: K8S,
    unit: "pod",
    read_only: "readOnly: true",
};

#[derive(Clone)]
pub struct Doc {
    pub file: String,
    pub v: Value,
}

impl Doc {
    pub fn kind(&self) -> &str {
        self.v["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.v["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn what(&self) -> String {
        format!("{}: {} {}", self.file, self.kind(), self.name())
    }

    pub fn is_workload(&self) -> bool {
        matches!(self.kind(), "Deployment" | "StatefulSet" | "Job")
    }

    /// The pod spec: a Pod's own, or a workload's template.
    pub fn pod(&self) -> &Value {
        match self.kind() {
            "Pod" => &self.v["spec"],
            _ => &self.v["spec"]["template"]["spec"],
        }
    }

    pub fn pod_labels(&self) -> &Value {
        match self.kind() {
            "Pod" => &self.v["metadata"]["labels"],
            _ => &self.v["spec"]["template"]["metadata"]["labels"],
        }
    }

    /// The ports the pod's containers listen on.
    pub fn container_ports(&self) -> Vec<u64> {
        items(&self.pod()["containers"])
            .flat_map(|c| items(&c["ports"]).filter_map(|p| p["containerPort"].as_u64()))
            .collect()
    }
}

pub fn k8s_docs() -> Vec<Doc> {
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

pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| d.kind() == kind && d.name() == name)
}

/// Every container of every workload, with its workload.
pub fn workload_containers(docs: &[Doc]) -> impl Iterator<Item = (&Doc, &Value)> {
    docs.iter()
        .filter(|d| d.is_workload())
        .flat_map(|d| items(&d.pod()["containers"]).map(move |c| (d, c)))
}

pub fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Where a container's variable comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Literal,
    Field(String),
    Secret,
    ConfigMap,
}

/// A container's environment as the kubelet builds it: `envFrom` first (a later source winning),
/// then `env` (which wins), references to Secrets/ConfigMaps resolved from the manifests,
/// `$(VAR)` expanded.
pub fn container_env(docs: &[Doc], c: &Value, what: &str) -> Vec<(String, String, Source)> {
    let mut env: Vec<(String, String, Source)> = Vec::new();
    let set = |env: &mut Vec<(String, String, Source)>, name: String, value, source| {
        env.retain(|(k, _, _)| *k != name);
        env.push((name, value, source));
    };
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
            set(&mut env, k, v, source.clone());
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
        set(&mut env, name, value, source);
    }
    env
}

pub fn raw_env_value<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    items(&c["env"])
        .find(|v| v["name"] == name)
        .and_then(|v| v["value"].as_str())
}

pub fn container_port(c: &Value, port: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(name) => items(&c["ports"])
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

/// A file a Kubernetes container sees through a Secret or ConfigMap volume.
#[derive(Debug, Clone)]
pub struct K8sFile {
    pub kind: String,
    pub name: String,
    pub key: String,
    pub read_only: bool,
    pub mode: u64,
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
pub fn k8s_files(docs: &[Doc], doc: &Doc, c: &Value, what: &str) -> BTreeMap<String, K8sFile> {
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

/// A workload's container, and the workload.
pub type At<'a> = (&'a Doc, &'a Value);

/// One container of a workload, its environment and Secret and ConfigMap files resolved.
pub fn k8s_container<'a>(docs: &[Doc], (doc, c): At<'a>) -> Container<At<'a>> {
    let what = format!("{} container {}", doc.what(), s(&c["name"]));
    let env = container_env(docs, c, &what);
    let files = k8s_files(docs, doc, c, &what).into_iter().map(|(path, f)| {
        let origin = Origin::Key {
            kind: f.kind,
            name: f.name,
            key: f.key,
        };
        let read_only = f.read_only;
        (path, File { origin, read_only })
    });
    Container {
        deployment: &KUBERNETES,
        env: env.into_iter().map(|(k, v, _)| (k, v)).collect(),
        files: files.collect(),
        command: strs(&c["command"]),
        what,
        at: (doc, c),
    }
}

/// The workloads' containers that run a Rust service.
pub fn k8s_containers(docs: &[Doc]) -> Vec<Container<At<'_>>> {
    workload_containers(docs)
        .filter(|(_, c)| crate::services::identity(&strs(&c["command"])).is_some())
        .map(|at| k8s_container(docs, at))
        .collect()
}

/// The Rust services' containers, loaded from their resolved environment.
pub fn k8s_loaded(docs: &[Doc]) -> Vec<(Container<At<'_>>, Loaded)> {
    load_all(k8s_containers(docs))
}

/// The arguments a container runs with (`command` and `args`).
pub fn args(c: &Value) -> Vec<String> {
    [strs(&c["command"]), strs(&c["args"])].concat()
}

/// The NATS StatefulSet, its server container, the config the container runs (from the
/// ConfigMap mounted where `--config` points, its includes expanded from the same ConfigMap),
/// and the ConfigMap.
pub fn k8s_nats(docs: &[Doc]) -> (&Doc, &Value, String, &Doc) {
    let is_nats = |c: &Value| s(&c["image"]).starts_with("nats:");
    let sts = docs
        .iter()
        .find(|d| d.kind() == "StatefulSet" && items(&d.pod()["containers"]).any(is_nats))
        .expect("NATS runs as a StatefulSet");
    let what = sts.what();
    let c = items(&sts.pod()["containers"])
        .find(|c| is_nats(c))
        .unwrap();
    let conf_path = config_arg(&args(c));
    let conf_path = Path::new(&conf_path);
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
