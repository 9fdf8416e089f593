//! `CartService.ExecuteStream`, the caller's side: `Execute` calls to one node share one
//! long-lived stream per connection, each matched to its answer by a call id.
//!
//! The stream is opened on first use and again after it ends. When it ends (the node stopped,
//! the connection broke) every call waiting on it fails, and the routing client resends it
//! elsewhere: commands carry ids, so a call that was decided before its answer was lost comes
//! back as the original outcome, never applied twice. A call that was never sent, or that the
//! node answered or never read (it ended its side), fails as `unavailable`; one sent on a
//! stream that broke under the node may have been decided, and fails as `timeout` ("may have
//! been applied"), so that a client that hears it last does not resend it as new.
//!
//! A call leaves for the node only while its caller still waits for it: one that queued here
//! past its deadline (the node reads no faster than it decides, and HTTP/2 flow control holds
//! the rest here) is answered `unavailable` without being sent; one sent carries what is left
//! of its deadline, not the whole of it. Calls already in the node's receive buffer when their
//! deadline passes still run there, with the budget they left with (gRPC's deadlines are
//! relative: the node cannot tell how long a call waited before it read it).

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
    answers: HashMap<u64, Pending>,
    /// The stream ended: nothing more is answered on it.
    closed: bool,
}

/// A call waiting for its answer.
struct Pending {
    answer: Answer,
    /// When its caller stops waiting (`None`: never).
    given_up: Option<Instant>,
    /// It left for the node ([`dispatch`]): if the stream ends unanswered, the node may have
    /// decided it.
    sent: bool,
}

impl Pending {
    fn new(answer: Answer, deadline: Option<Instant>) -> Self {
        Self {
            answer,
            given_up: deadline.map(|d| d + GRACE),
            sent: false,
        }
    }
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
            w.answers.insert(call_id, Pending::new(answer, deadline));
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
        // Room in the queue (the common case) costs no timer.
        let queued = match stream.calls.try_send(Queued { call, deadline }) {
            Err(mpsc::error::TrySendError::Full(q)) => match deadline {
                Some(at) => tokio::time::timeout_at(at.into(), stream.calls.send(q))
                    .await
                    .map_err(|_| {
                        // The node reads no faster than it decides; another node may have room.
                        Status::unavailable(
                            "the node's queue stayed full until the deadline (not sent)",
                        )
                    })?
                    .is_ok(),
                None => stream.calls.send(q).await.is_ok(),
            },
            sent => sent.is_ok(),
        };
        if !queued {
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
    // Whether the stream broke under the node (a transport error, not an answer of the node):
    // then calls it had may have been decided. A node that ends its side, or refuses the
    // stream with a code of its own, has answered every call it read.
    let (ended, broke) = match opened {
        Err(status) => {
            let broke = !shared::error::carries_code(&status);
            (status, broke)
        }
        Ok(resp) => {
            let mut results = resp.into_inner();
            loop {
                match expiring(results.message(), &mut sweep, &waiting).await {
                    Ok(Some(result)) => {
                        let pending = lock(&waiting).answers.remove(&result.call_id);
                        if let Some(p) = pending {
                            let _ = p.answer.send(proto::multiplex::outcome(result));
                        }
                    }
                    Ok(None) => break (Status::unavailable("the node ended the stream"), false),
                    Err(status) => {
                        let broke = !shared::error::carries_code(&status);
                        break (status, broke);
                    }
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
    for (_, p) in answers {
        let _ = p.answer.send(Err(unanswered(p.sent && broke, &ended)));
    }
}

/// What a call still waiting when its stream ended (`ended`) is answered. Unless it was sent
/// on a stream that broke under the node (`in_doubt`), the node never decided it: `ended`
/// (resent elsewhere as it is, or the node's refusal). One that was may have been decided by
/// a node that then died, so its outcome is unknown: `timeout`, which is resent too, with the
/// same command id, and which a client that gets it last must not take for "not applied".
fn unanswered(in_doubt: bool, ended: &Status) -> Status {
    if !in_doubt {
        return ended.clone();
    }
    shared::ApiError::outcome_unknown(format!(
        "the stream to the node ended before the call was answered ({})",
        ended.message()
    ))
    .to_status()
}

/// `queued` as it leaves for the node at `now`, with what is left of its deadline; `None`
/// when its caller no longer waits for it: gone (the entry was forgotten), or its deadline
/// passed while it queued (then it is answered `deadline_exceeded` here).
fn dispatch(queued: Queued, waiting: &Mutex<Waiting>, now: Instant) -> Option<pb::ExecuteCall> {
    let Queued { mut call, deadline } = queued;
    let mut w = lock(waiting);
    let pending = w.answers.get_mut(&call.call_id)?;
    if let Some(deadline) = deadline {
        match deadline
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
        {
            Some(left) => {
                // Rounded up: 0 would mean "no deadline".
                let ms = left.as_nanos().div_ceil(1_000_000);
                call.timeout_ms = u32::try_from(ms).unwrap_or(u32::MAX);
            }
            None => {
                let p = w.answers.remove(&call.call_id).expect("found above");
                let _ = p.answer.send(Err(not_sent()));
                return None;
            }
        }
    }
    pending.sent = true;
    Some(call)
}

/// A call whose deadline passed while it queued here: never sent, so never decided, and
/// another node may still take it in time.
fn not_sent() -> Status {
    Status::unavailable("the call's deadline passed before the node could take it (not sent)")
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

/// Answers the calls whose caller has waited past its deadline and the grace for the node's
/// own answer: `deadline_exceeded` (outcome unknown) for one the node has, `unavailable` for
/// one still queued here (never sent, so never decided).
fn expire(waiting: &Mutex<Waiting>, now: Instant) {
    let mut w = lock(waiting);
    let late = w
        .answers
        .extract_if(|_, p| p.given_up.is_some_and(|at| at <= now));
    for (_, p) in late {
        let status = if p.sent {
            Status::deadline_exceeded("the node did not answer in time")
        } else {
            not_sent()
        };
        let _ = p.answer.send(Err(status));
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
        w.answers.insert(call_id, Pending::new(answer, deadline));
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
        for left in [Duration::from_micros(300), Duration::from_nanos(1)] {
            let (q, w, _answered) = queued(2, Some(now + left));
            assert_eq!(
                dispatch(q, &Mutex::new(w), now).unwrap().timeout_ms,
                1,
                "{left:?}"
            );
        }
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
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "not sent: {status:?}"
        );
    }

    #[test]
    fn a_call_sent_on_a_stream_that_ended_unanswered_has_an_unknown_outcome() {
        let ended = Status::unavailable("the node ended the stream");
        let sent = shared::ApiError::from_upstream("aggregate node", &unanswered(true, &ended));
        assert_eq!(sent.code, shared::ErrorCode::Timeout, "{sent:?}");
        assert!(sent.message.contains("may have been applied"), "{sent:?}");
        let unsent = shared::ApiError::from_upstream("aggregate node", &unanswered(false, &ended));
        assert_eq!(unsent.code, shared::ErrorCode::Unavailable, "{unsent:?}");
    }

    #[test]
    fn a_call_whose_caller_has_gone_is_not_sent() {
        let now = Instant::now();
        let (q, mut w, _answered) = queued(1, Some(now + Duration::from_secs(10)));
        w.answers.clear();
        assert!(dispatch(q, &Mutex::new(w), now).is_none());
    }
}
