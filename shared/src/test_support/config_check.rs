//! `nats-server -t`: the server's own check of a configuration file, as deployment tests run
//! it on the shipped configs.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Runs `bin --config <config> -t` with `env` added to the environment; panics with the
/// server's output when it rejects the configuration (`what` names it).
pub fn assert_accepted<K, V>(
    bin: &Path,
    config: &Path,
    env: impl IntoIterator<Item = (K, V)>,
    what: &str,
) where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("-t")
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nats-server -t rejects {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
