//! `http` mode: storefront add-item requests (`POST /cart/byid/{id}`) on distinct carts through
//! the gateway, which routes them over gRPC to the aggregate.

use std::time::Duration;

use super::{Adds, Measured, Worker, drive};

struct HttpWorker {
    http: reqwest::Client,
    base: String,
    adds: Adds,
}

impl Worker for HttpWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        let (cart, sku) = self.adds.next_add();
        let resp = self
            .http
            .post(format!("{}/cart/byid/{cart}", self.base))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(format!(r#"{{"sku":"{sku}","quantity":1,"country":"se"}}"#))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

pub async fn subject(
    base: &str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let run = super::run_id();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let workers = (0..concurrency)
        .map(|i| HttpWorker {
            http: http.clone(),
            base: base.to_owned(),
            adds: Adds::new(format!("http-{run}-{i}")),
        })
        .collect();
    drive(workers, warmup, duration).await
}
