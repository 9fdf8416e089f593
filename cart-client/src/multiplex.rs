//! `CartService.ExecuteStream`, the caller's side: `Execute` calls to one node share one
//! long-lived stream per connection, each matched to its answer by a call id.
//!
//! The stream is opened on first use and again after it ends. When it ends (the node stopped,
//! the connection broke) every call waiting on it fails as `unavailable`, and the routing
//! client resends it elsewhere: commands carry ids, so a call that was decided before its
//! answer was lost comes back as the original outcome, never applied twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_client::CartServiceClient;
use shared::headers::CallMetadata;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

/// Calls queued for one stream before a caller waits to send.
const QUEUE: usize = 1024;
/// How long past its deadline a call waits for the node's own timeout answer.
const GRACE: Duration = Duration::from_secs(1);

type Answer = oneshot::Sender<Result<pb::ExecuteResponse, Status>>;

/// One connection to a node: its unary calls ([`Mux::unary`]) and `Execute` calls, multiplexed
/// on its stream ([`Mux::execute`]).
pub struct Mux {
    client: CartServiceClient<Channel>,
    current: Mutex<Option<Stream>>,
    next_id: AtomicU64,
}

/// One open stream: where calls are sent, and who waits for which answer.
#[derive(Clone)]
struct Stream {
    calls: mpsc::Sender<pb::ExecuteCall>,
    waiting: Arc<Mutex<Waiting>>,
}

#[derive(Default)]
struct Waiting {
    answers: HashMap<u64, Answer>,
    /// The stream ended: nothing more is answered on it.
    closed: bool,
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    // Nothing panics while holding it; a poisoned lock still holds consistent data.
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mux {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: CartServiceClient::new(channel),
            current: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// One `Execute` with the metadata (see [`RequestMeta::call_metadata`](crate::client::RequestMeta))
    /// and deadline a unary call would carry; the result is what the unary call would return.
    pub async fn execute(
        &self,
        metadata: CallMetadata,
        timeout: Option<Duration>,
        request: pb::ExecuteRequest,
    ) -> Result<pb::ExecuteResponse, Status> {
        let stream = self.stream();
        let call_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut w = lock(&stream.waiting);
            if w.closed {
                return Err(Status::unavailable(
                    "the stream to the node has just closed",
                ));
            }
            w.answers.insert(call_id, answer);
        }
        // Whatever happens from here (sent, timed out, the caller gone), the entry goes.
        let _forget = Forget {
            waiting: &stream.waiting,
            call_id,
        };
        let call = pb::ExecuteCall {
            call_id,
            request: Some(request),
            metadata,
            timeout_ms: timeout.map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        };
        if stream.calls.send(call).await.is_err() {
            return Err(Status::unavailable("the stream to the node closed"));
        }
        let answer = match timeout {
            None => answered.await,
            Some(t) => tokio::time::timeout(t + GRACE, answered)
                .await
                .map_err(|_| Status::deadline_exceeded("the node did not answer in time"))?,
        };
        answer.unwrap_or_else(|_| {
            Err(Status::unavailable(
                "the stream to the node closed before the call was answered",
            ))
        })
    }

    /// A client for the unary calls on the same connection.
    pub fn unary(&self) -> CartServiceClient<Channel> {
        self.client.clone()
    }

    /// Calls waiting for their answer on the current stream.
    pub fn in_flight(&self) -> usize {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .map_or(0, |s| lock(&s.waiting).answers.len())
    }

    /// The open stream, or a new one when there is none (or it ended).
    fn stream(&self) -> Stream {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = current.as_ref()
            && !lock(&s.waiting).closed
        {
            return s.clone();
        }
        let (calls, outbound) = mpsc::channel(QUEUE);
        let stream = Stream {
            calls,
            waiting: Arc::default(),
        };
        // The task holds no sender: when this mux goes, the outbound side ends, the node
        // answers what it holds and ends its side, and the task ends.
        tokio::spawn(drive(self.client.clone(), outbound, stream.waiting.clone()));
        *current = Some(stream.clone());
        stream
    }
}

/// Open the stream and hand each answer to its caller until the stream ends; then fail
/// every call still waiting.
async fn drive(
    mut client: CartServiceClient<Channel>,
    outbound: mpsc::Receiver<pb::ExecuteCall>,
    waiting: Arc<Mutex<Waiting>>,
) {
    let ended = match client.execute_stream(ReceiverStream::new(outbound)).await {
        Err(status) => status,
        Ok(resp) => {
            let mut results = resp.into_inner();
            loop {
                match results.message().await {
                    Ok(Some(result)) => {
                        let answer = lock(&waiting).answers.remove(&result.call_id);
                        if let Some(answer) = answer {
                            let _ = answer.send(proto::multiplex::outcome(result));
                        }
                    }
                    Ok(None) => break Status::unavailable("the node ended the stream"),
                    Err(status) => break status,
                }
            }
        }
    };
    let answers = {
        let mut w = lock(&waiting);
        w.closed = true;
        std::mem::take(&mut w.answers)
    };
    if !answers.is_empty() {
        tracing::debug!(calls = answers.len(), status = %ended, "execute stream ended with calls unanswered");
    }
    for (_, answer) in answers {
        let _ = answer.send(Err(ended.clone()));
    }
}

/// Removes a call's entry when its caller stops waiting.
struct Forget<'a> {
    waiting: &'a Mutex<Waiting>,
    call_id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.waiting).answers.remove(&self.call_id);
    }
}
