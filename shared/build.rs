//! Names the commit the binaries are built from, for `cart_build_info{git_sha}`
//! (`shared::process`): `CART_GIT_SHA` at compile time.
//!
//! In order: the `GIT_SHA` environment variable when set (the Dockerfile's build argument: the
//! image is built without `.git`); else `git rev-parse --short=12 HEAD` in this checkout; else
//! `unknown` (a source tarball, no `git` installed). Never fails the build.
//!
//! Cargo runs this again when `GIT_SHA` changes or, in a git checkout, when `HEAD` or the branch
//! it points to moves (so a new commit gets its own sha). That also rebuilds `shared` and every
//! crate above it after each commit: the price of a sha that is never stale.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_SHA");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("GIT_SHA")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let sha = match from_env {
        Some(sha) => sha,
        None => match git(&["rev-parse", "--short=12", "HEAD"]) {
            Some(sha) => {
                watch_git_head();
                sha
            }
            None => "unknown".to_owned(),
        },
    };
    // A label value: keep it to what a sha or a tag can hold.
    let sha: String = sha
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    println!("cargo:rustc-env=CART_GIT_SHA={sha}");
}

/// `git <args>` in this crate's directory, its trimmed output on success.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Reruns this script when `HEAD` moves: the `HEAD` file (a checkout, a detached commit), the
/// ref it names (a commit on the branch) and `packed-refs`. Only files that exist are named: a
/// missing one would make Cargo rerun the script on every build.
fn watch_git_head() {
    let mut files = vec![git_path("HEAD"), git_path("packed-refs")];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        files.push(git_path(&reference));
    }
    for file in files.into_iter().flatten() {
        if file.is_file() {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
}

/// Where git keeps `name` (worktrees keep `HEAD` apart from the shared refs).
fn git_path(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    if path.is_absolute() {
        return Some(path);
    }
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    Some(Path::new(&dir).join(path))
}
