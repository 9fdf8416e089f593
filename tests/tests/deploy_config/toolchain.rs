//! The Rust version the workspace claims is true: `rust-version` (in the root Cargo.toml, which
//! every crate inherits) is at least what every locked dependency built on this platform
//! declares, and the Dockerfile builds with a toolchain at least that new. A dependency update
//! that needs a newer compiler fails here instead of on a user's older toolchain.

use std::process::Command;

use serde_json::Value;

use crate::common::{dockerfile_after, root};

type Version = (u32, u32);

fn version(s: &str) -> Version {
    let mut parts = s
        .split('.')
        .map(|p| p.parse::<u32>().expect("a numeric Rust version"));
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

fn cargo(args: &[&str]) -> String {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args(args)
        .current_dir(root())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The newest `rust-version` among the packages the lock resolves for `host` (normal, build and
/// dev dependencies), with the package that declares it.
fn newest_required(metadata: &Value) -> (Version, String) {
    let in_graph: std::collections::HashSet<&str> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("a resolve graph")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| !p["source"].is_null() && in_graph.contains(p["id"].as_str().unwrap_or("")))
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((
                version(v),
                format!("{} {}", p["name"].as_str()?, p["version"].as_str()?),
            ))
        })
        .max()
        .expect("some dependency declares a rust-version")
}

#[test]
fn rust_version_covers_every_locked_dependency_and_the_image_builds_with_it() {
    let host = cargo(&["-vV"]);
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("cargo -vV names the host");
    let metadata: Value = serde_json::from_str(&cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--offline",
        "--filter-platform",
        host,
    ]))
    .expect("cargo metadata is JSON");
    let members: Vec<&Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].is_null())
        .collect();
    let claimed = members
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("?");
            let v = p["rust_version"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} inherits no rust-version"));
            version(v)
        })
        .min()
        .expect("workspace members");
    let (needed, by) = newest_required(&metadata);
    assert!(
        claimed >= needed,
        "rust-version {claimed:?} is older than {by} needs ({needed:?}): raise it in Cargo.toml"
    );

    let image = dockerfile_after("ARG RUST_VERSION=")
        .into_iter()
        .next()
        .expect("the Dockerfile pins RUST_VERSION");
    assert!(
        version(image.trim()) >= claimed,
        "the image's Rust {image} is older than the workspace's rust-version"
    );
}

#[test]
fn an_older_claim_than_a_dependency_needs_is_found() {
    let metadata = serde_json::json!({
        "resolve": {"nodes": [{"id": "a"}, {"id": "b"}]},
        "packages": [
            {"id": "a", "name": "a", "version": "1.0.0", "source": "registry", "rust_version": "1.70"},
            {"id": "b", "name": "b", "version": "2.0.0", "source": "registry", "rust_version": "1.89"},
            {"id": "c", "name": "c", "version": "3.0.0", "source": "registry", "rust_version": "1.99"}
        ]
    });
    // `c` is not in the graph for this platform, so it does not count.
    assert_eq!(newest_required(&metadata), ((1, 89), "b 2.0.0".into()));
    assert!(version("1.88") < newest_required(&metadata).0);
}
