//! `CartService.ExecuteStream`, the caller's side: `Execute` calls to one node share one
//! long-lived stream per connection, each matched to its answer by a call id.
//!
//! The stream is opened on first use and again after it ends. When it ends (the node stopped,
//! the connection broke) every call waiting on it fails as `unavailable`, and the routing
//! client resends it elsewhere: commands carry ids, so a call that was decided before its
//! answer was lost comes back as the original outcome, never applied twice.
//!
//! A call leaves for the node only while its caller still waits for it: one that queued past
//! its deadline (the node reads no faster than it decides, and HTTP/2 flow control holds the
//! rest here) is answered `deadline_exceeded` without being sent, so the node never decides a
//! command whose client was already told it timed out; one sent carries what is left of its
//! deadline, not the whole of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proto::cart::v1 as pb;
use proto::cart::v1::cart_service_client::CartServiceClient;
use shared::headers::CallMetadata;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

/// Calls queued for one stream before a caller waits to send.
const QUEUE: usize = 1024;
/// How long past its deadline a call waits for the node's own timeout answer.
const GRACE: Duration = Duration::from_secs(1);
/// How often a stream's task fails the calls whose deadline (with [`GRACE`]) has passed: one
/// timer per stream instead of one per call (a timer per call was ~1 % of a command's CPU).
const SWEEP: Duration = Duration::from_millis(100);

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
    calls: mpsc::Sender<Queued>,
    waiting: Arc<Mutex<Waiting>>,
}

/// A call waiting to be sent, and when its caller's deadline passes (`None`: never).
struct Queued {
    call: pb::ExecuteCall,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct Waiting {
    /// Each call's answer, and when its caller stops waiting (`None`: never).
    answers: HashMap<u64, (Answer, Option<Instant>)>,
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
        let deadline = timeout.map(|t| Instant::now() + t);
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
            w.answers
                .insert(call_id, (answer, deadline.map(|d| d + GRACE)));
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
            // Set as the call leaves ([`dispatch`]).
            timeout_ms: 0,
        };
        if stream.calls.send(Queued { call, deadline }).await.is_err() {
            return Err(Status::unavailable("the stream to the node closed"));
        }
        // Past the deadline the stream's task answers `deadline_exceeded` ([`expire`]).
        answered.await.unwrap_or_else(|_| {
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
    outbound: mpsc::Receiver<Queued>,
    waiting: Arc<Mutex<Waiting>>,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Polled when HTTP/2 has room for more: the moment each call leaves.
    let leaving = {
        let waiting = waiting.clone();
        ReceiverStream::new(outbound).filter_map(move |q| dispatch(q, &waiting, Instant::now()))
    };
    let opened = expiring(client.execute_stream(leaving), &mut sweep, &waiting).await;
    let ended = match opened {
        Err(status) => status,
        Ok(resp) => {
            let mut results = resp.into_inner();
            loop {
                match expiring(results.message(), &mut sweep, &waiting).await {
                    Ok(Some(result)) => {
                        let answer = lock(&waiting).answers.remove(&result.call_id);
                        if let Some((answer, _)) = answer {
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
    for (_, (answer, _)) in answers {
        let _ = answer.send(Err(ended.clone()));
    }
}

/// `queued` as it leaves for the node at `now`, with what is left of its deadline; `None`
/// when its caller no longer waits for it: gone (the entry was forgotten), or its deadline
/// passed while it queued (then it is answered `deadline_exceeded` here).
fn dispatch(queued: Queued, waiting: &Mutex<Waiting>, now: Instant) -> Option<pb::ExecuteCall> {
    let Queued { mut call, deadline } = queued;
    let mut w = lock(waiting);
    if !w.answers.contains_key(&call.call_id) {
        return None;
    }
    let Some(deadline) = deadline else {
        return Some(call);
    };
    match deadline
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())
    {
        Some(left) => {
            // Rounded up: 0 would mean "no deadline".
            let ms = left.as_micros().div_ceil(1000);
            call.timeout_ms = u32::try_from(ms).unwrap_or(u32::MAX);
            Some(call)
        }
        None => {
            if let Some((answer, _)) = w.answers.remove(&call.call_id) {
                let _ = answer.send(Err(Status::deadline_exceeded(
                    "the call's deadline passed before the node could take it (not sent)",
                )));
            }
            None
        }
    }
}

/// `step`, while failing every call whose caller's deadline passes meanwhile.
async fn expiring<T>(
    step: impl Future<Output = T>,
    sweep: &mut tokio::time::Interval,
    waiting: &Mutex<Waiting>,
) -> T {
    let mut step = std::pin::pin!(step);
    loop {
        tokio::select! {
            done = &mut step => return done,
            now = sweep.tick() => expire(waiting, now.into_std()),
        }
    }
}

/// Answers `deadline_exceeded` to the calls whose caller has waited past its deadline (and
/// the grace for the node's own answer): the node has not answered them in time.
fn expire(waiting: &Mutex<Waiting>, now: Instant) {
    let mut w = lock(waiting);
    let late = w
        .answers
        .extract_if(|_, (_, given_up)| given_up.is_some_and(|at| at <= now));
    for (_, (answer, _)) in late {
        let _ = answer.send(Err(Status::deadline_exceeded(
            "the node did not answer in time",
        )));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(
        call_id: u64,
        deadline: Option<Instant>,
    ) -> (
        Queued,
        Waiting,
        oneshot::Receiver<Result<pb::ExecuteResponse, Status>>,
    ) {
        let (answer, answered) = oneshot::channel();
        let mut w = Waiting::default();
        w.answers
            .insert(call_id, (answer, deadline.map(|d| d + GRACE)));
        let call = pb::ExecuteCall {
            call_id,
            ..Default::default()
        };
        (Queued { call, deadline }, w, answered)
    }

    #[test]
    fn a_call_leaves_with_what_is_left_of_its_deadline() {
        let now = Instant::now();
        let (q, w, _answered) = queued(1, Some(now + Duration::from_millis(1500)));
        let call = dispatch(q, &Mutex::new(w), now + Duration::from_millis(400)).unwrap();
        assert_eq!(call.timeout_ms, 1100);
        // Less than a millisecond left is still a deadline (0 would be none).
        let (q, w, _answered) = queued(2, Some(now + Duration::from_micros(300)));
        assert_eq!(dispatch(q, &Mutex::new(w), now).unwrap().timeout_ms, 1);
        let (q, w, _answered) = queued(3, None);
        assert_eq!(dispatch(q, &Mutex::new(w), now).unwrap().timeout_ms, 0);
    }

    #[test]
    fn a_call_past_its_deadline_is_answered_here_and_not_sent() {
        let now = Instant::now();
        let (q, w, mut answered) = queued(1, Some(now));
        let w = Mutex::new(w);
        assert!(dispatch(q, &w, now + Duration::from_millis(1)).is_none());
        assert!(lock(&w).answers.is_empty(), "the caller no longer waits");
        let status = answered.try_recv().unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }

    #[test]
    fn a_call_whose_caller_has_gone_is_not_sent() {
        let now = Instant::now();
        let (q, mut w, _answered) = queued(1, Some(now + Duration::from_secs(10)));
        w.answers.clear();
        assert!(dispatch(q, &Mutex::new(w), now).is_none());
    }
}
