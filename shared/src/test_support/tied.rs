//! Child processes that end with the process that started them, however it ends.
//!
//! A test killed by a signal (nextest's timeout, Ctrl-C, an OOM kill) runs no destructor, so
//! the `nats-server`s and service binaries it started would live on, holding ports and CPU (one
//! such leftover once skewed a benchmark). On Linux, `PR_SET_PDEATHSIG` has the kernel kill a
//! child when its parent goes; but "parent" is the *thread* that forked it, and a test forks
//! from whatever tokio worker or blocking thread it runs on, which may end first. So every
//! tied child is forked by one thread that lives as long as the process.
//!
//! Tested in `tests/tests/tied_children.rs` (a helper process is killed; its child must go).

use std::io;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Request = (Command, Sender<io::Result<Child>>);

/// Starts `command` so that it is killed (SIGKILL) when this process ends. Elsewhere than on
/// Linux it is a plain `spawn`.
pub fn spawn_tied(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<Request>();
        std::thread::Builder::new()
            .name("tied-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    tie(&mut command);
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the tied-spawner thread");
        tx
    });
    let (reply, answer) = channel();
    spawner
        .send((command, reply))
        .map_err(|_| io::Error::other("the tied-spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the tied-spawner thread is gone"))?
}

#[cfg(target_os = "linux")]
fn tie(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec: it makes two async-signal-safe
    // system calls (prctl, getppid) and builds its errors from OS codes, so it allocates
    // nothing (a forked child of a multi-threaded process must not).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn tie(_command: &mut Command) {}
