//! A placement-aware `CartService` client for the gateway and the runner.
//!
//! Routing: the cart's shard (shared hash) → its owner in `CART_PLACEMENT` → the owner's
//! address in `CART_NODES`. A `not_owner` reply names the real owner: the call is repeated
//! there once. When the owner is unknown or unreachable the call goes to any live node (the
//! aggregate's append fence keeps that correct). Every call has a deadline; calls are retried
//! only because they are safe to repeat: reads, and commands, which carry a command id.
//! Channels are pooled per node (a few HTTP/2 connections each) in a bounded cache. An
//! `Execute` routed to a node in this process ([`CartClient::with_local`]) is handed to it
//! without the network.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cart_domain::ids::{CartId, TenantId};
use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_client::CartServiceClient;
use proto::cart_request::CartRequest;
use shared::headers::RequestContext;
use shared::placement::shard_for;
use shared::{ApiError, ErrorCode};
use tonic::transport::Channel;

use crate::local::LocalNode;
use crate::multiplex::Mux;
use crate::placement_view::PlacementView;
use crate::pools::{Pool, Pools};

/// A unary command's failure as the routing client weighs it: a status the transport made on
/// a call that was sent (no code of the node's; the connection reset) may have come after the
/// node decided it, so its outcome is unknown (`timeout`, see [`CartClient::call_with`]).
/// `unavailable` (could not connect) and the node's own answers are kept; a bare `cancelled`
/// is already read as unknown ([`ApiError::from_upstream`]).
fn in_doubt(status: tonic::Status) -> tonic::Status {
    use tonic::Code as C;
    match status.code() {
        C::Unknown | C::Internal if !shared::error::carries_code(&status) => {
            ApiError::outcome_unknown(format!("the node's answer was lost ({})", status.message()))
                .to_status()
        }
        _ => status,
    }
}

/// A node's connections unused this long go when room is needed for another node's.
const POOL_IDLE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub shard_count: u32,
    /// Deadline of one attempt.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per call (first try included), across nodes.
    pub attempts: u32,
    /// HTTP/2 connections per aggregate node.
    pub channels_per_node: usize,
    /// Most nodes with pooled channels.
    pub max_nodes: usize,
    /// Mutual TLS to the nodes (empty: plaintext).
    pub tls: shared::grpc_tls::GrpcTls,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            shard_count: 256,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            attempts: 3,
            channels_per_node: 4,
            max_nodes: 256,
            tls: Default::default(),
        }
    }
}

#[derive(Clone)]
pub struct CartClient {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    view: Option<PlacementView>,
    /// Used when there is no placement view (or it knows no live node).
    fallback: Vec<String>,
    /// Connections per node address (at most `cfg.max_nodes`).
    pools: Pools,
    next: AtomicUsize,
    /// The aggregate node in this process, if any: `Execute` calls routed to its address go
    /// to it directly.
    local: Option<Arc<dyn LocalNode>>,
}

/// Where one attempt goes.
enum Upstream {
    /// A connection to the node.
    Remote(Arc<Mux>),
    /// The node runs in this process: no connection is looked up for it.
    Local(Arc<dyn LocalNode>),
}

impl CartClient {
    pub fn new(cfg: ClientConfig, view: Option<PlacementView>, fallback: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pools: Pools::new(cfg.max_nodes, POOL_IDLE),
                cfg,
                view,
                fallback,
                next: AtomicUsize::new(0),
                local: None,
            }),
        }
    }

    /// This client, with `node` (an aggregate node in this process) serving the `Execute`
    /// calls routed to its address. Called before the client is first cloned.
    pub fn with_local(mut self, node: Arc<dyn LocalNode>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_local is called before the client is shared")
            .local = Some(node);
        self
    }

    pub fn view(&self) -> Option<&PlacementView> {
        self.inner.view.as_ref()
    }

    pub async fn execute(
        &self,
        ctx: &RequestContext,
        req: pb::ExecuteRequest,
    ) -> Result<pb::ExecuteResponse, ApiError> {
        let timeout = Some(self.inner.cfg.timeout);
        let (tenant, cart) = ids(req.tenant(), req.cart_id())?;
        self.call_with(ctx, &tenant, &cart, timeout, |node, meta| {
            let req = req.clone();
            async move {
                let (md, timeout) = (meta.call_metadata(), meta.timeout);
                let resp = match node {
                    Upstream::Local(local) => local.execute(md, timeout, req).await?,
                    Upstream::Remote(conn) => conn.execute(md, timeout, req).await?,
                };
                Ok(tonic::Response::new(resp))
            }
        })
        .await
    }

    pub async fn execute_batch(
        &self,
        ctx: &RequestContext,
        req: pb::ExecuteBatchRequest,
    ) -> Result<pb::ExecuteResponse, ApiError> {
        let timeout = Some(self.inner.cfg.timeout);
        self.call(ctx, req, timeout, |mut c, r| async move {
            c.execute_batch(r).await.map_err(in_doubt)
        })
        .await
    }

    pub async fn get_cart(
        &self,
        ctx: &RequestContext,
        req: pb::GetCartRequest,
    ) -> Result<pb::CartSnapshot, ApiError> {
        let timeout = Some(self.inner.cfg.timeout);
        self.call(
            ctx,
            req,
            timeout,
            |mut c, r| async move { c.get_cart(r).await },
        )
        .await
    }

    /// A live stream of the cart. No deadline applies to the stream itself; opening it is
    /// routed and retried like any read.
    pub async fn watch_cart(
        &self,
        ctx: &RequestContext,
        req: pb::WatchCartRequest,
    ) -> Result<tonic::Streaming<pb::CartSnapshot>, ApiError> {
        self.call(
            ctx,
            req,
            None,
            |mut c, r| async move { c.watch_cart(r).await },
        )
        .await
    }

    /// `f` with the request for the cart `req` names, routed to that cart's node and retried
    /// ([`Self::call_with`]); `timeout` is the deadline of one attempt.
    async fn call<R, T, F, Fut>(
        &self,
        ctx: &RequestContext,
        req: R,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, ApiError>
    where
        R: CartRequest + Clone,
        F: Fn(CartServiceClient<Channel>, tonic::Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (tenant, cart) = ids(req.tenant(), req.cart_id())?;
        self.call_with(ctx, &tenant, &cart, timeout, |node, meta| {
            // Only `Execute` is handed over in-process: the other calls reach the node in
            // this process over gRPC too.
            let conn = match node {
                Upstream::Remote(conn) => Ok(conn),
                Upstream::Local(local) => self.client(local.addr()),
            };
            let req = with_ctx(meta, req.clone());
            let f = &f;
            async move {
                let conn = conn.map_err(|e| e.to_status())?;
                f(conn.unary(), req).await
            }
        })
        .await
    }

    async fn call_with<T, F, Fut>(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        cart: &CartId,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, ApiError>
    where
        F: Fn(Upstream, RequestMeta) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let shard = shard_for(tenant, cart, self.inner.cfg.shard_count);
        let mut target = self.route(shard, None);
        // Built when a call fails, not ahead of every call.
        let mut last_err: Option<ApiError> = None;
        let mut followed_hint = false;
        // Set once the owner proved unreachable: other nodes are then asked to serve anyway.
        let mut fallback = false;
        // An attempt's outcome is unknown (a node timed out on it, or died with it): if no
        // later attempt succeeds, the caller must hear that it may have been applied, not that
        // the nodes were unreachable (a client resends that under a new id: applied twice).
        let mut unknown: Option<ApiError> = None;
        for attempt in 0..self.inner.cfg.attempts.max(1) {
            let Some(addr) = target.take() else { break };
            let local = (self.inner.local.as_ref()).filter(|l| l.addr() == addr);
            let upstream = match local {
                Some(local) => Upstream::Local(local.clone()),
                None => match self.client(&addr) {
                    Ok(c) => Upstream::Remote(c),
                    Err(e) => {
                        last_err = Some(e);
                        target = self.route(shard, Some(&addr));
                        continue;
                    }
                },
            };
            let meta = RequestMeta {
                ctx: shared::spans::downstream(ctx),
                timeout,
                fallback,
                earlier_unknown: unknown.is_some(),
            };
            match f(upstream, meta).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => {
                    let err = ApiError::from_upstream("aggregate node", &status);
                    match err.code {
                        ErrorCode::NotOwner if !followed_hint => {
                            followed_hint = true;
                            target = err
                                .owner_addr
                                .clone()
                                .or_else(|| self.route(shard, Some(&addr)));
                        }
                        // The node answered and asks to be asked again later (e.g. a cart not
                        // yet at a version): any other node would answer the same.
                        ErrorCode::Unavailable if err.retry_after.is_some() => {
                            return Err(unknown.unwrap_or(err));
                        }
                        ErrorCode::Unavailable | ErrorCode::Draining | ErrorCode::Timeout => {
                            if err.code == ErrorCode::Timeout {
                                unknown = Some(err.clone());
                            }
                            tracing::debug!(addr, attempt, code = %err.code, "aggregate call failed; trying another node");
                            fallback = true;
                            target = self.route(shard, Some(&addr));
                        }
                        ErrorCode::NotOwner => {
                            target = self.route(shard, Some(&addr));
                        }
                        // A refusal is the node's decision on the cart as the stream has it,
                        // whatever an earlier attempt did.
                        _ => return Err(err),
                    }
                    last_err = Some(err);
                }
            }
        }
        if let Some(unknown) = unknown {
            return Err(unknown);
        }
        Err(match last_err {
            None => ApiError::unavailable("no aggregate node is known; is one running?"),
            Some(e) if e.code == ErrorCode::NotOwner => {
                ApiError::unavailable("cart placement is moving; retry shortly")
                    .with_retry_after(Duration::from_secs(1))
            }
            Some(e) => e,
        })
    }

    /// Where to send a call for `shard`: its live owner, else any live non-draining node,
    /// else a fallback address. `avoid` is an address that just failed.
    fn route(&self, shard: u32, avoid: Option<&str>) -> Option<String> {
        if let Some(view) = &self.inner.view {
            if let Some(addr) = view.owner_addr(shard)
                && Some(addr.as_str()) != avoid
            {
                return Some(addr);
            }
            let live: Vec<String> = view
                .nodes()
                .into_iter()
                .filter(|(_, n)| !n.draining && Some(n.grpc_addr.as_str()) != avoid)
                .map(|(_, n)| n.grpc_addr)
                .collect();
            if !live.is_empty() {
                let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
                return Some(live[i % live.len()].clone());
            }
        }
        let fallback: Vec<&String> = self
            .inner
            .fallback
            .iter()
            .filter(|a| Some(a.as_str()) != avoid)
            .collect();
        if fallback.is_empty() {
            return avoid.map(str::to_owned);
        }
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        Some(fallback[i % fallback.len()].clone())
    }

    /// A connection to `addr` (round robin over its pool).
    fn client(&self, addr: &str) -> Result<Arc<Mux>, ApiError> {
        self.inner.pools.connection(addr, || self.pool(addr))
    }

    fn pool(&self, addr: &str) -> Result<Pool, ApiError> {
        let endpoint = self
            .inner
            .cfg
            .tls
            .endpoint(addr, shared::grpc_tls::names::AGGREGATE)
            .map_err(|e| ApiError::internal(format!("bad aggregate address: {e}")))?
            .connect_timeout(self.inner.cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channels = (0..self.inner.cfg.channels_per_node.max(1))
            .map(|_| Arc::new(Mux::new(endpoint.connect_lazy())))
            .collect();
        Ok(Pool::new(channels))
    }
}

/// The value of the routing hint (its presence is what counts).
const ROUTE_FALLBACK_VALUE: &str = "owner-unreachable";
/// The value of [`shared::headers::EARLIER_ATTEMPT_UNKNOWN`] (its presence is what counts).
const EARLIER_ATTEMPT_UNKNOWN_VALUE: &str = "timeout";

/// Context, deadline and routing hint of one attempt.
pub struct RequestMeta {
    ctx: RequestContext,
    timeout: Option<Duration>,
    fallback: bool,
    /// An earlier attempt timed out: the node it went to may still decide it.
    earlier_unknown: bool,
}

impl RequestMeta {
    /// The gRPC metadata of the attempt: the caller's context and the routing hint.
    fn metadata(&self) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        self.ctx.to_grpc_metadata(&mut md);
        if self.fallback {
            md.insert(
                shared::headers::ROUTE_FALLBACK,
                tonic::metadata::MetadataValue::from_static(ROUTE_FALLBACK_VALUE),
            );
        }
        if self.earlier_unknown {
            md.insert(
                shared::headers::EARLIER_ATTEMPT_UNKNOWN,
                tonic::metadata::MetadataValue::from_static(EARLIER_ATTEMPT_UNKNOWN_VALUE),
            );
        }
        md
    }

    /// [`RequestMeta::metadata`] for a call on an `ExecuteStream`, built straight into the
    /// message's map (no `MetadataMap` to convert).
    fn call_metadata(&self) -> shared::headers::CallMetadata {
        let mut md = shared::headers::CallMetadata::with_capacity(4);
        self.ctx.to_call_metadata(&mut md);
        if self.fallback {
            md.insert(
                shared::headers::ROUTE_FALLBACK.to_owned(),
                ROUTE_FALLBACK_VALUE.to_owned(),
            );
        }
        if self.earlier_unknown {
            md.insert(
                shared::headers::EARLIER_ATTEMPT_UNKNOWN.to_owned(),
                EARLIER_ATTEMPT_UNKNOWN_VALUE.to_owned(),
            );
        }
        md
    }
}

fn with_ctx<T>(meta: RequestMeta, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::from_parts(meta.metadata(), Default::default(), body);
    if let Some(t) = meta.timeout {
        r.set_timeout(t);
    }
    r
}

fn ids(tenant: &str, cart: &str) -> Result<(TenantId, CartId), ApiError> {
    Ok((TenantId::parse(tenant)?, CartId::parse(cart)?))
}
