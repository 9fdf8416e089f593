//! The shipped server configs exist, keep the durability setting, and parse with the real
//! server (`nats-server -t`).

use std::path::PathBuf;

use shared::test_support::config_check::assert_accepted;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats")
}

const CONFIGS: &[&str] = &["nats.conf", "cluster.conf"];

/// What `scripts/dev --cluster` gives member 1 of deploy/nats/cluster.conf (every member's
/// values come from the environment).
const CLUSTER_ENV: &[(&str, &str)] = &[
    ("NATS_SERVER_NAME", "nats-1"),
    ("NATS_LISTEN", "127.0.0.1:4222"),
    ("NATS_HTTP", "127.0.0.1:8222"),
    ("NATS_CLUSTER_LISTEN", "127.0.0.1:6222"),
    ("NATS_ROUTE_1", "nats-route://127.0.0.1:6222"),
    ("NATS_ROUTE_2", "nats-route://127.0.0.1:6223"),
    ("NATS_ROUTE_3", "nats-route://127.0.0.1:6224"),
    ("NATS_STORE_DIR", "/tmp/nats-1"),
    ("NATS_PID_FILE", "/tmp/nats-1/nats.pid"),
];

#[test]
fn configs_exist_with_jetstream_and_fsync_always() {
    // cluster.conf's server settings are in member.conf, which it includes.
    for name in ["nats.conf", "member.conf"] {
        let path = deploy_dir().join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let active: String = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(active.contains("jetstream"), "{name} enables jetstream");
        assert!(
            active.contains("sync_interval: always"),
            "{name} fsyncs every write"
        );
    }
    let text = std::fs::read_to_string(deploy_dir().join("cluster.conf")).unwrap();
    assert!(
        text.contains("cluster {") && text.contains("include \"routes.conf\""),
        "cluster.conf is a cluster member"
    );
    let routes = std::fs::read_to_string(deploy_dir().join("routes.conf")).unwrap();
    for route in ["$NATS_ROUTE_1", "$NATS_ROUTE_2", "$NATS_ROUTE_3"] {
        assert!(routes.contains(route), "routes.conf routes to {route}");
    }
}

#[test]
fn configs_pass_the_servers_own_config_test() {
    let Some(bin) = shared::test_support::server_binary_or_skip() else {
        return;
    };
    // The users' passwords come from the environment, as every deployment provides them.
    let passwords = shared::test_support::Accounts::generate().server_env();
    for name in CONFIGS {
        let env = CLUSTER_ENV
            .iter()
            .map(|&(k, v)| (k, v))
            .chain(passwords.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_accepted(&bin, &deploy_dir().join(name), env, name);
    }
}
