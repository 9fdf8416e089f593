//! `gateway`: serve the HTTP edge until SIGTERM / Ctrl-C.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = gateway::Config::load()?;
    let _telemetry =
        shared::telemetry::init("gateway", &shared::telemetry::TelemetryConfig::from_env()?)?;
    gateway::run(config, shared::shutdown::shutdown_signal()).await?;
    Ok(())
}
