//! `aggregate`: serve carts (default), prepare NATS (`ensure`, `seed-catalog`), or make a
//! development certificate set (`certs`).

use anyhow::Context as _;
use clap::Subcommand;

#[derive(Subcommand)]
enum Cmd {
    /// Serve CartService (the default).
    Serve,
    /// Create missing streams and buckets, validate existing ones, and exit.
    Ensure,
    /// Load a catalog seed file (products, delivery pricing, vouchers) into the CATALOG bucket.
    SeedCatalog {
        #[arg(long, default_value = "deploy/catalog.json")]
        file: std::path::PathBuf,
    },
    /// Write a development CA and a certificate per service (gateway, runner, aggregate,
    /// projection, admin, nats) for gRPC and NATS mutual TLS, and exit.
    Certs {
        /// Directory for ca.pem, <name>.pem and <name>-key.pem.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Extra DNS names or IP addresses every certificate is valid for (comma-separated),
        /// e.g. Kubernetes service names.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Extra DNS names for the `nats` certificate only (comma-separated): the hosts of the
        /// NATS cluster's route URLs (Kubernetes: nats-0.nats-headless,...), which routes
        /// admit a member by.
        #[arg(long, value_delimiter = ',')]
        nats_hosts: Vec<String>,
    },
}

shared::service_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = shared::serve::command_line::<Cmd>(
        "aggregate",
        "Cart aggregate node: owns carts and appends their events to JetStream",
    );
    if let Some(Cmd::Certs {
        out,
        hosts,
        nats_hosts,
    }) = &command
    {
        let ca =
            shared::certs::Authority::new("cart platform dev CA").map_err(anyhow::Error::msg)?;
        let files = ca
            .write_set(out, &shared::certs::SET, hosts, nats_hosts)
            .map_err(anyhow::Error::msg)?;
        println!("{} files written to {}", files.len(), out.display());
        return Ok(());
    }
    let (config, _telemetry) = shared::serve::start_service::<aggregate::Config>()?;
    match command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => aggregate::run(config, shared::shutdown::shutdown_signal()).await,
        Cmd::Ensure => {
            shared::nats::connect_and_ensure(&config.nats, &config.streams).await?;
            println!("streams and buckets are in place");
            Ok(())
        }
        Cmd::Certs { .. } => unreachable!("handled before the configuration is loaded"),
        Cmd::SeedCatalog { file } => {
            let json = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let seed = aggregate::seed::parse(&json).map_err(anyhow::Error::msg)?;
            let nats = shared::nats::connect_and_ensure(&config.nats, &config.streams).await?;
            let report = aggregate::seed::write(&nats.resources.catalog, &seed)
                .await
                .map_err(|e| anyhow::anyhow!("seeding the catalog failed: {e}"))?;
            println!(
                "catalog seeded from {}: {} products, {} deliveries, {} vouchers",
                file.display(),
                report.products,
                report.deliveries,
                report.vouchers
            );
            Ok(())
        }
    }
}
