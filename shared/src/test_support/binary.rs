//! Finding a nats-server binary that is recent enough.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Oldest server the platform supports (batch direct get, current JetStream API level).
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 12);

/// Finds a nats-server binary of at least [`MIN_SERVER_VERSION`]; the error says what was
/// tried.
pub fn find_server_binary() -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|b| !b.is_empty()) {
        candidates.push(PathBuf::from(bin));
    }
    let roots = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for root in roots.into_iter().flatten() {
        if let Some(dir) = root
            .ancestors()
            .find(|d| d.join(".tools/nats/bin/nats-server").is_file())
        {
            candidates.push(dir.join(".tools/nats/bin/nats-server"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    for bin in candidates {
        if !bin.is_file() {
            continue;
        }
        match server_version(&bin) {
            Some(v) if v >= MIN_SERVER_VERSION => return Ok(bin),
            Some((major, minor)) => tried.push(format!(
                "{} is v{major}.{minor} (need >= {}.{})",
                bin.display(),
                MIN_SERVER_VERSION.0,
                MIN_SERVER_VERSION.1
            )),
            None => tried.push(format!("{} has no readable --version", bin.display())),
        }
    }
    if tried.is_empty() {
        Err("no nats-server found (NATS_SERVER_BIN, .tools/nats/bin, PATH)".into())
    } else {
        Err(format!("no suitable nats-server: {}", tried.join("; ")))
    }
}

/// `nats-server --version` → `(major, minor)`; output looks like `nats-server: v2.12.3`.
fn server_version(bin: &Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let v = s.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The server binary, or `None` after [`unavailable`]'s loud notice (a panic when
/// `CART_REQUIRE_NATS=1`): for tests that run `nats-server` themselves (`-t` config checks).
pub fn server_binary_or_skip() -> Option<PathBuf> {
    match find_server_binary() {
        Ok(bin) => Some(bin),
        Err(why) => {
            unavailable(&why);
            None
        }
    }
}

/// [`server_binary_or_skip`] for a test that must spawn its own server (its settings are the
/// test's point): `None` with an external `CART_TEST_NATS_URL`.
pub(super) fn own_server_binary(test: &str) -> Option<PathBuf> {
    if std::env::var("CART_TEST_NATS_URL").is_ok_and(|u| !u.trim().is_empty()) {
        eprintln!("skipping: {test} needs its own nats-server, not CART_TEST_NATS_URL");
        return None;
    }
    server_binary_or_skip()
}

/// No server: a loud notice and `None`, or a panic when `CART_REQUIRE_NATS=1`.
pub(super) fn unavailable(why: &str) {
    let required = std::env::var("CART_REQUIRE_NATS").is_ok_and(|v| v == "1");
    if required {
        panic!(
            "CART_REQUIRE_NATS=1 but no usable nats-server: {why}\n\
             run scripts/install-nats, or set NATS_SERVER_BIN or CART_TEST_NATS_URL"
        );
    }
    eprintln!(
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPING NATS INTEGRATION TEST: {why}\n\
         !!! run scripts/install-nats (or set NATS_SERVER_BIN / CART_TEST_NATS_URL)\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("nats-server: v2.12.3\n"), Some((2, 12)));
        assert_eq!(parse_version("nats-server: v2.9.0"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
        assert!((2, 9) < MIN_SERVER_VERSION && (2, 12) >= MIN_SERVER_VERSION);
        assert!((3, 0) >= MIN_SERVER_VERSION);
    }
}
