//! Shared set-up for the aggregate's integration tests: a real nats-server (through the
//! harness), the seeded catalog, and nodes started in-process on free ports.

#![allow(dead_code)]

use std::time::Duration;

use aggregate::Config;
use cart_domain::ids::{CartId, CommandId, TenantId};
use cart_domain::{self as domain, CartState, EventMessage, Retain};
use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_client::CartServiceClient;
use shared::headers::TENANT_ID;
use shared::nats::settings::NatsResourceSettings;
use shared::test_support::NatsServer;
use tonic::transport::Channel;

pub const TENANT: &str = "t1";

pub struct Env {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub streams: NatsResourceSettings,
}

/// Stream settings for tests: short node TTL so failover tests finish quickly.
pub fn streams() -> NatsResourceSettings {
    NatsResourceSettings {
        node_ttl_secs: 2,
        ..NatsResourceSettings::default()
    }
}

pub async fn env_with(streams: NatsResourceSettings) -> Option<Env> {
    let nats = shared::nats_or_skip!()?;
    let client = nats.client().await;
    let js = nats.jetstream().await;
    let resources = shared::nats::ensure_all(&js, &streams)
        .await
        .expect("ensure streams");
    let seed = aggregate::seed::parse(include_str!("../../../deploy/catalog.json")).unwrap();
    aggregate::seed::write(&resources.catalog, &seed)
        .await
        .expect("seed catalog");
    Some(Env {
        nats,
        client,
        js,
        streams,
    })
}

pub async fn env() -> Option<Env> {
    env_with(streams()).await
}

impl Env {
    pub fn config(&self, node_id: &str, placement: bool) -> Config {
        let mut nats = Config::default().nats;
        nats.url = self.nats.url().to_owned();
        nats.name = node_id.to_owned();
        Config {
            node_id: node_id.to_owned(),
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            placement,
            shard_count: 64,
            heartbeat_ms: 200,
            nats,
            streams: self.streams.clone(),
            ..Config::default()
        }
    }

    pub async fn node(&self, node_id: &str, placement: bool) -> aggregate::Running {
        aggregate::start(self.config(node_id, placement))
            .await
            .expect("start aggregate")
    }

    /// Every message of a cart, read straight from the stream.
    pub async fn messages(&self, cart: &str) -> Vec<(u64, EventMessage)> {
        let cart = CartId::parse(cart).unwrap();
        shared::test_support::cart_messages(&self.client, &tenant(), &cart)
            .await
            .into_iter()
            .map(|m| (m.sequence, EventMessage::from_json(&m.payload).unwrap()))
            .collect()
    }

    /// The cart as a full replay of its stream gives it.
    pub async fn replay(&self, cart: &str) -> CartState {
        let mut state = CartState::new(CartId::parse(cart).unwrap());
        for (seq, msg) in self.messages(cart).await {
            state.apply_message(&msg, seq, Retain::DEFAULT);
        }
        state
    }
}

/// Two nodes with placement, `a` and `b`, a cart whose shard `a` owns for good, and a
/// client of each node.
pub struct Pair {
    pub a: aggregate::Running,
    pub b: aggregate::Running,
    pub cart: String,
    pub to_a: CartServiceClient<Channel>,
    pub to_b: CartServiceClient<Channel>,
}

impl Env {
    /// Nodes `a` and `b` and a cart named `<prefix>-<n>` settled on `a`.
    pub async fn pair(&self, prefix: &str) -> Pair {
        let a = self.node("a", true).await;
        let b = self.node("b", true).await;
        let cart = cart_settled_on(&a, &b, prefix).await;
        let (to_a, to_b) = (connect(a.grpc_addr).await, connect(b.grpc_addr).await);
        Pair {
            a,
            b,
            cart,
            to_a,
            to_b,
        }
    }
}

impl Pair {
    /// Drains both nodes.
    pub async fn drain(self) {
        self.a.drain().await.unwrap();
        self.b.drain().await.unwrap();
    }
}

impl Env {
    /// The `CART_SNAPSHOTS` bucket and the key of `cart`'s snapshot in it.
    pub async fn snapshots(&self, cart: &str) -> (async_nats::jetstream::kv::Store, String) {
        let kv = self.js.get_key_value("CART_SNAPSHOTS").await.unwrap();
        (kv, format!("{TENANT}.{cart}"))
    }

    /// Nodes `a` and `b` without placement (each serves every cart, as any node does for a
    /// gateway's fallback), and a client of each.
    pub async fn two_unplaced(&self) -> [(aggregate::Running, CartServiceClient<Channel>); 2] {
        [
            self.node_and_client("a", false).await,
            self.node_and_client("b", false).await,
        ]
    }

    /// Node `node_id` (with placement or not) and a client of it.
    pub async fn node_and_client(
        &self,
        node_id: &str,
        placement: bool,
    ) -> (aggregate::Running, CartServiceClient<Channel>) {
        started(self.config(node_id, placement)).await
    }
}

/// One scrape of `node`'s /metrics.
pub async fn metrics(node: &aggregate::Running) -> String {
    let url = format!("http://{}/metrics", node.http_addr);
    shared::test_support::http::text(&reqwest::Client::new(), &url).await
}

/// A node started with `config` (from [`Env::config`], changed) and a client of it.
pub async fn started(config: Config) -> (aggregate::Running, CartServiceClient<Channel>) {
    let node = aggregate::start(config).await.expect("start aggregate");
    let client = connect(node.grpc_addr).await;
    (node, client)
}

/// The reply to `cmd` on `cart` under a new command id.
pub async fn run(
    client: &mut CartServiceClient<Channel>,
    cart: &str,
    cmd: domain::Command,
) -> pb::ExecuteResponse {
    let req = exec(cart, CommandId::new(), cmd);
    client.execute(req).await.unwrap().into_inner()
}

/// `n` commands on `cart`, each adding one `TEST-SKU-123`: a cart with `n` messages.
pub async fn add_times(client: &mut CartServiceClient<Channel>, cart: &str, n: usize) {
    for _ in 0..n {
        run(client, cart, add("TEST-SKU-123", 1)).await;
    }
}

/// The cart as the node behind `client` reads it.
pub async fn read(client: &mut CartServiceClient<Channel>, cart: &str) -> CartState {
    state_of(client.get_cart(get(cart)).await.unwrap().into_inner())
}

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

pub async fn connect(addr: std::net::SocketAddr) -> CartServiceClient<Channel> {
    CartServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to aggregate")
}

pub use shared::test_support::add_item as add;

pub fn request<T>(body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(TENANT_ID, TENANT.parse().unwrap());
    r
}

pub fn exec(cart: &str, id: CommandId, cmd: domain::Command) -> tonic::Request<pb::ExecuteRequest> {
    request(pb::ExecuteRequest {
        tenant: TENANT.into(),
        cart_id: cart.into(),
        command_id: id.to_string(),
        expected_version: None,
        command: proto::convert::command_bytes(&cmd),
        request_fingerprint: String::new(),
        render: pb::Render::Snapshot.into(),
    })
}

/// `cmds` on `cart` as one batch under a new command id.
pub fn batch(cart: &str, cmds: &[domain::Command]) -> tonic::Request<pb::ExecuteBatchRequest> {
    request(pb::ExecuteBatchRequest {
        tenant: TENANT.into(),
        cart_id: cart.into(),
        command_id: CommandId::new().to_string(),
        expected_version: None,
        commands: cmds.iter().map(proto::convert::command_bytes).collect(),
        request_fingerprint: String::new(),
    })
}

/// Asserts that a call failed with `code`, its message containing `needle` (`what` names
/// the call).
pub fn assert_refused(status: &tonic::Status, code: shared::ErrorCode, needle: &str, what: &str) {
    let err = shared::ApiError::from_status(status);
    assert_eq!(err.code, code, "{what}: {err}");
    assert!(err.message.contains(needle), "{what}: {err}");
}

/// `req` as a gateway sends it for a request with an `Idempotency-Key` when `keyed` (with
/// a fingerprint of the request), else unchanged.
pub fn keyed_if(
    mut req: tonic::Request<pb::ExecuteRequest>,
    keyed: bool,
) -> tonic::Request<pb::ExecuteRequest> {
    if keyed {
        req.get_mut().request_fingerprint = "fingerprint-of-the-request".into();
    }
    req
}

/// `req` as a gateway sends it when the owner is unreachable: any node serves it.
pub fn fallback<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    let reason = "owner-unreachable".parse().unwrap();
    req.metadata_mut()
        .insert(shared::headers::ROUTE_FALLBACK, reason);
    req
}

/// The cart state in the reply to `req`; panics with `what` when the command fails.
pub async fn executed(
    client: &mut CartServiceClient<Channel>,
    req: tonic::Request<pb::ExecuteRequest>,
    what: &str,
) -> CartState {
    let reply = client.execute(req).await.expect(what).into_inner();
    state_of(reply.cart.unwrap())
}

/// Waits until `GET url` answers `status`; panics with `what` when it never does.
pub async fn wait_for_status(http: &reqwest::Client, url: &str, status: u16, what: &str) {
    shared::test_support::http::wait_for_status(http, url, status, WAIT, what).await;
}

pub fn get(cart: &str) -> tonic::Request<pb::GetCartRequest> {
    request(pb::GetCartRequest {
        tenant: TENANT.into(),
        cart_id: cart.into(),
        min_version: None,
        render: pb::Render::Snapshot.into(),
    })
}

/// The domain state inside a reply.
pub fn state_of(snapshot: pb::CartSnapshot) -> CartState {
    proto::convert::state_from_snapshot(snapshot)
        .expect("valid snapshot")
        .1
}

pub fn quantity_of(state: &CartState, sku: &str) -> u32 {
    state
        .cart
        .lines
        .iter()
        .filter(|l| l.product.sku == sku)
        .map(|l| l.quantity)
        .sum()
}

pub const WAIT: Duration = Duration::from_secs(20);

/// Two states describe the same cart at the same version (`recent` is not transported over
/// gRPC, so it is not compared).
pub fn assert_same(a: &CartState, b: &CartState, what: &str) {
    assert_eq!(a.cart, b.cart, "{what}: cart");
    assert_eq!(
        (a.version, a.revision),
        (b.version, b.revision),
        "{what}: version, revision"
    );
}

/// A cart (named `<prefix>-<n>`) whose shard `owner` wins by rendezvous hashing against
/// `other`, returned once `owner` holds the shard and `other` sees it there. That is the final
/// assignment while both nodes live: picking a cart by who owns its shard *now* races with the
/// nodes still dividing the shards between them (the shard may move a moment later).
pub async fn cart_settled_on(
    owner: &aggregate::Running,
    other: &aggregate::Running,
    prefix: &str,
) -> String {
    use shared::placement::{rendezvous_owner, shard_for};
    let nodes = [owner.node_id.as_str(), other.node_id.as_str()];
    let shard_of = |c: &str| shard_for(&tenant(), &CartId::parse(c).unwrap(), 64);
    let cart = (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|c| rendezvous_owner(shard_of(c), nodes) == Some(owner.node_id.as_str()))
        .unwrap();
    let shard = shard_of(&cart);
    let (mine, theirs) = (
        owner.placement.clone().expect("placement"),
        other.placement.clone().expect("placement"),
    );
    shared::test_support::wait_until(
        || async {
            mine.check(shard).is_ok()
                && theirs
                    .view()
                    .owner(shard)
                    .is_some_and(|o| o.node == owner.node_id)
                && theirs.view().node(&owner.node_id).is_some()
        },
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("shard {shard} settles on {}: {e}", owner.node_id));
    cart
}
