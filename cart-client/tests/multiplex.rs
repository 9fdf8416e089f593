//! The `ExecuteStream` multiplexer against a scripted node (a real tonic server on loopback):
//! answers reach the call they belong to whatever their order, a stream that ends fails the
//! calls waiting on it and the next call opens a new one, a node that never answers costs a
//! call its deadline, not a hang, and a call that queued past its deadline is never sent.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Node, Script, meta, node, request, serve};
use shared::headers::CallMetadata;

#[tokio::test]
async fn answers_in_any_order_reach_the_call_they_belong_to() {
    const CALLS: u64 = 32;
    let (mux, streams) = node(Script::Reverse(CALLS as usize)).await;
    let calls = (0..CALLS).map(|i| {
        let mux = mux.clone();
        tokio::spawn(async move {
            let md = meta(&format!("tenant-{i}"));
            let resp = mux
                .execute(md, Some(Duration::from_secs(10)), request(i))
                .await
                .expect("answered");
            (i, resp)
        })
    });
    for call in futures::future::join_all(calls).await {
        let (i, resp) = call.unwrap();
        assert_eq!(resp.version, i, "call {i} got another call's answer");
        assert_eq!(
            resp.event_types,
            vec![format!("tenant-{i}")],
            "its metadata travelled"
        );
    }
    assert_eq!(
        streams.load(Ordering::SeqCst),
        1,
        "all calls shared one stream"
    );
    assert_eq!(mux.in_flight(), 0);
}

/// `n` calls at once on `mux` (30 s deadlines), their results in call order.
async fn calls_of(
    mux: &std::sync::Arc<cart_client::multiplex::Mux>,
    n: u64,
) -> Vec<Result<proto::cart::v1::ExecuteResponse, tonic::Status>> {
    let calls = (0..n).map(|i| {
        let mux = mux.clone();
        tokio::spawn(async move {
            mux.execute(meta("t"), Some(Duration::from_secs(30)), request(i))
                .await
        })
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("the call's task"))
        .collect()
}

#[tokio::test]
async fn a_stream_that_ends_fails_its_waiting_calls_and_the_next_call_opens_another() {
    const CALLS: usize = 4;
    let (mux, streams) = node(Script::DropFirst(CALLS)).await;
    for r in calls_of(&mux, CALLS as u64).await {
        let status = r.expect_err("the node ended the stream unanswered");
        // A node that ends its side has answered what it decided. The routing client resends
        // on this code (to another node when there is one).
        let err = shared::ApiError::from_upstream("aggregate node", &status);
        assert_eq!(err.code, shared::ErrorCode::Unavailable, "{status:?}");
    }
    let resp = mux
        .execute(meta("t"), Some(Duration::from_secs(10)), request(99))
        .await
        .expect("a new stream answers");
    assert_eq!(resp.version, 99);
    assert_eq!(streams.load(Ordering::SeqCst), 2);
    assert_eq!(mux.in_flight(), 0);
}

/// A node that read calls and then broke (the stream ends with the transport's status, not an
/// answer of the node's) may have decided them: their outcome is unknown, not "unreachable".
#[tokio::test]
async fn calls_read_by_a_node_whose_stream_broke_have_an_unknown_outcome() {
    const CALLS: usize = 3;
    let (mux, _) = node(Script::BreakAfter(CALLS)).await;
    for r in calls_of(&mux, CALLS as u64).await {
        let status = r.expect_err("the stream broke");
        let err = shared::ApiError::from_upstream("aggregate node", &status);
        assert_eq!(err.code, shared::ErrorCode::Timeout, "{status:?}");
        assert!(err.message.contains("may have been applied"), "{err:?}");
    }
}

#[tokio::test]
async fn a_node_that_never_answers_costs_a_call_its_deadline() {
    let (mux, _) = node(Script::Silent).await;
    let started = std::time::Instant::now();
    let status = mux
        .execute(meta("t"), Some(Duration::from_millis(50)), request(1))
        .await
        .expect_err("no answer");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up after {:?}",
        started.elapsed()
    );
    assert_eq!(mux.in_flight(), 0, "the call no longer waits");
    let err = shared::ApiError::from_upstream("aggregate node", &status);
    assert_eq!(err.code, shared::ErrorCode::Timeout);
}

#[tokio::test]
async fn a_call_that_queued_past_its_deadline_is_never_sent() {
    // Calls far larger than HTTP/2's windows (1 MiB by default): while the node reads
    // nothing, the later ones wait in the multiplexer's queue.
    const FILLERS: u64 = 64;
    const PROBE: u64 = 1_000;
    const MARKER: u64 = 2_000;
    let node = Node::new(Script::Stalled);
    let (release, seen) = (node.release.clone(), node.seen.clone());
    let mux = serve(node).await;
    let pad = CallMetadata::from([("pad".to_owned(), "x".repeat(64 * 1024))]);
    let fillers: Vec<_> = (0..FILLERS)
        .map(|i| {
            let (mux, pad) = (mux.clone(), pad.clone());
            tokio::spawn(async move {
                mux.execute(pad, Some(Duration::from_secs(30)), request(i))
                    .await
            })
        })
        .collect();
    // Each filler is queued in the same step that registers it.
    shared::test_support::wait_until(
        || async { mux.in_flight() == FILLERS as usize },
        Duration::from_secs(10),
    )
    .await
    .expect("the fillers are queued");
    let status = mux
        .execute(meta("t"), Some(Duration::from_millis(100)), request(PROBE))
        .await
        .expect_err("the node read nothing while the probe's deadline passed");
    // Never sent, so never decided: not an unknown outcome.
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("not sent"), "{status:?}");
    release.notify_one();
    for f in futures::future::join_all(fillers).await {
        f.unwrap()
            .expect("a filler is answered once the node reads");
    }
    // Sent after the probe on the same stream: once it is answered, the node has read
    // everything the probe could have been sent with.
    let marker = mux
        .execute(meta("t"), Some(Duration::from_secs(30)), request(MARKER))
        .await
        .expect("answered");
    assert_eq!(marker.version, MARKER);
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|(v, _)| *v == PROBE),
        "the node was sent a call whose caller had already been told it timed out"
    );
    // The last filler waited in the queue for more than a second: it left with what was
    // left of its 30 s, which is the deadline the node enforces.
    let (_, last_timeout) = seen.iter().find(|(v, _)| *v == FILLERS - 1).unwrap();
    assert!(
        *last_timeout <= 29_000,
        "the last filler left with {last_timeout} ms of a 30 s deadline it had spent over 1 s of"
    );
}

/// The node reads nothing and the multiplexer's queue is full: a caller waiting for room is
/// answered (unavailable: not sent, so another node may take it) when its deadline passes,
/// instead of waiting until the queue drains.
#[tokio::test]
async fn a_call_that_finds_the_queue_full_until_its_deadline_is_not_sent() {
    let node = Node::new(Script::Stalled);
    let release = node.release.clone();
    let mux = serve(node).await;
    // Past HTTP/2's windows (as above), then as many as the queue holds.
    let pad = CallMetadata::from([("pad".to_owned(), "x".repeat(64 * 1024))]);
    let mut held = Vec::new();
    for i in 0..64 + 1024 {
        let (mux, md) = (mux.clone(), if i < 64 { pad.clone() } else { meta("t") });
        held.push(tokio::spawn(async move {
            mux.execute(md, Some(Duration::from_secs(60)), request(i))
                .await
        }));
    }
    shared::test_support::wait_until(
        || async { mux.in_flight() == 64 + 1024 },
        Duration::from_secs(10),
    )
    .await
    .expect("the calls are registered");
    let started = std::time::Instant::now();
    let late = tokio::time::timeout(
        Duration::from_secs(20),
        mux.execute(meta("t"), Some(Duration::from_millis(200)), request(9_999)),
    )
    .await
    .expect("answered at its deadline, not when the queue drains")
    .expect_err("never sent");
    assert_eq!(late.code(), tonic::Code::Unavailable, "{late:?}");
    assert!(late.message().contains("not sent"), "{late:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    release.notify_one();
    for h in held {
        h.await.unwrap().expect("answered once the node reads");
    }
}
