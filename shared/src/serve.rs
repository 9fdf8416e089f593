//! Serving, the same way in every service: the gRPC listener, the ops HTTP server and the loop
//! that keeps `/ready` truthful.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, ServiceConfig};
use crate::ops::Readiness;
use crate::telemetry::{TelemetryConfig, TelemetryError, TelemetryGuard};

/// Why a service binary could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
}

/// Declares a service's global allocator, mimalloc: the services allocate many small,
/// short-lived objects per request, and mimalloc handles that with far less contention than the
/// system allocator (measured with cart-bench). Once, in each service's `main.rs`.
#[macro_export]
macro_rules! service_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::serve::MiMalloc = $crate::serve::MiMalloc;
    };
}

#[doc(hidden)]
pub use mimalloc::MiMalloc;

/// A service's command line: `<name> [SUBCOMMAND]`, with `--help` and `--version`. No
/// subcommand is `None`, which every service takes as "serve". A bad command line exits with
/// clap's message, as a derived parser would.
pub fn command_line<C: clap::Subcommand>(name: &'static str, about: &'static str) -> Option<C> {
    let command = clap::Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about);
    let matches = C::augment_subcommands(command).get_matches();
    matches.subcommand_name()?;
    Some(C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// What every service binary does first: install the TLS crypto provider, load its settings,
/// start telemetry (keep the guard for the process's life) and warn about `<PREFIX>_*`
/// variables no setting reads.
pub fn start_service<C: ServiceConfig>() -> Result<(C, TelemetryGuard), StartError> {
    crate::tls::install_crypto_provider();
    let config = C::load()?;
    let telemetry = crate::telemetry::init(C::SERVICE, &TelemetryConfig::from_env()?)?;
    crate::config::warn_unknown_env::<C>(C::ENV_PREFIX);
    Ok((config, telemetry))
}

/// [`start_service`] for a process that runs two services (`cart-node`: an aggregate and a
/// gateway): both settings, then one telemetry named `name`, then each service's warnings.
pub fn start_services<A: ServiceConfig, B: ServiceConfig>(
    name: &'static str,
) -> Result<(A, B, TelemetryGuard), StartError> {
    crate::tls::install_crypto_provider();
    let (a, b) = (A::load()?, B::load()?);
    let telemetry = crate::telemetry::init(name, &TelemetryConfig::from_env()?)?;
    crate::config::warn_unknown_env::<A>(A::ENV_PREFIX);
    crate::config::warn_unknown_env::<B>(B::ENV_PREFIX);
    Ok((a, b, telemetry))
}

/// Listen on `addr`; the error names it.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serve `router` (the gRPC services, added to a server built from the service's TLS
/// settings) on `listener` until `stop`.
pub async fn grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    router
        .serve_with_incoming_shutdown(
            grpc_incoming(listener),
            async move { stop.cancelled().await },
        )
        .await
}

/// The readiness check name for the NATS connection, shared by every service.
pub const NATS_CHECK: &str = "nats";

/// A gRPC listener for tonic with `TCP_NODELAY`: calls are small request/response pairs, and
/// without it Nagle plus delayed ACKs add ~40 ms to each (measured with cart-bench).
pub fn grpc_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serve `router` (the ops endpoints, possibly with more routes) until `stop`.
pub async fn http(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "ops HTTP server failed");
    }
}

/// Every 250 ms until `stop`: record whether NATS is connected, then run the service's own
/// checks.
pub async fn watch_readiness(
    readiness: Readiness,
    nats: async_nats::Client,
    stop: CancellationToken,
    mut checks: impl FnMut(&Readiness) + Send,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let connected = nats.connection_state() == async_nats::connection::State::Connected;
        readiness.set(NATS_CHECK, connected, Some("disconnected from NATS"));
        checks(&readiness);
    }
}
