//! The Kubernetes network policies: deny by default, and allow exactly the flows of the
//! architecture between the workloads, the storefront API from anywhere, metrics for
//! Prometheus, and HTTPS to public addresses for the runner alone.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Doc, k8s_docs};
use crate::common::{items, s, strs};

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
pub(super) struct Peer<'a> {
    pub labels: &'a Value,
    pub same_namespace: bool,
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
pub(super) fn policies_allow(policies: &[&Doc], from: Peer<'_>, to: Peer<'_>, port: u64) -> bool {
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
        .map(|d| (d.name(), d.pod_labels(), d.container_ports()))
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
