//! `cart-node`: a gateway and an aggregate node in one process, until SIGTERM / Ctrl-C.

shared::service_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (aggregate, gateway, _telemetry) =
        shared::serve::start_services::<aggregate::Config, gateway::Config>("cart-node")?;
    cart_node::run(aggregate, gateway, shared::shutdown::shutdown_signal()).await
}
