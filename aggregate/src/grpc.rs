//! `cart.v1.CartService` and `cart.v1.AggregateAdmin` over gRPC: parse and validate, one call
//! into [`Carts`], map the result. Every error leaves as a status carrying its stable code.

use std::pin::Pin;
use std::sync::Arc;

use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::{CartState, Command};
use futures::Stream;
use proto::cart::v1 as pb;
use proto::cart_request::CartRequest;
use shared::ApiError;
use shared::headers::{CallMetadata, HeaderSource, RequestContext};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use shared::grpc_tls::names::{ADMIN, GATEWAY, RUNNER};
use shared::grpc_tls::{Caller, authorize};

use crate::carts::{CartRef, Carts, Identity, Route};
use crate::drain::Drainer;
use crate::metrics as m;

/// Limits of the gRPC surface.
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    pub max_batch: usize,
}

/// The cart a call is for: the caller's context, the cart, and how to reach its owner.
type Target = (RequestContext, CartRef, Route);

#[derive(Clone)]
pub struct CartGrpc {
    carts: Carts,
    limits: GrpcLimits,
    shutdown: CancellationToken,
}

impl CartGrpc {
    pub fn new(carts: Carts, limits: GrpcLimits, shutdown: CancellationToken) -> Self {
        Self {
            carts,
            limits,
            shutdown,
        }
    }

    /// Admit a call to one cart: its caller must be a gateway or the runner (for `rpc`), its
    /// context and cart must parse. Returns the caller (for command checks) and the target.
    fn admit<R: CartRequest>(
        &self,
        req: &Request<R>,
        rpc: &str,
    ) -> Result<(Caller, Target), Status> {
        let caller = Caller::of(req)?;
        let target = self.admit_as(&caller, req.metadata(), req.get_ref(), rpc)?;
        Ok((caller, target))
    }

    /// [`Self::admit`] for a caller already known (a call on a multiplexed stream, whose
    /// caller is the stream's), with the call's metadata `md` (gRPC metadata, or the map a
    /// stream call carries) and its message `body`.
    fn admit_as<R: CartRequest>(
        &self,
        caller: &Caller,
        md: &impl HeaderSource,
        body: &R,
        rpc: &str,
    ) -> Result<Target, Status> {
        caller.require(rpc, &[GATEWAY, RUNNER])?;
        let ctx = request_context(md, body.tenant())?;
        let cart_id = CartId::parse(body.cart_id()).map_err(ApiError::from)?;
        let cart = self.carts.cart_ref(ctx.tenant.clone(), cart_id);
        let route = if md.value(shared::headers::ROUTE_FALLBACK).is_some() {
            Route::Fallback
        } else {
            Route::Placed
        };
        Ok((ctx, cart, route))
    }

    /// `Execute` for `caller`, with the call's metadata `md`: the unary call, and each call
    /// of an `ExecuteStream`.
    pub(crate) async fn execute_as(
        &self,
        caller: &Caller,
        md: &impl HeaderSource,
        r: pb::ExecuteRequest,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let (ctx, cart, route) = self.admit_as(caller, md, &r, "Execute")?;
        let id = identity(&r.command_id, r.request_fingerprint, md)?;
        let cmd = command(&r.command, "command")?;
        authorize_commands(caller, std::slice::from_ref(&cmd))?;
        self.run(
            ctx,
            cart,
            route,
            id,
            (r.expected_version, vec![cmd]),
            r.render,
        )
        .await
    }
}

impl CartGrpc {
    /// [`Self::execute_as`] owning what it reads: one call of a stream, or one handed over
    /// in-process ([`crate::local`]), each in a task or future of its own.
    pub(crate) async fn execute_owned(
        self,
        caller: Caller,
        md: CallMetadata,
        r: pb::ExecuteRequest,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        self.execute_as(&caller, &md, r).await
    }

    /// Execute commands in a span (under the call's `grpc` span, which joined the caller's
    /// trace), and build the reply.
    async fn run(
        &self,
        ctx: RequestContext,
        cart: CartRef,
        route: Route,
        id: Identity,
        (expected, commands): (Option<u64>, Vec<Command>),
        render: i32,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let span = tracing::info_span!(
            "cart.execute",
            cart = %cart.key,
            command_id = %id.command_id,
            commands = commands.len()
        );
        let tenant = &cart.tenant;
        let out = self
            .carts
            .execute(
                &ctx,
                &cart,
                route,
                id,
                (expected, commands),
                |state, version| {
                    let mut snap = proto::convert::rendered(tenant, state, render);
                    snap.version = version;
                    snap
                },
            )
            .instrument(span)
            .await?;
        let mut snap = out.reply;
        Ok(Response::new(pb::ExecuteResponse {
            version: snap.version,
            rendered: std::mem::take(&mut snap.rendered),
            cart: (!snap.cart.is_empty()).then_some(snap),
            duplicate: out.duplicate,
            event_types: out.event_types,
        }))
    }
}

/// The caller's context. The tenant in the request body is authoritative and must agree with
/// `x-tenant-id` when both are present.
fn request_context(md: &impl HeaderSource, body_tenant: &str) -> Result<RequestContext, Status> {
    let tenant = TenantId::parse(body_tenant).map_err(ApiError::from)?;
    Ok(RequestContext::from_grpc_for_tenant(md, tenant)?)
}

/// The commands that record what the payment provider said come from the runner only: a
/// gateway (or anything holding its certificate) must not be able to confirm an order. The
/// provider's validation callback reaches the gateway only: its approval comes from there.
fn authorize_commands(caller: &Caller, commands: &[Command]) -> Result<(), Status> {
    for c in commands {
        match c {
            Command::RecordProviderOrder { .. }
            | Command::ConfirmOrder { .. }
            | Command::FailCheckout { .. } => caller.require(c.name(), &[RUNNER])?,
            Command::ApprovePayment { .. } => caller.require(c.name(), &[GATEWAY])?,
            _ => {}
        }
    }
    Ok(())
}

fn command_id(raw: &str) -> Result<CommandId, Status> {
    Ok(CommandId::parse(raw).map_err(ApiError::from)?)
}

/// The command at `field` (`command`, `commands[3]`): errors name the path from there. Its
/// catalog keys and provider ids are validated here, before anything looks them up.
fn command(raw: &[u8], field: &str) -> Result<Command, Status> {
    let command = proto::convert::command_at(raw, field).map_err(ApiError::from)?;
    command.validate().map_err(|e| {
        let mut e = ApiError::from(e);
        if field != "command" {
            e.message = format!("{field}: {}", e.message);
        }
        e
    })?;
    Ok(command)
}

/// The command's identity: its id, the request fingerprint when it came with an
/// `Idempotency-Key`, and whether the call's metadata `md` says an earlier attempt timed out.
fn identity(raw_id: &str, fingerprint: String, md: &impl HeaderSource) -> Result<Identity, Status> {
    let command_id = command_id(raw_id)?;
    if fingerprint.len() > 128 || fingerprint.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "request_fingerprint must be at most 128 visible ASCII characters",
        )
        .into());
    }
    Ok(Identity {
        command_id,
        fingerprint: (!fingerprint.is_empty()).then_some(fingerprint),
        earlier_attempt_unknown: md.contains(shared::headers::EARLIER_ATTEMPT_UNKNOWN),
    })
}

pub fn snapshot(tenant: &TenantId, state: &CartState) -> pb::CartSnapshot {
    proto::convert::snapshot(tenant, state)
}

#[tonic::async_trait]
impl pb::cart_service_server::CartService for CartGrpc {
    async fn execute(
        &self,
        req: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let caller = Caller::of(&req)?;
        let (md, _, body) = req.into_parts();
        self.execute_as(&caller, &md, body).await
    }

    type ExecuteStreamStream = crate::multiplex::Results;

    async fn execute_stream(
        &self,
        req: Request<tonic::Streaming<pb::ExecuteCall>>,
    ) -> Result<Response<Self::ExecuteStreamStream>, Status> {
        let caller = Caller::of(&req)?;
        caller.require("ExecuteStream", &[GATEWAY, RUNNER])?;
        let svc = self.clone();
        // Cloned for each call (with the service in it), then called once.
        let execute = move |caller, md, req| svc.execute_owned(caller, md, req);
        Ok(Response::new(crate::multiplex::serve(
            execute,
            caller,
            req.into_inner(),
            self.shutdown.clone(),
        )))
    }

    async fn execute_batch(
        &self,
        req: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let (caller, (ctx, cart, route)) = self.admit(&req, "ExecuteBatch")?;
        let (md, _, r) = req.into_parts();
        let id = identity(&r.command_id, r.request_fingerprint, &md)?;
        if r.commands.is_empty() {
            return Err(ApiError::invalid("commands must not be empty").into());
        }
        if r.commands.len() > self.limits.max_batch {
            return Err(ApiError::new(
                shared::ErrorCode::LimitExceeded,
                format!(
                    "a batch holds at most {} commands, got {}",
                    self.limits.max_batch,
                    r.commands.len()
                ),
            )
            .into());
        }
        let cmds = r
            .commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| command(&c, &format!("commands[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        authorize_commands(&caller, &cmds)?;
        self.run(
            ctx,
            cart,
            route,
            id,
            (r.expected_version, cmds),
            pb::Render::Snapshot.into(),
        )
        .await
    }

    async fn get_cart(
        &self,
        req: Request<pb::GetCartRequest>,
    ) -> Result<Response<pb::CartSnapshot>, Status> {
        let (_, (_ctx, cart, route)) = self.admit(&req, "GetCart")?;
        let span = tracing::info_span!("cart.get", cart = %cart.key);
        let r = req.get_ref();
        let snap = self
            .carts
            .get(&cart, route, r.min_version, |state| {
                proto::convert::rendered(&cart.tenant, state, r.render)
            })
            .instrument(span)
            .await?;
        Ok(Response::new(snap))
    }

    type WatchCartStream = Pin<Box<dyn Stream<Item = Result<pb::CartSnapshot, Status>> + Send>>;

    async fn watch_cart(
        &self,
        req: Request<pb::WatchCartRequest>,
    ) -> Result<Response<Self::WatchCartStream>, Status> {
        let (_, (_ctx, cart, route)) = self.admit(&req, "WatchCart")?;
        // Subscribe before reading, so no commit falls between the two.
        let mut rx = self.carts.watchers().subscribe(&cart.key);
        let tenant = cart.tenant.clone();
        let first = self
            .carts
            .get(&cart, route, None, |state| snapshot(&tenant, state))
            .await?;
        let shutdown = self.shutdown.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = first.version;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    // The caller went away: end here rather than at the cart's next commit,
                    // which may never come.
                    () = tx.closed() => return,
                    next = rx.recv() => next,
                };
                match next {
                    Ok(state) if state.version > last => {
                        last = state.version;
                        if tx.send(Ok(snapshot(&tenant, &state))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => {
                        metrics::counter!(m::WATCHERS_DROPPED).increment(1);
                        let _ = tx
                            .send(Err(Status::resource_exhausted(
                                "watcher fell behind the cart's updates; reconnect",
                            )))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A boxed stream fed by a task through a small channel (the task ends when the client goes).
fn async_stream<F, Fut>(
    f: F,
) -> Pin<Box<dyn Stream<Item = Result<pb::CartSnapshot, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::CartSnapshot, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[derive(Clone)]
pub struct AdminGrpc {
    drainer: Arc<Drainer>,
    carts: Carts,
}

impl AdminGrpc {
    pub fn new(drainer: Arc<Drainer>, carts: Carts) -> Self {
        Self { drainer, carts }
    }
}

#[tonic::async_trait]
impl pb::aggregate_admin_server::AggregateAdmin for AdminGrpc {
    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        authorize(&req, "AggregateAdmin.Drain", &[ADMIN])?;
        self.drainer.begin();
        let owned = self.drainer.wait_handed_off().await;
        Ok(Response::new(pb::DrainResponse {
            in_flight: self.carts.in_flight(),
            owned_shards: owned as u32,
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        authorize(&req, "AggregateAdmin.Status", &[ADMIN])?;
        Ok(Response::new(self.drainer.status(&self.carts)))
    }
}
