//! Who a request is for, and how to find everything it caused.
//!
//! [`begin`] and [`Attached::finish`], called by the edge layer, come first and last on every
//! request. They accept or create `x-correlation-id` and `x-request-id`, start the request's
//! span (the child of the client's `traceparent` when it sent a valid one, else a root whose
//! sampling the SDK's sampler decides: the gateway never forces a trace), resolve the tenant
//! (API key or `x-tenant-id`) and return `x-correlation-id` and `x-request-id` on every
//! response, errors included. The span's context, not the client's header, is what goes on to
//! the aggregate. Handlers take [`Ctx`], which fails with 401/403/400 when the tenant could not
//! be resolved; routes that need no tenant (ops, the OpenAPI document, unknown routes) never
//! ask, so they answer without credentials.

use std::collections::{HashMap, HashSet};

use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use shared::headers::{CORRELATION_ID, REQUEST_ID, RequestContext, TENANT_ID};
use shared::provider_order::MerchantData;
use shared::secret::Secret;
use shared::{ApiError, CorrelationId, ErrorCode, TenantId};

/// Most characters of a request's path its span records.
const MAX_SPAN_PATH: usize = 256;

/// Header carrying a client's API key (the gateway is its only reader).
pub use shared::headers::API_KEY;

/// The tenant rules: API keys when configured, else `x-tenant-id` with a default. Not
/// `Debug`: it holds the admin token.
#[derive(Clone)]
pub struct Auth {
    default_tenant: Option<TenantId>,
    /// By the key's digest: a request's key is hashed and its digest looked up, so how long a
    /// lookup takes depends on the digest, which tells a guesser nothing about how much of a
    /// real key their guess shares (a map of the keys themselves compares them byte by byte,
    /// stopping at the first difference). The keys are not kept.
    api_keys: HashMap<KeyDigest, ApiKey>,
    /// The tenants it is configured with: the default one and every API key's.
    known_tenants: HashSet<TenantId>,
    /// Compared in constant time, so response timing does not reveal a prefix.
    admin_token: Secret,
    /// The keys a provider callback's token may be signed with (none: not checked).
    validation_keys: Vec<Secret>,
    /// With keys: the tenant of a keyless request to a storefront route.
    storefront_tenant: Option<TenantId>,
}

/// The SHA-256 digest of an API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(key.as_bytes()).into())
    }

    /// A name for the key in logs and rate-limit buckets (not the key): the first 8 bytes of
    /// its digest, in hex.
    pub fn label(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

/// What an API key stands for.
#[derive(Clone)]
struct ApiKey {
    tenant: TenantId,
    /// A back-office key: it also lists the tenant's carts and orders ([`BackOffice`]).
    backoffice: bool,
}

impl Auth {
    pub fn new(
        default_tenant: Option<TenantId>,
        api_keys: HashMap<String, TenantId>,
        admin_token: &str,
    ) -> Self {
        let admin_token = admin_token.trim().into();
        let known_tenants = default_tenant.iter().cloned().collect();
        Self {
            default_tenant,
            api_keys: HashMap::new(),
            known_tenants,
            admin_token,
            validation_keys: Vec::new(),
            storefront_tenant: None,
        }
        .with_keys(api_keys, false)
    }

    /// With back-office keys (key → tenant): they resolve a tenant like the API keys, and only
    /// they take the routes behind [`BackOffice`].
    pub fn with_backoffice_keys(self, keys: HashMap<String, TenantId>) -> Self {
        self.with_keys(keys, true)
    }

    /// With a tenant for storefront requests that carry no key (`GATEWAY_STOREFRONT_TENANT`).
    pub fn with_storefront_tenant(mut self, tenant: Option<TenantId>) -> Self {
        self.known_tenants.extend(tenant.iter().cloned());
        self.storefront_tenant = tenant;
        self
    }

    /// With the keys the runner signs provider callbacks' URLs with (`GATEWAY_VALIDATION_KEY`).
    pub fn with_validation_keys(mut self, keys: Vec<Secret>) -> Self {
        self.validation_keys = keys;
        self
    }

    /// Whether a provider callback for `merchant`'s cart may be acted on: it carries that
    /// cart's `token` under one of the validation keys, or the gateway has none.
    pub fn callback_allowed(&self, merchant: &MerchantData, token: Option<&str>) -> bool {
        self.validation_keys.is_empty()
            || token.is_some_and(|t| {
                self.validation_keys
                    .iter()
                    .any(|key| merchant.callback_token_matches(key, t))
            })
    }

    fn with_keys(mut self, keys: HashMap<String, TenantId>, backoffice: bool) -> Self {
        for (key, tenant) in keys {
            self.known_tenants.insert(tenant.clone());
            let key = KeyDigest::of(&key);
            self.api_keys.insert(key, ApiKey { tenant, backoffice });
        }
        self
    }

    /// The request's context. With API keys configured the key decides the tenant, and an
    /// `x-tenant-id` naming another tenant is refused rather than silently ignored.
    /// Not for a route: a keyless request is never the storefront tenant's here.
    pub fn resolve(&self, headers: &HeaderMap) -> Result<RequestContext, ApiError> {
        self.resolve_scoped(headers, "").map(|(ctx, _)| ctx)
    }

    /// [`Self::resolve`], and whether the request may take a back-office route: its key is a
    /// back-office key, or the gateway has no keys at all (then any client names its tenant:
    /// a trial, or a gateway behind another that authenticates).
    /// A keyless request to a storefront route (`path`) is the storefront tenant's when the
    /// gateway has one.
    fn resolve_scoped(
        &self,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<(RequestContext, bool), ApiError> {
        if self.api_keys.is_empty() {
            return RequestContext::from_http(headers, self.default_tenant.as_ref())
                .map(|ctx| (ctx, true));
        }
        // A key that is not text is a key, and not a known one (401), not no key.
        let key = headers
            .get(API_KEY)
            .map(|v| v.to_str().unwrap_or_default().trim());
        let (tenant, backoffice) = match (key, &self.storefront_tenant) {
            (Some(key), _) => {
                let key = self.api_keys.get(&KeyDigest::of(key)).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Unauthenticated,
                        format!("the {API_KEY} is not a known API key"),
                    )
                })?;
                (&key.tenant, key.backoffice)
            }
            (None, Some(tenant)) if is_storefront(path) => (tenant, false),
            (None, _) => {
                return Err(ApiError::new(
                    ErrorCode::Unauthenticated,
                    format!("header {API_KEY} is required"),
                ));
            }
        };
        if let Some(claimed) = headers.get(TENANT_ID) {
            let claimed = claimed.to_str().unwrap_or_default();
            if claimed != tenant.as_str() {
                return Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "{TENANT_ID} {claimed:?} does not match the tenant of the API key; omit the header or use the key of that tenant"
                    ),
                ));
            }
        }
        RequestContext::from_http(headers, Some(tenant)).map(|ctx| (ctx, backoffice))
    }

    /// A tenant this gateway is configured with: one an API key maps to, or the default one.
    /// Without API keys any `x-tenant-id` is accepted, so other names are not refused, only
    /// not known (the push budget counts them together).
    pub fn is_known_tenant(&self, tenant: &TenantId) -> bool {
        self.known_tenants.contains(tenant)
    }

    /// The API key's digest when it is a known key (rate limits count per key rather than per
    /// IP).
    pub fn known_key(&self, headers: &HeaderMap) -> Option<KeyDigest> {
        let key = KeyDigest::of(headers.get(API_KEY)?.to_str().ok()?.trim());
        self.api_keys.contains_key(&key).then_some(key)
    }

    /// Admin calls need `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>`; without a configured
    /// token the admin API is off.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.admin_token.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the admin API is disabled; set GATEWAY_ADMIN_TOKEN to enable it",
            ));
        }
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(token) if self.admin_token.matches(token) => Ok(()),
            Some(_) => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "the admin bearer token is wrong",
            )),
            None => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "admin calls need Authorization: Bearer <GATEWAY_ADMIN_TOKEN>",
            )),
        }
    }
}

/// What [`begin`] found out about the tenant (and whether the request may take a back-office
/// route), for [`Ctx`] and [`BackOffice`].
#[derive(Clone)]
struct Resolved(Result<(RequestContext, bool), ApiError>);

/// What the edge layer keeps of a request for its response ([`begin`], [`Attached::finish`]).
pub struct Attached {
    correlation: HeaderValue,
    request_id: HeaderValue,
    /// The request's span: the handler runs in it.
    pub span: tracing::Span,
}

/// The first thing every request gets (from `crate::request::layers::Edge`): its
/// `x-correlation-id` and `x-request-id` accepted or made (and written into the request), its
/// tenant resolved (an extension [`Ctx`] reads), and its span started as the child of the
/// client's `traceparent` when it sent a valid one.
pub fn begin(auth: &Auth, req: &mut Request) -> Attached {
    let headers = req.headers_mut();
    let correlation = ensure(
        headers,
        CORRELATION_ID,
        |v| CorrelationId::parse(v.trim()).is_ok(),
        || CorrelationId::generate().to_string(),
    );
    let request_id = ensure(
        headers,
        REQUEST_ID,
        |v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()),
        || uuid::Uuid::now_v7().to_string(),
    );
    let resolved = auth.resolve_scoped(req.headers(), req.uri().path());
    let span = tracing::info_span!(
        "http",
        // Bounded, as every log line in the span carries them: a client's path or method can
        // be many kilobytes.
        method = crate::metrics::method_label(req.method()),
        path = %shared::error::cut(req.uri().path(), MAX_SPAN_PATH),
        correlation_id = %correlation.to_str().unwrap_or_default(),
        tenant = tracing::field::Empty,
    );
    let parent = shared::propagation::extract(&shared::propagation::HttpHeaders(req.headers()));
    shared::spans::follow(&span, &parent);
    if let Ok((ctx, _)) = &resolved {
        span.record("tenant", ctx.tenant.as_str());
    }
    req.extensions_mut().insert(Resolved(resolved));
    Attached {
        correlation,
        request_id,
        span,
    }
}

impl Attached {
    /// The last thing every response gets, errors included: a server error is logged in the
    /// request's span, and both ids go back to the client.
    pub fn finish(self, resp: &mut Response) {
        if resp.status().is_server_error() {
            self.span
                .in_scope(|| tracing::warn!(status = resp.status().as_u16(), "request failed"));
        }
        let out = resp.headers_mut();
        out.insert(CORRELATION_ID, self.correlation);
        out.insert(REQUEST_ID, self.request_id);
    }
}

/// The header's value when valid, else a fresh one written into the request.
fn ensure(
    headers: &mut HeaderMap,
    name: &'static str,
    valid: impl Fn(&str) -> bool,
    fresh: impl Fn() -> String,
) -> HeaderValue {
    if let Some(v) = headers.get(name)
        && v.to_str().is_ok_and(&valid)
    {
        return v.clone();
    }
    let v = HeaderValue::from_str(&fresh()).expect("generated ids are valid header values");
    headers.insert(name, v.clone());
    v
}

/// Where the cookie-based storefront routes live.
pub(crate) const COOKIE_ROOT: &str = "/cart";

/// The storefront's routes ([`COOKIE_ROOT`] and below), which a browser client calls.
fn is_storefront(path: &str) -> bool {
    path.strip_prefix(COOKIE_ROOT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The tenant-resolved context of a request (401/403/400 when it cannot be resolved).
#[derive(Debug, Clone)]
pub struct Ctx(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let (ctx, _) = resolved(parts)?.0.clone()?;
        Ok(Ctx(ctx))
    }
}

/// [`Ctx`] of a request with a back-office key (403 with a storefront key): the listings and
/// reports of a tenant's carts and orders. A cart id is all it takes to change a cart, so a
/// key that sits in a shop's page JavaScript must not list them.
#[derive(Debug, Clone)]
pub struct BackOffice(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for BackOffice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let (ctx, backoffice) = resolved(parts)?.0.clone()?;
        if !backoffice {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "this route lists a tenant's carts and orders: it takes a back-office key \
                 (GATEWAY_BACKOFFICE_KEYS), not a storefront key",
            ));
        }
        Ok(BackOffice(ctx))
    }
}

fn resolved(parts: &Parts) -> Result<&Resolved, ApiError> {
    parts.extensions.get::<Resolved>().ok_or_else(|| {
        ApiError::internal("request context middleware is not installed on this route")
    })
}

#[cfg(test)]
mod tests;
