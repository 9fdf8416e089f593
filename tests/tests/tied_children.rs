//! `shared::test_support::spawn_tied`: the nats-servers and service binaries tests start die
//! with the test process, even when it is killed and runs no destructor.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_tied_child_dies_when_its_parent_is_killed() {
    let mut helper = Command::new(env!("CARGO_BIN_EXE_tied_helper"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let pid: u32 = lines
        .find_map(|l| l.ok()?.strip_prefix("tied-child ")?.trim().parse().ok())
        .expect("the helper names its child");
    assert!(!gone(pid), "the tied child runs while its parent does");
    helper.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survived = !gone(pid);
    if survived {
        // Do not leave it behind either way.
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(!survived, "the tied child outlived its killed parent");
}
