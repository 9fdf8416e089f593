//! A container of either deployment (a compose service, a container of a Kubernetes workload)
//! as the checks both deployments share see it: its command, its environment as the service
//! reads it, and the files mounted into it. And those checks: the services load their
//! environment with every file it names mounted and agree on the shared settings; each logs in
//! to NATS as its own user with only its own password; each presents its own certificate to
//! NATS and gRPC, and the NATS server verifies it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use crate::common::env_get;
use crate::nats::{ACCOUNTS_CONF, check_nats_tls_block};
use crate::services::{Loaded, Service, identity};

/// What the shared checks say of one deployment.
pub struct Deployment {
    /// Its name in messages.
    pub name: &'static str,
    /// What one of its containers is called there.
    pub unit: &'static str,
    /// How a file is mounted read-only there.
    pub read_only: &'static str,
}

/// Where a mounted file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A path on the host (`./...`: a bind mount, or the file of a compose secret), or a named
    /// volume.
    Host(String),
    /// A key of a Kubernetes Secret or ConfigMap.
    Key {
        kind: String,
        name: String,
        key: String,
    },
}

impl Origin {
    pub fn secret_key(name: &str, key: &str) -> Self {
        Self::Key {
            kind: "Secret".to_owned(),
            name: name.to_owned(),
            key: key.to_owned(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(path) => f.write_str(path),
            Self::Key { kind, name, key } => write!(f, "{key} of {kind} {name}"),
        }
    }
}

/// A file (or a host directory) mounted into a container.
#[derive(Debug, Clone)]
pub struct File {
    pub origin: Origin,
    pub read_only: bool,
}

/// A container of a deployment; `at` is where it is in the deployment's files.
pub struct Container<At> {
    pub deployment: &'static Deployment,
    pub at: At,
    /// How messages name it.
    pub what: String,
    pub command: Vec<String>,
    /// Its environment as the process sees it.
    pub env: Vec<(String, String)>,
    /// What is mounted into it, by path in the container.
    pub files: BTreeMap<String, File>,
}

impl<At> Container<At> {
    /// The NATS user it logs in as and the certificate it presents, if it runs a Rust service.
    pub fn identity(&self) -> Option<(&'static str, &'static str)> {
        identity(&self.command)
    }

    /// The file at `path`: mounted there, or inside a directory mounted from the host (then
    /// with the host path of that very file).
    pub fn file(&self, path: &str) -> Option<File> {
        self.files.iter().find_map(|(target, f)| {
            if target == path {
                return Some(f.clone());
            }
            let Origin::Host(source) = &f.origin else {
                return None;
            };
            let rest = Path::new(path).strip_prefix(target).ok()?;
            Some(File {
                origin: Origin::Host(format!(
                    "{}/{}",
                    source.trim_end_matches('/'),
                    rest.display()
                )),
                ..f.clone()
            })
        })
    }

    /// The file `path` (named by `setting`), which must be mounted read-only.
    pub fn mounted_read_only(&self, setting: &str, path: &str) -> File {
        let what = &self.what;
        let f = self
            .file(path)
            .unwrap_or_else(|| panic!("{what}: {setting}={path} is not mounted"));
        assert!(
            f.read_only,
            "{what}: {path} must be mounted read-only ({})",
            self.deployment.read_only
        );
        f
    }

    /// `path` (named by `setting`) is mounted read-only from `expected` (`why`: what that is).
    pub fn assert_file(&self, setting: &str, path: &str, expected: &Origin, why: &str) {
        let f = self.mounted_read_only(setting, path);
        assert_eq!(
            f.origin, *expected,
            "{}: {setting} must be {expected} ({why})",
            self.what
        );
    }

    /// Loads the config of the service it runs from its environment, every file the
    /// environment names checked to be mounted and replaced by a local stand-in (the services
    /// open their TLS files at start, in `check()`).
    pub fn load(&self) -> Loaded {
        let service = Service::from_command(&self.command)
            .unwrap_or_else(|| panic!("{}: runs no Rust service", self.what));
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| {
                if !is_file_var(k) || v.is_empty() {
                    return (k.clone(), v.clone());
                }
                assert!(
                    self.file(v).is_some(),
                    "{}: {k}={v} is not mounted in the container (the service cannot start \
                     without it)",
                    self.what
                );
                (k.clone(), stand_in(k, "aggregate"))
            })
            .collect();
        service.load(&env, &self.what)
    }

    /// The client side of NATS TLS: every server URL is TLS (`tls://` or `NATS_TLS_REQUIRED`)
    /// and names the NATS server (`is_nats`) by the name in its certificate (`aggregate certs`
    /// names the `nats` certificate `nats`, plus localhost; the client verifies the host it
    /// dials).
    pub fn check_nats_url(&self, is_nats: &dyn Fn(&str) -> bool) {
        let what = &self.what;
        let url = env_get(&self.env, "NATS_URL").unwrap_or_default();
        let required = env_get(&self.env, "NATS_TLS_REQUIRED") == Some("true");
        assert!(!url.trim().is_empty(), "{what}: no NATS_URL");
        assert!(
            shared::certs::SET.contains(&"nats"),
            "aggregate certs makes the NATS server's certificate"
        );
        for u in url.split(',').map(str::trim) {
            let (scheme, rest) = u.split_once("://").unwrap_or(("nats", u));
            assert!(
                scheme == "tls" || required,
                "{what}: NATS_URL {u} is plaintext (use tls:// or NATS_TLS_REQUIRED=true)"
            );
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            assert!(
                is_nats(host),
                "{what}: NATS_URL host {host} is not the NATS server"
            );
            assert_eq!(
                host, "nats",
                "{what}: the client verifies the server as {host}, but the server's certificate \
                 (`aggregate certs`: nats.pem) names `nats`"
            );
        }
    }
}

/// Each container's config, loaded ([`Container::load`]).
pub fn load_all<At>(containers: Vec<Container<At>>) -> Vec<(Container<At>, Loaded)> {
    containers
        .into_iter()
        .map(|c| {
            let l = c.load();
            (c, l)
        })
        .collect()
}

/// Settings that must be equal in every service of one deployment (`what`).
pub fn assert_consistent<At>(loaded: &[(Container<At>, Loaded)], what: &str) {
    let shards: BTreeSet<u32> = loaded.iter().filter_map(|(_, l)| l.shard_count()).collect();
    assert_eq!(
        shards.len(),
        1,
        "{what}: the shard count must be equal in every aggregate node, the gateway and the \
         runner: {:?}",
        loaded
            .iter()
            .map(|(c, l)| (&c.what, l.shard_count()))
            .collect::<Vec<_>>()
    );
    let (first, first_loaded) = &loaded[0];
    for (c, l) in loaded {
        assert_eq!(
            l.streams(),
            first_loaded.streams(),
            "{what}: {} and {} disagree on the STREAMS_* settings (each service validates the \
             streams against its own)",
            c.what,
            first.what
        );
    }
}

/// Every Rust service of `containers` logs in to NATS as its own user of accounts.conf
/// (`users`: user → the variable of its password), its password from a file mounted read-only
/// and holding its own password (`own(user, variable)`), and no other password mounted
/// (`is_password`).
pub fn check_nats_logins<At>(
    containers: &[Container<At>],
    users: &BTreeMap<String, String>,
    own: &dyn Fn(&str, &str) -> Origin,
    is_password: &dyn Fn(&Origin) -> bool,
) {
    let mut seen = BTreeSet::new();
    for c in containers {
        let Some((user, _)) = c.identity() else {
            continue;
        };
        let what = &c.what;
        let got = env_get(&c.env, "NATS_USER").unwrap_or_else(|| {
            panic!("{what}: no NATS_USER (the server refuses anonymous clients)")
        });
        assert_eq!(
            got, user,
            "{what}: logs in to NATS as {got:?}; its user is {user:?}"
        );
        let var = users
            .get(user)
            .unwrap_or_else(|| panic!("{what}: NATS_USER {user} is not a user of {ACCOUNTS_CONF}"));
        assert!(
            env_get(&c.env, "NATS_PASSWORD").is_none_or(str::is_empty),
            "{what}: the password comes from a file (NATS_PASSWORD_FILE), not the environment"
        );
        let file = env_get(&c.env, "NATS_PASSWORD_FILE")
            .unwrap_or_else(|| panic!("{what}: no NATS_PASSWORD_FILE"));
        let own = own(user, var);
        for (path, other) in &c.files {
            assert!(
                !is_password(&other.origin) || other.origin == own || path == file,
                "{what}: {path} is {}: a {} gets only its own password ({own})",
                other.origin,
                c.deployment.unit
            );
        }
        let f = c.mounted_read_only("NATS_PASSWORD_FILE", file);
        assert_eq!(
            f.origin, own,
            "{what}: {file} holds the password of another user: {user}'s is {own}"
        );
        seen.insert(user);
    }
    let deployment = containers.first().map(|c| c.deployment);
    for user in ["aggregate", "gateway", "projection", "runner", "seed"] {
        assert!(
            seen.contains(user),
            "no {} {} logs in as {user}",
            deployment.map_or("", |d| d.name),
            deployment.map_or("container", |d| d.unit)
        );
    }
}

/// The files of a TLS identity: the setting of a NATS `tls { }` block, and how a service's
/// variable ends (`NATS_TLS_CA_FILE`, `GRPC_TLS_CERT_FILE`, ...).
pub const TLS_FILES: [(&str, &str); 3] = [
    ("ca_file", "CA_FILE"),
    ("cert_file", "CERT_FILE"),
    ("key_file", "KEY_FILE"),
];

/// The NATS server (`server`, running `conf`) verifies its clients' certificates, and reads the
/// CA, certificate and key of the `nats` certificate (`part("nats", file)`, `file` as in
/// [`TLS_FILES`]) from files mounted read-only.
pub fn check_server_tls<At>(
    server: &Container<At>,
    conf: &str,
    part: &dyn Fn(&str, &str) -> Origin,
) {
    let tls = check_nats_tls_block(conf, &server.what);
    for (key, file) in TLS_FILES {
        server.assert_file(
            key,
            &tls[key],
            &part("nats", file),
            "the NATS server's certificate",
        );
    }
}

/// Every Rust service of `containers` dials NATS over TLS ([`Container::check_nats_url`]) and
/// presents its own certificate to NATS (`NATS_TLS_*`) and to the gRPC endpoints
/// (`GRPC_TLS_*`): the CA, certificate and key files are set and mounted read-only from
/// `part(certificate, file)`. Returns how many containers it checked.
pub fn check_client_tls<At>(
    containers: &[Container<At>],
    part: &dyn Fn(&str, &str) -> Origin,
    is_nats: &dyn Fn(&str) -> bool,
) -> usize {
    let mut checked = 0;
    for c in containers {
        let Some((_, cert)) = c.identity() else {
            continue;
        };
        c.check_nats_url(is_nats);
        for (prefix, link) in [
            ("NATS_TLS", "its NATS connection"),
            ("GRPC_TLS", "its gRPC"),
        ] {
            for (_, file) in TLS_FILES {
                let var = format!("{prefix}_{file}");
                let path = env_get(&c.env, &var)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: {var} is not set: {link} runs without mutual TLS",
                            c.what
                        )
                    });
                let why = format!("the {cert} certificate: its common name is who the service is");
                c.assert_file(&var, path, &part(cert, file), &why);
            }
        }
        checked += 1;
    }
    checked
}

/// The password the stand-in password file holds.
pub const STAND_IN_PASSWORD: &str = "pStandIn0";

/// Local files standing in for what a container gets mounted: a certificate set made like
/// `aggregate certs` does, and a password file.
fn stand_ins() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = shared::certs::Authority::new("deploy_config test CA").unwrap();
        ca.write_set(dir.path(), &shared::certs::SET, &[], &[])
            .unwrap();
        std::fs::write(dir.path().join("password"), STAND_IN_PASSWORD).unwrap();
        dir
    })
    .path()
}

/// The stand-in of the file variable `var` (`..._CA_FILE`, `..._CERT_FILE`, ...) for the
/// certificate of `name`.
pub fn stand_in(var: &str, name: &str) -> String {
    let file = if var.ends_with("PASSWORD_FILE") {
        "password".to_owned()
    } else if var.ends_with("_CA_FILE") {
        "ca.pem".to_owned()
    } else if var.ends_with("_KEY_FILE") {
        format!("{name}-key.pem")
    } else if var.ends_with("_CERT_FILE") {
        format!("{name}.pem")
    } else {
        panic!("no stand-in for {var}")
    };
    stand_ins().join(file).display().to_string()
}

/// Variables naming a file a service reads: its NATS password and TLS files, its gRPC TLS files.
fn is_file_var(key: &str) -> bool {
    (key.starts_with("NATS_") || key.starts_with("GRPC_TLS_")) && key.ends_with("_FILE")
}
