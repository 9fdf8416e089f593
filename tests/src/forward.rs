//! A loopback TCP port that forwards every connection to an address known only later.
//!
//! Two services that must each know the other's address (the gateway dials the runner, the
//! runner hands the provider the gateway's URLs) can then both start on port 0: the first one
//! is given the forwarder's address, the forwarder learns its target once the second one has
//! bound. Picking a "free" port in advance instead races every other test binding ports.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Forward {
    pub addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    task: JoinHandle<()>,
}

impl Forward {
    /// Listens on a free loopback port; connections wait until [`Forward::to`] names a target.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (target, watch) = watch::channel(None);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(target) = watch.wait_for(Option::is_some).await.map(|t| t.unwrap())
                    else {
                        return;
                    };
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let mut inbound = inbound;
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(Self { addr, target, task })
    }

    /// Where connections go from now on (waiting ones included).
    pub fn to(&self, target: SocketAddr) {
        self.target.send_replace(Some(target));
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}
