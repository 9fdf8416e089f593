//! `runner`: checkout effects (default), or a standalone mock payment provider.

use clap::Subcommand;

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

shared::service_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = shared::serve::command_line::<Cmd>(
        "runner",
        "Cart runner: checkout side effects with outbox semantics",
    );
    let (config, _telemetry) = shared::serve::start_service::<runner::Config>()?;
    let shutdown = shared::shutdown::shutdown_signal();
    match command.unwrap_or(Cmd::Serve) {
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
