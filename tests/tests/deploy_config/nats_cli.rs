//! The `nats` CLI commands of the docs checked against the code: every stream, consumer,
//! bucket, key and subject a command names is one the platform defines (`shared::subjects`),
//! every user is a user of deploy/nats/accounts.conf logging in with its own password file,
//! every `--context` is one the docs (or the nats-box pod) save, and server reports run as the
//! system user while stream, consumer and bucket commands do not (the system account sees no
//! streams). A renamed stream or consumer makes the docs fail here instead of at 3 a.m.

use std::collections::BTreeMap;

use shared::nats::validate::subject_covers;
use shared::subjects::{self, CatalogKey};

use crate::common::{read, root};
use crate::nats::nats_users;

/// Where operators read `nats` commands.
const DOCS: &[&str] = &[
    "README.md",
    "docs/nats.md",
    "docs/runbook.md",
    "docs/operations.md",
    "deploy/README.md",
    "deploy/k8s/nats-box.yaml",
];

/// Flags of the `nats` CLI that take a value (the rest are switches).
const VALUED: &[&str] = &[
    "-s",
    "--server",
    "--user",
    "--password",
    "--context",
    "--tlsca",
    "--tlscert",
    "--tlskey",
    "--creds",
    "--subject",
    "--max-bytes",
    "--description",
    "--timeout",
    "--count",
    "--since",
];

/// The `nats` CLI's command groups (a typo is not one).
const GROUPS: &[&str] = &[
    "stream", "consumer", "kv", "server", "context", "account", "sub", "pub", "req", "object",
    "rtt", "bench", "events", "micro",
];

/// One command: where it is written, its flags and its positional words (after `nats`).
#[derive(Debug)]
pub struct Command {
    pub at: String,
    pub flags: BTreeMap<String, String>,
    pub words: Vec<String>,
}

/// Shell words of `line`, quotes removed (`"$(cat f)"` is one word).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, any) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (_, c) => (word, any) = (word + &c.to_string(), true),
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// Every `nats ...` command of a text: in fenced code blocks (and every line of a YAML file,
/// comments included), continuation lines joined, after `;`, `&&` or `kubectl exec ... --`;
/// and in inline code spans of Markdown prose.
pub fn commands(file: &str, text: &str) -> Vec<Command> {
    let yaml = file.ends_with(".yaml");
    let mut out = Vec::new();
    let mut in_code = false;
    let mut pending = String::new();
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        if raw.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code && !yaml {
            for (i, span) in raw.split('`').enumerate() {
                let span = span.split_once(" -- ").map_or(span, |(_, cmd)| cmd);
                if i % 2 == 1 && span.starts_with("nats ") {
                    out.push(parse(&at, span));
                }
            }
            continue;
        }
        let line = if yaml {
            raw.trim_start().trim_start_matches('#')
        } else {
            raw
        };
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        let code = match full.find(" #") {
            Some(i) if !yaml || full[..i].contains("nats ") => &full[..i],
            _ => full.as_str(),
        };
        for part in code.split(';').flat_map(|p| p.split("&&")) {
            let part = part.trim();
            let part = part.split_once(" -- ").map_or(part, |(_, cmd)| cmd.trim());
            if part.starts_with("nats ") {
                out.push(parse(&at, part));
            }
        }
    }
    out
}

fn parse(at: &str, command: &str) -> Command {
    let words = shell_words(command);
    let mut flags = BTreeMap::new();
    let mut positional = Vec::new();
    let mut rest = words.into_iter().skip(1);
    while let Some(w) = rest.next() {
        if VALUED.contains(&w.as_str()) {
            flags.insert(w, rest.next().unwrap_or_default());
        } else if w.starts_with('-') {
            flags.insert(w, String::new());
        } else {
            positional.push(w);
        }
    }
    Command {
        at: at.to_owned(),
        flags,
        words: positional,
    }
}

/// The platform's streams and the subjects each captures (the buckets' streams included).
fn streams() -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = [
        (subjects::CART_EVENTS_STREAM, subjects::CART_EVENTS_ALL),
        (
            subjects::WORKFLOW_COMMANDS_STREAM,
            subjects::WORKFLOW_COMMANDS_ALL,
        ),
        (
            subjects::WORKFLOW_EVENTS_STREAM,
            subjects::WORKFLOW_EVENTS_ALL,
        ),
        (subjects::DEAD_LETTERS_STREAM, subjects::DEAD_LETTERS_ALL),
    ]
    .into_iter()
    .map(|(s, subject)| (s.to_owned(), subject.to_owned()))
    .collect();
    for bucket in buckets() {
        out.insert(format!("KV_{bucket}"), format!("$KV.{bucket}.>"));
    }
    out
}

fn buckets() -> [&'static str; 5] {
    [
        subjects::CART_SNAPSHOTS_BUCKET,
        subjects::CART_PLACEMENT_BUCKET,
        subjects::CART_NODES_BUCKET,
        subjects::CATALOG_BUCKET,
        subjects::RUNNER_LEASE_BUCKET,
    ]
}

/// The durable consumers and the stream each reads.
fn durables() -> BTreeMap<String, &'static str> {
    BTreeMap::from([
        (
            subjects::projection_durable("main").unwrap(),
            subjects::CART_EVENTS_STREAM,
        ),
        (
            subjects::RUNNER_CHECKOUT_DURABLE.to_owned(),
            subjects::CART_EVENTS_STREAM,
        ),
        (
            subjects::RUNNER_PUSH_DURABLE.to_owned(),
            subjects::WORKFLOW_COMMANDS_STREAM,
        ),
    ])
}

/// A placeholder such as `<name>`: not a name to check.
fn placeholder(word: &str) -> bool {
    word.starts_with('<') && word.ends_with('>')
}

/// Checks `cmds` (the contexts they save are known to all of them); returns how many ran.
pub fn check(cmds: &[Command]) -> usize {
    let users = nats_users();
    let contexts: BTreeMap<&str, &str> = cmds
        .iter()
        .filter(|c| {
            c.words
                .starts_with(&["context".to_owned(), "save".to_owned()])
        })
        .map(|c| {
            let name = c.words.get(2).map_or("", String::as_str);
            let user = c.flags.get("--user").map_or("", String::as_str);
            assert!(
                !user.is_empty(),
                "{}: context {name} saved without --user",
                c.at
            );
            (name, user)
        })
        .collect();
    let (streams, durables) = (streams(), durables());
    for c in cmds {
        let at = &c.at;
        let user = match (c.flags.get("--user"), c.flags.get("--context")) {
            (Some(u), _) => u.as_str(),
            (None, Some(ctx)) => contexts
                .get(ctx.as_str())
                .unwrap_or_else(|| panic!("{at}: no doc saves the context {ctx}")),
            (None, None) => "admin", // the context the docs select
        };
        assert!(
            users.contains_key(user),
            "{at}: {user} is no user of deploy/nats/accounts.conf"
        );
        if let Some(password) = c.flags.get("--password").filter(|p| p.contains("cat ")) {
            let file = password.trim_end_matches(')').rsplit('/').next().unwrap();
            assert!(
                file == format!("{user}.password") || file == user,
                "{at}: {user} logs in with {password}"
            );
        }
        let word = |i: usize| {
            c.words
                .get(i)
                .map(String::as_str)
                .filter(|w| !placeholder(w))
        };
        let group = word(0).unwrap_or_else(|| panic!("{at}: `nats` without a command"));
        assert!(
            GROUPS.contains(&group),
            "{at}: `nats {group}` is no command"
        );
        let system = user == "system";
        match group {
            "server" => assert!(system, "{at}: server reports need the system user"),
            "stream" | "consumer" | "kv" => {
                assert!(!system, "{at}: the system account sees no streams");
            }
            _ => {}
        }
        match (group, word(1), word(2)) {
            ("stream", Some(_), Some(stream)) => {
                let captured = streams
                    .get(stream)
                    .unwrap_or_else(|| panic!("{at}: no stream {stream}"));
                if let Some(subject) = c.flags.get("--subject") {
                    assert!(
                        subject_covers(captured, subject),
                        "{at}: {stream} captures {captured}, not {subject}"
                    );
                }
            }
            ("consumer", Some(_), Some(stream)) => {
                assert!(streams.contains_key(stream), "{at}: no stream {stream}");
                if let Some(consumer) = word(3) {
                    let on = durables
                        .get(consumer)
                        .unwrap_or_else(|| panic!("{at}: no durable consumer {consumer}"));
                    assert_eq!(*on, stream, "{at}: {consumer} reads {on}");
                }
            }
            ("kv", Some(_), Some(bucket)) => {
                assert!(buckets().contains(&bucket), "{at}: no bucket {bucket}");
                if let Some(key) = word(3) {
                    let valid = match bucket {
                        "CART_PLACEMENT" => subjects::parse_placement_key(key).is_ok(),
                        "CATALOG" => CatalogKey::parse(key).is_ok(),
                        "CART_SNAPSHOTS" => subjects::parse_snapshot_key(key).is_ok(),
                        "RUNNER_LEASE" => key == subjects::RUNNER_LEASE_KEY,
                        _ => subjects::node_key(key).is_ok(),
                    };
                    assert!(valid, "{at}: {key} is not a key of {bucket}");
                }
            }
            _ => {}
        }
    }
    cmds.len()
}

fn doc_commands(files: &[&str]) -> Vec<Command> {
    files
        .iter()
        .flat_map(|f| commands(f, &read(&root().join(f))))
        .collect()
}

#[test]
fn the_docs_nats_commands_name_what_the_code_defines() {
    let cmds = doc_commands(DOCS);
    let checked = check(&cmds);
    assert!(checked >= 40, "only {checked} nats commands found");
    // The README shows the commands an operator reaches for first.
    let readme: Vec<String> = doc_commands(&["README.md"])
        .iter()
        .map(|c| c.words.join(" "))
        .collect();
    for wanted in [
        "consumer report CART_EVENTS",
        "kv history CART_PLACEMENT",
        "server report connections",
    ] {
        assert!(
            readme.iter().any(|c| c.starts_with(wanted)),
            "README.md shows no `nats {wanted}`: {readme:?}"
        );
    }
}

// The check fails on commands that name what the code does not define.

fn check_text(text: &str) {
    let mut cmds = doc_commands(&["docs/runbook.md"]);
    cmds.extend(commands("broken.md", text));
    check(&cmds);
}

#[test]
#[should_panic(expected = "no stream CART_EVENT")]
fn a_misspelled_stream_is_rejected() {
    check_text("```\nnats stream info CART_EVENT\n```\n");
}

#[test]
#[should_panic(expected = "no durable consumer projection-carts")]
fn an_unknown_consumer_is_rejected() {
    check_text("Lag: `nats consumer info CART_EVENTS projection-carts`.\n");
}

#[test]
#[should_panic(expected = "runner-push reads WORKFLOW_COMMANDS")]
fn a_consumer_on_the_wrong_stream_is_rejected() {
    check_text("```\nnats consumer info CART_EVENTS runner-push\n```\n");
}

#[test]
#[should_panic(expected = "is not a key of CART_PLACEMENT")]
fn a_key_the_bucket_never_holds_is_rejected() {
    check_text("```\nnats kv history CART_PLACEMENT shard.0\n```\n");
}

#[test]
#[should_panic(expected = "server reports need the system user")]
fn a_server_report_as_admin_is_rejected() {
    check_text("```\nnats --context cart server report connections\n```\n");
}

#[test]
#[should_panic(expected = "no doc saves the context prod")]
fn an_unsaved_context_is_rejected() {
    check_text("```\nkubectl exec -it nats-box -- nats --context prod stream report\n```\n");
}

#[test]
#[should_panic(expected = "admin logs in with")]
fn another_users_password_is_rejected() {
    check_text(
        "```\nnats --user admin --password \"$(cat .dev/nats/credentials/system.password)\" stream ls\n```\n",
    );
}

#[test]
fn commands_are_read_from_code_yaml_and_prose() {
    let text = "Run `nats kv ls CART_NODES` or\n```bash\nexport X=1; nats stream report  # all\nnats context save a --user admin \\\n  --select\n```\n";
    let words: Vec<String> = commands("x.md", text)
        .iter()
        .map(|c| c.words.join(" "))
        .collect();
    assert_eq!(
        words,
        ["kv ls CART_NODES", "stream report", "context save a"]
    );
    let yaml = "  #   kubectl -n cart exec -it nats-box -- nats --context sys server list\n";
    let c = commands("x.yaml", yaml);
    assert_eq!(c[0].words, ["server", "list"]);
    assert_eq!(c[0].flags["--context"], "sys");
}
