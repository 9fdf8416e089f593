//! `http` mode: storefront add-item requests (`POST /cart/byid/{id}`) on distinct carts through
//! the gateway, which routes them over gRPC to the aggregate.
//!
//! The load generator shares the machine's cores with what it measures, so it is kept light,
//! as wrk is: each worker owns one keep-alive HTTP/1.1 connection (hyper's connection API, no
//! pool, no URL parsing per request), and reconnects only after an error.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::{Adds, Measured, Worker, drive};

/// Longest wait for one response.
const TIMEOUT: Duration = Duration::from_secs(30);

struct HttpWorker {
    /// `host:port` of the gateway.
    authority: String,
    conn: Option<SendRequest<Full<Bytes>>>,
    adds: Adds,
}

impl HttpWorker {
    async fn connection(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.conn.as_ref().is_none_or(SendRequest::is_closed) {
            let tcp = tokio::net::TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("connect to {}", self.authority))?;
            tcp.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            self.conn = Some(send);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn add(&mut self) -> anyhow::Result<()> {
        let (cart, sku) = self.adds.next_add();
        let req = http::Request::post(format!("/cart/byid/{cart}"))
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Full::new(Bytes::from(format!(
                r#"{{"sku":"{sku}","quantity":1,"country":"se"}}"#
            ))))?;
        let conn = self.connection().await?;
        conn.ready().await?;
        let resp = conn.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }
}

impl Worker for HttpWorker {
    async fn op(&mut self) -> anyhow::Result<()> {
        let result = tokio::time::timeout(TIMEOUT, self.add())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no response within {TIMEOUT:?}")));
        if result.is_err() {
            // The connection's state is unknown: the next request opens another.
            self.conn = None;
        }
        result
    }
}

/// `base` is the gateway's URL (`http://host:port`).
pub async fn subject(
    base: &str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let run = super::run_id();
    let uri: http::Uri = base.parse().expect("gateway URL");
    let authority = uri
        .authority()
        .expect("gateway URL has host:port")
        .to_string();
    let workers = (0..concurrency)
        .map(|i| HttpWorker {
            authority: authority.clone(),
            conn: None,
            adds: Adds::new(format!("http-{run}-{i}")),
        })
        .collect();
    drive(workers, warmup, duration).await
}
