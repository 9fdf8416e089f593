//! The compose stack: every service is there and waits for what it needs, the gateway and the
//! mock provider are published, NATS keeps its JetStream store on a volume and fsyncs, and the
//! Rust services' environment loads as the binaries load it, consistent across the services.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::{
    COMPOSE_SERVICES, compose, compose_duration, compose_env, compose_loaded, compose_mounts,
    compose_nats_conf, compose_services, depends_on, interpolate,
};
use crate::common::{config_arg, dockerfile_after, entries, env, env_get, port_of, root, s, strs};
use crate::containers::assert_consistent;
use crate::monitoring::promql::{check_expr, known_metrics, selectors};
use crate::nats::{assert_durable_nats_conf, conf_value};
use crate::services::{Loaded, Service};

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
    let exposes = dockerfile_after("EXPOSE ");
    let exposed: Vec<&str> = exposes.iter().flat_map(|l| l.split_whitespace()).collect();
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
    let conf_path = config_arg(&strs(&nats["command"]));
    let mounts = compose_mounts(nats);
    let (source, _) = mounts
        .iter()
        .find(|(_, target)| *target == conf_path)
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
    for (container, l) in &loaded {
        let (name, svc) = container.at;
        let env = &container.env;

        // Traces go to a collector that is part of the stack, over OTLP/gRPC.
        let otlp = env_get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
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

        if container.command.iter().any(|a| a == "seed-catalog") {
            continue;
        }
        // Long-running services: reachable, drained on stop, health-checked on their ops port.
        let grace = compose_duration(&s(&svc["stop_grace_period"]));
        l.assert_serves(grace, "stop_grace_period", &container.what);
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
