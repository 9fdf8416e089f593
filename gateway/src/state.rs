//! What every handler shares, and the single entry point of every mutation.

use std::sync::Arc;

use cart_client::CartClient;
use cart_domain::Command;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::headers::RequestContext;
use shared::ops::Readiness;
use shared::{ApiError, CartId, CommandId};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::idempotency::Idempotency;
use crate::request::context::Auth;
use crate::request::rate_limit::RateLimits;
use crate::storefront::cart_ref::CookiePolicy;
use crate::upstream::aggregate::{Exec, Upstream, VersionedCart};
use crate::upstream::services::{Service, Services};

/// The service `name` at `addr`, the value of its setting `<name>_addr` (empty: not
/// configured), with the gateway's connect timeout and call policy.
fn service(cfg: &Config, name: &'static str, addr: &str) -> Result<Service, ConfigError> {
    let field = format!("{name}_addr");
    Ok(Service::new(
        name,
        Config::setting(&field),
        cfg.service_endpoints(&field, addr)?,
        cfg.upstream_connect_timeout(),
        cfg.service_policy(),
    ))
}

/// Everything handlers share, behind one `Arc`: axum clones the state for every request and
/// middleware layer, so the clone must be a reference count, not a deep copy.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub cfg: Arc<Config>,
    pub upstream: Upstream,
    pub auth: Arc<Auth>,
    /// Origins allowed by CORS (empty: none).
    pub cors_origins: Vec<http::HeaderValue>,
    pub limits: Arc<RateLimits>,
    pub idempotency: Idempotency,
    pub cookies: Arc<CookiePolicy>,
    pub readiness: Readiness,
    /// `shared::ops` router behind `/health`, `/ready`, `/metrics`.
    pub ops: axum::Router,
    /// Cancelled when the gateway stops; long-lived responses (SSE) end on it.
    pub shutdown: CancellationToken,
    /// The projection (queries) and the runner (checkout, runner admin).
    pub services: Services,
}

impl AppState {
    /// State around `client`; tests pass a client without placement (static addresses).
    pub fn new(
        cfg: Config,
        client: CartClient,
        readiness: Readiness,
        prometheus: PrometheusHandle,
        shutdown: CancellationToken,
    ) -> Result<Self, ConfigError> {
        cfg.check()?;
        Ok(Self(Arc::new(AppStateInner {
            upstream: Upstream::new(client, cfg.upstream_deadline()),
            auth: Arc::new(
                Auth::new(
                    cfg.default_tenant()?,
                    cfg.api_keys()?,
                    cfg.admin_token.expose(),
                )
                .with_backoffice_keys(cfg.backoffice_keys()?)
                .with_storefront_tenant(cfg.storefront_tenant()?)
                .with_validation_keys(cfg.validation_keys()),
            ),
            cors_origins: cfg.cors_origins()?,
            limits: Arc::new(RateLimits::new(&cfg)),
            idempotency: Idempotency::new(
                cfg.idempotency_capacity,
                std::time::Duration::from_secs(cfg.idempotency_ttl_secs.max(1)),
            ),
            cookies: Arc::new(CookiePolicy::new(&cfg)),
            services: {
                Services {
                    projection: service(&cfg, "projection", &cfg.projection_addr)?,
                    runner: service(&cfg, "runner", &cfg.runner_addr)?,
                    js: None,
                }
            },
            cfg: Arc::new(cfg),
            ops: shared::ops::router(readiness.clone(), prometheus),
            readiness,
            shutdown,
        })))
    }

    /// Give the handlers JetStream (provider pushes are recorded there, cart histories read).
    pub fn with_jetstream(mut self, js: async_nats::jetstream::Context) -> Self {
        match Arc::get_mut(&mut self.0) {
            Some(shared) => shared.services.js = Some(js),
            None => tracing::error!("with_jetstream called on a state already shared; ignored"),
        }
        self
    }

    /// Runs one command: ids the client left out are filled in, its identifiers are checked (no
    /// NATS call is ever made with a value that could break it), the cart's rate limit, then
    /// the aggregate.
    pub async fn execute(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        mut command: Command,
    ) -> Result<VersionedCart, ApiError> {
        self.admit(ctx, cart, &exec, &mut command)?;
        self.upstream.execute(ctx, cart, exec, command).await
    }

    /// [`Self::execute`], replying with the cart's storefront JSON as the aggregate rendered it.
    pub async fn execute_storefront(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        mut command: Command,
    ) -> Result<Vec<u8>, ApiError> {
        self.admit(ctx, cart, &exec, &mut command)?;
        self.upstream
            .execute_storefront(ctx, cart, exec, command)
            .await
    }

    /// What every single command passes before it is sent: ids filled, validated, the cart's
    /// rate limit.
    fn admit(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: &Exec,
        command: &mut Command,
    ) -> Result<(), ApiError> {
        fill_ids(command, &exec.command_id.to_string());
        command.validate()?;
        self.limits.check_cart(ctx.tenant.as_str(), cart.as_str())
    }

    /// Runs several commands atomically (one rate-limit token: it is one commit).
    pub async fn execute_batch(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        mut commands: Vec<Command>,
    ) -> Result<VersionedCart, ApiError> {
        fill_and_validate(commands.iter_mut(), exec.command_id)?;
        self.limits.check_cart(ctx.tenant.as_str(), cart.as_str())?;
        self.upstream.execute_batch(ctx, cart, exec, commands).await
    }
}

/// The id of the command at `position` of a request with command id `id`: `id` itself for the
/// first, one derived from it for the others (the same on every retry of the request).
pub fn position_id(id: CommandId, position: usize) -> CommandId {
    match position {
        0 => id,
        _ => CommandId::derived(&[&id.to_string(), &position.to_string()]),
    }
}

/// Each of a request's commands as it will be sent: ids filled from its position's id (two
/// id-less upserts in one request are two details), then validated, a failure naming its
/// index. Every command is checked before any is sent: a bad value refuses the request and
/// changes nothing.
pub fn fill_and_validate<'a>(
    commands: impl IntoIterator<Item = &'a mut Command>,
    id: CommandId,
) -> Result<(), ApiError> {
    for (i, c) in commands.into_iter().enumerate() {
        fill_ids(c, &position_id(id, i).to_string());
        c.validate().map_err(|e| {
            let mut e = ApiError::from(e);
            e.message = format!("commands[{i}]: {}", e.message);
            e
        })?;
    }
    Ok(())
}

/// Ids a client may leave out, filled with `with` (derived from the command id): a
/// `StartCheckout`'s attempt and an `UpsertSubscriptionDetails`' details, so a retry of the
/// same request is the same attempt or the same details.
fn fill_ids(command: &mut Command, with: &str) {
    match command {
        Command::StartCheckout { attempt_id: id, .. }
        | Command::UpsertSubscriptionDetails { id, .. }
            if id.is_empty() =>
        {
            with.clone_into(id);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_a_client_left_out_are_the_command_id() {
        let exec = Exec::new(CommandId::derived(&["t"]));
        let mut start = Command::StartCheckout {
            attempt_id: String::new(),
            country: None,
        };
        fill_ids(&mut start, &exec.command_id.to_string());
        let mut details = Command::UpsertSubscriptionDetails {
            id: String::new(),
            offering_code: "5G".into(),
            signing_type: "bankid".into(),
            data: serde_json::json!({}),
        };
        fill_ids(&mut details, &exec.command_id.to_string());
        let id = exec.command_id.to_string();
        assert!(matches!(start, Command::StartCheckout { attempt_id, .. } if attempt_id == id));
        assert!(matches!(details, Command::UpsertSubscriptionDetails { id: d, .. } if d == id));
        let mut given = Command::StartCheckout {
            attempt_id: "mine".into(),
            country: None,
        };
        fill_ids(&mut given, &exec.command_id.to_string());
        assert!(matches!(given, Command::StartCheckout { attempt_id, .. } if attempt_id == "mine"));
    }
}
