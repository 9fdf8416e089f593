//! Graceful shutdown: one token that every task of a service watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C (SIGINT) or SIGTERM (what Kubernetes and `docker stop` send).
/// Services pass it to `run(config, shutdown)`; tests cancel their own token instead.
///
/// The signal handlers are registered before this returns, so a signal that arrives right
/// after startup is never the default "terminate now". Must be called inside a tokio runtime.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                () = cancel.cancelled() => return,
            };
            tracing::info!(signal = name, "shutdown requested");
            cancel.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if r.is_ok() {
                    tracing::info!(signal = "ctrl-c", "shutdown requested");
                    cancel.cancel();
                }
            }
            () = cancel.cancelled() => {}
        }
    });
    token
}
