//! Helper of `tests/tests/tied_children.rs`: starts `sleep 600` through
//! `shared::test_support::spawn_tied`, prints `tied-child <pid>` and waits to be killed.

use std::io::Write;
use std::process::Command;

fn main() {
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let mut child = shared::test_support::spawn_tied(sleep).expect("spawn sleep");
    let mut out = std::io::stdout();
    writeln!(out, "tied-child {}", child.id()).unwrap();
    out.flush().unwrap();
    // Until the test kills this process (then the kernel kills `sleep`).
    let _ = child.wait();
}
