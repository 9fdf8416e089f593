//! Waiting for a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `condition` until it is true or `timeout` passes (tests must wait for conditions,
/// never sleep a fixed time). The error says how long it waited.
pub async fn wait_until<F, Fut>(mut condition: F, timeout: Duration) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("condition not met within {timeout:?}"));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The current state of durable consumer `durable` on `stream`.
pub async fn consumer_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
) -> async_nats::jetstream::consumer::Info {
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(durable, stream)
        .await
        .unwrap_or_else(|e| panic!("consumer {stream}/{durable}: {e}"));
    consumer
        .info()
        .await
        .unwrap_or_else(|e| panic!("info of {stream}/{durable}: {e}"))
        .clone()
}

/// Waits until durable `durable` on `stream` has nothing left to deliver or to be acked.
pub async fn wait_consumer_settled(
    js: &async_nats::jetstream::Context,
    stream: &str,
    durable: &str,
    timeout: Duration,
) -> Result<(), String> {
    wait_until(
        || async {
            let info = consumer_info(js, stream, durable).await;
            info.num_pending == 0 && info.num_ack_pending == 0
        },
        timeout,
    )
    .await
    .map_err(|e| format!("{stream}/{durable} did not settle: {e}"))
}

/// The next message of a pull consumer, waiting up to 10 s for it. `fetch` asks only for what
/// is pending at that instant (`no_wait`), and a message the stream has acknowledged may not
/// have reached the consumer yet: a test that fetched right after publishing failed now and
/// then.
pub async fn pull_one(
    consumer: &async_nats::jetstream::consumer::PullConsumer,
) -> async_nats::jetstream::Message {
    use futures::StreamExt;
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .expect("a pull request");
    batch
        .next()
        .await
        .expect("a message within 10 s")
        .expect("a message, not an error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_succeeds_and_times_out() {
        let start = Instant::now();
        let mut n = 0;
        wait_until(
            || {
                n += 1;
                let done = n >= 3;
                async move { done }
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(n, 3);
        let err = wait_until(|| async { false }, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.contains("50ms"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
