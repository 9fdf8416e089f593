//! deploy/nats: the server configs, what they include, their TLS block, users and system
//! account, and the cluster config's one source; plus reading a NATS config as the server does and running the
//! server's own check on one.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{file_name, files_with, read, root};
use crate::containers::stand_in;

/// The configs of deploy/nats a server runs: the single server and the cluster member in
/// plaintext (scripts/dev, the chaos suite), and each with mutual TLS for clients (compose,
/// Kubernetes).
const NATS_SERVER_CONFS: &[&str] = &[
    "nats.conf",
    "cluster.conf",
    "nats-tls.conf",
    "cluster-tls.conf",
];

/// Parts the server configs include: the accounts and users, and the client TLS block.
const NATS_FRAGMENTS: &[&str] = &["accounts.conf", "tls.conf", "member.conf", "routes.conf"];

pub const NATS_DIR: &str = "deploy/nats";
pub const ACCOUNTS_CONF: &str = "deploy/nats/accounts.conf";

/// The cluster config every member runs (Kubernetes, `scripts/dev --cluster`).
const NATS_CLUSTER_CONF: &str = "deploy/nats/cluster.conf";

/// A NATS config without its comments.
pub fn active_lines(conf: &str) -> String {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `key: value` in a NATS config (quotes removed).
pub fn conf_value(conf: &str, key: &str) -> Option<String> {
    active_lines(conf).lines().find_map(|l| {
        let rest = l.trim().strip_prefix(key)?.trim_start().strip_prefix(':')?;
        Some(rest.trim().trim_matches('"').to_owned())
    })
}

pub fn assert_durable_nats_conf(conf: &str, what: &str) {
    let active = active_lines(conf);
    assert!(active.contains("jetstream"), "{what} enables JetStream");
    assert!(
        active.contains("sync_interval: always"),
        "{what} must fsync every write before acknowledging it (sync_interval: always)"
    );
}

/// The files a NATS config includes (`include "file"`, relative to its directory).
fn conf_includes(conf: &str) -> Vec<String> {
    active_lines(conf)
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("include")?;
            rest.starts_with([' ', '\t'])
                .then(|| rest.trim().trim_matches(['"', '\'']).to_owned())
        })
        .collect()
}

/// `conf` with each `include "file"` replaced by that file's text (`lookup`), recursively: what
/// the server reads.
pub fn expand_includes(conf: &str, lookup: &dyn Fn(&str) -> String) -> String {
    let included = conf_includes(conf);
    conf.lines()
        .map(|line| {
            let active = line.split('#').next().unwrap_or("").trim();
            match included
                .iter()
                .find(|f| active.starts_with("include") && active.contains(f.as_str()))
            {
                Some(file) => expand_includes(&lookup(file), lookup),
                None => line.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file of deploy/nats that `name` includes, directly or through another.
pub fn nats_includes_transitive(name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in conf_includes(&read(&root().join(NATS_DIR).join(name))) {
        out.extend(nats_includes_transitive(&f));
        out.insert(f);
    }
    out
}

/// A config of deploy/nats with its includes (from deploy/nats) expanded.
fn nats_conf_expanded(name: &str) -> String {
    let dir = root().join(NATS_DIR);
    expand_includes(&read(&dir.join(name)), &|f| read(&dir.join(f)))
}

/// The `$NAME` references of a NATS config (comments and quoted strings such as
/// `"$JS.API.>"` ignored): nats-server resolves each from the environment when the config does
/// not define it.
fn conf_vars(conf: &str) -> BTreeSet<String> {
    let active = active_lines(conf);
    let mut vars = BTreeSet::new();
    let mut quoted = false;
    for (i, c) in active.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            continue;
        }
        let name: String = active[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!name.is_empty(), "a lone $ in a NATS config");
        vars.insert(name);
    }
    vars
}

/// `conf` with its `$NAME` references replaced by their values in `env`; panics naming `what`
/// when one is not set (the server would refuse to start).
pub fn resolve_conf(conf: &str, env: &BTreeMap<String, String>, what: &str) -> String {
    let vars = conf_vars(conf);
    let mut out = active_lines(conf);
    // Longest names first, so $NATS_ROUTE_1 is not cut at a shorter $NATS_ROUTE.
    let mut ordered: Vec<&String> = vars.iter().collect();
    ordered.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for var in ordered {
        let value = env.get(var).unwrap_or_else(|| {
            panic!("{what} does not set ${var}, which {NATS_CLUSTER_CONF} reads")
        });
        out = out.replace(&format!("${var}"), value);
    }
    out
}

/// The settings of the last top-level `tls { ... }` block of an (expanded) NATS config, quotes
/// removed; `None` without one.
fn tls_block(conf: &str) -> Option<BTreeMap<String, String>> {
    block_at(conf, &["tls"])
}

/// The settings of the last block at `path` (`["cluster", "tls"]`: the `tls` block inside the
/// top-level `cluster` block), quotes removed; `None` without one.
fn block_at(conf: &str, path: &[&str]) -> Option<BTreeMap<String, String>> {
    let opens_block = |l: &str, name: &str| {
        l.strip_prefix(name).is_some_and(|rest| {
            rest.trim_start()
                .trim_start_matches(':')
                .trim_start()
                .starts_with('{')
        })
    };
    let depth_of = path.len() as i32;
    let mut depth = 0i32;
    // How many names of `path` the blocks open around this line match.
    let mut matched = 0usize;
    let mut current: Option<BTreeMap<String, String>> = None;
    let mut found = None;
    for line in active_lines(conf).lines() {
        let l = line.trim();
        let opens = l.matches('{').count() as i32;
        let closes = l.matches('}').count() as i32;
        if current.is_none() && depth == matched as i32 && opens_block(l, path[matched]) {
            matched += 1;
            if matched == path.len() {
                current = Some(BTreeMap::new());
            }
        } else if depth == depth_of
            && let Some(block) = current.as_mut()
            && let Some((k, v)) = l.split_once(':')
        {
            block.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
        }
        depth += opens - closes;
        // Leaving a matched block unmatches it (and finishes the one being read).
        while matched > 0 && depth < matched as i32 {
            matched -= 1;
            if let Some(block) = current.take() {
                found = Some(block);
            }
        }
    }
    found
}

/// The TLS of the routes of a cluster member's config: the `cluster` block's `tls` block, with
/// the files of the client TLS block, verifying the other member's certificate.
pub fn check_route_tls(conf: &str, what: &str) {
    let routes = block_at(conf, &["cluster", "tls"]).unwrap_or_else(|| {
        panic!(
            "{what}: no tls {{ }} block in the cluster block: the routes between members \
             would carry every message in plaintext"
        )
    });
    assert_eq!(
        routes.get("verify").map(String::as_str),
        Some("true"),
        "{what}: the routes' tls block must set verify: true (a member without a certificate \
         of the CA must not join)"
    );
    assert_eq!(
        routes
            .get("verify_cert_and_check_known_urls")
            .map(String::as_str),
        Some("true"),
        "{what}: the routes' tls block must set verify_cert_and_check_known_urls: true (only a \
         certificate naming a route host is a member, not any certificate of the CA)"
    );
    let clients = check_nats_tls_block(conf, what);
    for key in ["cert_file", "key_file", "ca_file"] {
        assert_eq!(
            routes.get(key),
            clients.get(key),
            "{what}: the routes use the certificate and CA of the client TLS block ({key})"
        );
    }
}

/// The client TLS block of a server config: present, with its files, and verifying clients.
pub fn check_nats_tls_block(conf: &str, what: &str) -> BTreeMap<String, String> {
    let tls = tls_block(conf).unwrap_or_else(|| {
        panic!("{what}: no top-level tls {{ }} block: clients would connect in plaintext")
    });
    assert_eq!(
        tls.get("verify").map(String::as_str),
        Some("true"),
        "{what}: the tls block must set verify: true (every client presents a certificate \
         signed by the CA: mutual TLS)"
    );
    for key in ["cert_file", "key_file", "ca_file"] {
        assert!(
            tls.get(key).is_some_and(|v| !v.is_empty()),
            "{what}: the tls block has no {key}"
        );
    }
    tls
}

/// The users of deploy/nats/accounts.conf and the variable each one's password comes from
/// (`password: $NATS_PASSWORD_...`).
pub fn nats_users() -> BTreeMap<String, String> {
    let users: BTreeMap<String, String> =
        shared::test_support::users_of(&read(&root().join(ACCOUNTS_CONF)))
            .unwrap_or_else(|e| panic!("{ACCOUNTS_CONF}: {e}"))
            .into_iter()
            .collect();
    assert!(
        users.len() >= 6,
        "{ACCOUNTS_CONF} defines the services' users: {users:?}"
    );
    users
}

/// `conf` with the files of its tls blocks pointing at the stand-ins of `name`'s certificate.
fn local_tls_paths(conf: &str, name: &str) -> String {
    with_tls_files(conf, |var| stand_in(var, name))
}

/// `conf` with every `cert_file`, `key_file` and `ca_file` set to `file_of` its kind
/// (`_CERT_FILE`, `_KEY_FILE`, `_CA_FILE`), in every tls block.
pub fn with_tls_files(conf: &str, file_of: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    for line in conf.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let tls_file = [
            ("cert_file", "_CERT_FILE"),
            ("key_file", "_KEY_FILE"),
            ("ca_file", "_CA_FILE"),
        ]
        .into_iter()
        .find(|(key, _)| {
            trimmed
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        });
        match tls_file {
            Some((key, var)) => out.push_str(&format!("{indent}{key}: \"{}\"", file_of(var))),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// `nats-server -t` accepts `run`, one of `files` (name → text, their TLS files pointed at
/// stand-ins of the server's certificate), with `env` (when a server is installed; CI has one).
pub fn assert_server_accepts(
    files: impl IntoIterator<Item = (String, String)>,
    run: &str,
    env: impl IntoIterator<Item = (String, String)>,
    what: &str,
) {
    let Some(bin) = shared::test_support::server_binary_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), local_tls_paths(&text, "nats")).unwrap();
    }
    shared::test_support::config_check::assert_accepted(
        &bin,
        &dir.path().join(run),
        env,
        &format!("the {what} config"),
    );
}

#[test]
fn nats_configs_fsync_every_write() {
    let names: BTreeSet<String> = files_with(NATS_DIR, &["conf"])
        .iter()
        .map(|p| file_name(p))
        .collect();
    let known: BTreeSet<String> = NATS_SERVER_CONFS
        .iter()
        .chain(NATS_FRAGMENTS)
        .map(|n| (*n).to_owned())
        .collect();
    assert_eq!(
        names, known,
        "deploy/nats has the single-server config and one config for every cluster member \
         (per-member values come from the environment, never from a second file), each also \
         with client TLS, and the fragments they include (accounts, TLS)"
    );
    let mut included = BTreeSet::new();
    for name in NATS_SERVER_CONFS {
        let conf = nats_conf_expanded(name);
        assert_durable_nats_conf(&conf, name);
        let mine = nats_includes_transitive(name);
        assert!(
            mine.contains("accounts.conf"),
            "{name} must include accounts.conf: without it every client is anonymous"
        );
        if name.ends_with("-tls.conf") {
            check_nats_tls_block(&conf, name);
            if name.starts_with("cluster") {
                check_route_tls(&conf, name);
            }
        } else {
            assert!(
                tls_block(&conf).is_none() && block_at(&conf, &["cluster", "tls"]).is_none(),
                "{name} stays plaintext (scripts/dev and the chaos suite run it); TLS belongs in \
                 its -tls.conf variant"
            );
        }
        included.extend(mine);
    }
    for fragment in NATS_FRAGMENTS {
        assert!(
            included.contains(*fragment),
            "{fragment} is included by no server config"
        );
    }
}

/// The block `NAME { ... }` of a NATS config (comments removed), without its braces.
fn block<'a>(conf: &'a str, name: &str) -> Option<&'a str> {
    let start = conf.find(&format!("{name} {{"))? + name.len() + 2;
    let mut depth = 1;
    for (i, c) in conf[start..].char_indices() {
        depth += match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        };
        if depth == 0 {
            return Some(&conf[start..start + i]);
        }
    }
    None
}

/// `conf` names a system account `SYS` with a user whose password comes from the environment:
/// what `nats server report ...` and the server's own monitoring requests log in as.
fn check_system_account(conf: &str, what: &str) {
    let active = active_lines(conf);
    assert_eq!(
        conf_value(&active, "system_account").as_deref(),
        Some("SYS"),
        "{what}: no `system_account: SYS` (server reports need a system account user)"
    );
    let sys = block(&active, "SYS").unwrap_or_else(|| panic!("{what}: no account SYS"));
    let users = shared::test_support::users_of(sys).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        users == [("system".to_owned(), "NATS_PASSWORD_SYSTEM".to_owned())],
        "{what}: account SYS has the user system, password $NATS_PASSWORD_SYSTEM: {users:?}"
    );
}

#[test]
fn every_server_config_has_the_system_account() {
    for name in NATS_SERVER_CONFS {
        check_system_account(&nats_conf_expanded(name), name);
    }
    // scripts/dev runs nats.conf beside a copy of accounts.conf (and --cluster cluster.conf).
    let dev = read(&root().join("scripts/dev"));
    assert!(
        dev.contains(&format!("cp \"$ROOT/{ACCOUNTS_CONF}\"")),
        "scripts/dev copies {ACCOUNTS_CONF} beside its nats.conf"
    );
    // The test servers include the same text.
    assert_eq!(
        shared::test_support::ACCOUNTS_CONF,
        read(&root().join(ACCOUNTS_CONF))
    );
}

#[test]
#[should_panic(expected = "no `system_account: SYS`")]
fn a_nats_config_without_a_system_account_is_rejected() {
    let conf = nats_conf_expanded("nats.conf").replace("system_account: SYS", "");
    check_system_account(&conf, "nats.conf");
}

#[test]
fn the_cluster_config_takes_every_member_value_from_the_environment() {
    // cluster.conf with member.conf and routes.conf, not the users' passwords of accounts.conf
    // (scripts/dev provides those from its credentials files).
    let dir = root().join(NATS_DIR);
    let conf = expand_includes(&read(&dir.join("cluster.conf")), &|f| {
        if f == "accounts.conf" {
            String::new()
        } else {
            read(&dir.join(f))
        }
    });
    let vars = conf_vars(&conf);
    for key in ["server_name", "listen", "http", "store_dir", "pid_file"] {
        let value =
            conf_value(&conf, key).unwrap_or_else(|| panic!("{key} in {NATS_CLUSTER_CONF}"));
        assert!(
            value.starts_with('$'),
            "{NATS_CLUSTER_CONF}: {key} differs per member (or between Kubernetes and \
             scripts/dev --cluster), so it comes from the environment, got {value:?}"
        );
    }
    let active = active_lines(&conf);
    assert!(
        active.contains("lame_duck_duration") && active.contains("no_advertise: true"),
        "{NATS_CLUSTER_CONF} keeps lame duck mode and explicit routes"
    );

    // scripts/dev --cluster runs this very file and sets every variable it reads.
    let dev = read(&root().join("scripts/dev"));
    assert!(
        dev.contains(&format!("\"$ROOT/{NATS_CLUSTER_CONF}\"")),
        "scripts/dev --cluster runs {NATS_CLUSTER_CONF}"
    );
    for var in &vars {
        assert!(
            dev.contains(&format!("{var}=")),
            "scripts/dev --cluster does not set ${var}, which {NATS_CLUSTER_CONF} reads"
        );
    }
}

#[test]
#[should_panic(expected = "verify: true")]
fn a_nats_server_that_does_not_verify_clients_is_rejected() {
    let conf =
        read(&root().join(NATS_DIR).join("tls.conf")).replace("verify: true", "verify: false");
    check_nats_tls_block(&conf, "tls.conf");
}

#[test]
#[should_panic(expected = "would carry every message in plaintext")]
fn a_cluster_member_with_plaintext_routes_is_rejected() {
    // Client TLS, but the cluster block of the plaintext member.
    let conf = format!(
        "{}\n{}",
        nats_conf_expanded("cluster.conf"),
        read(&root().join(NATS_DIR).join("tls.conf"))
    );
    check_route_tls(&conf, "cluster.conf with tls.conf");
}

#[test]
#[should_panic(expected = "a member without a certificate of the CA must not join")]
fn a_cluster_member_whose_routes_do_not_verify_is_rejected() {
    let conf = nats_conf_expanded("cluster-tls.conf");
    let cluster = conf.find("cluster {").expect("a cluster block");
    let (head, tail) = conf.split_at(cluster);
    let conf = format!("{head}{}", tail.replace("verify: true", "verify: false"));
    check_route_tls(&conf, "cluster-tls.conf");
}

#[test]
#[should_panic(expected = "only a certificate naming a route host is a member")]
fn a_cluster_member_admitting_any_certificate_of_the_ca_is_rejected() {
    let conf = nats_conf_expanded("cluster-tls.conf").replace(
        "verify_cert_and_check_known_urls: true",
        "verify_cert_and_check_known_urls: false",
    );
    check_route_tls(&conf, "cluster-tls.conf");
}
