//! The shipped server configs exist, keep the durability setting, and parse with the real
//! server (`nats-server -t`).

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats")
}

const CONFIGS: &[&str] = &[
    "nats.conf",
    "cluster-1.conf",
    "cluster-2.conf",
    "cluster-3.conf",
];

#[test]
fn configs_exist_with_jetstream_and_fsync_always() {
    for name in CONFIGS {
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
    for name in &CONFIGS[1..] {
        let text = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
        assert!(text.contains("cluster"), "{name} is a cluster member");
        for peer in ["nats-1", "nats-2", "nats-3"] {
            assert!(text.contains(peer), "{name} routes to {peer}");
        }
    }
}

#[test]
fn configs_pass_the_servers_own_config_test() {
    let bin = match shared::test_support::find_server_binary() {
        Ok(bin) => bin,
        Err(why) => {
            assert!(
                std::env::var("CART_REQUIRE_NATS").as_deref() != Ok("1"),
                "CART_REQUIRE_NATS=1 but {why}"
            );
            eprintln!("!!! SKIPPING nats-server -t config check: {why}");
            return;
        }
    };
    for name in CONFIGS {
        let path = deploy_dir().join(name);
        let out = Command::new(&bin)
            .arg("--config")
            .arg(&path)
            .arg("-t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name} rejected by nats-server -t:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
