//! A fault-injecting TCP proxy on loopback: the services reach each NATS server through one,
//! so the chaos suite can add latency, reset every connection, or black-hole the traffic
//! (connections stay open, nothing passes) without touching the processes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every chunk waits this long before it is passed on.
    Latency(Duration),
    /// Nothing passes (connections stay open); data waits until the fault ends.
    BlackHole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    fault: Fault,
    /// Bumped to close every connection open now.
    generation: u64,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (state, watch) = watch::channel(State {
            fault: Fault::None,
            generation: 0,
        });
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let watch = watch.clone();
                tokio::spawn(async move {
                    let generation = watch.borrow().generation;
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let up = pump(ri, wo, watch.clone(), generation);
                    let down = pump(ro, wi, watch, generation);
                    // Either side closing (or a reset) ends both directions.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    /// Closes every connection open now (clients see a reset and reconnect).
    pub fn reset(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut watch: watch::Receiver<State>,
    generation: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = watch.wait_for(|s| s.generation != generation) => {
                let _ = changed;
                return;
            }
        };
        // Hold the chunk while the fault says so; a reset ends the connection meanwhile.
        loop {
            let state = *watch.borrow_and_update();
            if state.generation != generation {
                return;
            }
            match state.fault {
                Fault::None => break,
                Fault::Latency(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::BlackHole => {
                    if watch.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Shared by the scenarios: one proxy per NATS server.
pub type Proxies = Arc<Vec<FaultProxy>>;
