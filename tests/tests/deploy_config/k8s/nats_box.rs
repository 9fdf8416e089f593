//! deploy/k8s/nats-box.yaml, the operators' `nats` CLI pod applied on demand: it runs under the
//! same restrictions as the platform's pods, holds exactly the admin and system passwords and
//! the admin certificate (read-only, group-readable), saves one context per user against the
//! NATS Service the services dial, and its network policies let it reach NATS's client port
//! and nothing else, without changing any flow of the platform.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::network::{Peer, policies_allow};
use super::{Doc, K8S, container_env, find, k8s_docs, k8s_files};
use crate::common::{items, root, s, strs, yaml, yaml_docs};
use crate::nats::nats_users;
use crate::nats_cli::commands;

pub const NATS_BOX: &str = "nats-box.yaml";

/// The documents of nats-box.yaml.
pub fn nats_box_docs() -> Vec<Doc> {
    yaml_docs(&root().join(K8S).join(NATS_BOX))
        .into_iter()
        .map(|v| Doc {
            file: NATS_BOX.to_owned(),
            v,
        })
        .collect()
}

/// The `nats context save NAME ... --user USER --password "$(cat FILE)"` commands of the pod's
/// script: context → (user, password file, server).
fn saved_contexts(script: &str) -> BTreeMap<String, (String, String, String)> {
    let mut out = BTreeMap::new();
    for c in commands(NATS_BOX, script) {
        let [context, save, name, ..] = c.words.as_slice() else {
            continue;
        };
        if (context.as_str(), save.as_str()) != ("context", "save") {
            continue;
        }
        let flag = |f: &str| c.flags.get(f).cloned().unwrap_or_default();
        let file = flag("--password")
            .trim_start_matches("$(cat ")
            .trim_end_matches(')')
            .to_owned();
        out.insert(name.clone(), (flag("--user"), file, flag("--server")));
    }
    out
}

fn network_policies(docs: &[Doc]) -> Vec<&Doc> {
    docs.iter()
        .filter(|d| d.kind() == "NetworkPolicy")
        .collect()
}

fn check_nats_box(platform: &[Doc], boxed: &[Doc]) {
    let namespace = s(&yaml(&format!("{K8S}/kustomization.yaml"))["namespace"]);
    for doc in boxed {
        assert_eq!(
            s(&doc.v["metadata"]["namespace"]),
            namespace,
            "{}: applied with kubectl apply -f, so it names its namespace itself",
            doc.what()
        );
    }
    let pod = find(boxed, "Pod", "nats-box").expect("a Pod nats-box");
    let what = pod.what();
    let spec = pod.pod();
    assert_eq!(
        spec["automountServiceAccountToken"],
        Value::Bool(false),
        "{what}"
    );
    assert_eq!(s(&spec["restartPolicy"]), "Never", "{what}");
    let deadline = spec["activeDeadlineSeconds"].as_u64().unwrap_or(0);
    assert!(
        (1..=86_400).contains(&deadline),
        "{what}: stops by itself within a day (activeDeadlineSeconds), got {deadline}"
    );
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"],
        Value::Bool(true),
        "{what}"
    );
    assert_eq!(
        s(&spec["securityContext"]["seccompProfile"]["type"]),
        "RuntimeDefault",
        "{what}"
    );
    let containers: Vec<&Value> = items(&spec["containers"]).collect();
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{what}");
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"], "{what}");
    assert!(c["ports"].is_null(), "{what}: listens on nothing");

    // Exactly the admin and system passwords and the admin certificate, read-only.
    let all: Vec<Doc> = platform.iter().chain(boxed).cloned().collect();
    let files = k8s_files(&all, pod, c, &what);
    let users = nats_users();
    let mut password_files = BTreeMap::new();
    let mut mounted_keys = BTreeSet::new();
    for (path, f) in &files {
        assert!(f.read_only, "{what}: {path} is mounted writable");
        assert!(
            f.mode & 0o007 == 0 && spec["securityContext"]["fsGroup"].is_u64(),
            "{what}: {path} (mode {:o}) is readable by other users of the node",
            f.mode
        );
        mounted_keys.insert((f.name.clone(), f.key.clone()));
        if f.name == "nats-users" {
            let user = users
                .iter()
                .find(|(_, var)| **var == f.key)
                .map(|(u, _)| u.clone())
                .unwrap_or_else(|| panic!("{what}: {} is no user's password", f.key));
            password_files.insert(user, path.clone());
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("nats-users", users["admin"].as_str()),
        ("nats-users", users["system"].as_str()),
        ("cart-tls-admin", "tls.crt"),
        ("cart-tls-admin", "tls.key"),
        ("cart-tls-admin", "ca.crt"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(mounted_keys, want, "{what}: mounts exactly these keys");
    let tls = find(platform, "Secret", "cart-tls-admin").expect("Secret cart-tls-admin");
    assert_eq!(s(&tls.v["type"]), "kubernetes.io/tls");

    // One context per user, each reading its own mounted password, against the NATS Service.
    let script = strs(&c["command"]).join("\n");
    let contexts = saved_contexts(&script);
    let users_of: BTreeSet<&str> = contexts.values().map(|(u, _, _)| u.as_str()).collect();
    assert_eq!(
        users_of,
        BTreeSet::from(["admin", "system"]),
        "{contexts:?}"
    );
    let common = find(platform, "ConfigMap", "cart-common").expect("ConfigMap cart-common");
    let nats_url = s(&common.v["data"]["NATS_URL"]);
    for (name, (user, file, server)) in &contexts {
        assert_eq!(
            Some(file),
            password_files.get(user),
            "{what}: context {name} ({user}) reads {file}"
        );
        assert_eq!(*server, nats_url, "{what}: context {name} dials NATS_URL");
        for flag in ["--tlsca", "--tlscert", "--tlskey"] {
            assert!(script.contains(flag), "{what}: no {flag}");
        }
    }
    for (path, f) in &files {
        if f.name == "cart-tls-admin" {
            assert!(script.contains(path.as_str()), "{what}: {path} is not used");
        }
    }
    let env = container_env(&all, c, &what);
    assert!(
        env.iter().all(|(k, _, _)| !k.starts_with("NATS_")),
        "{what}: NATS_* variables would override the contexts' settings"
    );

    // Network: nats-box reaches NATS's client port only; the platform's flows are unchanged.
    let workloads: Vec<(&Value, Vec<u64>)> = platform
        .iter()
        .filter(|d| d.is_workload())
        .map(|d| (d.pod_labels(), d.container_ports()))
        .collect();
    let (before, after) = (network_policies(platform), network_policies(&all));
    let inside = |labels| Peer {
        labels,
        same_namespace: true,
    };
    let name_of = |labels: &Value| s(&labels["app.kubernetes.io/name"]);
    let mut reached = BTreeSet::new();
    for (to, ports) in &workloads {
        for &port in ports {
            if policies_allow(&after, inside(pod.pod_labels()), inside(to), port) {
                reached.insert((name_of(to), port));
            }
            for (from, _) in &workloads {
                assert_eq!(
                    policies_allow(&before, inside(from), inside(to), port),
                    policies_allow(&after, inside(from), inside(to), port),
                    "{NATS_BOX} changes the flow {} -> {}:{port}",
                    name_of(from),
                    name_of(to)
                );
            }
        }
    }
    assert_eq!(
        reached,
        BTreeSet::from([("nats".to_owned(), 4222)]),
        "nats-box reaches"
    );
}

#[test]
fn nats_box_reaches_nats_as_admin_and_system_and_nothing_else() {
    check_nats_box(&k8s_docs(), &nats_box_docs());
}

// The check fails on a broken nats-box.

#[test]
#[should_panic(expected = "mounts exactly these keys")]
fn a_nats_box_holding_a_services_password_is_rejected() {
    let mut boxed = nats_box_docs();
    let pod = boxed.iter_mut().find(|d| d.kind() == "Pod").unwrap();
    for v in crate::common::picked(&mut pod.v["spec"]["volumes"], |v| v["name"] == "users") {
        let extra = serde_json::json!({"key": "NATS_PASSWORD_AGGREGATE", "path": "aggregate"});
        v["secret"]["items"].as_array_mut().unwrap().push(extra);
    }
    check_nats_box(&k8s_docs(), &boxed);
}

#[test]
#[should_panic(expected = "nats-box reaches")]
fn a_nats_box_reaching_the_services_is_rejected() {
    let mut boxed = nats_box_docs();
    let policy = boxed
        .iter_mut()
        .find(|d| d.kind() == "NetworkPolicy" && d.name() == "nats-box")
        .unwrap();
    let egress = &mut policy.v["spec"]["egress"][0];
    egress["to"][0]["podSelector"] = serde_json::json!({});
    egress.as_object_mut().unwrap().remove("ports");
    let open = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "aggregate-from-nats-box", "namespace": "cart"},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "aggregate"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats-box"}}}]}],
        },
    });
    boxed.push(Doc {
        file: NATS_BOX.to_owned(),
        v: open,
    });
    check_nats_box(&k8s_docs(), &boxed);
}
