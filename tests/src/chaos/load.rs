//! Storefront clients under chaos: each one changes its own cart or a cart it shares with
//! others through the `/v1` API, every change with its own `Idempotency-Key`, and retries an
//! unknown outcome (a timeout, a 5xx, a refused connection) with the same key, on the other
//! gateway too, as a client behind a load balancer would. Every request is recorded with its
//! start and end time and what the client saw, for the checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

/// What a client finally saw for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: the change is applied (at `version`).
    Acked,
    /// A definitive refusal (4xx): nothing was applied.
    Refused(u16, String),
    /// No definitive answer after every retry: it may or may not be applied (at most once).
    Ambiguous(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub cart: String,
    /// `None` for a read.
    pub key: Option<String>,
    pub kind: &'static str,
    pub start: Instant,
    pub end: Instant,
    pub outcome: Outcome,
    /// The cart version the reply named (`ETag`).
    pub version: Option<u64>,
    pub attempts: u32,
}

impl Op {
    pub fn is_write(&self) -> bool {
        self.key.is_some()
    }
}

/// A request from its first try on: what the `Op` it ends in records of it.
struct Started<'a> {
    client: usize,
    cart: &'a str,
    key: Option<String>,
    kind: &'static str,
    start: Instant,
}

impl<'a> Started<'a> {
    fn now(client: usize, cart: &'a str, key: Option<String>, kind: &'static str) -> Self {
        Started {
            client,
            cart,
            key,
            kind,
            start: Instant::now(),
        }
    }

    /// The request ends now with `outcome`, after `attempts` tries.
    fn ended(self, outcome: Outcome, version: Option<u64>, attempts: u32) -> Op {
        Op {
            client: self.client,
            cart: self.cart.to_owned(),
            key: self.key,
            kind: self.kind,
            start: self.start,
            end: Instant::now(),
            outcome,
            version,
            attempts,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub clients: usize,
    /// Carts changed by several clients at once (every third client uses one of them).
    pub shared_carts: usize,
    /// Cart ids start with it, so each scenario checks its own carts.
    pub prefix: String,
    pub gateways: Vec<String>,
    /// Tries of one request (the first included) before its outcome counts as unknown.
    pub attempts: u32,
    pub max_ops_per_client: usize,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<Op>>,
}

const SKUS: &[&str] = &[
    "TEST-SKU-123",
    "TEST-SKU-456",
    "HOME-CANDLE-01",
    "BOOK-NOVEL-01",
    "FOOD-COFFEE-500",
];

impl Load {
    pub fn start(cfg: LoadConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(4))
            .pool_max_idle_per_host(cfg.clients)
            .build()
            .expect("http client");
        let mut tasks = JoinSet::new();
        for client in 0..cfg.clients {
            let (cfg, http, stop) = (cfg.clone(), http.clone(), stop.clone());
            tasks.spawn(async move { run_client(client, cfg, http, stop).await });
        }
        Self { stop, tasks }
    }

    /// Stops issuing new requests, lets the ones in flight finish, returns every record.
    pub async fn finish(mut self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        let mut ops = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            ops.extend(done.unwrap_or_default());
        }
        ops
    }
}

pub fn cart_of(cfg: &LoadConfig, client: usize) -> String {
    if cfg.shared_carts > 0 && client.is_multiple_of(3) {
        format!("{}-shared-{}", cfg.prefix, (client / 3) % cfg.shared_carts)
    } else {
        format!("{}-own-{client}", cfg.prefix)
    }
}

async fn run_client(
    client: usize,
    cfg: LoadConfig,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
) -> Vec<Op> {
    let cart = cart_of(&cfg, client);
    let mut ops = Vec::new();
    let mut rng = fastrand::Rng::with_seed(client as u64 * 7919 + 1);
    for n in 0..cfg.max_ops_per_client {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let roll = rng.u32(0..100);
        let op = if roll < 12 {
            read(client, &cart, &cfg, &http, n).await
        } else {
            let (kind, body) = match roll {
                12..=74 => (
                    "AddItem",
                    json!({"type": "AddItem", "sku": SKUS[rng.usize(..SKUS.len())], "quantity": 1}),
                ),
                75..=94 => (
                    "ChangeQuantity",
                    json!({"type": "ChangeQuantity", "lineId": 1, "quantity": rng.u32(1..6)}),
                ),
                _ => ("ClearCart", json!({"type": "ClearCart"})),
            };
            let key = format!("{}-c{client}-{n}", cfg.prefix);
            write(client, &cart, kind, key, &body, &cfg, &http, n).await
        };
        ops.push(op);
    }
    ops
}

/// One keyed change, retried with the same key until it has a definitive answer.
#[allow(clippy::too_many_arguments)]
async fn write(
    client: usize,
    cart: &str,
    kind: &'static str,
    key: String,
    body: &Value,
    cfg: &LoadConfig,
    http: &reqwest::Client,
    n: usize,
) -> Op {
    let req = Started::now(client, cart, Some(key.clone()), kind);
    let mut last = String::new();
    for attempt in 0..cfg.attempts {
        let gateway = &cfg.gateways[(client + n + attempt as usize) % cfg.gateways.len()];
        let sent = http
            .post(format!("{gateway}/v1/carts/{cart}/commands"))
            .header("idempotency-key", &key)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                return req.ended(Outcome::Acked, etag(&r), attempt + 1);
            }
            Ok(r) => {
                let status = r.status().as_u16();
                let wait = retry_after(&r);
                let text = r.text().await.unwrap_or_default();
                let code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if retryable(status, &code) {
                    last = format!("{status}: {text}");
                    tokio::time::sleep(wait.unwrap_or(backoff(attempt))).await;
                    continue;
                }
                return req.ended(Outcome::Refused(status, code), None, attempt + 1);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    req.ended(Outcome::Ambiguous(last), None, cfg.attempts)
}

/// A read of the cart (counted among the storefront's requests), retried like a write.
async fn read(client: usize, cart: &str, cfg: &LoadConfig, http: &reqwest::Client, n: usize) -> Op {
    let req = Started::now(client, cart, None, "Read");
    let mut last = String::new();
    for attempt in 0..cfg.attempts {
        let gateway = &cfg.gateways[(client + n + attempt as usize) % cfg.gateways.len()];
        match http.get(format!("{gateway}/v1/carts/{cart}")).send().await {
            Ok(r) if r.status().is_success() => {
                return req.ended(Outcome::Acked, etag(&r), attempt + 1);
            }
            Ok(r) if retryable(r.status().as_u16(), "") => {
                last = r.status().to_string();
                if let Some(wait) = retry_after(&r) {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            Ok(r) => {
                let refused = Outcome::Refused(r.status().as_u16(), String::new());
                return req.ended(refused, None, attempt + 1);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    req.ended(Outcome::Ambiguous(last), None, cfg.attempts)
}

/// Worth the same request again: unavailability, timeouts, rate limits, a cart that kept
/// changing concurrently (a retried command cannot apply twice).
fn retryable(status: u16, code: &str) -> bool {
    status >= 500 || status == 429 || (status == 409 && code == "version_conflict")
}

/// The wait before try `attempt + 2` when the answer named none.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt + 1))
}

/// The server's `Retry-After` (seconds), as a browser-side storefront would honour it; capped
/// so a scenario's clients stay busy.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    let secs: u64 = r
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3)))
}

fn etag(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("etag")?
        .to_str()
        .ok()?
        .trim_matches('"')
        .parse()
        .ok()
}
