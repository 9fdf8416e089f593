//! Live cart updates for `WatchCart`. Each watched cart has a small broadcast channel; a commit
//! publishes into it without waiting, and a watcher that falls behind the channel's capacity is
//! dropped (its stream ends with an error) instead of slowing commits down. The channels are in
//! a sharded map: a commit locks only its cart's shard, never one lock every commit shares.

use std::sync::Arc;

use cart_domain::CartState;
use dashmap::DashMap;
use tokio::sync::broadcast;

/// States kept per watched cart for slow readers before they are dropped.
pub const WATCH_CAPACITY: usize = 32;

#[derive(Default)]
pub struct Watchers {
    channels: DashMap<Arc<str>, broadcast::Sender<Arc<CartState>>>,
}

impl Watchers {
    pub fn subscribe(&self, key: &Arc<str>) -> broadcast::Receiver<Arc<CartState>> {
        self.channels
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(WATCH_CAPACITY).0)
            .subscribe()
    }

    /// Publish a committed state. Costs a lookup in the cart's shard when nobody watches it.
    pub fn publish(&self, key: &str, state: &CartState) {
        let watched = match self.channels.get(key) {
            None => return,
            Some(tx) if tx.receiver_count() == 0 => false,
            Some(tx) => {
                let _ = tx.send(Arc::new(state.clone()));
                true
            }
        };
        if !watched {
            // Checked again under the shard's write lock: a watcher may have just subscribed.
            self.channels
                .remove_if(key, |_, tx| tx.receiver_count() == 0);
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
            slow.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        // Nobody watching: the channel is removed on the next publish.
        drop(slow);
        w.publish(&key, &state);
        assert_eq!(w.watched(), 0);
    }
}
