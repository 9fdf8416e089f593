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
