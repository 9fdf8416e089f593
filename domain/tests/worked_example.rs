//! `docs/adding-a-command.md` walks through adding a command; its patch,
//! `docs/examples/set-gift-message.patch`, is the proof of how many files that takes. This
//! test keeps the claim true: the patch still applies to the tree and touches at most five
//! files. (Applying it and running `cargo nextest run --workspace` is the full check; the
//! document says how.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[test]
fn the_worked_example_applies_and_touches_at_most_five_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let patch = root.join("docs/examples/set-gift-message.patch");
    let text = std::fs::read_to_string(&patch).expect("the worked example's patch");
    let files: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("+++ b/"))
        .collect();
    assert!(
        !files.is_empty() && files.len() <= 5,
        "the example touches {} files: {files:?}",
        files.len()
    );
    let out = match Command::new("git")
        .current_dir(root)
        .args(["apply", "--check"])
        .arg(&patch)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: no git to check the patch with ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "docs/examples/set-gift-message.patch no longer applies; redo the example on today's code: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
