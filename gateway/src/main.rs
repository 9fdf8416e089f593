//! `gateway`: serve the HTTP edge until SIGTERM / Ctrl-C.

/// The services allocate a lot of small, short-lived objects per request; mimalloc handles
/// that with far less contention than the system allocator (measured with cart-bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (config, _telemetry) = shared::serve::start_service::<gateway::Config>()?;
    gateway::run(config, shared::shutdown::shutdown_signal()).await?;
    Ok(())
}
