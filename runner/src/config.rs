//! Runner configuration: `RUNNER_<FIELD>` for its own fields, `PROVIDER_<FIELD>` for the
//! payment provider, `MERCHANT_<FIELD>` for the URLs handed to the provider, `CONSUMER_<FIELD>`
//! for the durable consumers, `NATS_*` / `STREAMS_*` shared with every service.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::config::ServiceConfig;
use shared::nats::{ConsumerSettings, NatsConfig, NatsResourceSettings};
use shared::provider_order::MerchantData;
use shared::secret::Secret;

use crate::provider::{MerchantUrls, ProviderConfig};

/// The URLs the provider calls or sends the shopper to. `{tenant}` is replaced per order;
/// `{checkout.order.id}` is left for the provider to fill in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MerchantConfig {
    pub terms: String,
    pub checkout: String,
    pub confirmation: String,
    pub push: String,
    /// The gateway's validation callback, which refuses a purchase whose cart changed after
    /// checkout started (empty: none; the real provider needs HTTPS here).
    pub validation: String,
    /// Shared with the gateway (`GATEWAY_VALIDATION_KEY`): each order's validation URL gets
    /// `token=`, its cart's HMAC under this key, so that only the provider, which has the
    /// URL, can approve a purchase (empty: no token).
    pub validation_key: Secret,
}

impl Default for MerchantConfig {
    fn default() -> Self {
        Self {
            terms: "http://127.0.0.1:8080/terms".into(),
            checkout: "http://127.0.0.1:8080/cart/checkout".into(),
            confirmation: "http://127.0.0.1:8080/cart/confirmation/{checkout.order.id}".into(),
            push: "http://127.0.0.1:8080/cart/push?tenant={tenant}&klarna_order_id={checkout.order.id}".into(),
            validation: "http://127.0.0.1:8080/cart/validation?tenant={tenant}&klarna_order_id={checkout.order.id}".into(),
            validation_key: Secret::default(),
        }
    }
}

impl MerchantConfig {
    /// The URLs of the checkout attempt `merchant` names.
    pub fn urls(&self, merchant: &MerchantData) -> MerchantUrls {
        let t = |s: &str| s.replace("{tenant}", &merchant.tenant);
        let validation = (!self.validation.is_empty()).then(|| {
            let mut url = t(&self.validation);
            if !self.validation_key.is_empty() {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str("token=");
                url.push_str(&merchant.callback_token(&self.validation_key));
            }
            url
        });
        MerchantUrls {
            terms: t(&self.terms),
            checkout: t(&self.checkout),
            confirmation: t(&self.confirmation),
            push: t(&self.push),
            validation,
        }
    }
}

/// What happens to a paid provider order that cannot be placed (it does not match its cart).
/// Either way the order is not acknowledged, the cart records the mismatch and an alert fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MismatchAction {
    /// Leave it unacknowledged for an operator (the provider keeps pushing it, and cancels an
    /// order nobody acknowledges).
    #[default]
    Leave,
    /// Cancel it with the provider at once (the shopper's money is released).
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (RunnerAdmin, CheckoutQuery).
    pub grpc_addr: String,
    /// `/health`, `/ready`, `/metrics`.
    pub http_addr: String,
    /// Where the embedded mock provider listens when `PROVIDER_BASE_URL` is empty.
    pub mock_provider_addr: String,
    /// Effects run in this many lanes; a cart always maps to the same lane, so one cart's
    /// effects never overlap.
    pub lanes: usize,
    /// Messages queued per lane (with `lanes`, bounds the consumer's `max_ack_pending`).
    pub lane_depth: usize,
    pub fetch_batch: usize,
    /// Must equal the aggregate's.
    pub shard_count: u32,
    /// Comma-separated aggregate gRPC addresses to use when placement knows no live node
    /// (optional; like `GATEWAY_AGGREGATE_ADDRS`).
    pub aggregate_addrs: String,
    pub aggregate_timeout_ms: u64,
    /// A paid order that does not match its cart: `leave` (unacknowledged) or `cancel`.
    pub mismatch_action: MismatchAction,
    /// Reconciliation: every this many seconds, look for checkouts whose provider order
    /// waits for payment (0: off) ...
    pub reconcile_interval_secs: u64,
    /// ... and read such an order from the provider once it is this old, then again at twice,
    /// four times, ... this age (a lost push delays an order by at most about its age) ...
    pub reconcile_after_secs: u64,
    /// ... until it is this old (the provider's own orders expire).
    pub reconcile_max_age_secs: u64,
    /// TTL of the `RUNNER_LEASE` bucket: a runner that stops refreshing the lease (it
    /// crashed) keeps it this long; a standby takes over after it. Changing it needs the bucket
    /// deleted first (its TTL is checked at start-up).
    pub lease_ttl_secs: u64,
    pub provider: ProviderConfig,
    pub merchant: MerchantConfig,
    pub consumer: ConsumerSettings,
    pub nats: NatsConfig,
    pub streams: NatsResourceSettings,
    /// Mutual TLS of its gRPC server and calls (`GRPC_TLS_*`; empty: plaintext).
    pub grpc_tls: shared::grpc_tls::GrpcTls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: "127.0.0.1:50061".into(),
            http_addr: "127.0.0.1:9103".into(),
            mock_provider_addr: "127.0.0.1:0".into(),
            lanes: 16,
            lane_depth: 8,
            fetch_batch: 64,
            shard_count: 256,
            aggregate_addrs: String::new(),
            aggregate_timeout_ms: 5_000,
            mismatch_action: MismatchAction::default(),
            reconcile_interval_secs: 60,
            reconcile_after_secs: 120,
            reconcile_max_age_secs: 2 * 24 * 3600,
            lease_ttl_secs: 10,
            provider: ProviderConfig::default(),
            merchant: MerchantConfig::default(),
            consumer: ConsumerSettings::default(),
            nats: NatsConfig::named(Self::SERVICE),
            streams: NatsResourceSettings::default(),
            grpc_tls: Default::default(),
        }
    }
}

impl Config {
    /// Consumer settings with `max_ack_pending` tied to the lanes (never more unacked
    /// messages than the lanes can hold plus one fetch batch).
    pub fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            max_ack_pending: (self.lanes * self.lane_depth + self.fetch_batch) as i64,
            ..self.consumer.clone()
        }
    }

    /// [`Config::lease_ttl_secs`] as a duration.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    pub fn aggregate_addrs(&self) -> Vec<String> {
        shared::config::split_list(&self.aggregate_addrs)
            .map(str::to_owned)
            .collect()
    }

    pub fn check(&self) -> Result<(), String> {
        self.grpc_tls.check()?;
        if self.lanes == 0 || self.lane_depth == 0 || self.fetch_batch == 0 {
            return Err("lanes, lane_depth and fetch_batch must be at least 1".into());
        }
        if self.reconcile_interval_secs > 0
            && (self.reconcile_after_secs == 0
                || self.reconcile_max_age_secs < self.reconcile_after_secs)
        {
            return Err(
                "reconcile_after_secs must be at least 1 and at most reconcile_max_age_secs".into(),
            );
        }
        if self.lease_ttl_secs < 2 {
            return Err("lease_ttl_secs must be at least 2 (refreshed every third of it)".into());
        }
        if self.consumer.max_deliver < 2 {
            return Err("consumer.max_deliver must be at least 2 (a retry is needed)".into());
        }
        for addr in self.aggregate_addrs() {
            shared::config::grpc_endpoint(&addr).map_err(|e| {
                let var = shared::config::env_var(Self::ENV_PREFIX, "aggregate_addrs");
                format!("aggregate_addrs ({var}): {e}")
            })?;
        }
        Ok(())
    }
}

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = "RUNNER";
    const SERVICE: &'static str = "runner";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validation_url_carries_its_carts_token_when_there_is_a_key() {
        let merchant = MerchantData {
            tenant: "shop-1".into(),
            cart_id: "c1".into(),
            attempt_id: "a1".into(),
        };
        let mut cfg = MerchantConfig::default();
        let plain = cfg.urls(&merchant).validation.unwrap();
        assert!(
            plain.contains("tenant=shop-1&") && !plain.contains("token="),
            "{plain}"
        );
        cfg.validation_key = "k".into();
        let signed = cfg.urls(&merchant).validation.unwrap();
        let token = merchant.callback_token(&cfg.validation_key);
        assert_eq!(signed, format!("{plain}&token={token}"));
        // A URL without a query gets one; `{checkout.order.id}` stays for the provider.
        cfg.validation = "https://gw/cart/validation/{checkout.order.id}".into();
        assert_eq!(
            cfg.urls(&merchant).validation.unwrap(),
            format!("https://gw/cart/validation/{{checkout.order.id}}?token={token}")
        );
        let other_cart = MerchantData {
            cart_id: "c2".into(),
            ..merchant.clone()
        };
        assert!(
            !cfg.urls(&other_cart).validation.unwrap().contains(&token),
            "each cart its own token"
        );
    }

    #[test]
    fn a_malformed_aggregate_address_is_a_startup_error_naming_the_variable() {
        let mut config = Config {
            aggregate_addrs: "127.0.0.1:50051, agg-2:50051".into(),
            ..Config::default()
        };
        config.check().unwrap();
        config.aggregate_addrs = "127.0.0.1:50051, agg-2:port".into();
        let e = config.check().unwrap_err();
        assert!(e.contains("RUNNER_AGGREGATE_ADDRS"), "{e}");
    }
}
