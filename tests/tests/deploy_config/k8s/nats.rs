//! The NATS cluster on Kubernetes: its ConfigMap is deploy/nats byte for byte, and the
//! StatefulSet runs a durable three-member JetStream cluster the real server accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::{Source, args, container_env, container_port, find, k8s_docs, k8s_nats};
use crate::common::{config_arg, entries, file_name, items, port_of, read, root, s, strs};
use crate::nats::{
    NATS_DIR, assert_durable_nats_conf, assert_server_accepts, conf_value,
    nats_includes_transitive, resolve_conf,
};

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
    let run = file_name(Path::new(&config_arg(&args(c))));
    assert_eq!(
        run, "cluster-tls.conf",
        "{what}: the servers run {NATS_DIR}/cluster-tls.conf (the member of cluster.conf with \
         TLS for clients and routes)"
    );
    let mut needed = nats_includes_transitive(&run);
    needed.insert(run);
    assert!(
        ["member.conf", "routes.conf", "accounts.conf", "tls.conf"]
            .iter()
            .all(|f| needed.contains(*f)),
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
    // The routes are mutual TLS (cluster-tls.conf) admitting a member by a route URL's host in
    // its certificate: the deploy README's certificate command gives the nats one every host.
    let readme = read(&root().join("deploy/README.md"));
    let lines: Vec<&str> = readme.lines().collect();
    let certs = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("certs --out") && l.ends_with('\\'))
        .map(|(i, l)| format!("{l} {}", lines.get(i + 1).unwrap_or(&"")))
        .find(|command| command.contains("--nats-hosts"))
        .expect(
            "deploy/README.md makes the Kubernetes certificates with `certs --out .. --nats-hosts ..`",
        );
    for i in 0..replicas {
        let host = format!("{}-{i}.{headless}", sts.name());
        let route = format!("{host}:");
        assert!(conf.contains(&route), "{what}: no route to {route}");
        assert!(
            certs.contains(&host),
            "deploy/README.md's `aggregate certs` command must give the nats certificate {host} \
             (--nats-hosts): the routes admit a member by it: {certs}"
        );
    }

    // Lame duck on stop: preStop signals through the pid file the config writes.
    let pid_file = conf_value(&conf, "pid_file").expect("pid_file");
    let pre_stop = strs(&c["lifecycle"]["preStop"]["exec"]["command"]).join(" ");
    assert!(
        pre_stop.contains(&format!("ldm={pid_file}")),
        "{what}: preStop enters lame duck mode through {pid_file}: {pre_stop}"
    );

    // The real server accepts every file of the ConfigMap with that environment, the
    // certificate paths pointing at stand-ins of the mounted Secret (checked by
    // k8s_nats_and_the_services_use_mutual_tls).
    let files = entries(&map.v["data"]).map(|(key, text)| (key.clone(), s(text)));
    let run = file_name(Path::new(&config_arg(&args(c))));
    assert_server_accepts(files, &run, env, "Kubernetes");
}
