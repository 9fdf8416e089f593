//! Live cart updates for `WatchCart`. Each watched cart has a small broadcast channel; a commit
//! publishes into it without waiting, and a watcher that falls behind the channel's capacity is
//! dropped (its stream ends with an error) instead of slowing commits down. The channels are in
//! a sharded map: a commit locks only its cart's shard, never one lock every commit shares.
//! A cart's channel goes with its last watcher ([`Subscription`]'s drop), so carts watched once
//! and never written to again leave nothing behind.

use std::sync::Arc;

use cart_domain::CartState;
use dashmap::DashMap;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// States kept per watched cart for slow readers before they are dropped.
pub const WATCH_CAPACITY: usize = 32;

type Channels = DashMap<Arc<str>, broadcast::Sender<Arc<CartState>>>;

#[derive(Default)]
pub struct Watchers {
    channels: Arc<Channels>,
}

/// One watcher of one cart. Dropping it removes the cart's channel when it was the last.
pub struct Subscription {
    /// `None` only inside `drop`.
    rx: Option<broadcast::Receiver<Arc<CartState>>>,
    key: Arc<str>,
    channels: Arc<Channels>,
}

impl Subscription {
    /// The next committed state (see [`broadcast::Receiver::recv`]).
    pub async fn recv(&mut self) -> Result<Arc<CartState>, RecvError> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => Err(RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // This receiver first, so the count below is of the others.
        drop(self.rx.take());
        self.channels
            .remove_if(&self.key, |_, tx| tx.receiver_count() == 0);
    }
}

impl Watchers {
    pub fn subscribe(&self, key: &Arc<str>) -> Subscription {
        let rx = self
            .channels
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(WATCH_CAPACITY).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            key: key.clone(),
            channels: self.channels.clone(),
        }
    }

    /// Publish a committed state. Costs a lookup in the cart's shard when nobody watches it.
    pub fn publish(&self, key: &str, state: &CartState) {
        // A channel exists only while someone watches (its last watcher removes it).
        if let Some(tx) = self.channels.get(key) {
            let _ = tx.send(Arc::new(state.clone()));
        }
    }

    /// Ends every watch stream (drain / shutdown): clients reconnect to the new owner.
    pub fn close_all(&self) {
        self.channels.clear();
    }

    pub fn watched(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::ids::CartId;

    #[test]
    fn a_slow_watcher_is_dropped_and_never_blocks_a_commit() {
        let w = Watchers::default();
        let key: Arc<str> = "t.c".into();
        let mut slow = w.subscribe(&key);
        let mut state = CartState::new(CartId::parse("c").unwrap());
        // Far more commits than the channel holds: publishing never waits.
        for v in 1..=(WATCH_CAPACITY as u64 * 3) {
            state.version = v;
            w.publish(&key, &state);
        }
        assert!(matches!(
            slow.rx.as_mut().unwrap().try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        drop(slow);
        assert_eq!(w.watched(), 0);
    }

    /// A cart watched and never written to again: its channel goes with its last watcher.
    #[test]
    fn the_last_watcher_leaving_removes_the_channel() {
        let w = Watchers::default();
        let key: Arc<str> = "t.quiet".into();
        let first = w.subscribe(&key);
        let second = w.subscribe(&key);
        drop(first);
        assert_eq!(w.watched(), 1, "one watcher is left");
        drop(second);
        assert_eq!(w.watched(), 0);
    }
}
