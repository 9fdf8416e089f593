//! Configuration checks in tests: `nats-server -t` (the server's own check of a configuration
//! file, as deployment tests run it on the shipped configs), and a settings type's `check`
//! refusing bad values by name, a service's settings loaded from given variables, and a
//! printed setting hiding its secrets.

use std::ffi::OsStr;
use std::fmt::Debug;
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

/// A way to spoil a default value, and the field its check must then name.
pub type BadField<T> = (fn(&mut T), &'static str);

/// For each case, a default `T` spoiled by the closure must fail `check` with an error that
/// starts with the case's field name (so an operator learns which setting to fix).
pub fn assert_names_bad_field<T: Default>(
    cases: &[BadField<T>],
    check: impl Fn(&T) -> Result<(), String>,
) {
    for (spoil, field) in cases {
        let mut value = T::default();
        spoil(&mut value);
        let err = check(&value).unwrap_err();
        assert!(err.starts_with(field), "{err}");
    }
}

/// `T` as its service loads it when exactly these environment variables are set (no file).
pub fn load_from_env<T: crate::config::ServiceConfig>(env: &[(&str, &str)]) -> T {
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    crate::config::load_service_from(T::ENV_PREFIX, None, env).unwrap()
}

/// Panics if `value`'s `Debug` form shows one of `secrets`, or does not show `shown` (so a
/// print that lost everything does not pass).
pub fn assert_debug_hides(value: &impl Debug, secrets: &[&str], shown: &str) {
    let printed = format!("{value:?}");
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} in {printed}");
    }
    assert!(printed.contains(shown), "{shown} not in {printed}");
}
