//! `gateway`: serve the HTTP edge until SIGTERM / Ctrl-C.

shared::service_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, _telemetry) = shared::serve::start_service::<gateway::Config>()?;
    gateway::run(config, shared::shutdown::shutdown_signal()).await?;
    Ok(())
}
