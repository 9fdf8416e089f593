//! `runner`: checkout effects (default), or a standalone mock payment provider.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Cart runner: checkout side effects with outbox semantics"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Consume checkout events and provider pushes (the default).
    Serve,
    /// Run only the mock payment provider (Klarna Checkout v3 HTTP shape).
    MockProvider {
        #[arg(long, default_value = "127.0.0.1:9200")]
        addr: String,
    },
}

/// The services allocate a lot of small, short-lived objects per request; mimalloc handles
/// that with far less contention than the system allocator (measured with cart-bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, _telemetry) = shared::serve::start_service::<runner::Config>()?;
    let shutdown = shared::shutdown::shutdown_signal();
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => runner::run(config, shutdown).await,
        Cmd::MockProvider { addr } => {
            let mock = runner::provider::mock::MockProvider::new(
                &config.provider.username,
                config.provider.password.expose(),
            );
            let (bound, task) = mock.serve(&addr, shutdown).await?;
            println!("mock provider listening on http://{bound}");
            task.await?;
            Ok(())
        }
    }
}
