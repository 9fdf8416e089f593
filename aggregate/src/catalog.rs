//! Catalog reads at decide time: products, delivery pricing and vouchers from the `CATALOG`
//! KV bucket, in a bounded cache that a KV watch keeps fresh (every change invalidates its key;
//! a stalled or broken watch is recreated and the cache cleared, and entries also expire, so a
//! missed notification cannot serve a stale price for long).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use cart_domain::CatalogNeeds;
use cart_domain::catalog::{
    CatalogSnapshot, DeliveryOption, Product, VoucherDefinition, normalize_voucher_code,
};
use futures::StreamExt;
use moka::future::Cache;
use serde::de::DeserializeOwned;
use shared::ApiError;
use shared::subjects::{delivery_key, sku_key, voucher_key};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A catalog entry as the bucket holds it, decoded once when it is read (not at every
/// command). `Absent` caches "not in the catalog" too, so unknown SKUs cost one KV read per TTL.
#[derive(Clone)]
enum Entry {
    Absent,
    Product(Arc<Product>),
    Delivery(Arc<DeliveryOption>),
    Voucher(Arc<VoucherDefinition>),
    /// Bytes that do not decode as their kind: the error, reported at every use until fixed.
    Invalid(Arc<str>),
}

/// A kind of catalog entry (what its key prefix says it is).
trait Kind: DeserializeOwned {
    fn entry(value: Self) -> Entry;
    fn of(entry: &Entry) -> Option<&Arc<Self>>;
}

macro_rules! kind {
    ($ty:ty, $variant:ident) => {
        impl Kind for $ty {
            fn entry(value: Self) -> Entry {
                Entry::$variant(Arc::new(value))
            }
            fn of(entry: &Entry) -> Option<&Arc<Self>> {
                match entry {
                    Entry::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
kind!(Product, Product);
kind!(DeliveryOption, Delivery);
kind!(VoucherDefinition, Voucher);

#[derive(Clone)]
pub struct CatalogCache {
    kv: kv::Store,
    cache: Cache<String, Entry>,
}

impl CatalogCache {
    pub fn start(
        kv: kv::Store,
        capacity: u64,
        ttl: Duration,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .build();
        let this = Self { kv, cache };
        // Cut at once, also while it waits for an unreachable server to answer.
        tracker.spawn(shutdown.run_until_cancelled_owned(this.clone().watch()));
        this
    }

    /// The catalog entries a command needs. Keys that cannot exist (a SKU with a `.`) are
    /// simply absent, so the domain reports them as unknown.
    pub async fn snapshot(&self, needs: &CatalogNeeds<'_>) -> Result<CatalogSnapshot, ApiError> {
        let mut snap = CatalogSnapshot::default();
        for sku in &needs.skus {
            if let Ok(key) = sku_key(sku)
                && let Some(p) = self.get::<Product>(&key).await?
            {
                snap.products.insert((*sku).to_owned(), p);
            }
        }
        for provider in &needs.providers {
            if let Ok(key) = delivery_key(provider)
                && let Some(d) = self.get::<DeliveryOption>(&key).await?
            {
                snap.deliveries.insert((*provider).to_owned(), d);
            }
        }
        for code in &needs.vouchers {
            let code = normalize_voucher_code(code);
            if let Ok(key) = voucher_key(&code)
                && let Some(v) = self.get::<VoucherDefinition>(&key).await?
            {
                snap.vouchers.insert(code, v);
            }
        }
        Ok(snap)
    }

    async fn get<T: Kind>(&self, key: &str) -> Result<Option<Arc<T>>, ApiError> {
        // A hit (the common case) needs neither a copy of the bucket handle nor of the key.
        let entry = match self.cache.get(key).await {
            Some(entry) => entry,
            // Boxed: a miss is rare, and its future is large (~9 KB); inline, every command's
            // future would carry it.
            None => Box::pin(self.fill::<T>(key)).await?,
        };
        match &entry {
            Entry::Absent => Ok(None),
            Entry::Invalid(e) => Err(ApiError::internal(format!(
                "catalog entry {key} is not valid: {e}; fix it in the CATALOG bucket"
            ))),
            other => T::of(other).map(|v| Some(Arc::clone(v))).ok_or_else(|| {
                ApiError::internal(format!("catalog entry {key} is not the kind its key names"))
            }),
        }
    }

    /// A miss: read `key` from the bucket into the cache (one read however many ask at once).
    async fn fill<T: Kind>(&self, key: &str) -> Result<Entry, ApiError> {
        let kv = self.kv.clone();
        let owned = key.to_owned();
        self.cache
            .try_get_with(key.to_owned(), async move {
                kv.get(owned).await.map(|v| match v {
                    None => Entry::Absent,
                    Some(bytes) => serde_json::from_slice::<T>(&bytes)
                        .map_or_else(|e| Entry::Invalid(e.to_string().into()), T::entry),
                })
            })
            .await
            .map_err(|e| ApiError::unavailable(format!("catalog read of {key} failed: {e}")))
    }

    /// Invalidate keys as they change. Recreates the watch when it ends or errors; never ends
    /// by itself ([`CatalogCache::start`] runs it until its shutdown).
    async fn watch(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.kv.watch_all().await {
                Ok(mut watch) => {
                    backoff = Duration::from_millis(100);
                    // Anything cached before the watch started may be stale.
                    self.cache.invalidate_all();
                    loop {
                        match watch.next().await {
                            Some(Ok(entry)) => self.cache.invalidate(&entry.key).await,
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "catalog watch failed; recreating it");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the catalog; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
