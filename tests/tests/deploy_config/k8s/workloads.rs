//! The Kubernetes manifests and workloads: the kustomization lists them all, every workload has
//! resources, probes on the service's ops port and the time to drain, the services' environment
//! loads as the binaries load it (production-grade: replicated streams, a node id per pod), and
//! Services, budgets and StatefulSets select workloads that exist.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{
    Doc, K8S, ON_DEMAND, Source, container_env, container_port, find, k8s_docs, k8s_loaded,
    labels_match, raw_env_value, workload_containers,
};
use crate::common::{file_name, files_with, items, port_of, s, strs, yaml};
use crate::containers::assert_consistent;
use crate::services::Service;

/// A workload's time between SIGTERM and SIGKILL.
fn grace_period(doc: &Doc) -> u64 {
    doc.pod()["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30)
}

/// The Deployments and StatefulSets (the workloads that keep running).
fn long_running(docs: &[Doc]) -> Vec<&Doc> {
    docs.iter()
        .filter(|d| matches!(d.kind(), "Deployment" | "StatefulSet"))
        .collect()
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = yaml(&format!("{K8S}/kustomization.yaml"));
    let listed: BTreeSet<String> = strs(&kustomization["resources"]).into_iter().collect();
    let on_disk: BTreeSet<String> = files_with(K8S, &["yaml", "yml"])
        .iter()
        .map(|p| file_name(p))
        .filter(|f| f != "kustomization.yaml" && !ON_DEMAND.contains(&f.as_str()))
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
    assert!(long_running(&docs).len() >= 5, "NATS and the four services");
    for doc in docs.iter().filter(|d| d.is_workload()) {
        let grace = grace_period(doc);
        assert!(
            grace >= 30,
            "{}: terminationGracePeriodSeconds {grace} < 30",
            doc.what()
        );
    }
    for (doc, c) in workload_containers(&docs) {
        let what = format!("{} container {}", doc.what(), s(&c["name"]));
        let r = &c["resources"];
        for (section, key) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                !r[section][key].is_null(),
                "{what}: resources.{section}.{key} is missing"
            );
        }
        if doc.kind() == "Job" {
            continue;
        }
        for probe in ["readinessProbe", "livenessProbe"] {
            assert!(c[probe]["httpGet"].is_object(), "{what}: no HTTP {probe}");
        }
    }
    for (container, l) in &loaded {
        let (doc, c) = container.at;
        let what = doc.what();
        if doc.kind() == "Job" {
            continue;
        }
        for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(s(&get["path"]), path, "{what}: {probe} path");
            assert_eq!(
                container_port(c, &get["port"]),
                Some(l.ops_port()),
                "{what}: {probe} must hit the ops port the service listens on"
            );
        }
        let grace = Duration::from_secs(grace_period(doc));
        l.assert_serves(grace, "terminationGracePeriodSeconds", &what);
        l.assert_shopper_pages(&what);
    }
    for service in Service::ALL {
        assert!(
            loaded
                .iter()
                .any(|(c, l)| c.at.0.kind() != "Job" && l.service() == service),
            "{K8S} runs no {service:?}"
        );
    }
}

#[test]
fn k8s_env_is_known_to_the_code_and_production_grade() {
    let docs = k8s_docs();
    let loaded = k8s_loaded(&docs);
    assert_consistent(&loaded, K8S);
    for (c, l) in &loaded {
        assert_eq!(
            l.streams().replicas,
            3,
            "{}: production streams are replicated on all three NATS servers",
            c.what
        );
    }
    // Aggregate nodes: a unique node id per pod and an address the other pods can dial.
    for (doc, c) in workload_containers(&docs) {
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

#[test]
fn k8s_services_and_budgets_select_workloads() {
    let docs = k8s_docs();
    let workloads = long_running(&docs);
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
