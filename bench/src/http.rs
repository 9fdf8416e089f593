//! `http` mode: storefront add-item requests (`POST /cart/byid/{id}`) on distinct carts through
//! the gateway, which routes them over gRPC to the aggregate.
//!
//! The load generator shares the machine's two cores with what it measures, so it is kept as
//! light as wrk: each worker owns one keep-alive HTTP/1.1 connection and writes its request
//! from a reused buffer in one `write`, then reads the response into another reused buffer and
//! parses it with `httparse` (the parser hyper uses). No connection task, channel, header map
//! or body collection per request: hyper's client connection cost ~16 % of the process's CPU
//! in this mode (perf, `cart-bench http --nats-sync never`), half of it outside the syscalls.
//! It reads only what the gateway sends (a `Content-Length` body, no pipelining) and says so
//! when a response is anything else.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{Adds, Measured, Worker, drive};

/// Longest wait for one response.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Longest response head (status line and headers) read.
const MAX_HEAD: usize = 16 * 1024;

struct HttpWorker {
    /// `host:port` of the gateway.
    authority: String,
    conn: Option<TcpStream>,
    adds: Adds,
    /// The request being sent, rebuilt in place for each add.
    request: Vec<u8>,
    /// Its body, written first so that its length is known.
    body: Vec<u8>,
    /// The response read so far.
    response: Vec<u8>,
}

/// What one response head says.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    /// Bytes of the head, up to and including the blank line.
    len: usize,
    content_length: usize,
    /// The server closes the connection after this response.
    close: bool,
}

/// The head at the start of `buf`, `None` while incomplete.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf).context("response head")? {
        httparse::Status::Partial if buf.len() > MAX_HEAD => {
            anyhow::bail!("response head longer than {MAX_HEAD} bytes")
        }
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let (mut content_length, mut close) = (None, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse().ok());
            content_length = Some(v.context("content-length is not a number")?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            anyhow::bail!("a chunked response: this load generator reads Content-Length bodies")
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some(Head {
        status: resp.code.context("status code")?,
        len,
        content_length: content_length.context("a response without Content-Length")?,
        close,
    }))
}

impl HttpWorker {
    fn build_request(&mut self) {
        let (cart, sku) = self.adds.next_add();
        self.body.clear();
        write!(
            self.body,
            r#"{{"sku":"{sku}","quantity":1,"country":"se"}}"#
        )
        .expect("writing to a Vec");
        self.request.clear();
        write!(
            self.request,
            "POST /cart/byid/{cart} HTTP/1.1\r\nhost: {}\r\n\
             content-type: text/plain;charset=UTF-8\r\ncontent-length: {}\r\n\r\n",
            self.authority,
            self.body.len()
        )
        .expect("writing to a Vec");
        self.request.extend_from_slice(&self.body);
    }

    async fn add(&mut self) -> anyhow::Result<()> {
        self.build_request();
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let tcp = TcpStream::connect(&self.authority)
                    .await
                    .with_context(|| format!("connect to {}", self.authority))?;
                tcp.set_nodelay(true)?;
                self.conn.insert(tcp)
            }
        };
        conn.write_all(&self.request).await?;
        self.response.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.response)? {
                break head;
            }
            self.response.reserve(4096);
            if conn.read_buf(&mut self.response).await? == 0 {
                anyhow::bail!("the gateway closed the connection before answering");
            }
        };
        let total = head.len + head.content_length;
        while self.response.len() < total {
            self.response.reserve(total - self.response.len());
            if conn.read_buf(&mut self.response).await? == 0 {
                anyhow::bail!("the gateway closed the connection mid-body");
            }
        }
        anyhow::ensure!(
            self.response.len() == total,
            "more bytes than the response announced (the gateway does not pipeline)"
        );
        if head.close {
            self.conn = None;
        }
        anyhow::ensure!(
            (200..300).contains(&head.status),
            "{}: {}",
            head.status,
            String::from_utf8_lossy(&self.response[head.len..])
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

/// Wait (bounded) until the gateway at `base` reports ready.
pub async fn wait_ready(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{base}/ready");
    shared::test_support::wait_until(
        || async {
            http.get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        },
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| anyhow::anyhow!("gateway not ready: {e}"))
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
            request: Vec::with_capacity(512),
            body: Vec::with_capacity(128),
            response: Vec::with_capacity(8192),
        })
        .collect();
    drive(workers, warmup, duration).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_only_when_complete_and_says_its_body_length() {
        let full =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_head(&full[..20]).unwrap(), None);
        assert_eq!(
            parse_head(full).unwrap(),
            Some(Head {
                status: 200,
                len: full.len() - 2,
                content_length: 2,
                close: false
            })
        );
        let closing =
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let head = parse_head(closing).unwrap().unwrap();
        assert!(head.close);
        assert_eq!(head.status, 503);
    }

    #[test]
    fn a_request_announces_its_body_length_and_names_the_cart() {
        let mut w = HttpWorker {
            authority: "127.0.0.1:1".into(),
            conn: None,
            adds: Adds::new("w".into()),
            request: Vec::new(),
            body: Vec::new(),
            response: Vec::new(),
        };
        for _ in 0..2 {
            w.build_request();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut req = httparse::Request::new(&mut headers);
            let httparse::Status::Complete(head) = req.parse(&w.request).unwrap() else {
                panic!("incomplete request head");
            };
            assert_eq!(
                (req.method, req.path),
                (Some("POST"), Some("/cart/byid/w-0"))
            );
            let length = req
                .headers
                .iter()
                .find(|h| h.name == "content-length")
                .unwrap();
            let body = &w.request[head..];
            assert_eq!(
                std::str::from_utf8(length.value).unwrap(),
                body.len().to_string()
            );
            let item: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(item["quantity"], 1);
        }
    }

    #[test]
    fn what_the_gateway_never_sends_is_an_error_not_a_guess() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(
            parse_head(chunked)
                .unwrap_err()
                .to_string()
                .contains("chunked")
        );
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(parse_head(no_length).is_err());
        let mut endless = b"HTTP/1.1 200 OK\r\nx-long: ".to_vec();
        endless.resize(MAX_HEAD + 1, b'a');
        assert!(
            parse_head(&endless)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }
}
