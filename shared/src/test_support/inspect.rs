//! Reading what the services wrote, for assertions: stream states, the messages of a subject
//! or a cart, captured log lines, and text that must name several things.

use std::io::Write;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;

use crate::nats::StoredEvent;
use crate::{CartId, TenantId};

/// The state of `stream` (message count, first and last sequence).
pub async fn stream_state(js: &jetstream::Context, stream: &str) -> jetstream::stream::State {
    let mut handle = js.get_stream(stream).await.unwrap();
    handle.info().await.unwrap().state.clone()
}

/// The subjects of `stream` matching `filter`, each with its message count, sorted.
pub async fn subject_counts(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Vec<(String, usize)> {
    use futures::TryStreamExt as _;
    let handle = js.get_stream(stream).await.unwrap();
    let mut counts: Vec<(String, usize)> = handle
        .info_with_subjects(filter)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("subjects {filter} of {stream}: {e}"));
    counts.sort();
    counts
}

/// Every message of `subject` in `stream`, read straight from the stream.
pub async fn subject_messages(
    client: &async_nats::Client,
    stream: &str,
    subject: &str,
) -> Vec<StoredEvent> {
    crate::nats::read_subject_after(client, stream, subject, 0, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("read {subject} from {stream}: {e}"))
}

/// Every event message of `cart` of `tenant`.
pub async fn cart_messages(
    client: &async_nats::Client,
    tenant: &TenantId,
    cart: &CartId,
) -> Vec<StoredEvent> {
    let subject = crate::subjects::cart_events(tenant, cart);
    subject_messages(client, crate::subjects::CART_EVENTS_STREAM, &subject).await
}

/// Asserts that `text` (named `what` in the failure) contains every one of `needles`.
pub fn assert_contains_all(text: &str, needles: &[&str], what: &str) {
    for needle in needles {
        assert!(
            text.contains(needle),
            "{needle} missing from {what}:\n{text}"
        );
    }
}

/// A writer that keeps what is written (log lines in a test); its clones share the buffer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
