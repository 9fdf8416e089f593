//! `projection`: serve the views (default), or rebuild them from the stream.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use projection::Config;
use projection::ops::admin::REBUILD_PATH;
use projection::ops::rebuild::Rebuild;
use projection::status::{ProjectionStatus, RebuildView};

#[derive(Subcommand)]
enum Cmd {
    /// Serve QueryService and keep the views up to date (the default).
    Serve,
    /// Replay CART_EVENTS from sequence 1 into a fresh database and swap it in.
    Rebuild {
        /// Ask the running service (PROJECTION_HTTP_ADDR, bearer PROJECTION_ADMIN_TOKEN) to
        /// rebuild while it keeps serving. Without it the database file is rebuilt directly,
        /// which requires that no service uses it.
        #[arg(long)]
        online: bool,
    },
}

shared::service_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let command = shared::serve::command_line::<Cmd>(
        "projection",
        "Cart projection: CART_EVENTS → SQLite views, served by QueryService",
    );
    let (config, _telemetry) = shared::serve::start_service::<Config>()?;
    match command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => projection::run(config, shared::shutdown::shutdown_signal()).await,
        Cmd::Rebuild { online: true } => rebuild_online(&config).await,
        Cmd::Rebuild { online: false } => rebuild_offline(config).await,
    }
}

fn base_url(config: &Config) -> String {
    let addr = config.http_addr.replace("0.0.0.0", "127.0.0.1");
    format!("http://{addr}")
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?)
}

async fn rebuild_offline(config: Config) -> anyhow::Result<()> {
    config.check().map_err(anyhow::Error::msg)?;
    let health = format!("{}/health", base_url(&config));
    if http()?.get(&health).send().await.is_ok() {
        anyhow::bail!(
            "a projection answers at {health}; rebuild it with `projection rebuild --online` \
             (or stop it first)"
        );
    }
    let nats = shared::nats::connect_and_ensure(&config.nats, &config.streams).await?;
    let rebuild = Rebuild {
        events: nats.resources.cart_events,
        path: config.db_path(),
        view: config.view.clone(),
        consumer: config.durable(),
        batch_size: config.catch_up_batch_size,
        states: config.state_settings(),
        read_timeout: config.replay_timeout(),
        hooks: projection::Hooks::default(),
    };
    let shared = Arc::new(ProjectionStatus::new(&config.view));
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let v = shared.rebuild.view();
                eprintln!("rebuild: at sequence {} of {}", v.applied, v.target);
            }
        })
    };
    let result = rebuild.offline(&shared).await;
    progress.abort();
    let report = result?;
    println!(
        "rebuilt {}: {} messages applied, {} failed, checkpoint {}, {:.1} s",
        rebuild.path.display(),
        report.applied,
        report.failed,
        report.checkpoint,
        report.seconds
    );
    Ok(())
}

async fn rebuild_online(config: &Config) -> anyhow::Result<()> {
    let url = format!("{}{REBUILD_PATH}", base_url(config));
    let http = http()?;
    let token = config.admin_token.expose();
    let started = http
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    if !started.status().is_success() {
        anyhow::bail!(
            "POST {url}: {} {}",
            started.status(),
            started.text().await.unwrap_or_default()
        );
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let v: RebuildView = http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?
            .json()
            .await?;
        if v.running {
            eprintln!("rebuild: at sequence {} of {}", v.applied, v.target);
            continue;
        }
        let result = v.last_result.unwrap_or_default();
        println!("rebuild {result}");
        return if result.starts_with("ok") {
            Ok(())
        } else {
            Err(anyhow::anyhow!("rebuild {result}"))
        };
    }
}
