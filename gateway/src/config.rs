//! Gateway configuration. Every field has a default that runs locally next to `scripts/dev`;
//! environment variables override them (`GATEWAY_<FIELD>` for the fields below, `NATS_<FIELD>`
//! for the connection, `STREAMS_<FIELD>` for bucket sizing shared by all services), and an
//! optional TOML file named by `CART_CONFIG_FILE` sits in between.
//!
//! Lists are comma-separated strings (`GATEWAY_AGGREGATE_ADDRS=10.0.0.1:50051,10.0.0.2:50051`,
//! `GATEWAY_API_KEYS=key1=tenant-a,key2=tenant-b`) so they are easy to set from a shell.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::TenantId;
use shared::config::{ServiceConfig, split_list};
use shared::nats::{NatsConfig, NatsResourceSettings};
use shared::secret::Secret;

/// Longest `GET /cart/checkout` may wait for the provider's answer before answering 202.
pub const MAX_CHECKOUT_WAIT_MS: u64 = 25_000;

/// `Debug` shows no secret: the API keys, the admin token and the NATS credentials are
/// [`Secret`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listen address (storefront, /v1, admin, /health, /ready, /metrics).
    pub http_addr: String,
    /// Tenant of requests without `x-tenant-id` (and without an API key). Empty: the header is
    /// required.
    pub default_tenant: String,
    /// Country of storefront adds that name none (`GET /cart/add/{sku}`).
    pub default_country: String,
    /// Shards carts hash into; must equal the aggregate's `AGGREGATE_SHARD_COUNT`.
    pub shard_count: u32,
    /// Comma-separated aggregate gRPC addresses used when placement knows no live node.
    pub aggregate_addrs: String,
    /// Deadline of one upstream attempt.
    pub upstream_timeout_ms: u64,
    /// Deadline of a whole upstream call, retries and failover included.
    pub upstream_deadline_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    /// Attempts per upstream call (first try included), across nodes.
    pub upstream_attempts: u32,
    /// How often the node list is re-read besides the KV watch.
    pub placement_resync_ms: u64,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Most commands in one `/v1/carts/{id}/commands` request.
    pub max_commands: usize,
    /// `Secure` attribute of the `cartid` cookie (turn on behind HTTPS).
    pub cookie_secure: bool,
    pub cookie_max_age_secs: u64,
    /// `Domain` attribute of the cookie; empty: host-only.
    pub cookie_domain: String,
    /// `key=tenant` pairs, comma-separated. When set, every API request needs `x-api-key` and
    /// the key decides the tenant.
    pub api_keys: Secret,
    /// With `api_keys` set: the tenant of a storefront request (`/cart`, `/cart/...`) that
    /// carries no `x-api-key`, for storefront clients that send none (the browser client's
    /// calls carry no header). Empty: such a request is refused (401) like any other.
    pub storefront_tenant: String,
    /// `key=tenant` pairs of back-office keys: like `api_keys`, and the only keys the listings
    /// and reports of a tenant's carts and orders (`/v1/carts`, `/v1/orders`, `/v1/reports/..`)
    /// take. A storefront key sits in page JavaScript; these must not.
    pub backoffice_keys: Secret,
    /// Bearer token of `/admin/...`. Empty: the admin API is disabled.
    pub admin_token: Secret,
    /// Browser origins (`https://shop.example.com`, comma-separated) allowed to call the API
    /// from another origin, with credentials (the `cartid` cookie). Empty: no CORS headers,
    /// so browsers allow same-origin calls only.
    pub cors_origins: String,
    /// `GET /cart/add/{sku}` adds to the cart (go-cart-actor compatibility). A state change on
    /// GET can be triggered by any page a shopper visits (a link, an image); turn it off
    /// where clients use `POST /cart`.
    pub legacy_get_add: bool,
    /// Proxies in front of the gateway whose `X-Forwarded-For` entries are trusted (0: the
    /// header is ignored and the peer address is the client).
    pub trusted_proxy_hops: usize,
    /// Requests per second per client (API key, else IP); 0 disables the limit.
    pub client_rate_per_sec: u32,
    pub client_rate_burst: u32,
    /// Mutations per second per cart; 0 disables the limit.
    pub cart_rate_per_sec: u32,
    pub cart_rate_burst: u32,
    /// Provider pushes recorded per second per tenant (`POST /cart/push` needs no key, so
    /// this bounds what forged pushes from many addresses cost: records in
    /// `WORKFLOW_COMMANDS` and the runner's provider reads). Tenant names the gateway is not
    /// configured with share one budget. 0 disables the limit.
    pub push_rate_per_sec: u32,
    pub push_rate_burst: u32,
    /// Keys a rate limiter tracks before it prunes idle ones early.
    pub rate_limit_max_keys: usize,
    /// How often idle rate-limiter keys are pruned.
    pub rate_limit_prune_secs: u64,
    /// Responses kept for `Idempotency-Key` replays.
    pub idempotency_capacity: u64,
    pub idempotency_ttl_secs: u64,
    /// Keep-alive comment interval of `/v1/carts/{id}/events`.
    pub sse_keep_alive_secs: u64,
    /// gRPC address(es) of the projection (QueryService) behind the query routes, comma
    /// separated (a read moves on to the next when one does not answer); empty: off.
    pub projection_addr: String,
    /// gRPC address(es) of the runners (CheckoutQuery reads move on to the next when one does
    /// not answer; RunnerAdmin goes to the one an admin call names, the first by default);
    /// empty: checkout is off.
    pub runner_addr: String,
    /// Deadline of one call to the projection or the runner, and of one page of a cart's
    /// history from `CART_EVENTS`.
    pub service_timeout_ms: u64,
    /// How long `GET /cart/checkout` waits for the provider order before answering 202.
    pub checkout_wait_ms: u64,
    /// The storefront page a shopper is sent back to when the provider's validation callback
    /// refuses a purchase because the cart changed (`?klarna_order_id=..&error=<code>` is
    /// added).
    pub checkout_page_url: String,
    /// Shared with the runner (`MERCHANT_VALIDATION_KEY`): the validation callback then needs
    /// the `token` the runner put in the URL it gave the provider (its cart's HMAC under
    /// this key) and answers `403` without it. Comma-separated, any of them is accepted (a
    /// rotation: the new key and the old). Empty: callbacks are not authenticated, and anyone
    /// who knows an order can hold its cart for the purchase hold.
    pub validation_key: Secret,
    pub nats: NatsConfig,
    pub streams: NatsResourceSettings,
    /// Mutual TLS of its calls to the other services (`GRPC_TLS_*`; empty: plaintext).
    pub grpc_tls: shared::grpc_tls::GrpcTls,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            default_tenant: TenantId::DEFAULT.into(),
            default_country: "se".into(),
            shard_count: 256,
            aggregate_addrs: String::new(),
            upstream_timeout_ms: 3_000,
            upstream_deadline_ms: 10_000,
            upstream_connect_timeout_ms: 1_000,
            upstream_attempts: 3,
            placement_resync_ms: 2_000,
            body_limit_bytes: 64 * 1024,
            max_commands: 50,
            cookie_secure: false,
            cookie_max_age_secs: 30 * 24 * 3600,
            cookie_domain: String::new(),
            api_keys: Secret::default(),
            storefront_tenant: String::new(),
            backoffice_keys: Secret::default(),
            admin_token: Secret::default(),
            cors_origins: String::new(),
            legacy_get_add: true,
            trusted_proxy_hops: 0,
            client_rate_per_sec: 50,
            client_rate_burst: 100,
            cart_rate_per_sec: 10,
            cart_rate_burst: 20,
            push_rate_per_sec: 20,
            push_rate_burst: 200,
            rate_limit_max_keys: 100_000,
            rate_limit_prune_secs: 60,
            idempotency_capacity: 10_000,
            idempotency_ttl_secs: 3_600,
            sse_keep_alive_secs: 15,
            projection_addr: "127.0.0.1:50062".into(),
            runner_addr: "127.0.0.1:50061".into(),
            service_timeout_ms: 3_000,
            checkout_wait_ms: 10_000,
            checkout_page_url: "http://127.0.0.1:8080/cart/checkout".into(),
            validation_key: Secret::default(),
            nats: NatsConfig::named(Self::SERVICE),
            streams: NatsResourceSettings::default(),
            grpc_tls: Default::default(),
        }
    }
}

/// A configuration value the gateway cannot run with; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gateway config: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The variable that sets `field` (`GATEWAY_<FIELD>`).
    pub fn setting(field: &str) -> String {
        shared::config::env_var(Self::ENV_PREFIX, field)
    }

    /// The endpoint of the service address `value` of `field` (`None`: empty, not configured).
    pub fn service_endpoint(
        &self,
        field: &str,
        value: &str,
    ) -> Result<Option<tonic::transport::Endpoint>, ConfigError> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        // The service a field names is what its certificate must say.
        let service = field.split('_').next().unwrap_or(field);
        self.grpc_tls
            .endpoint(value, service)
            .map(Some)
            .map_err(|e| ConfigError(format!("{field} ({}): {e}", Self::setting(field))))
    }

    /// The endpoints of the comma-separated service addresses `list` of `field` (none: empty,
    /// not configured).
    pub fn service_endpoints(
        &self,
        field: &str,
        list: &str,
    ) -> Result<Vec<tonic::transport::Endpoint>, ConfigError> {
        shared::config::split_list(list)
            .map(|value| self.service_endpoint(field, value))
            .filter_map(Result::transpose)
            .collect()
    }

    pub fn default_tenant(&self) -> Result<Option<TenantId>, ConfigError> {
        optional_tenant("default_tenant", &self.default_tenant)
    }

    pub fn storefront_tenant(&self) -> Result<Option<TenantId>, ConfigError> {
        optional_tenant("storefront_tenant", &self.storefront_tenant)
    }

    /// The static aggregate addresses, trimmed.
    pub fn aggregate_addrs(&self) -> Vec<String> {
        split_list(&self.aggregate_addrs)
            .map(str::to_owned)
            .collect()
    }

    /// The origins of `cors_origins`, each `scheme://host[:port]` (no path, no wildcard: a
    /// wildcard cannot be combined with credentials, and would let any site use a shopper's
    /// cart cookie).
    pub fn cors_origins(&self) -> Result<Vec<http::HeaderValue>, ConfigError> {
        split_list(&self.cors_origins)
            .map(|origin| {
                let (scheme, rest) = origin.split_once("://").unwrap_or_default();
                // As a browser sends it: lower case, no credentials, no default port.
                let default_port = (scheme == "https" && rest.ends_with(":443"))
                    || (scheme == "http" && rest.ends_with(":80"));
                let ok = matches!(scheme, "http" | "https")
                    && !rest.is_empty()
                    && !rest.contains(['/', '*', '?', '#', ' ', '@'])
                    && !rest.bytes().any(|b| b.is_ascii_uppercase())
                    && !default_port
                    && origin.len() <= 256;
                let value = http::HeaderValue::from_str(origin).ok().filter(|_| ok);
                value.ok_or_else(|| {
                    ConfigError(shared::error::clip_quoted(format!(
                        "cors_origins: {origin:?} is not an origin as a browser sends it, like https://shop.example.com (scheme, lower-case host, a port only when not the default; no path, credentials or wildcard)"
                    )))
                })
            })
            .collect()
    }

    /// API key → tenant.
    pub fn api_keys(&self) -> Result<HashMap<String, TenantId>, ConfigError> {
        keys("api_keys", &self.api_keys)
    }

    /// The validation keys a callback's token may be signed with (none: not checked).
    pub fn validation_keys(&self) -> Vec<Secret> {
        split_list(self.validation_key.expose())
            .map(Secret::from)
            .collect()
    }

    /// Back-office key → tenant; none of them is also a storefront key.
    pub fn backoffice_keys(&self) -> Result<HashMap<String, TenantId>, ConfigError> {
        let backoffice = keys("backoffice_keys", &self.backoffice_keys)?;
        let storefront = self.api_keys()?;
        if backoffice.keys().any(|k| storefront.contains_key(k)) {
            return Err(ConfigError(
                "backoffice_keys: a key is also in api_keys; a back-office key must be its own"
                    .into(),
            ));
        }
        Ok(backoffice)
    }
}

/// The tenant `value` names (empty: none).
fn optional_tenant(field: &str, value: &str) -> Result<Option<TenantId>, ConfigError> {
    let t = value.trim();
    if t.is_empty() {
        return Ok(None);
    }
    TenantId::parse(t)
        .map(Some)
        .map_err(|e| ConfigError(format!("{field}: {e}")))
}

/// `key=tenant` pairs of `field`.
fn keys(field: &str, pairs: &Secret) -> Result<HashMap<String, TenantId>, ConfigError> {
    let mut keys = HashMap::new();
    for pair in split_list(pairs.expose()) {
        // The entry is not quoted: it holds a key.
        let (key, tenant) = pair.split_once('=').ok_or_else(|| {
            ConfigError(format!("{field}: every entry must look like key=tenant"))
        })?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError(format!(
                "{field}: a key must be non-empty visible ASCII"
            )));
        }
        let tenant =
            TenantId::parse(tenant.trim()).map_err(|e| ConfigError(format!("{field}: {e}")))?;
        keys.insert(key.to_owned(), tenant);
    }
    Ok(keys)
}

impl Config {
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms.max(1))
    }

    pub fn upstream_deadline(&self) -> Duration {
        Duration::from_millis(self.upstream_deadline_ms.max(1))
    }

    pub fn service_policy(&self) -> crate::upstream::services::CallPolicy {
        crate::upstream::services::CallPolicy {
            timeout: Duration::from_millis(self.service_timeout_ms.max(1)),
            read_attempts: self.upstream_attempts.max(1),
        }
    }

    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms.max(1))
    }

    pub fn checkout_wait(&self) -> Duration {
        Duration::from_millis(self.checkout_wait_ms.max(1))
    }

    pub fn sse_keep_alive(&self) -> Duration {
        Duration::from_secs(self.sse_keep_alive_secs.max(1))
    }

    /// Problems that make the gateway unable to run, each naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let fail = |m: String| Err(ConfigError(m));
        self.grpc_tls.check().map_err(ConfigError)?;
        if self.shard_count == 0 {
            return fail("shard_count must be at least 1".into());
        }
        if self.body_limit_bytes == 0 {
            return fail("body_limit_bytes must be at least 1".into());
        }
        if self.max_commands == 0 {
            return fail("max_commands must be at least 1".into());
        }
        if self.checkout_wait_ms > MAX_CHECKOUT_WAIT_MS {
            // Past a proxy's timeout (30 s is common) the shopper gets the proxy's non-JSON 504
            // instead of our 202 and its Retry-After.
            return fail(format!(
                "checkout_wait_ms ({}) must be at most {MAX_CHECKOUT_WAIT_MS}: a longer wait \
                 outlasts proxies' timeouts and the pod's stop grace",
                self.checkout_wait_ms
            ));
        }
        if self.upstream_attempts == 0 {
            return fail("upstream_attempts must be at least 1".into());
        }
        if self.upstream_deadline_ms < self.upstream_timeout_ms {
            return fail(format!(
                "upstream_deadline_ms ({}) must be at least upstream_timeout_ms ({})",
                self.upstream_deadline_ms, self.upstream_timeout_ms
            ));
        }
        if self.default_country.trim().is_empty() {
            return fail("default_country must not be empty".into());
        }
        let page = &self.checkout_page_url;
        if !(page.starts_with("http://") || page.starts_with("https://"))
            || http::HeaderValue::from_str(page).is_err()
        {
            return fail(format!(
                "checkout_page_url ({}) must be an absolute http(s) URL, got {page:?}",
                Self::setting("checkout_page_url")
            ));
        }
        for (name, rate, burst) in [
            ("client", self.client_rate_per_sec, self.client_rate_burst),
            ("cart", self.cart_rate_per_sec, self.cart_rate_burst),
            ("push", self.push_rate_per_sec, self.push_rate_burst),
        ] {
            if rate > 0 && burst == 0 {
                return fail(format!(
                    "{name}_rate_burst must be at least 1 when {name}_rate_per_sec is set"
                ));
            }
        }
        self.service_endpoints("projection_addr", &self.projection_addr)?;
        self.service_endpoints("runner_addr", &self.runner_addr)?;
        for value in self.aggregate_addrs() {
            self.service_endpoint("aggregate_addrs", &value)?;
        }
        self.default_tenant()?;
        self.storefront_tenant()?;
        self.backoffice_keys()?;
        self.streams.check().map_err(ConfigError)?;
        Ok(())
    }
}

impl ServiceConfig for Config {
    const ENV_PREFIX: &'static str = "GATEWAY";
    const SERVICE: &'static str = "gateway";
}

#[cfg(test)]
mod tests;
