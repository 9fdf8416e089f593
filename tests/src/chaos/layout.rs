//! Where the chaos cluster listens: one block of loopback ports, found free before the run.

use anyhow::bail;

/// Ports, all below Linux's ephemeral range (32768+), so no port picked by the kernel for
/// an outgoing connection or a `:0` listener can take one of them.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub base: u16,
}

impl Layout {
    /// The first range from `base` (in steps of 100, at most 20 tries) whose every port is free
    /// now, so a port held by something else moves the cluster rather than failing the run.
    pub fn first_free(base: u16) -> anyhow::Result<Self> {
        for step in 0..20u16 {
            let layout = Self {
                base: base.saturating_add(step * 100),
            };
            if layout
                .all()
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
            {
                return Ok(layout);
            }
        }
        bail!("no free range of ports from {base} (tried 20 ranges of 100); pass --base-port")
    }

    pub fn nats_client(&self, i: usize) -> u16 {
        self.base + i as u16
    }
    pub fn nats_route(&self, i: usize) -> u16 {
        self.base + 10 + i as u16
    }
    pub fn nats_monitor(&self, i: usize) -> u16 {
        self.base + 20 + i as u16
    }
    pub fn proxy(&self, i: usize) -> u16 {
        self.base + 30 + i as u16
    }
    pub fn aggregate_grpc(&self, i: usize) -> u16 {
        self.base + 40 + i as u16
    }
    pub fn aggregate_http(&self, i: usize) -> u16 {
        self.base + 50 + i as u16
    }
    pub fn projection_grpc(&self) -> u16 {
        self.base + 60
    }
    pub fn projection_http(&self) -> u16 {
        self.base + 61
    }
    pub fn runner_grpc(&self) -> u16 {
        self.base + 62
    }
    pub fn runner_http(&self) -> u16 {
        self.base + 63
    }
    pub fn mock(&self) -> u16 {
        self.base + 64
    }
    /// The second runner (runner-kill): a standby until it holds the lease.
    pub fn standby_runner_grpc(&self) -> u16 {
        self.base + 65
    }
    pub fn standby_runner_http(&self) -> u16 {
        self.base + 66
    }
    pub fn gateway(&self, i: usize) -> u16 {
        self.base + 70 + i as u16
    }

    pub(super) fn all(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for i in 0..3 {
            ports.extend([
                self.nats_client(i),
                self.nats_route(i),
                self.nats_monitor(i),
                self.proxy(i),
                self.aggregate_grpc(i),
                self.aggregate_http(i),
            ]);
        }
        ports.extend([
            self.projection_grpc(),
            self.projection_http(),
            self.runner_grpc(),
            self.runner_http(),
            self.mock(),
            self.standby_runner_grpc(),
            self.standby_runner_http(),
            self.gateway(0),
            self.gateway(1),
        ]);
        ports
    }
}
