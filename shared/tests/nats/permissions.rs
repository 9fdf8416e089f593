//! The shipped NATS accounts (`deploy/nats/accounts.conf`), both ways: each service's user can
//! do what its code does (the subjects and JetStream API calls below are the ones the services
//! use; the end-to-end suite runs every service as its user too), and the obvious abuses are
//! refused by the server with a permissions violation and change nothing.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use async_nats::{Client, Event};
use futures::StreamExt;
use shared::nats::{
    NatsResourceSettings, Resources, connect, ensure_all, read_subject_after, read_subject_page,
};
use shared::subjects::{self, CART_EVENTS_STREAM};
use shared::test_support::{NatsServer, pull_one};
use tokio::sync::mpsc;

/// A connection as one user, with the server's error messages (permission violations arrive
/// asynchronously as `-ERR`).
struct As {
    user: &'static str,
    client: Client,
    js: jetstream::Context,
    errors: mpsc::UnboundedReceiver<String>,
}

impl As {
    async fn connect(nats: &NatsServer, user: &'static str) -> As {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = nats
            .options_as(user)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(client.clone());
        As {
            user,
            client,
            js,
            errors,
        }
    }

    /// Connects as `user` and creates (or opens) every resource, as each service starts up.
    async fn start_up(nats: &NatsServer, user: &'static str) -> (As, Resources) {
        let this = As::connect(nats, user).await;
        let resources = ensure_all(&this.js, &NatsResourceSettings::default())
            .await
            .unwrap_or_else(|e| panic!("the {user}'s start-up: {e}"));
        (this, resources)
    }

    /// Waits (bounded) for the server's permission violation naming `subject`.
    async fn violation(&mut self, kind: &str, subject: &str) {
        let wanted = format!("Permissions Violation for {kind} to \"{subject}\"");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.errors.recv()).await {
                Ok(Some(e)) if e.contains(&wanted) => return,
                Ok(Some(e)) => seen.push(e),
                Ok(None) | Err(_) => panic!(
                    "{}: {kind} to {subject} was not refused (server errors seen: {seen:?})",
                    self.user
                ),
            }
        }
    }

    /// A plain publish to each of `subjects` is refused.
    async fn cannot_publish(&mut self, subjects: &[&str]) {
        for subject in subjects {
            self.client
                .publish(subject.to_string(), "forged".into())
                .await
                .unwrap();
            self.client.flush().await.unwrap();
            self.violation("Publish", subject).await;
        }
    }

    /// A subscription to each of `subjects` is refused.
    async fn cannot_subscribe(&mut self, subjects: &[&str]) {
        for subject in subjects {
            let _sub = self.client.subscribe(subject.to_string()).await.unwrap();
            self.client.flush().await.unwrap();
            self.violation("Subscription", subject).await;
        }
    }

    /// No stream may be changed, purged or deleted, and no message deleted, except by admin.
    async fn cannot_change_streams(&mut self) {
        self.cannot_publish(&[
            "$JS.API.STREAM.PURGE.CART_EVENTS",
            "$JS.API.STREAM.MSG.DELETE.CART_EVENTS",
            "$JS.API.STREAM.DELETE.CART_EVENTS",
            "$JS.API.STREAM.UPDATE.CART_EVENTS",
            "$JS.API.STREAM.PURGE.KV_CART_PLACEMENT",
            "$JS.API.STREAM.MSG.DELETE.DEAD_LETTERS",
            "$JS.API.STREAM.CREATE.SNOOP",
        ])
        .await;
    }

    /// What a service user must not do: publish to `publish`, subscribe to `subscribe`, or
    /// change any stream.
    async fn must_not(&mut self, publish: &[&str], subscribe: &[&str]) {
        self.cannot_publish(publish).await;
        self.cannot_subscribe(subscribe).await;
        self.cannot_change_streams().await;
    }
}

async fn server() -> Option<(NatsServer, jetstream::Context)> {
    let nats = NatsServer::start_with_accounts().await?;
    let js = nats.jetstream().await; // admin
    ensure_all(&js, &NatsResourceSettings::default())
        .await
        .expect("admin creates the resources");
    Some((nats, js))
}

/// Publishes `payload` to a stream's `subject` and waits for the stream's ack.
async fn acked(
    js: &jetstream::Context,
    subject: &str,
    payload: &'static str,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    js.publish(subject.to_owned(), payload.into()).await?.await
}

/// Creates the durable pull consumer `name` on `stream`, filtered to `filter`.
async fn durable(
    stream: &jetstream::stream::Stream,
    name: &str,
    filter: &str,
) -> jetstream::consumer::PullConsumer {
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.into()),
            filter_subject: filter.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creates its durable {name}: {e}"))
}

async fn messages(admin: &jetstream::Context, stream: &str) -> u64 {
    shared::test_support::stream_state(admin, stream)
        .await
        .messages
}

/// A key-value watch (an ordered consumer delivering to the user's inbox) shows the bucket's
/// current entry.
async fn watches(kv: &jetstream::kv::Store, nats: &NatsServer) {
    let mut watch = kv.watch_with_history(">").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(_)))),
        "watches {}: {first:?}; {:?}",
        kv.name,
        nats.permission_violations()
    );
}

async fn placement_has_an_entry(admin: &jetstream::Context) {
    let kv = admin.get_key_value("CART_PLACEMENT").await.unwrap();
    kv.put("shards.0", "{}".into()).await.unwrap();
}

const CART: &str = "cart.events.default.11111111-1111-4111-8111-111111111111";

#[tokio::test]
async fn the_aggregate_appends_cart_events_and_owns_placement_but_nothing_else() {
    let Some((nats, admin)) = server().await else {
        return;
    };
    // What it must do: start-up, append with an expected sequence, read the cart back through
    // direct gets and the leader, its buckets, the catalog.
    let (mut agg, resources) = As::start_up(&nats, "aggregate").await;
    let ack = agg
        .js
        .send_publish(
            CART,
            jetstream::message::PublishMessage::build()
                .payload("e1".into())
                .expected_last_subject_sequence(0),
        )
        .await
        .unwrap()
        .await
        .expect("appends a cart event");
    let read = read_subject_after(
        &agg.client,
        CART_EVENTS_STREAM,
        CART,
        0,
        &Default::default(),
    )
    .await
    .expect("batch direct get");
    assert_eq!(read.len(), 1);
    let last = resources
        .cart_events
        .get_last_raw_message_by_subject(CART)
        .await
        .expect("the leader's last sequence");
    assert_eq!(last.sequence, ack.sequence);
    resources
        .cart_placement
        .put("shards.0", "{}".into())
        .await
        .unwrap();
    resources
        .cart_nodes
        .put("nodes.n1", "{}".into())
        .await
        .unwrap();
    resources
        .cart_snapshots
        .put("snap.default.c", "{}".into())
        .await
        .unwrap();
    watches(&resources.cart_placement, &nats).await;
    assert!(resources.catalog.get("sku.x").await.unwrap().is_none());
    let _catalog_watch = resources.catalog.watch_all().await.unwrap();

    // What it must not: write the catalog or workflows, read others' replies, change streams.
    agg.must_not(
        &[
            "$KV.CATALOG.sku.TEST-SKU-123",
            "workflow.events.default.order.o1",
            "dlq.projection-main.default.c",
            "$KV.RUNNER_LEASE.checkout",
        ],
        &["_INBOX.>", "_INBOX_gateway.>"],
    )
    .await;
    assert_eq!(messages(&admin, CART_EVENTS_STREAM).await, 1);
}

#[tokio::test]
async fn the_projection_reads_cart_events_and_records_dead_letters_but_writes_no_cart_state() {
    let Some((nats, admin)) = server().await else {
        return;
    };
    acked(&admin, CART, "e1").await.unwrap();
    let (mut proj, resources) = As::start_up(&nats, "projection").await;
    // Its durable consumer: create, fetch, ack; a gap read by direct get; a dead letter.
    let consumer = durable(
        &resources.cart_events,
        "projection-main",
        subjects::CART_EVENTS_ALL,
    )
    .await;
    let msg = pull_one(&consumer).await;
    msg.ack().await.expect("acks");
    resources
        .cart_events
        .direct_get_next_for_subject(subjects::CART_EVENTS_ALL, Some(1))
        .await
        .expect("direct get of a gap");
    acked(&proj.js, "dlq.projection-main.default.c", "poison")
        .await
        .expect("records a dead letter");

    proj.must_not(
        &[
            CART,
            "$KV.CART_PLACEMENT.shards.0",
            "$KV.CART_SNAPSHOTS.snap.default.c",
            "workflow.commands.default.push.o1",
            "$JS.API.CONSUMER.DELETE.WORKFLOW_COMMANDS.runner-push",
        ],
        &["cart.events.>"],
    )
    .await;
    assert_eq!(messages(&admin, CART_EVENTS_STREAM).await, 1);
}

#[tokio::test]
async fn the_runner_records_workflows_and_reads_placement_but_appends_no_cart_event() {
    let Some((nats, admin)) = server().await else {
        return;
    };
    let (mut runner, resources) = As::start_up(&nats, "runner").await;
    for subject in [
        "workflow.commands.default.checkout.c1",
        "workflow.events.default.order.o1",
        "dlq.runner-checkout.default.c1",
    ] {
        acked(&runner.js, subject, "{}")
            .await
            .unwrap_or_else(|e| panic!("records {subject}: {e}"));
    }
    let push = durable(
        &resources.workflow_commands,
        subjects::RUNNER_PUSH_DURABLE,
        "workflow.commands.*.checkout.*",
    )
    .await;
    pull_one(&push).await.ack().await.unwrap();
    durable(
        &resources.cart_events,
        subjects::RUNNER_CHECKOUT_DURABLE,
        subjects::CART_EVENTS_ALL,
    )
    .await;
    // Its lease: the bucket, take, refresh, read, give back.
    let lease = shared::nats::ensure_kv(
        &runner.js,
        &shared::nats::policies::runner_lease(
            &NatsResourceSettings::default(),
            Duration::from_secs(10),
        ),
    )
    .await
    .expect("creates RUNNER_LEASE");
    let rev = lease
        .create(subjects::RUNNER_LEASE_KEY, "{}".into())
        .await
        .expect("takes the lease");
    let rev = lease
        .update(subjects::RUNNER_LEASE_KEY, "{}".into(), rev)
        .await
        .expect("refreshes it");
    assert!(
        lease
            .entry(subjects::RUNNER_LEASE_KEY)
            .await
            .unwrap()
            .is_some()
    );
    lease
        .delete_expect_revision(subjects::RUNNER_LEASE_KEY, Some(rev))
        .await
        .expect("gives it back");
    placement_has_an_entry(&admin).await;
    watches(&resources.cart_placement, &nats).await;
    assert!(
        resources
            .cart_nodes
            .get("nodes.n1")
            .await
            .unwrap()
            .is_none()
    );

    runner
        .must_not(
            &[
                CART,
                "$KV.CART_PLACEMENT.shards.0",
                "$KV.CART_NODES.nodes.n1",
                "$KV.CATALOG.sku.TEST-SKU-123",
                "$KV.RUNNER_LEASE.other",
            ],
            &[],
        )
        .await;
    assert_eq!(messages(&admin, CART_EVENTS_STREAM).await, 0);
}

#[tokio::test]
async fn the_gateway_records_provider_pushes_reads_placement_and_cart_histories_and_nothing_more() {
    let Some((nats, admin)) = server().await else {
        return;
    };
    acked(&admin, CART, "e1").await.unwrap();
    let mut gw = As::connect(&nats, "gateway").await;
    let placement = shared::nats::ensure_kv(
        &gw.js,
        &shared::nats::policies::cart_placement(&NatsResourceSettings::default()),
    )
    .await
    .expect("opens placement");
    placement_has_an_entry(&admin).await;
    watches(&placement, &nats).await;
    assert!(placement.get("shards.0").await.unwrap().is_some());
    acked(&gw.js, "workflow.commands.default.push.o1", "{}")
        .await
        .expect("records a push");
    // A cart's history: a page of batch direct gets on CART_EVENTS, and nothing more on it.
    let page = read_subject_page(
        &gw.client,
        CART_EVENTS_STREAM,
        CART,
        0,
        10,
        Duration::from_secs(5),
    )
    .await
    .expect("reads a cart's history");
    assert_eq!(page.events.len(), 1);

    gw.must_not(
        &[
            CART,
            "workflow.commands.default.checkout.c1",
            "workflow.events.default.order.o1",
            "$KV.CART_PLACEMENT.shards.0",
            "$KV.RUNNER_LEASE.checkout",
            "$JS.API.CONSUMER.CREATE.CART_EVENTS.snoop.cart.events.>",
            "$JS.API.CONSUMER.CREATE.CART_EVENTS",
            "$JS.API.STREAM.MSG.GET.CART_EVENTS",
            "$JS.API.DIRECT.GET.DEAD_LETTERS",
        ],
        &["cart.events.>", "workflow.>"],
    )
    .await;
    assert_eq!(messages(&admin, CART_EVENTS_STREAM).await, 1);
    assert_eq!(messages(&admin, "WORKFLOW_COMMANDS").await, 1);
}

#[tokio::test]
async fn the_seed_job_writes_the_catalog_only_and_admin_may_do_what_services_may_not() {
    let Some((nats, admin)) = server().await else {
        return;
    };
    let (mut seed, resources) = As::start_up(&nats, "seed").await;
    resources
        .catalog
        .put("sku.TEST-SKU-123", "{}".into())
        .await
        .expect("writes the catalog");
    seed.must_not(&[CART, "$KV.CART_PLACEMENT.shards.0"], &[])
        .await;

    // admin (operators, the nats CLI): deletes and purges what services cannot.
    acked(&admin, "dlq.projection-main.default.c", "x")
        .await
        .unwrap();
    let dead = admin.get_stream("DEAD_LETTERS").await.unwrap();
    assert!(
        dead.delete_message(1).await.unwrap(),
        "admin deletes a message"
    );
    let placement = admin.get_stream("KV_CART_PLACEMENT").await.unwrap();
    placement.purge().await.expect("admin purges");
}

#[tokio::test]
async fn the_system_user_gets_server_reports_and_nobody_connects_without_a_password() {
    let Some((nats, _admin)) = server().await else {
        return;
    };
    // What `nats server report jetstream` asks every server.
    let system = As::connect(&nats, "system").await;
    let reply = system
        .client
        .request("$SYS.REQ.SERVER.PING.JSZ", "{}".into())
        .await
        .expect("a server answers the system account");
    let report: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(report["data"]["streams"].as_u64().unwrap() >= 4, "{report}");

    // Services cannot ask the system account's questions.
    let mut agg = As::connect(&nats, "aggregate").await;
    agg.cannot_publish(&["$SYS.REQ.SERVER.PING.JSZ"]).await;

    // What `nats server report connections` asks: every account's connections, with users.
    let reply = system
        .client
        .request(
            "$SYS.REQ.SERVER.PING.CONNZ",
            r#"{"auth": true, "limit": 1024}"#.into(),
        )
        .await
        .expect("a server answers the connections report");
    let report: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let connections = report["data"]["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no connections in {report}"));
    let users: Vec<(&str, &str)> = connections
        .iter()
        .map(|c| {
            (
                c["account"].as_str().unwrap_or_default(),
                c["authorized_user"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for (account, user) in [("CART", "aggregate"), ("CART", "admin"), ("SYS", "system")] {
        assert!(
            users.contains(&(account, user)),
            "{user} in {account} not in the report: {users:?}"
        );
    }
    agg.cannot_publish(&["$SYS.REQ.SERVER.PING.CONNZ"]).await;

    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(Some(1))
        .connect(nats.url())
        .await;
    let err = anonymous.expect_err("no anonymous connection").to_string();
    assert!(err.contains("authorization"), "{err}");
    let wrong = connect(&shared::nats::NatsConfig {
        password: "pWrongPassword1".into(),
        ..nats.service_config("aggregate")
    })
    .await
    .expect_err("a wrong password is refused")
    .to_string();
    assert!(wrong.contains("authorization"), "{wrong}");
}
