//! The aggregate, as the gateway sees it: the placement-aware [`CartClient`] (per-attempt
//! deadline, owner hints, failover, retries with the same command id) under one overall
//! deadline per call, with latency and error metrics, returning carts in the storefront shape.

use std::future::Future;
use std::time::{Duration, Instant};

use cart_client::CartClient;
use cart_client::PlacementView;
use cart_domain::{Cart, CartState, CartView, Command, StorefrontCart};
use proto::cart::v1 as pb;
use shared::headers::RequestContext;
use shared::{ApiError, CartId, CommandId, ErrorCode};

use crate::metrics as m;

/// A cart at a version (the stream sequence of its last event; 0 before the first one),
/// rendered by each API in its own shape ([`VersionedCart::v1`], [`VersionedCart::storefront`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedCart {
    pub version: u64,
    pub cart: Cart,
    /// The command had been applied before: this is its original outcome (the version it
    /// produced) with the cart as it is now. Always false for reads.
    pub replayed: bool,
}

impl VersionedCart {
    /// The empty cart `id` before anything was written to it.
    pub fn empty(id: &CartId) -> Self {
        Self {
            version: 0,
            cart: Cart::new(id.clone()),
            replayed: false,
        }
    }

    /// The cart of a domain state.
    pub fn of(state: CartState) -> Self {
        Self {
            version: state.version,
            cart: state.cart,
            replayed: false,
        }
    }

    /// Decodes the aggregate's wire form.
    pub fn decode(snapshot: pb::CartSnapshot) -> Result<Self, ApiError> {
        decode_state(snapshot).map(Self::of)
    }

    /// The `/v1` shape.
    pub fn v1(&self) -> CartView {
        CartView::of(&self.cart)
    }

    /// The storefront API's shape.
    pub fn storefront(&self) -> StorefrontCart {
        StorefrontCart::storefront(&self.cart)
    }
}

/// How to run a command: its id (one per client request, reused by every retry), the
/// version the client expects (`If-Match`) and, for a command id derived from an
/// `Idempotency-Key`, the fingerprint of the client's request.
#[derive(Debug, Clone)]
pub struct Exec {
    pub command_id: CommandId,
    pub expected_version: Option<u64>,
    pub fingerprint: Option<String>,
}

impl Exec {
    pub fn new(command_id: CommandId) -> Self {
        Self {
            command_id,
            expected_version: None,
            fingerprint: None,
        }
    }
}

#[derive(Clone)]
pub struct Upstream {
    client: CartClient,
    deadline: Duration,
}

impl Upstream {
    pub fn new(client: CartClient, deadline: Duration) -> Self {
        Self { client, deadline }
    }

    pub fn placement(&self) -> Option<&PlacementView> {
        self.client.view()
    }

    pub async fn get(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
    ) -> Result<VersionedCart, ApiError> {
        self.state(ctx, cart).await.map(VersionedCart::of)
    }

    /// The cart's domain state (checkout progress included), not only its storefront view.
    pub async fn state(&self, ctx: &RequestContext, cart: &CartId) -> Result<CartState, ApiError> {
        decode_state(self.get_cart(ctx, cart, pb::Render::Snapshot).await?)
    }

    /// The cart's storefront JSON, rendered by the aggregate (passed on untouched).
    pub async fn get_storefront(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
    ) -> Result<Vec<u8>, ApiError> {
        let mut snap = self.get_cart(ctx, cart, pb::Render::StorefrontJson).await?;
        storefront_json(std::mem::take(&mut snap.rendered), Some(snap))
    }

    async fn get_cart(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        render: pb::Render,
    ) -> Result<pb::CartSnapshot, ApiError> {
        let req = pb::GetCartRequest {
            tenant: ctx.tenant.to_string(),
            cart_id: cart.to_string(),
            min_version: None,
            render: render.into(),
        };
        self.timed("get", self.client.get_cart(ctx, req)).await
    }

    /// [`Self::execute`], replying with the cart's storefront JSON as the aggregate rendered it:
    /// the gateway neither decodes the cart nor renders it again.
    pub async fn execute_storefront(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        command: Command,
    ) -> Result<Vec<u8>, ApiError> {
        let resp = self
            .execute_as(ctx, cart, exec, command, pb::Render::StorefrontJson)
            .await?;
        storefront_json(resp.rendered, resp.cart)
    }

    pub async fn execute(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        command: Command,
    ) -> Result<VersionedCart, ApiError> {
        let resp = self
            .execute_as(ctx, cart, exec, command, pb::Render::Snapshot)
            .await?;
        reply_cart(resp)
    }

    /// One command, the cart in the reply as `render` asks.
    async fn execute_as(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        command: Command,
        render: pb::Render,
    ) -> Result<pb::ExecuteResponse, ApiError> {
        let req = pb::ExecuteRequest::new(
            &ctx.tenant,
            cart,
            exec.command_id,
            exec.expected_version,
            &command,
        )
        .keyed(exec.fingerprint.as_deref())
        .rendered(render);
        self.timed("execute", self.client.execute(ctx, req))
            .await
            .map_err(|e| for_client(e, &exec))
    }

    /// Several commands, atomically: all apply or none does.
    pub async fn execute_batch(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
        exec: Exec,
        commands: Vec<Command>,
    ) -> Result<VersionedCart, ApiError> {
        let req = pb::ExecuteBatchRequest::new(
            &ctx.tenant,
            cart,
            exec.command_id,
            exec.expected_version,
            &commands,
        )
        .keyed(exec.fingerprint.as_deref());
        let resp = self
            .timed("execute_batch", self.client.execute_batch(ctx, req))
            .await
            .map_err(|e| for_client(e, &exec))?;
        reply_cart(resp)
    }

    /// The cart now, then after every commit. Opening is bounded by the deadline; the stream
    /// itself lives as long as the client listens.
    pub async fn watch(
        &self,
        ctx: &RequestContext,
        cart: &CartId,
    ) -> Result<tonic::Streaming<pb::CartSnapshot>, ApiError> {
        let req = pb::WatchCartRequest {
            tenant: ctx.tenant.to_string(),
            cart_id: cart.to_string(),
        };
        self.timed("watch", self.client.watch_cart(ctx, req)).await
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::new(
                ErrorCode::Timeout,
                format!(
                    "the aggregate did not answer within {} ms; the outcome is unknown, retry the same request",
                    self.deadline.as_millis()
                ),
            )),
        };
        metrics::histogram!(m::UPSTREAM_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!(m::UPSTREAM_ERRORS, "op" => op, "code" => e.code.as_str())
                .increment(1);
            if e.status().is_server_error() {
                tracing::warn!(op, code = %e.code, error = %e.message, "aggregate call failed");
            }
        }
        result
    }
}

/// The domain state inside the aggregate's wire form.
pub fn decode_state(snapshot: pb::CartSnapshot) -> Result<CartState, ApiError> {
    proto::convert::state_from_snapshot(snapshot)
        .map(|(_, state)| state)
        .map_err(|e| {
            ApiError::internal(format!(
                "the aggregate sent a cart this gateway cannot read: {e}"
            ))
        })
}

/// The storefront JSON the aggregate rendered; from an aggregate that predates rendering (a
/// rolling upgrade), the snapshot it sent instead, rendered here.
fn storefront_json(
    rendered: Vec<u8>,
    snapshot: Option<pb::CartSnapshot>,
) -> Result<Vec<u8>, ApiError> {
    if !rendered.is_empty() {
        return Ok(rendered);
    }
    let snapshot =
        snapshot.ok_or_else(|| ApiError::internal("the aggregate replied without the cart"))?;
    Ok(proto::convert::storefront_json(
        &decode_state(snapshot)?.cart,
    ))
}

fn reply_cart(resp: pb::ExecuteResponse) -> Result<VersionedCart, ApiError> {
    let snap = resp
        .cart
        .ok_or_else(|| ApiError::internal("the aggregate replied without the cart"))?;
    VersionedCart::decode(snap).map(|s| VersionedCart {
        replayed: resp.duplicate,
        ..s
    })
}

/// With `If-Match`, a version mismatch is the client's precondition failing (412), not a
/// concurrent writer to retry against (409).
/// A command's failure as the HTTP client that sent it reads it: a version conflict under
/// `If-Match` is its failed precondition, and a timeout says what the client may do about it.
/// A change whose answer did not come in time may have been stored: only a keyed request
/// (`Idempotency-Key`) can be sent again as it is; any other gets a new command id per try,
/// so its client is told to read the cart first (the aggregate's own message speaks of
/// command ids, which an HTTP client does not send).
fn for_client(mut e: ApiError, exec: &Exec) -> ApiError {
    match (e.code, exec.expected_version) {
        (ErrorCode::VersionConflict, Some(expected)) => ApiError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "If-Match expects version {expected}: {}; reload the cart and retry",
                e.message
            ),
        ),
        (ErrorCode::Timeout, _) => {
            e.message = if exec.fingerprint.is_some() {
                "the change was not confirmed in time and may have been stored; send it again \
                 with the same Idempotency-Key and body: it cannot apply twice"
            } else {
                "the change was not confirmed in time and may have been stored; read the cart \
                 before sending it again (a request sent again without an Idempotency-Key is a \
                 new change)"
            }
            .to_owned();
            e
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::CartState;
    use shared::TenantId;

    #[test]
    fn the_aggregates_rendering_is_passed_on_and_an_older_aggregates_snapshot_rendered_here() {
        let state = CartState::new(CartId::parse("c-1").unwrap());
        let tenant = TenantId::parse("t1").unwrap();
        let json = proto::convert::storefront_json(&state.cart);
        // Rendered by the aggregate: the bytes as they came.
        let passed = storefront_json(b"{\"as\":\"sent\"}".to_vec(), None).unwrap();
        assert_eq!(passed, b"{\"as\":\"sent\"}");
        // An aggregate that predates rendering sent the snapshot: the same JSON, made here.
        let snapshot = proto::convert::snapshot(&tenant, &state);
        assert_eq!(storefront_json(Vec::new(), Some(snapshot)).unwrap(), json);
        // Neither is an internal error, never an empty body.
        let e = storefront_json(Vec::new(), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
    }
}
