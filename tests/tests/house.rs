//! The layout rules of docs/architecture.md ("Rules to keep") that a reader of the tree can
//! count, checked on every run so a change cannot quietly undo them:
//! - no source file outside tests is longer than 500 lines (unit tests of a long module go to
//!   `<module>/tests.rs`);
//! - every crate has a README, and the top-level README stays a user's page (≤ 300 lines;
//!   history goes to docs/).

use std::path::{Path, PathBuf};

use tests::workspace_root as root;

const MAX_SOURCE_LINES: usize = 500;
const MAX_README_LINES: usize = 300;

/// The workspace's member crates: the directories next to the root's Cargo.toml that hold a
/// Cargo.toml of their own.
fn crates(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src").is_dir())
        .collect();
    out.sort();
    out
}

/// Whether a file under `src/` is test code: a `tests.rs` or anything below a `tests` folder.
fn is_test_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "tests.rs")
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The files of `paths` over `max` lines, with their length.
fn too_long(paths: &[PathBuf], max: usize) -> Vec<(PathBuf, usize)> {
    paths
        .iter()
        .map(|p| {
            (
                p.clone(),
                std::fs::read_to_string(p).unwrap().lines().count(),
            )
        })
        .filter(|(_, n)| *n > max)
        .collect()
}

#[test]
fn no_source_file_outside_tests_is_over_500_lines() {
    let root = root();
    let mut sources = Vec::new();
    for krate in crates(&root) {
        rust_files(&krate.join("src"), &mut sources);
    }
    sources.retain(|p| !is_test_file(p.strip_prefix(&root).unwrap()));
    assert!(
        sources.len() > 100,
        "the walk found the workspace's sources ({} files)",
        sources.len()
    );
    let long = too_long(&sources, MAX_SOURCE_LINES);
    assert!(
        long.is_empty(),
        "split these by responsibility (or move their unit tests to <module>/tests.rs): {long:?}"
    );
}

#[test]
fn the_length_check_finds_a_long_file_and_tells_tests_apart() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("long.rs");
    let short = dir.path().join("short.rs");
    std::fs::write(&long, "fn f() {}\n".repeat(MAX_SOURCE_LINES + 1)).unwrap();
    std::fs::write(&short, "fn f() {}\n".repeat(MAX_SOURCE_LINES)).unwrap();
    let found = too_long(&[long.clone(), short], MAX_SOURCE_LINES);
    assert_eq!(found, vec![(long, MAX_SOURCE_LINES + 1)]);
    assert!(is_test_file(Path::new("domain/src/ids/tests.rs")));
    assert!(is_test_file(Path::new("tests/tests/house.rs")));
    assert!(!is_test_file(Path::new("domain/src/ids.rs")));
}

#[test]
fn every_crate_has_a_readme_and_the_readme_stays_short() {
    let root = root();
    let crates = crates(&root);
    assert!(crates.len() >= 8, "workspace members found: {crates:?}");
    let missing: Vec<_> = crates
        .iter()
        .filter(|c| !c.join("README.md").is_file())
        .collect();
    assert!(missing.is_empty(), "crates without a README: {missing:?}");
    let long = too_long(&[root.join("README.md")], MAX_README_LINES);
    assert!(
        long.is_empty(),
        "the README is for a user today; move history and design notes to docs/: {long:?}"
    );
}
