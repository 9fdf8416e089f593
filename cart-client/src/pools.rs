//! The connections the routing client keeps, per node address.
//!
//! Every call looks its node up here, so a hit is a read lock, one hash and an atomic store
//! (a general-purpose cache, moka, cost ~1.3 % of the CPU of `cart-bench grpc` in its
//! bookkeeping). A miss, the first call to a node, connects (lazily) and keeps the pool under
//! the write lock. At most
//! `max` addresses are kept: when a new one comes and there is no room, those idle past the
//! idle time go, then the one used least recently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::multiplex::Mux;

/// The connections to one node, used in turn.
pub struct Pool {
    channels: Vec<Arc<Mux>>,
    next: AtomicUsize,
    /// When it was last used, in milliseconds since the pools were made.
    used_ms: AtomicU64,
}

impl Pool {
    /// `channels` must not be empty.
    pub fn new(channels: Vec<Arc<Mux>>) -> Self {
        assert!(!channels.is_empty(), "a pool needs a connection");
        Self {
            channels,
            next: AtomicUsize::new(0),
            used_ms: AtomicU64::new(0),
        }
    }

    /// The next connection (round robin).
    fn next(&self) -> Arc<Mux> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

pub struct Pools {
    by_addr: RwLock<HashMap<String, Arc<Pool>>>,
    max: usize,
    idle: Duration,
    epoch: Instant,
}

impl Pools {
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            by_addr: RwLock::default(),
            max: max.max(1),
            idle,
            epoch: Instant::now(),
        }
    }

    /// A connection to `addr`, from its pool, made by `connect` on first use.
    pub fn connection<E>(
        &self,
        addr: &str,
        connect: impl FnOnce() -> Result<Pool, E>,
    ) -> Result<Arc<Mux>, E> {
        self.connection_at(addr, connect, self.now_ms())
    }

    /// [`Pools::connection`] at `now` (milliseconds since the pools were made).
    fn connection_at<E>(
        &self,
        addr: &str,
        connect: impl FnOnce() -> Result<Pool, E>,
        now: u64,
    ) -> Result<Arc<Mux>, E> {
        let known = self
            .by_addr
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(addr)
            .cloned();
        let pool = match known {
            Some(pool) => pool,
            // Outside the lock: connecting is lazy (no I/O), and a pool made twice by callers
            // racing is dropped once.
            None => self.insert(addr, connect()?, now),
        };
        pool.used_ms.store(now, Ordering::Relaxed);
        Ok(pool.next())
    }

    /// How many addresses have a pool.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_addr
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Keeps `fresh` as the pool of `addr` (unless another caller was first), making room.
    fn insert(&self, addr: &str, fresh: Pool, now: u64) -> Arc<Pool> {
        let mut map = self.by_addr.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = map.get(addr) {
            return pool.clone();
        }
        let pool = Arc::new(fresh);
        if map.len() >= self.max {
            let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
            map.retain(|_, p| now.saturating_sub(p.used_ms.load(Ordering::Relaxed)) < idle_ms);
        }
        if map.len() >= self.max
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.used_ms.load(Ordering::Relaxed))
                .map(|(a, _)| a.clone())
        {
            map.remove(&oldest);
        }
        pool.used_ms.store(now, Ordering::Relaxed);
        map.insert(addr.to_owned(), pool.clone());
        pool
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// For a node that is already connected: never called.
    fn known() -> Result<Pool, ()> {
        unreachable!("connected again")
    }

    /// Connects to each address at its time, in order.
    fn connect_all(pools: &Pools, at: &[(&str, u64)]) {
        for &(addr, now) in at {
            pools.connection_at(addr, pool, now).unwrap();
        }
    }

    fn pool() -> Result<Pool, ()> {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Ok(Pool::new(vec![Arc::new(Mux::new(channel))]))
    }

    #[tokio::test]
    async fn a_node_is_connected_once_and_its_connections_are_used_in_turn() {
        let pools = Pools::new(4, Duration::from_secs(600));
        let mut connects = 0;
        let first = pools
            .connection("a:1", || {
                connects += 1;
                let channel =
                    tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
                Ok::<_, ()>(Pool::new(vec![
                    Arc::new(Mux::new(channel.clone())),
                    Arc::new(Mux::new(channel)),
                ]))
            })
            .unwrap();
        let second = pools.connection("a:1", known).unwrap();
        let third = pools.connection("a:1", known).unwrap();
        assert_eq!(connects, 1);
        assert!(!Arc::ptr_eq(&first, &second), "round robin");
        assert!(Arc::ptr_eq(&first, &third));
    }

    #[tokio::test]
    async fn a_failed_connect_keeps_nothing() {
        let pools = Pools::new(4, Duration::from_secs(600));
        assert!(pools.connection("a:1", || Err::<Pool, _>("bad")).is_err());
        assert_eq!(pools.len(), 0);
        pools.connection("a:1", pool).unwrap();
        assert_eq!(pools.len(), 1);
    }

    #[tokio::test]
    async fn a_full_set_drops_the_node_used_least_recently() {
        let pools = Pools::new(2, Duration::from_secs(600));
        connect_all(&pools, &[("a:1", 1), ("b:1", 2)]);
        // a is used again after b: b is the least recently used.
        pools.connection_at("a:1", known, 3).unwrap();
        pools.connection_at("c:1", pool, 4).unwrap();
        assert_eq!(pools.len(), 2);
        pools.connection_at("a:1", known, 5).unwrap();
        let mut reconnected = false;
        pools
            .connection_at(
                "b:1",
                || {
                    reconnected = true;
                    pool()
                },
                6,
            )
            .unwrap();
        assert!(reconnected, "b was dropped");
    }

    #[tokio::test]
    async fn a_full_set_drops_every_node_idle_past_the_idle_time() {
        let pools = Pools::new(3, Duration::from_millis(100));
        // When d comes the set is full: a and b have been idle for 100 ms or more, c has not.
        connect_all(
            &pools,
            &[("a:1", 0), ("b:1", 10), ("c:1", 150), ("d:1", 200)],
        );
        assert_eq!(pools.len(), 2, "both idle ones went");
        pools.connection_at("c:1", known, 201).unwrap();
    }
}
