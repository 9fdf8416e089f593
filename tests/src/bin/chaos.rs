//! `chaos`: the production topology on one machine under faults (see `tests::chaos`).
//! Run it through `scripts/chaos` (it builds the services first).

use std::path::PathBuf;

use clap::Parser;
use tests::chaos::{Options, cluster, markdown, scenarios};

#[derive(Parser)]
#[command(about = "Chaos suite: faults against the production topology on loopback")]
struct Cli {
    /// Fewer cycles per scenario and no soak (CI: under 5 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Only these scenarios (comma-separated names; all when absent).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// First of the ~80 loopback ports the cluster uses (below the ephemeral range).
    #[arg(long, default_value_t = 21000)]
    base_port: u16,
    /// Concurrent storefront clients per scenario (the soak uses 200).
    #[arg(long, default_value_t = 24)]
    clients: usize,
    /// Where results.json, results.md and the processes' logs go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Seed of the random choices (which node, when); printed, so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(|| fastrand::u64(1..1_000_000));
    let opts = Options {
        quick: cli.quick,
        base_port: cli.base_port,
        only: cli.only,
        clients: cli.clients,
        out: cli.out,
        seed,
    };
    let root = tests::workspace_root();
    let bins = std::env::current_exe()?
        .parent()
        .expect("the binary has a directory")
        .to_owned();
    let out = root.join(&opts.out);
    std::fs::create_dir_all(&out)?;
    eprintln!(
        "chaos: seed {seed}, {} run, cluster under {}",
        if opts.quick { "quick" } else { "full" },
        out.join("run").display()
    );
    let started = std::time::Instant::now();
    let layout = cluster::Layout::first_free(opts.base_port)?;
    let mut cluster = cluster::Cluster::start(&root, &bins, &out.join("run"), layout).await?;
    eprintln!(
        "chaos: cluster up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let write = |results: &[tests::chaos::ScenarioResult]| -> anyhow::Result<()> {
        std::fs::write(
            out.join("results.json"),
            serde_json::to_vec_pretty(results)?,
        )?;
        std::fs::write(out.join("results.md"), markdown(results, opts.quick))?;
        Ok(())
    };
    let results = scenarios::run_all(&mut cluster, &opts, |so_far| {
        if let Err(e) = write(so_far) {
            eprintln!("chaos: cannot write the results so far: {e:#}");
        }
    })
    .await?;
    write(&results)?;
    println!("{}", markdown(&results, opts.quick));
    eprintln!(
        "chaos: {} scenarios in {:.0} s; results in {}",
        results.len(),
        started.elapsed().as_secs_f64(),
        out.join("results.md").display()
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.as_str())
        .collect();
    drop(cluster);
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("failed: {}", failed.join(", "))
    }
}
