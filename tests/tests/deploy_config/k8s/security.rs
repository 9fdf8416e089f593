//! Kubernetes security: every Rust workload logs in to NATS as its own user with only its own
//! password mounted, NATS and gRPC run with mutual TLS from one `kubernetes.io/tls` Secret per
//! service, Secret and ConfigMap volumes are read-only and secret files readable by the pod's
//! group only. Each check also fails on manifests broken on purpose.

use serde_json::Value;

use super::{
    Doc, Source, container_env, find, k8s_container, k8s_containers, k8s_docs, k8s_files, k8s_nats,
    labels_match, workload_containers,
};
use crate::common::{items, picked, remove_where, s};
use crate::containers::{Origin, check_client_tls, check_nats_logins, check_server_tls};
use crate::nats::{ACCOUNTS_CONF, nats_users};

/// The Secret that holds the NATS users' passwords: where the NATS server gets them (each from a
/// Secret, or it refuses to start).
fn password_secret(docs: &[Doc]) -> String {
    let (sts, nats, _, _) = k8s_nats(docs);
    let what = sts.what();
    let env = container_env(docs, nats, &what);
    let mut secret = None;
    for (user, var) in nats_users() {
        assert!(
            env.iter()
                .any(|(k, _, src)| *k == var && *src == Source::Secret),
            "{what}: the server does not get ${var} (the password of {user} in {ACCOUNTS_CONF}) \
             from a Secret: it refuses to start without it"
        );
        let from = items(&nats["env"])
            .find(|e| e["name"] == *var)
            .map(|e| s(&e["valueFrom"]["secretKeyRef"]["name"]));
        secret = secret.or(from);
    }
    secret.expect("the passwords' Secret")
}

/// Every Rust workload logs in as its own user with only its own password mounted; the server
/// gets every password accounts.conf reads.
fn check_k8s_nats_users(docs: &[Doc]) {
    let secret = password_secret(docs);
    let containers = k8s_containers(docs);
    let own = |_: &str, var: &str| Origin::secret_key(&secret, var);
    let is_password = |o: &Origin| matches!(o, Origin::Key { kind, name, .. } if kind == "Secret" && *name == secret);
    check_nats_logins(&containers, &nats_users(), &own, &is_password);
    // A pod reads its own password from the mounted file only.
    for container in &containers {
        let (what, c) = (&container.what, container.at.1);
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
    }
}

#[test]
fn k8s_services_log_in_to_nats_as_their_own_users() {
    check_k8s_nats_users(&k8s_docs());
}

/// NATS runs with mutual TLS from Secret cart-tls-nats; every Rust workload presents its own
/// certificate (Secret cart-tls-<service>) to NATS and to the other services' gRPC endpoints.
fn check_k8s_tls(docs: &[Doc]) {
    let (sts, nats, conf, _) = k8s_nats(docs);
    let part = |cert: &str, file: &str| {
        let key = match file {
            "CA_FILE" => "ca.crt",
            "CERT_FILE" => "tls.crt",
            _ => "tls.key",
        };
        Origin::secret_key(&format!("cart-tls-{cert}"), key)
    };
    check_server_tls(&k8s_container(docs, (sts, nats)), &conf, &part);
    let is_nats = |host: &str| {
        find(docs, "Service", host)
            .is_some_and(|svc| labels_match(&svc.v["spec"]["selector"], sts.pod_labels()))
    };
    let containers = k8s_containers(docs);
    let checked = check_client_tls(&containers, &part, &is_nats);
    assert!(checked >= 5, "the seed Job and the four services");
    let certs = containers
        .iter()
        .filter_map(|c| c.identity())
        .map(|(_, cert)| cert);
    for cert in certs.chain(["nats"]) {
        let name = format!("cart-tls-{cert}");
        let secret = find(docs, "Secret", &name).unwrap_or_else(|| panic!("no Secret {name}"));
        assert_eq!(
            s(&secret.v["type"]),
            "kubernetes.io/tls",
            "Secret {name} is a kubernetes.io/tls Secret"
        );
    }
}

#[test]
fn k8s_nats_and_the_services_use_mutual_tls() {
    check_k8s_tls(&k8s_docs());
}

/// Secret and ConfigMap volumes are mounted read-only, and secret files are readable by the
/// pod's group only (the group the pod's fsGroup gives them: the user is not root).
fn check_k8s_read_only(docs: &[Doc]) {
    for (doc, c) in workload_containers(docs) {
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

/// The gateway decides tenants by its API keys (without them any client names its tenant), and
/// has back-office keys of its own, from a Secret.
fn check_k8s_api_keys(docs: &[Doc]) {
    let gateway = k8s_containers(docs)
        .into_iter()
        .find(|c| {
            crate::services::Service::from_command(&c.command)
                == Some(crate::services::Service::Gateway)
        })
        .expect("the gateway's container");
    let what = &gateway.what;
    let env = container_env(docs, gateway.at.1, what);
    for var in ["GATEWAY_API_KEYS", "GATEWAY_BACKOFFICE_KEYS"] {
        let set = env
            .iter()
            .any(|(k, v, src)| k == var && !v.trim().is_empty() && *src == Source::Secret);
        assert!(
            set,
            "{what}: no {var} from a Secret: any client picks its tenant"
        );
    }
}

#[test]
fn k8s_the_gateway_decides_tenants_by_its_keys() {
    check_k8s_api_keys(&k8s_docs());
}

/// The runner signs each order's validation URL and the gateway checks it, with one key from a
/// Secret: without it anyone who knows an order can hold its cart; with two different ones
/// every purchase is refused.
fn check_k8s_validation_key(docs: &[Doc]) {
    use crate::services::Service;
    let key_of = |service: Service, var: &str| {
        let c = k8s_containers(docs)
            .into_iter()
            .find(|c| Service::from_command(&c.command) == Some(service))
            .unwrap_or_else(|| panic!("the {service:?} container"));
        let env = container_env(docs, c.at.1, &c.what);
        let found = env
            .into_iter()
            .find(|(k, v, src)| k == var && !v.trim().is_empty() && *src == Source::Secret);
        found
            .unwrap_or_else(|| panic!("{}: no {var} from a Secret", c.what))
            .1
    };
    let runner = key_of(Service::Runner, "MERCHANT_VALIDATION_KEY");
    let gateway = key_of(Service::Gateway, "GATEWAY_VALIDATION_KEY");
    assert_eq!(
        runner, gateway,
        "the runner signs with another validation key than the gateway checks"
    );
}

#[test]
fn k8s_the_runner_and_the_gateway_share_the_validation_key() {
    check_k8s_validation_key(&k8s_docs());
}

// The checks above fail on broken manifests, with a message that says what is wrong.

#[test]
#[should_panic(expected = "no MERCHANT_VALIDATION_KEY from a Secret")]
fn a_k8s_runner_that_does_not_sign_validation_urls_is_rejected() {
    let docs = with_container("Deployment", "runner", |c| {
        remove_where(&mut c["env"], |e| e["name"] == "MERCHANT_VALIDATION_KEY");
    });
    check_k8s_validation_key(&docs);
}

#[test]
#[should_panic(expected = "no GATEWAY_BACKOFFICE_KEYS from a Secret")]
fn a_k8s_gateway_without_back_office_keys_is_rejected() {
    let docs = with_container("Deployment", "gateway", |c| {
        remove_where(&mut c["env"], |e| e["name"] == "GATEWAY_BACKOFFICE_KEYS");
    });
    check_k8s_api_keys(&docs);
}

/// The manifests with the pod template of workload `kind` `name` broken by `edit`.
fn with_pod(kind: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Vec<Doc> {
    let mut docs = k8s_docs();
    let doc = docs
        .iter_mut()
        .find(|d| d.kind() == kind && d.name() == name);
    edit(&mut doc.unwrap_or_else(|| panic!("no {kind} {name}")).v["spec"]["template"]["spec"]);
    docs
}

/// The manifests with the (first) container of workload `kind` `name` broken by `edit`.
fn with_container(kind: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Vec<Doc> {
    with_pod(kind, name, |pod| edit(&mut pod["containers"][0]))
}

/// The manifests with each item named `item` of the list at `list` (a JSON pointer into the
/// pod template of workload `kind` `name`, such as `/volumes`) broken by `edit`.
fn with_named(
    kind: &str,
    name: &str,
    list: &str,
    item: &str,
    edit: impl FnMut(&mut Value),
) -> Vec<Doc> {
    with_pod(kind, name, |pod| {
        let items = pod
            .pointer_mut(list)
            .unwrap_or_else(|| panic!("{kind} {name} has no {list}"));
        picked(items, |v| v["name"] == item).for_each(edit);
    })
}

#[test]
#[should_panic(expected = "does not get $NATS_PASSWORD_SEED")]
fn a_k8s_nats_server_missing_a_password_is_rejected() {
    let docs = with_container("StatefulSet", "nats", |c| {
        remove_where(&mut c["env"], |e| e["name"] == "NATS_PASSWORD_SEED");
    });
    check_k8s_nats_users(&docs);
}

#[test]
#[should_panic(expected = "a pod gets only its own password")]
fn a_k8s_pod_given_another_password_is_rejected() {
    let docs = with_named(
        "Deployment",
        "aggregate",
        "/volumes",
        "nats-password",
        |v| {
            let admin = serde_json::json!({"key": "NATS_PASSWORD_ADMIN", "path": "admin"});
            v["secret"]["items"].as_array_mut().unwrap().push(admin);
        },
    );
    check_k8s_nats_users(&docs);
}

#[test]
#[should_panic(expected = "without readOnly: true")]
fn a_writable_k8s_secret_mount_is_rejected() {
    let mounts = "/containers/0/volumeMounts";
    let docs = with_named("Deployment", "runner", mounts, "tls", |m| {
        m["readOnly"] = false.into();
    });
    check_k8s_read_only(&docs);
}

#[test]
#[should_panic(expected = "of Secret cart-tls-gateway (the gateway certificate")]
fn a_k8s_service_presenting_another_certificate_is_rejected() {
    let docs = with_named("Deployment", "gateway", "/volumes", "tls", |v| {
        v["secret"]["secretName"] = "cart-tls-runner".into();
    });
    check_k8s_tls(&docs);
}
