//! `gateway`: serve the HTTP edge until SIGTERM / Ctrl-C.

/// The services allocate a lot of small, short-lived objects per request; mimalloc handles
/// that with far less contention than the system allocator (measured with cart-bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let config = gateway::Config::load()?;
    let _telemetry =
        shared::telemetry::init("gateway", &shared::telemetry::TelemetryConfig::from_env()?)?;
    shared::config::warn_unknown_env::<gateway::Config>(gateway::Config::ENV_PREFIX);
    gateway::run(config, shared::shutdown::shutdown_signal()).await?;
    Ok(())
}
