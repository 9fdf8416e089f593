//! `cart-bench`: measure the platform against raw JetStream on the same machine, in the same run.
//!
//! ```text
//! cargo run --release -p cart-bench -- grpc --concurrency 256 --duration 10 --json grpc.json
//! ```

use std::path::PathBuf;
use std::time::Duration;

use cart_bench::{Measured, Report};
use clap::{Parser, ValueEnum};
use tests::stack::Stack;

#[global_allocator]
static ALLOC: cart_bench::alloc::Counting = cart_bench::alloc::Counting;

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Mode {
    /// Raw JetStream appends against themselves (shows the run's noise level).
    Raw,
    /// CartService Execute(AddItem) on distinct carts vs raw appends.
    Grpc,
    /// Storefront add-item requests through the gateway vs raw appends.
    Http,
    /// Cold load of 1,000-message carts vs raw reads of their messages.
    ColdLoad,
    /// Heap bytes per cached 3-line cart.
    Memory,
    /// Catch-up rate of a fresh projection over a preloaded stream vs a bare pull consumer.
    Projection,
}

/// How the spawned nats-server persists writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum NatsSync {
    /// `sync_interval: always`: fsync before every acknowledgement (production); appends are
    /// bounded by the disk's fsync rate, which hides the services' own cost.
    Always,
    /// The server's default lazy fsync: the baseline is what the CPU allows, so the ratio
    /// shows what the services cost.
    Never,
}

#[derive(Parser)]
#[command(
    version,
    about = "Load the cart platform next to a raw-JetStream baseline measured in the same run"
)]
struct Args {
    mode: Mode,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured seconds per side (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// raw, grpc, http: alternate baseline and subject this many times, each for
    /// duration / rounds, so a burst of noise from the host falls on both sides (1: the
    /// baseline's whole duration, then the subject's).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Use this NATS server instead of spawning one.
    #[arg(long)]
    nats_url: Option<String>,
    /// How the spawned server persists writes (ignored with --nats-url).
    #[arg(long, value_enum, default_value_t = NatsSync::Always)]
    nats_sync: NatsSync,
    /// Use this gateway (base URL) instead of starting one (and an aggregate) in-process.
    #[arg(long)]
    gateway_url: Option<String>,
    /// Use this aggregate node (gRPC address) instead of starting one in-process.
    #[arg(long)]
    aggregate_addr: Option<String>,
    /// http: the gateway and the aggregate as one `cart-node` (the gateway hands `Execute` to
    /// the aggregate in its process) instead of two services with gRPC between them.
    #[arg(long)]
    node: bool,
    /// Carts (cold-load: 100, memory: 100000, projection: 50000).
    #[arg(long)]
    carts: Option<usize>,
    /// Messages per cart (cold-load: 1000), or in total (projection: 1000000).
    #[arg(long)]
    events: Option<u64>,
    /// Run the in-process services with the telemetry a service binary installs (JSON logs,
    /// `RUST_LOG` or `info`, written to a sink; the OpenTelemetry tracer, exporting only if
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is set). Off by default, so
    /// the figures compare with earlier runs; on, they include what logging and spans cost.
    #[arg(long)]
    telemetry: bool,
}

impl Args {
    /// The warm-up and the measured time of each side.
    fn timing(&self) -> (Duration, Duration) {
        (
            Duration::from_secs_f64(self.warmup),
            Duration::from_secs_f64(self.duration),
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::tls::install_crypto_provider();
    let args = Args::parse();
    let _telemetry = if args.telemetry {
        // `RUST_LOG` and the OTLP endpoint as a binary reads them; lines are always JSON.
        let config = shared::telemetry::TelemetryConfig {
            log_format: shared::telemetry::LogFormat::Json,
            ..shared::telemetry::TelemetryConfig::from_env()?
        };
        Some(shared::telemetry::init_with_writer(
            "cart-bench",
            &config,
            std::io::sink,
        )?)
    } else {
        None
    };
    let (warmup, duration) = args.timing();
    let mut stack = Stack::for_bench(
        args.nats_url.as_deref(),
        Default::default(),
        args.nats_sync == NatsSync::Always,
    )
    .await?;
    let mut report = match args.mode {
        Mode::Raw => {
            // Alternating like `grpc` and `http`, so the ratio shows the noise those see.
            let side =
                |warm, time| cart_bench::raw::baseline(&stack.js, args.concurrency, warm, time);
            let (a, b) = cart_bench::alternating(args.rounds, warmup, duration, side, side).await;
            let mut r = Report::new("raw", args.concurrency, duration, a.summary(), b.summary());
            r.notes.push(
                "baseline and subject are both raw appends: the ratio shows this run's noise"
                    .into(),
            );
            r
        }
        Mode::Grpc => {
            let (node, addr) = match &args.aggregate_addr {
                Some(a) => (None, a.clone()),
                None => {
                    let node = stack.aggregate("bench").await?;
                    let addr = node.grpc_addr.to_string();
                    (Some(node), addr)
                }
            };
            let client = cart_client::CartClient::new(Default::default(), None, vec![addr]);
            let subject =
                |warm, time| cart_bench::grpc::subject(&client, args.concurrency, warm, time);
            let r = against_raw_appends(&stack, &args, subject).await;
            if let Some(node) = node {
                node.drain().await?;
            }
            r
        }
        Mode::Http => {
            let (nodes, base) = match &args.gateway_url {
                Some(url) => (None, url.trim_end_matches('/').to_owned()),
                None => {
                    let node = stack.aggregate("bench").await?;
                    let local = (args.node)
                        .then(|| node.in_process() as std::sync::Arc<dyn cart_client::LocalNode>);
                    let gw = gateway::start_with(stack.gateway_config(), local).await?;
                    let base = format!("http://{}", gw.http_addr);
                    cart_bench::http::wait_ready(&base).await?;
                    (Some((node, gw)), base)
                }
            };
            let subject =
                |warm, time| cart_bench::http::subject(&base, args.concurrency, warm, time);
            let r = against_raw_appends(&stack, &args, subject).await;
            if let Some((node, gw)) = nodes {
                gw.stop().await?;
                node.drain().await?;
            }
            r
        }
        Mode::ColdLoad => {
            cart_bench::cold_load::run(
                &stack,
                args.carts.unwrap_or(100),
                args.events.unwrap_or(1000),
            )
            .await?
        }
        Mode::Memory => {
            cart_bench::memory::run(&stack, args.carts.unwrap_or(100_000), args.concurrency).await?
        }
        Mode::Projection => {
            cart_bench::projection::run(
                &mut stack,
                args.events.unwrap_or(1_000_000),
                args.carts.unwrap_or(50_000),
            )
            .await?
        }
    };
    report.nats_sync = match (&args.nats_url, args.nats_sync) {
        (Some(url), _) => format!("external server {url}"),
        (None, NatsSync::Always) => "always".into(),
        (None, NatsSync::Never) => "never".into(),
    };
    print!("{}", report.table());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The report of a mode whose subject adds items, one cart per worker (`grpc`, `http`): raw
/// appends are measured first (the baseline), then `subject(warm-up, time)`; with `--rounds`
/// the two alternate.
async fn against_raw_appends<S, SF>(stack: &Stack, args: &Args, subject: S) -> Report
where
    S: FnMut(Duration, Duration) -> SF,
    SF: Future<Output = Measured>,
{
    let (mode, what) = match args.mode {
        Mode::Grpc => (
            "grpc",
            "CartService Execute(AddItem) through the routing client",
        ),
        Mode::Http if args.node => (
            "http",
            "POST /cart/byid/{id} (storefront add item) through a cart-node (gateway and aggregate in one process)",
        ),
        Mode::Http => (
            "http",
            "POST /cart/byid/{id} (storefront add item) through the gateway",
        ),
        other => unreachable!("{other:?} does not add items"),
    };
    let (warmup, duration) = args.timing();
    let baseline = |warm, time| cart_bench::raw::baseline(&stack.js, args.concurrency, warm, time);
    let (base, subject) =
        cart_bench::alternating(args.rounds, warmup, duration, baseline, subject).await;
    let mut r = Report::new(
        mode,
        args.concurrency,
        duration,
        base.summary(),
        subject.summary(),
    );
    r.notes.push("baseline: raw JetStream appends with expected-last-subject-sequence, one subject per worker".into());
    r.notes.push(format!(
        "subject: {what}, one cart per worker (new cart every 400 adds)"
    ));
    if args.rounds > 1 {
        r.notes.push(format!(
            "{} alternating rounds of {:.1} s per side",
            args.rounds,
            duration.as_secs_f64() / f64::from(args.rounds)
        ));
    }
    if let Some(e) = subject.first_error {
        r.notes.push(format!("first error: {e}"));
    }
    r
}
