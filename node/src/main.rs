//! `cart-node`: a gateway and an aggregate node in one process, until SIGTERM / Ctrl-C.

use shared::config::ServiceConfig as _;

shared::service_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let aggregate = aggregate::Config::load()?;
    let gateway = gateway::Config::load()?;
    let _telemetry = shared::telemetry::init(
        "cart-node",
        &shared::telemetry::TelemetryConfig::from_env()?,
    )?;
    shared::config::warn_unknown_env::<aggregate::Config>(aggregate::Config::ENV_PREFIX);
    shared::config::warn_unknown_env::<gateway::Config>(gateway::Config::ENV_PREFIX);
    cart_node::run(aggregate, gateway, shared::shutdown::shutdown_signal()).await
}
