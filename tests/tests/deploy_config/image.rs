//! The Dockerfile's image: built from Cargo.lock with the four services, running as a numeric
//! non-root user (the one Kubernetes runs the pods as), holding the catalog the seed reads, and
//! built from a context without the build output and local tools.

use crate::common::{dockerfile_after, entries, items, read, root, s, strs};
use crate::compose::compose;
use crate::k8s::{k8s_docs, workload_containers};

#[test]
fn the_image_ships_what_the_deployments_run() {
    let dockerfile = read(&root().join("Dockerfile"));
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("the Dockerfile runs cargo build");
    assert!(
        build.contains("--locked"),
        "the image builds Cargo.lock's versions"
    );
    for bin in ["aggregate", "gateway", "projection", "runner", "cart-node"] {
        assert!(
            build.contains(&format!("-p {bin}")),
            "the image builds {bin}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin} ")),
            "the image holds {bin}"
        );
    }
    let copies = dockerfile_after("COPY deploy/");
    let copied: Vec<&str> = copies
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let user = dockerfile_after("USER ")
        .first()
        .and_then(|u| u.split(':').next())
        .and_then(|u| u.trim().parse::<u64>().ok())
        .expect("the image runs as a numeric non-root user");
    assert_ne!(user, 0);

    // The seed reads the catalog from where the image puts it.
    let c = compose();
    let docs = k8s_docs();
    let mut seed_files: Vec<String> = entries(&c["services"])
        .map(|(_, svc)| strs(&svc["command"]))
        .chain(workload_containers(&docs).map(|(_, c)| strs(&c["command"])))
        .filter(|cmd| cmd.iter().any(|a| a == "seed-catalog"))
        .filter_map(|cmd| {
            let at = cmd.iter().position(|a| a == "--file")?;
            cmd.get(at + 1).cloned()
        })
        .collect();
    seed_files.dedup();
    assert!(
        !seed_files.is_empty(),
        "compose and Kubernetes seed the catalog"
    );
    for file in seed_files {
        assert!(
            copied.contains(&file.as_str()),
            "the seed reads {file}, which the Dockerfile does not copy ({copied:?})"
        );
    }

    // Kubernetes runs the services as the image's user.
    for doc in docs.iter().filter(|d| d.is_workload()) {
        let runs_image = items(&doc.pod()["containers"]).any(|c| s(&c["image"]) == "cart-platform");
        if runs_image {
            assert_eq!(
                doc.pod()["securityContext"]["runAsUser"].as_u64(),
                Some(user),
                "{}: runAsUser is the image's user",
                doc.what()
            );
        }
    }

    let ignored = read(&root().join(".dockerignore"));
    for dir in ["target/", ".git/", ".tools/", ".dev/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == dir),
            ".dockerignore keeps {dir} out of the build context"
        );
    }
}
