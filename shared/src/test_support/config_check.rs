//! Configuration checks in tests: `nats-server -t` (the server's own check of a configuration
//! file, as deployment tests run it on the shipped configs), and a settings type's `check`
//! refusing bad values by name.

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
