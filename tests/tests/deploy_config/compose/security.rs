//! docker-compose.yml's security: every Rust service logs in to NATS as its own user with a
//! password secret only it gets, NATS and gRPC run with mutual TLS from the files of
//! `aggregate certs`, configs and secrets are mounted read-only, and the NATS server accepts
//! what compose gives it. Each check also fails on a compose file broken on purpose.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{
    compose, compose_container, compose_containers, compose_env, compose_loaded, compose_nats,
    compose_nats_conf, compose_services, secrets,
};
use crate::common::{
    config_arg, entries, env_get, file_name, items, picked, read, remove_where, root, s,
};
use crate::containers::{
    Origin, STAND_IN_PASSWORD, check_client_tls, check_nats_logins, check_server_tls,
};
use crate::nats::{ACCOUNTS_CONF, NATS_DIR, assert_server_accepts, nats_users};

/// The users whose passwords scripts/nats-credentials makes (`USERS=(...)`).
fn credential_script_users() -> BTreeSet<String> {
    let script = read(&root().join("scripts/nats-credentials"));
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("USERS=("))
        .expect("scripts/nats-credentials lists its USERS=(...)");
    line.trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Every Rust service of the compose file logs in as its own user, with a password secret only
/// it gets; the server gets every password accounts.conf reads.
fn check_compose_nats_users(c: &Value) {
    let users = nats_users();
    let nats = &c["services"]["nats"];
    let env_files: Vec<String> = items(&nats["env_file"])
        .map(|f| if f.is_object() { s(&f["path"]) } else { s(f) })
        .chain(nats["env_file"].as_str().map(str::to_owned))
        .collect();
    let server_env = env_files
        .iter()
        .find(|f| f.ends_with("/nats-server.env"))
        .unwrap_or_else(|| {
            panic!(
                "docker-compose.yml: nats has no env_file DIR/nats-server.env (what \
                 `scripts/nats-credentials DIR` writes: every NATS_PASSWORD_*), got {env_files:?}"
            )
        });
    let dir = server_env.trim_end_matches("/nats-server.env");
    let dir = dir.strip_prefix("./").unwrap_or(dir);
    let script = read(&root().join("scripts/nats-credentials"));
    assert!(
        script.contains("NATS_PASSWORD_%s") && script.contains("${user^^}"),
        "scripts/nats-credentials writes NATS_PASSWORD_<USER> lines"
    );
    let made = credential_script_users();
    let set_directly = compose_env(nats);
    for (user, var) in &users {
        let from_script =
            made.contains(user) && *var == format!("NATS_PASSWORD_{}", user.to_uppercase());
        assert!(
            from_script || env_get(&set_directly, var).is_some(),
            "docker-compose.yml: the nats server does not get ${var} (the password of {user} in \
             {ACCOUNTS_CONF}): {server_env} has NATS_PASSWORD_<USER> for {made:?} only, and \
             the server refuses to start without it"
        );
    }

    let containers = compose_containers(c);
    let own = |user: &str, _: &str| Origin::Host(format!("./{dir}/{user}.password"));
    let is_password = |o: &Origin| {
        matches!(o, Origin::Host(source)
            if source.strip_prefix("./").unwrap_or(source).starts_with(&format!("{dir}/")))
    };
    check_nats_logins(&containers, &users, &own, &is_password);
    // A password is a compose secret, never a bind mount.
    for container in &containers {
        let file = env_get(&container.env, "NATS_PASSWORD_FILE").unwrap_or_default();
        assert!(
            secrets(c, container.at.1, &container.what).contains_key(file),
            "{}: {file} must be a compose secret (read-only under /run/secrets)",
            container.what
        );
    }
}

#[test]
fn compose_services_log_in_to_nats_as_their_own_users() {
    check_compose_nats_users(&compose());
}

/// NATS runs with mutual TLS and every Rust service presents its own certificate to NATS and to
/// the other services' gRPC endpoints; the files come from `aggregate certs`, read-only.
fn check_compose_tls(c: &Value) {
    let nats = compose_nats(c);
    let conf = compose_nats_conf(c);
    // The certificates are where the server's CA is.
    let ca_file = crate::nats::check_nats_tls_block(&conf, &nats.what)["ca_file"].clone();
    let ca = nats
        .mounted_read_only("ca_file", &ca_file)
        .origin
        .to_string();
    let dir = ca
        .strip_suffix("/ca.pem")
        .unwrap_or_else(|| {
            panic!(
                "{}: the CA is ca.pem of `aggregate certs`, got {ca}",
                nats.what
            )
        })
        .to_owned();
    let part = |cert: &str, file: &str| {
        Origin::Host(match file {
            "CA_FILE" => format!("{dir}/ca.pem"),
            "CERT_FILE" => format!("{dir}/{cert}.pem"),
            _ => format!("{dir}/{cert}-key.pem"),
        })
    };
    check_server_tls(&nats, &conf, &part);
    let is_nats = |host: &str| s(&c["services"][host]["image"]).starts_with("nats:");
    let checked = check_client_tls(&compose_containers(c), &part, &is_nats);
    assert!(checked >= 6, "the seed and the five service containers");

    // The generated files stay out of git, and the header says how to make them.
    let dir = dir.strip_prefix("./").unwrap_or(&dir).to_owned();
    for (name, def) in entries(&c["secrets"]) {
        let file = s(&def["file"]);
        assert!(
            file.starts_with("./.secrets/"),
            "docker-compose.yml: secret {name} is {file}, outside .secrets/ (which git ignores)"
        );
    }
    let ignored = read(&root().join(".gitignore"));
    assert!(
        ignored
            .lines()
            .any(|l| [".secrets", ".secrets/", "/.secrets", "/.secrets/"].contains(&l.trim())),
        ".gitignore must ignore .secrets/ (NATS passwords and TLS keys)"
    );
    let header: String = read(&root().join("docker-compose.yml"))
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let passwords = entries(&c["secrets"])
        .map(|(_, d)| s(&d["file"]))
        .find(|f| f.ends_with(".password"))
        .expect("password secrets");
    let password_dir = Path::new(passwords.strip_prefix("./").unwrap_or(&passwords))
        .parent()
        .unwrap()
        .display()
        .to_string();
    for step in [
        format!("scripts/nats-credentials {password_dir}"),
        format!("certs --out {dir}"),
    ] {
        assert!(
            header.contains(&step),
            "docker-compose.yml's header must give the preparation step `{step}`"
        );
    }
}

#[test]
fn compose_runs_nats_and_grpc_with_mutual_tls() {
    check_compose_tls(&compose());
}

/// Bind mounts (configs, secrets, certificates) are read-only in every compose service.
fn check_compose_read_only(c: &Value) {
    for svc in compose_services(c) {
        let container = compose_container(c, svc);
        for (target, f) in &container.files {
            let Origin::Host(source) = &f.origin else {
                continue;
            };
            if source.starts_with('.') || source.starts_with('/') {
                assert!(
                    f.read_only,
                    "{}: {source} is mounted at {target} writable: add :ro",
                    container.what
                );
            }
        }
    }
}

#[test]
fn compose_mounts_configs_and_secrets_read_only() {
    check_compose_read_only(&compose());
}

/// The NATS server passes its own config check with the files compose mounts, the passwords of
/// every user, and the certificates.
#[test]
fn compose_nats_config_passes_the_servers_own_check() {
    let c = compose();
    // Reads and checks every mounted file it includes.
    compose_nats_conf(&c);
    let nats = compose_nats(&c);
    let conf_path = config_arg(&nats.command);
    let conf_dir = Path::new(&conf_path).parent().unwrap();
    let files = nats.files.iter().filter_map(|(target, f)| {
        let name = Path::new(target).strip_prefix(conf_dir).ok()?;
        let Origin::Host(source) = &f.origin else {
            return None;
        };
        source.starts_with(&format!("./{NATS_DIR}/")).then(|| {
            let text = read(&root().join(source));
            (name.display().to_string(), text)
        })
    });
    let passwords = nats_users()
        .into_values()
        .map(|var| (var, STAND_IN_PASSWORD.to_owned()));
    let run = file_name(Path::new(&conf_path));
    assert_server_accepts(files, &run, passwords, "compose");
}

// The checks above fail on a broken compose file, with a message that says what is wrong.

/// The compose file with the service `name` broken by `edit`.
fn with_service(name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = compose();
    edit(&mut c["services"][name]);
    c
}

/// The compose file with the environment of the service `name` broken by `edit`.
fn with_env(name: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    with_service(name, |svc| {
        edit(svc["environment"].as_object_mut().unwrap())
    })
}

#[test]
#[should_panic(expected = "NATS_PASSWORD_FILE=/run/secrets/nats-password is not mounted")]
fn a_compose_service_without_its_password_is_rejected() {
    let c = with_service("runner", |svc| {
        remove_where(&mut svc["secrets"], |s| {
            s["source"] == "nats-password-runner"
        });
    });
    check_compose_nats_users(&c);
}

#[test]
#[should_panic(expected = "holds the password of another user")]
fn a_compose_service_with_another_users_password_is_rejected() {
    let c = with_service("gateway", |svc| {
        for secret in picked(&mut svc["secrets"], |s| {
            s["source"] == "nats-password-gateway"
        }) {
            secret["source"] = "nats-password-runner".into();
        }
    });
    check_compose_nats_users(&c);
}

#[test]
#[should_panic(expected = "GRPC_TLS_CERT_FILE is not set")]
fn a_compose_service_without_grpc_tls_is_rejected() {
    let c = with_env("gateway", |env| {
        env.remove("GRPC_TLS_CERT_FILE");
    });
    check_compose_tls(&c);
}

#[test]
#[should_panic(expected = "is plaintext")]
fn a_plaintext_nats_url_is_rejected() {
    let c = with_env("projection", |env| {
        env.insert("NATS_URL".into(), "nats://nats:4222".into());
        env.remove("NATS_TLS_REQUIRED");
    });
    check_compose_tls(&c);
}

#[test]
#[should_panic(expected = "is not mounted in the container")]
fn a_setting_naming_an_unmounted_file_is_rejected() {
    let c = with_service("projection", |svc| {
        remove_where(&mut svc["secrets"], |s| s["target"] == "tls.key");
    });
    compose_loaded(&c);
}

#[test]
#[should_panic(expected = "writable: add :ro")]
fn a_writable_compose_config_mount_is_rejected() {
    let c = with_service("nats", |svc| {
        let accounts = |v: &Value| v.as_str().is_some_and(|t| t.contains("accounts.conf"));
        for v in picked(&mut svc["volumes"], accounts) {
            *v = s(v).trim_end_matches(":ro").into();
        }
    });
    check_compose_read_only(&c);
}
