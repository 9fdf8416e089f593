use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

fn no_responders() -> async_nats::Error {
    DirectGetError::NoResponders {
        stream: "KV_CART_NODES".into(),
    }
    .into()
}

#[tokio::test]
async fn the_first_read_waits_for_a_starting_stream_and_gives_up_on_anything_else() {
    // Nobody answers direct gets twice (a stream electing its leader), then the read works.
    let calls = AtomicU32::new(0);
    let got = while_starting(|| async {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err(no_responders()),
            _ => Ok(7u32),
        }
    })
    .await;
    assert_eq!(got.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // A request the server refuses is no start-up state: one try.
    let calls = AtomicU32::new(0);
    let got: Result<u32, _> = while_starting(|| async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(DirectGetError::InvalidRequest {
            stream: "KV_CART_NODES".into(),
            reason: "bad".into(),
        }
        .into())
    })
    .await;
    assert!(got.unwrap_err().to_string().contains("invalid request"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A request that waits on an unreachable server (here: one that never answers) does not hold
/// the watch's stop: a runner's term that ends while NATS is away waited for such requests one
/// after another (~25 s), and a test of it failed its 30 s bound under load.
#[tokio::test]
async fn a_stop_cuts_a_listing_that_waits_for_an_answer() {
    let Some(nats) = shared::test_support::NatsServer::start().await else {
        return;
    };
    let js = nats.jetstream().await;
    let kv = js
        .create_key_value(kv::Config {
            bucket: "WATCHED".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let listing = Arc::new(tokio::sync::Notify::new());
    let shutdown = CancellationToken::new();
    let watching = tokio::spawn({
        let (listing, shutdown) = (listing.clone(), shutdown.clone());
        async move {
            let refresh = move || {
                let listing = listing.clone();
                async move {
                    listing.notify_one();
                    std::future::pending::<Result<(), async_nats::Error>>().await
                }
            };
            watch_bucket(kv, Duration::from_millis(20), shutdown, |_| {}, refresh).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(30), listing.notified())
        .await
        .expect("the watch lists the bucket every resync");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), watching)
        .await
        .expect("the stop ends the watch while its listing waits")
        .unwrap();
}
