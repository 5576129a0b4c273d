//! The gateway's core, without HTTP: each user request goes to every member of the council,
//! the answer is chosen by the service's response method, every response is checked against
//! its member's signature and acknowledged with a cumulative receipt, and what the council did
//! wrong (answers that differ, members late or silent) is gathered for the ledger.
//!
//! - **Optimistic**: the first response is the answer; the others check it after.
//! - **Weighted**: the answer waits for `quorum` members and is the response most of them gave
//!   (the earliest among equals); the rest check it after.
//! - **Unanimous**: the answer waits for every member; responses that differ are no answer
//!   (the user gets an error) and are evidence.
//!
//! A request is open until every member answered or its time ran out: then responses that
//! differ become evidence for `DisputeResponses` ([`Dispatcher::take_evidence`]), and members
//! that did not answer in time are named for `DropMember` ([`Dispatcher::take_late`]).
//!
//! Answers are told apart by the service's equivalence. Under `exact_hash` by the hashes their
//! members signed, and hashes that differ are the evidence. Under a tolerance (or images
//! by their pixels), by [`gridwork_verify::answers_equivalent`]; when some two answers to a
//! request are not equivalent, every member that answered is sent the answers to judge
//! ([`Work::Judge`]) and signs which it finds equivalent to its own; the judgements are the
//! evidence for `JudgeResponses` ([`Evidence::Judged`]). Honest members' bytes differ there,
//! so a streamed answer follows the member whose stream opened it alone: if that member
//! breaks off, the user's answer is broken off.
//!
//! A member may stream its response ([`Dispatcher::open_stream`], then its pieces, then its
//! signature over the whole): token streams (server-sent events) reach the user as the model
//! writes them. Under the optimistic method, once a member opens a stream before any answer
//! is in, the user's answer is piped piece by piece ([`Reply::Stream`]) from whichever member
//! is furthest ahead while agreeing with every byte sent (answers are deterministic, so an
//! honest council's agree): a member that opens first and then slows down holds nobody back,
//! one that dies mid-stream is left behind, and a whole answer that agrees ends it. When no
//! member can continue it (each broke off or answers otherwise) it is broken off for the user,
//! never ended as if whole. Under the weighted and unanimous methods a stream is an answer
//! once it ends, signed, like any other: the user gets it whole.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gridwork_types::{
    request_hash, response_hash, Address, Amount, Equivalence, Hash, JudgeTask, JudgedAnswer,
    Keypair, ResponseMethod, ServiceSpec, SignedJudgement, SignedReceipt, SignedResponse,
    StreamPrice, StreamReceipt, TxKind,
};
use tokio::sync::{oneshot, Notify};

/// A request as it goes to each member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// The gateway's sequence number (unique per request of this gateway).
    pub seq: u64,
    /// Its hash, which members sign ([`request_hash`]).
    pub request: Hash,
    /// The HTTP method.
    pub method: String,
    /// The path and query, from `/` (what followed `/s/<service>`).
    pub path: String,
    /// The content type of the body (empty for none).
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// A member's (or the gateway's) answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status the server gave.
    pub status: u16,
    /// Its content type (empty for none).
    pub content_type: String,
    /// The body.
    pub body: Bytes,
}

/// What a member fetches: a request to answer, or answers to judge.
#[derive(Debug, Clone)]
pub enum Work {
    /// A user's request.
    Request(Arc<Relay>),
    /// Answers to one request that are not all equivalent, the member's own among them: a
    /// [`JudgeTask`], encoded once for every member asked.
    Judge(Bytes),
}

/// What the council did wrong, for the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Signed responses to one request whose hashes differ (`exact_hash`).
    Hashes(Vec<SignedResponse>),
    /// Signed responses to one request and the members' judgements of them, some judged not
    /// equivalent.
    Judged {
        /// The responses.
        responses: Vec<SignedResponse>,
        /// The judgements.
        judgements: Vec<SignedJudgement>,
    },
}

impl Evidence {
    /// The transaction that sends it for `service`.
    pub fn into_tx(self, service: Hash) -> TxKind {
        match self {
            Evidence::Hashes(responses) => TxKind::DisputeResponses { service, responses },
            Evidence::Judged {
                responses,
                judgements,
            } => TxKind::JudgeResponses {
                service,
                responses,
                judgements,
            },
        }
    }
}

/// Answers sent to the members to judge, with the judgements so far.
struct Case {
    /// The members' signed responses, in the task's order.
    responses: Vec<SignedResponse>,
    /// The members asked to judge (those that answered).
    asked: Vec<Address>,
    judgements: Vec<SignedJudgement>,
    at: Instant,
    bytes: usize,
    /// The members outside the largest agreeing group it was opened for: whose cases it
    /// counts against.
    suspects: Vec<Address>,
}

impl Case {
    /// Whether every member still asked judged.
    fn complete(&self) -> bool {
        self.asked
            .iter()
            .all(|a| self.judgements.iter().any(|j| j.judge.address() == *a))
    }
}

/// A member's answer being compared outside the lock: pending until cleared, or dropped (a
/// comparison that panicked).
struct Pending<'a> {
    dispatcher: &'a Dispatcher,
    seq: u64,
    member: Address,
}

impl Pending<'_> {
    fn clear(self, inner: &mut Inner) {
        if let Some(open) = inner.open.get_mut(&self.seq) {
            open.pending.retain(|m| *m != self.member);
        }
        std::mem::forget(self);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(open) = self.dispatcher.lock().open.get_mut(&self.seq) {
            open.pending.retain(|m| *m != self.member);
        }
    }
}

/// The most cases the gateway holds for judging at once, and the most bytes of answers in
/// them: beyond, answers that differ go unjudged (and are logged).
pub const MAX_CASES: usize = 64;
/// See [`MAX_CASES`].
pub const MAX_CASE_BYTES: usize = 256 << 20;

/// What a user gets for a request.
#[derive(Debug)]
pub enum Reply {
    /// An answer, whole.
    Whole(Answer),
    /// An answer streamed as its member sends it (the optimistic method).
    Stream(Streamed),
}

/// An answer streamed to the user: its status and content type at once, its body as it comes
/// ([`PipeReader::next`]).
#[derive(Debug)]
pub struct Streamed {
    /// The HTTP status the server gave.
    pub status: u16,
    /// Its content type (empty for none).
    pub content_type: String,
    /// The body.
    pub body: PipeReader,
}

/// What the user's streamed body holds between the gateway and the user: the bytes not yet
/// taken (at most a stream's [`MAX_STREAM_BYTES`], however the members cut them), and how
/// it ended.
#[derive(Debug, Default)]
struct Flow {
    unread: Vec<u8>,
    end: Option<Result<(), Refusal>>,
    over: bool,
}

type Shared = Arc<(Mutex<Flow>, Notify)>;

/// The user's side of a streamed answer.
#[derive(Debug)]
pub struct PipeReader {
    shared: Shared,
}

impl PipeReader {
    /// The bytes that came since the last call, waiting for some: `None` once the answer is
    /// whole; `Some(Err(..))` once when it broke off (the user must not take what came as a
    /// whole answer).
    pub async fn next(&mut self) -> Option<Result<Bytes, Refusal>> {
        loop {
            let notified = self.shared.1.notified();
            {
                let mut flow = self.shared.0.lock().unwrap_or_else(|p| p.into_inner());
                if !flow.unread.is_empty() {
                    return Some(Ok(Bytes::from(std::mem::take(&mut flow.unread))));
                }
                if flow.over {
                    return None;
                }
                if let Some(end) = flow.end.take() {
                    flow.over = true;
                    return end.err().map(Err);
                }
            }
            notified.await;
        }
    }
}

/// The largest response a member may stream for one request.
pub const MAX_STREAM_BYTES: usize = 16 << 20;

/// Why the gateway did not answer a request, or refused a member's response. Each maps to an
/// HTTP status and names what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The service is not up (too few members, or its escrow low).
    #[error("the service is not serving: {0}")]
    Down(String),
    /// The council did not answer within the time a response may take.
    #[error("the council did not answer within {0:?}")]
    Timeout(Duration),
    /// Under the unanimous method, the council's responses differed.
    #[error("the council's responses differ; the ledger will settle which was right")]
    Disagreed,
    /// Too many requests wait for the council.
    #[error("the gateway holds {0} requests for the council already; retry shortly")]
    Busy(usize),
    /// A response from somebody not asked, for a request not open, or that does not check out.
    #[error("response refused: {0}")]
    BadResponse(String),
    /// A streamed answer broke off: its member stopped before its signed end and no other
    /// member's answer begins with what was sent.
    #[error("the streamed answer broke off: {0}")]
    StreamBroken(String),
}

/// The council as the ledger holds it: each member with its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Council {
    /// Members, in seat order, with their prices.
    pub members: Vec<(Address, StreamPrice)>,
    /// Whether the ledger says the service is up, and if not why.
    pub up: Result<(), String>,
}

/// What one member was acknowledged so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    responses: u64,
    units: u64,
    owed: u128,
}

/// A request not yet closed.
struct Open {
    relay: Arc<Relay>,
    /// The council it went to.
    asked: Vec<Address>,
    /// Responses so far, in arrival order, each with the member's signature.
    got: Vec<(Address, Answer, SignedResponse)>,
    /// Whether each response agrees with each before it (`agrees[k][j]`, `j < k`), under the
    /// service's equivalence: each pair compared once (a review found a member's long answers
    /// compared again at every arrival, holding the gateway).
    agrees: Vec<Vec<bool>>,
    /// The user waiting for the answer, until it is sent.
    waiting: Option<oneshot::Sender<Result<Reply, Refusal>>>,
    /// When it was relayed.
    at: Instant,
    /// Members' streams not yet ended.
    streams: Vec<Partial>,
    /// Members whose streams broke off: they answer this request no more.
    gave_up: Vec<Address>,
    /// Whether the user can take a streamed answer (HTTP/1.1 or later: a body cut off is
    /// seen as cut off, where HTTP/1.0 ends a body of no stated length by closing, as if
    /// whole).
    streamable: bool,
    /// The answer being streamed to the user (optimistic method).
    pipe: Option<Pipe>,
    /// Members whose answers are in and being compared (outside the lock).
    pending: Vec<Address>,
}

/// A member's stream, not yet ended: its status, content type and body so far.
struct Partial {
    member: Address,
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// The answer streamed to the user, and what went.
struct Pipe {
    status: u16,
    content_type: String,
    /// The bytes sent to the user so far.
    sent: Vec<u8>,
    /// Members whose answers were found not to begin with what was sent, or whose streams
    /// broke off.
    cannot: Vec<Address>,
    /// Of them, those whose answers differ from what was sent (not merely broke off).
    differ: Vec<Address>,
    /// How much of each member's answer was found to agree with what was sent.
    checked: Vec<(Address, usize)>,
    /// What the user reads.
    flow: Shared,
    /// Whether it ended (whole, or cut off with a reason). Dropped before, it is broken off
    /// for the user.
    ended: bool,
}

impl Pipe {
    fn new(status: u16, content_type: &str) -> (Pipe, PipeReader) {
        let flow: Shared = Arc::default();
        let pipe = Pipe {
            status,
            content_type: content_type.to_string(),
            sent: Vec::new(),
            cannot: Vec::new(),
            differ: Vec::new(),
            checked: Vec::new(),
            flow: flow.clone(),
            ended: false,
        };
        (pipe, PipeReader { shared: flow })
    }

    fn send(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.sent.extend_from_slice(bytes);
            let mut flow = self.flow.0.lock().unwrap_or_else(|p| p.into_inner());
            flow.unread.extend_from_slice(bytes);
            drop(flow);
            self.flow.1.notify_one();
        }
    }

    /// Ends the user's answer: whole, or cut off for `why`.
    fn end(&mut self, how: Result<(), Refusal>) {
        if !self.ended {
            self.ended = true;
            self.flow.0.lock().unwrap_or_else(|p| p.into_inner()).end = Some(how);
            self.flow.1.notify_one();
        }
    }

    /// Notes that `member` cannot continue it.
    fn cannot(&mut self, member: Address) {
        if !self.cannot.contains(&member) {
            self.cannot.push(member);
        }
    }

    /// Notes that `member`'s answer differs from what was sent.
    fn differs(&mut self, member: Address) {
        self.cannot(member);
        if !self.differ.contains(&member) {
            self.differ.push(member);
        }
    }

    /// Whether `member`'s answer of this status, content type and body (so far) agrees with
    /// what was sent, as far as both go. Each byte is compared once: what agreed already is
    /// remembered, and both only grow.
    fn agrees(&mut self, member: Address, status: u16, content_type: &str, body: &[u8]) -> bool {
        if status != self.status || content_type != self.content_type {
            return false;
        }
        let upto = body.len().min(self.sent.len());
        let at = match self.checked.iter().position(|(m, _)| *m == member) {
            Some(at) => at,
            None => {
                self.checked.push((member, 0));
                self.checked.len() - 1
            }
        };
        let from = self.checked[at].1.min(upto);
        if body[from..upto] != self.sent[from..upto] {
            return false;
        }
        self.checked[at].1 = upto;
        true
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.end(Err(Refusal::StreamBroken(
            "its member stopped before its signed end, and no other member's answer begins with what was sent".into(),
        )));
    }
}

struct Inner {
    council: Council,
    next_seq: u64,
    queues: HashMap<Address, VecDeque<Arc<Relay>>>,
    /// Answers each member is to judge, before its requests.
    judging: HashMap<Address, VecDeque<Bytes>>,
    /// Cases being judged, by request.
    cases: BTreeMap<Hash, Case>,
    open: BTreeMap<u64, Open>,
    tallies: HashMap<Address, Tally>,
    evidence: Vec<Evidence>,
    late: Vec<Address>,
    /// When each member last asked for a request: one that has not lately is not serving
    /// (its server is starting, or gone).
    fetched: HashMap<Address, Instant>,
    /// What users got, for `service status` ([`Dispatcher::stats`]).
    seen: Seen,
}

/// How the gateway answered its users lately.
#[derive(Default)]
struct Seen {
    /// How long the latest answers took to start (a whole answer, or a stream's head), in
    /// microseconds, the oldest overwritten first.
    latencies: VecDeque<u64>,
    answered: u64,
    streamed: u64,
    timed_out: u64,
    disagreed: u64,
    refused: u64,
}

/// How many of the latest answers [`Stats`] takes its latencies from.
pub const STATS_WINDOW: usize = 1024;

/// How a gateway answered its users since it started (`GET /g/<service>/stats`; `gridwork
/// service status` shows it): counts, and the latency of the latest answers (to a whole
/// answer, or to a stream's head) against the service called through the council.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Requests answered (whole or streamed).
    pub answered: u64,
    /// Of them, answers streamed to the user as they came.
    pub streamed: u64,
    /// Requests the council did not answer in time.
    pub timed_out: u64,
    /// Requests whose answers differed with none to give (unanimous, or a tie).
    pub disagreed: u64,
    /// Requests refused before they were relayed (the service down, members connecting, too
    /// many waiting).
    pub refused: u64,
    /// How many answers the latencies are of (at most [`STATS_WINDOW`]).
    pub window: usize,
    /// The median latency, in milliseconds.
    pub p50_ms: f64,
    /// The 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
}

/// A member that has not asked for a request within this long is not connected: requests
/// wait until every member is (a request sent to a member still starting its server would
/// count against it).
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(40);

/// The gateway of one service.
pub struct Dispatcher {
    service: Hash,
    spec: ServiceSpec,
    chain_id: String,
    key: Keypair,
    inner: Mutex<Inner>,
    arrived: Notify,
}

/// The most requests the gateway holds open at once.
pub const MAX_OPEN: usize = 4096;

impl Dispatcher {
    /// A gateway for `service` (of `spec`), signing receipts with `key` (the spec's gateway
    /// key) for chain `chain_id`.
    pub fn new(service: Hash, spec: ServiceSpec, chain_id: &str, key: Keypair) -> Dispatcher {
        Dispatcher {
            service,
            spec,
            chain_id: chain_id.to_string(),
            key,
            inner: Mutex::new(Inner {
                council: Council {
                    members: Vec::new(),
                    up: Err("its council is not known yet".into()),
                },
                // Sequence numbers go on across the gateway's restarts (milliseconds since the
                // epoch, a million a millisecond): members answer each at most once, and never
                // one below the last they answered.
                next_seq: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| (d.as_millis() as u64).saturating_mul(1 << 20)),
                queues: HashMap::new(),
                judging: HashMap::new(),
                cases: BTreeMap::new(),
                open: BTreeMap::new(),
                tallies: HashMap::new(),
                evidence: Vec::new(),
                late: Vec::new(),
                fetched: HashMap::new(),
                seen: Seen::default(),
            }),
            arrived: Notify::new(),
        }
    }

    /// The service.
    pub fn service(&self) -> Hash {
        self.service
    }

    /// The service's spec.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the council the ledger holds now (its members, prices, and whether it is up).
    /// Members that left get no more requests; what was queued for them is dropped.
    pub fn set_council(&self, council: Council) {
        let mut inner = self.lock();
        let seated: Vec<Address> = council.members.iter().map(|(a, _)| *a).collect();
        inner.queues.retain(|a, _| seated.contains(a));
        inner.judging.retain(|a, _| seated.contains(a));
        // A member that left judges no more (it cannot fetch): its cases wait for it no
        // longer, so the evidence goes while the ledger still judges a leaver.
        let mut done = Vec::new();
        for (request, case) in inner.cases.iter_mut() {
            case.asked.retain(|a| seated.contains(a));
            if case.complete() {
                done.push(*request);
            }
        }
        for request in done {
            if let Some(case) = inner.cases.remove(&request) {
                judged_case(&mut inner, case);
            }
        }
        inner.council = council;
    }

    /// How long a user waits for an answer: the service's `max_response_ms`, plus its
    /// `response_ms_per_kib` for an answer of up to a MiB.
    pub fn answer_within(&self) -> Duration {
        Duration::from_millis(
            self.spec
                .max_response_ms
                .saturating_add(self.spec.response_ms_per_kib.saturating_mul(1024)),
        )
    }

    /// Relays a user's request to every member and waits for the answer the response method
    /// gives: streamed under the optimistic method when a member streams and the user can
    /// take a stream (`streamable`), else whole.
    pub async fn submit(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Bytes,
        streamable: bool,
    ) -> Result<Reply, Refusal> {
        let asked = Instant::now();
        let reply = self
            .relay(method, path, content_type, body, streamable)
            .await;
        let mut inner = self.lock();
        let seen = &mut inner.seen;
        match &reply {
            Ok(r) => {
                seen.answered += 1;
                if matches!(r, Reply::Stream(_)) {
                    seen.streamed += 1;
                }
                if seen.latencies.len() >= STATS_WINDOW {
                    seen.latencies.pop_front();
                }
                seen.latencies
                    .push_back(asked.elapsed().as_micros().min(u128::from(u64::MAX)) as u64);
            }
            Err(Refusal::Timeout(_)) => seen.timed_out += 1,
            Err(Refusal::Disagreed) => seen.disagreed += 1,
            Err(_) => seen.refused += 1,
        }
        reply
    }

    /// How the gateway answered its users since it started.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let seen = &inner.seen;
        let mut sorted: Vec<u64> = seen.latencies.iter().copied().collect();
        sorted.sort_unstable();
        let at = |p: usize| {
            if sorted.is_empty() {
                return 0.0;
            }
            let i = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len()) - 1;
            sorted[i] as f64 / 1000.0
        };
        Stats {
            answered: seen.answered,
            streamed: seen.streamed,
            timed_out: seen.timed_out,
            disagreed: seen.disagreed,
            refused: seen.refused,
            window: sorted.len(),
            p50_ms: at(50),
            p99_ms: at(99),
        }
    }

    /// [`Dispatcher::submit`], uncounted.
    async fn relay(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Bytes,
        streamable: bool,
    ) -> Result<Reply, Refusal> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.council.up.clone().map_err(Refusal::Down)?;
            let connected = inner
                .council
                .members
                .iter()
                .filter(|(a, _)| {
                    inner
                        .fetched
                        .get(a)
                        .is_some_and(|t| t.elapsed() < CONNECTED_WITHIN)
                })
                .count();
            if connected < inner.council.members.len() {
                return Err(Refusal::Down(format!(
                    "waiting for its members to connect ({connected} of {} are)",
                    inner.council.members.len()
                )));
            }
            if inner.open.len() >= MAX_OPEN {
                return Err(Refusal::Busy(inner.open.len()));
            }
            // On the clock (a million a millisecond), and never below one sent before.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| (d.as_millis() as u64).saturating_mul(1 << 20));
            let seq = inner.next_seq.max(now);
            inner.next_seq = seq + 1;
            let relay = Arc::new(Relay {
                seq,
                request: request_hash(&self.service, seq, method, path, content_type, &body),
                method: method.to_string(),
                path: path.to_string(),
                content_type: content_type.to_string(),
                body,
            });
            let asked: Vec<Address> = inner.council.members.iter().map(|(a, _)| *a).collect();
            for member in &asked {
                inner
                    .queues
                    .entry(*member)
                    .or_default()
                    .push_back(relay.clone());
            }
            inner.open.insert(
                seq,
                Open {
                    relay,
                    asked,
                    got: Vec::new(),
                    waiting: Some(tx),
                    at: Instant::now(),
                    streams: Vec::new(),
                    gave_up: Vec::new(),
                    streamable,
                    pipe: None,
                    agrees: Vec::new(),
                    pending: Vec::new(),
                },
            );
        }
        self.arrived.notify_waiters();
        let within = self.answer_within();
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => Err(Refusal::Timeout(within)),
        }
    }

    /// The next work for `member` (answers to judge first, then requests), waiting up to
    /// `wait` for some.
    pub async fn next_for(&self, member: &Address, wait: Duration) -> Option<Work> {
        let until = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let next = {
                let mut inner = self.lock();
                inner.fetched.insert(*member, Instant::now());
                match inner.judging.get_mut(member).and_then(VecDeque::pop_front) {
                    Some(task) => Some(Work::Judge(task)),
                    None => inner
                        .queues
                        .get_mut(member)
                        .and_then(VecDeque::pop_front)
                        .map(Work::Request),
                }
            };
            if let Some(work) = next {
                return Some(work);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return None;
            }
        }
    }

    /// A member's judgement of the answers it was sent to judge: checked (its own, signed,
    /// of a case it was asked to judge, once) and kept. Once every member asked judged, or the
    /// case's time ran out ([`Dispatcher::sweep`]), judgements that find an answer not
    /// equivalent are evidence.
    pub fn judged(&self, member: Address, signed: SignedJudgement) -> Result<(), Refusal> {
        let bad = |why: String| Err(Refusal::BadResponse(why));
        let mut inner = self.lock();
        let v = signed.judgement.clone();
        let Some(case) = inner.cases.get_mut(&v.request) else {
            return bad(format!(
                "request {} is not being judged (its time ran out, or its answers agreed)",
                v.request
            ));
        };
        if !case.asked.contains(&member) {
            return bad(format!(
                "{member} was not asked to judge request {}",
                v.request
            ));
        }
        if case.judgements.iter().any(|j| j.judge.address() == member) {
            return bad(format!("{member} judged request {} already", v.request));
        }
        let own = case
            .responses
            .iter()
            .find(|s| s.provider.address() == member)
            .map(|s| s.response.response);
        if signed.judge.address() != member
            || v.service != self.service
            || Some(v.own) != own
            || v.agree.len() + v.differ.len() > gridwork_types::MAX_JUDGED
        {
            return bad("the judgement is not this member's of its own answer to this request (judge, service, own answer, at most MAX_JUDGED answers)".into());
        }
        if signed.verify(&self.chain_id).is_err() {
            return bad("the judgement's signature does not verify".into());
        }
        case.judgements.push(signed);
        if case.complete() {
            let request = v.request;
            if let Some(case) = inner.cases.remove(&request) {
                judged_case(&mut inner, case);
            }
        }
        Ok(())
    }

    /// Whether `member` sits on the council now.
    pub fn is_member(&self, member: &Address) -> bool {
        self.lock().council.members.iter().any(|(a, _)| a == member)
    }

    /// A member's response to request `seq`, with its signature: checked, recorded, and
    /// acknowledged with the member's cumulative receipt. The user's answer goes out once the
    /// response method has what it waits for.
    pub fn respond(
        &self,
        member: Address,
        seq: u64,
        answer: Answer,
        signed: SignedResponse,
    ) -> Result<SignedReceipt, Refusal> {
        if self.spec.equivalence == (Equivalence::ExactHash {}) {
            let mut inner = self.lock();
            self.asked_of(&mut inner, member, seq)?;
            return self.accept(&mut inner, member, seq, answer, signed, None);
        }
        // Checked before anything is compared (a review found a refused answer compared
        // first); the member is pending while it is, so it neither answers twice nor is named
        // late meanwhile.
        {
            let mut inner = self.lock();
            let (open, _) = self.asked_of(&mut inner, member, seq)?;
            self.check_signed(&open.relay.request, member, &answer, &signed)?;
            open.pending.push(member);
        }
        let pending = Pending {
            dispatcher: self,
            seq,
            member,
        };
        let pre = self.precompare(seq, &answer, &signed);
        let mut inner = self.lock();
        pending.clear(&mut inner);
        self.accept(&mut inner, member, seq, answer, signed, Some(pre))
    }

    /// The open request `seq`, asked of `member` (seated), which has neither answered it nor
    /// streams its answer; and the member's price.
    fn asked_of<'a>(
        &self,
        inner: &'a mut Inner,
        member: Address,
        seq: u64,
    ) -> Result<(&'a mut Open, StreamPrice), Refusal> {
        let bad = |why: String| Err(Refusal::BadResponse(why));
        let price = match inner.council.members.iter().find(|(a, _)| *a == member) {
            Some((_, p)) => *p,
            None => return bad(format!("{member} does not sit on the council")),
        };
        let Some(open) = inner.open.get_mut(&seq) else {
            return bad(format!(
                "request {seq} is not open (answered late, or never sent)"
            ));
        };
        if !open.asked.contains(&member) {
            return bad(format!("request {seq} was not sent to {member}"));
        }
        if open.got.iter().any(|(a, _, _)| *a == member)
            || open.streams.iter().any(|p| p.member == member)
        {
            return bad(format!("{member} answered request {seq} already"));
        }
        // One that broke its stream off answers the request no more (a review found one that
        // streamed a lie, broke off and answered whole again was paid and never late).
        if open.gave_up.contains(&member) {
            return bad(format!(
                "{member} broke its stream for request {seq} off: it answers it no more"
            ));
        }
        if open.pending.contains(&member) {
            return bad(format!(
                "{member}'s answer to request {seq} is being compared"
            ));
        }
        Ok((open, price))
    }

    /// A member's stream of its response to request `seq` begins, with the server's status
    /// and content type: its pieces follow ([`Dispatcher::stream_piece`]), then its signed end
    /// ([`Dispatcher::end_stream`]). Under the optimistic method a stream opened before any
    /// answer is in starts the user's answer, piped piece by piece (see the module's docs).
    /// Returns when the request's time runs out: the stream must end by then.
    pub fn open_stream(
        &self,
        member: Address,
        seq: u64,
        status: u16,
        content_type: &str,
    ) -> Result<Instant, Refusal> {
        let within = self.answer_within();
        let optimistic = matches!(self.spec.method, ResponseMethod::Optimistic {});
        let mut inner = self.lock();
        let (open, _) = self.asked_of(&mut inner, member, seq)?;
        // An answer with no body would reach the user whole before any byte was signed.
        if !gridwork_types::may_stream(&open.relay.method, status) {
            return Err(Refusal::BadResponse(format!(
                "an answer of status {status} to {} has no body to stream: send it whole",
                open.relay.method
            )));
        }
        open.streams.push(Partial {
            member,
            status,
            content_type: content_type.to_string(),
            body: Vec::new(),
        });
        if optimistic && open.streamable && open.got.is_empty() {
            if let Some(user) = open.waiting.take() {
                let (mut pipe, body) = Pipe::new(status, content_type);
                if self.spec.equivalence != (Equivalence::ExactHash {}) {
                    // Honest answers differ in their bytes: none continues another's.
                    for other in open.asked.iter().filter(|m| **m != member) {
                        pipe.cannot(*other);
                    }
                }
                let _ = user.send(Ok(Reply::Stream(Streamed {
                    status,
                    content_type: content_type.to_string(),
                    body,
                })));
                open.pipe = Some(pipe);
            }
        }
        advance(open);
        Ok(open.at + within)
    }

    /// The next piece of `member`'s stream for request `seq`. Refused (and the stream to be
    /// given up) past [`MAX_STREAM_BYTES`], or once the request closed.
    pub fn stream_piece(&self, member: Address, seq: u64, piece: &[u8]) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let Some(open) = inner.open.get_mut(&seq) else {
            return Err(Refusal::BadResponse(format!(
                "request {seq} is not open (its time ran out)"
            )));
        };
        let Some(partial) = open.streams.iter_mut().find(|p| p.member == member) else {
            return Err(Refusal::BadResponse(format!(
                "{member} has no stream open for request {seq}"
            )));
        };
        if partial.body.len().saturating_add(piece.len()) > MAX_STREAM_BYTES {
            return Err(Refusal::BadResponse(format!(
                "a streamed response may be at most {MAX_STREAM_BYTES} bytes"
            )));
        }
        partial.body.extend_from_slice(piece);
        advance(open);
        Ok(())
    }

    /// `member`'s stream for request `seq` ends with its signature over the whole body:
    /// checked and acknowledged like a whole response ([`Dispatcher::respond`]). A stream
    /// whose end does not check out is given up.
    pub fn end_stream(
        &self,
        member: Address,
        seq: u64,
        signed: SignedResponse,
    ) -> Result<SignedReceipt, Refusal> {
        let mut inner = self.lock();
        let Some(open) = inner.open.get_mut(&seq) else {
            return Err(Refusal::BadResponse(format!(
                "request {seq} is not open (its time ran out)"
            )));
        };
        let Some(at) = open.streams.iter().position(|p| p.member == member) else {
            return Err(Refusal::BadResponse(format!(
                "{member} has no stream open for request {seq}"
            )));
        };
        let partial = open.streams.remove(at);
        let answer = Answer {
            status: partial.status,
            content_type: partial.content_type,
            body: Bytes::from(partial.body),
        };
        let exact = self.spec.equivalence == (Equivalence::ExactHash {});
        let checked = if exact {
            Ok(())
        } else {
            self.check_signed(&open.relay.request, member, &answer, &signed)
        };
        let accepted = if exact || checked.is_err() {
            checked.and_then(|()| self.accept(&mut inner, member, seq, answer, signed, None))
        } else {
            // Checked, then pending while compared outside the lock: it neither opens another
            // stream nor answers again, and is not named late meanwhile.
            open.pending.push(member);
            drop(inner);
            let pending = Pending {
                dispatcher: self,
                seq,
                member,
            };
            let pre = self.precompare(seq, &answer, &signed);
            inner = self.lock();
            pending.clear(&mut inner);
            self.accept(&mut inner, member, seq, answer, signed, Some(pre))
        };
        if accepted.is_err() {
            if let Some(open) = inner.open.get_mut(&seq) {
                open.gave_up.push(member);
                broke(open, member);
            }
        }
        accepted
    }

    /// `member`'s stream for request `seq` broke off before its signed end (its connection
    /// closed, it sent too much, or what it sent was no stream): a user it was piped to gets
    /// the rest from another member whose answer begins with what was sent, if any.
    pub fn give_up_stream(&self, member: Address, seq: u64) {
        if let Some(open) = self.lock().open.get_mut(&seq) {
            if open.streams.iter().any(|p| p.member == member) {
                open.streams.retain(|p| p.member != member);
                open.gave_up.push(member);
                broke(open, member);
            }
        }
    }

    /// Checks `signed` is `member`'s, on this chain, for this service, `request` and answer.
    fn check_signed(
        &self,
        request: &Hash,
        member: Address,
        answer: &Answer,
        signed: &SignedResponse,
    ) -> Result<(), Refusal> {
        let r = &signed.response;
        if signed.provider.address() != member
            || r.service != self.service
            || r.request != *request
            || r.response != response_hash(answer.status, &answer.content_type, &answer.body)
            || r.units != answer.body.len() as u64
        {
            return Err(Refusal::BadResponse("the signed response is not this member's for this request and body (service, request, response hash, units)".into()));
        }
        if signed.verify(&self.chain_id).is_err() {
            return Err(Refusal::BadResponse(
                "the response's signature does not verify".into(),
            ));
        }
        Ok(())
    }

    /// The verdicts of `answer` against the answers request `seq` has so far, compared without
    /// holding the gateway's lock (none for an exact service: hashes decide there).
    fn precompare(&self, seq: u64, answer: &Answer, signed: &SignedResponse) -> Vec<bool> {
        if self.spec.equivalence == (Equivalence::ExactHash {}) {
            return Vec::new();
        }
        // Answers that came while it compared are compared too, outside the lock (answers of
        // similar machines come together), a round for each council seat at most.
        let mut pre = Vec::new();
        for _ in 0..=self.spec.council_size {
            let others: Vec<(Answer, SignedResponse)> = {
                let inner = self.lock();
                inner.open.get(&seq).map_or_else(Vec::new, |o| {
                    o.got
                        .iter()
                        .skip(pre.len())
                        .map(|(_, a, s)| (a.clone(), s.clone()))
                        .collect()
                })
            };
            if others.is_empty() {
                break;
            }
            pre.extend(verdicts(&self.spec.equivalence, answer, signed, &others));
        }
        pre
    }

    /// Records a member's answer to an open request asked of it (no answer yet): checked
    /// against its signature (unless `pre` says it was, with its verdicts against the answers
    /// before it, compared outside the lock), acknowledged with its cumulative receipt.
    fn accept(
        &self,
        inner: &mut Inner,
        member: Address,
        seq: u64,
        answer: Answer,
        signed: SignedResponse,
        pre: Option<Vec<bool>>,
    ) -> Result<SignedReceipt, Refusal> {
        let bad = |why: String| Err(Refusal::BadResponse(why));
        let Some((_, price)) = inner.council.members.iter().find(|(a, _)| *a == member) else {
            return bad(format!("{member} does not sit on the council"));
        };
        let price = *price;
        let Some(open) = inner.open.get(&seq) else {
            return bad(format!("request {seq} is not open"));
        };
        // Once: a stream's end compared outside the lock leaves a moment when the member has
        // neither a stream nor an answer in.
        if open.got.iter().any(|(a, _, _)| *a == member) {
            return bad(format!("{member} answered request {seq} already"));
        }
        // Checked already where it was compared outside the lock (`pre`).
        if pre.is_none() {
            self.check_signed(&open.relay.request, member, &answer, &signed)?;
        }
        let units = answer.body.len() as u64;
        let cost = price.of(units).map_or(u128::MAX, |a| a.0);
        let tally = inner.tallies.entry(member).or_default();
        tally.responses += 1;
        tally.units = tally.units.saturating_add(units);
        tally.owed = tally.owed.saturating_add(cost);
        let tally = *tally;
        let receipt = StreamReceipt {
            service: self.service,
            provider: member,
            responses: tally.responses,
            units: tally.units,
            owed: Amount(tally.owed),
        }
        .sign(&self.chain_id, &self.key);
        let method = self.spec.method;
        let council = self.spec.council_size;
        if let Some(open) = inner.open.get_mut(&seq) {
            // Its verdict against each answer before it: compared outside the lock where it
            // could be, the rest (answers that came meanwhile) here.
            let mut row = pre.unwrap_or_default();
            row.truncate(open.got.len());
            for (_, a, s) in &open.got[row.len()..] {
                row.push(same(&self.spec.equivalence, (&answer, &signed), (a, s)));
            }
            open.agrees.push(row);
            open.got.push((member, answer, signed));
            decide(method, council, open);
            // A stream piped to the user that ended here, signed, or any whole answer that
            // agrees with what was sent: the user's answer is whole.
            advance(open);
        }
        let done = inner
            .open
            .get(&seq)
            .is_some_and(|o| o.got.len() >= o.asked.len());
        if done {
            if let Some(open) = inner.open.remove(&seq) {
                close(inner, open, &self.spec.equivalence);
            }
        }
        Ok(receipt)
    }

    /// Closes the requests whose time ran out: their members that did not answer are named
    /// late, their responses that differ become evidence, and a user still waiting is told.
    pub fn sweep(&self) {
        let within = self.answer_within();
        let mut inner = self.lock();
        let expired: Vec<u64> = inner
            .open
            .iter()
            .filter(|(_, o)| o.at.elapsed() >= within)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(mut open) = inner.open.remove(&seq) {
                if let Some(user) = open.waiting.take() {
                    let _ = user.send(Err(Refusal::Timeout(within)));
                }
                if let Some(mut pipe) = open.pipe.take() {
                    pipe.end(Err(Refusal::Timeout(within)));
                }
                for member in &open.asked {
                    // One whose answer came in time and is being compared is not late.
                    if !open.got.iter().any(|(a, _, _)| a == member)
                        && !open.pending.contains(member)
                        && !inner.late.contains(member)
                    {
                        inner.late.push(*member);
                    }
                }
                close(&mut inner, open, &self.spec.equivalence);
            }
        }
        // Judging is not answering: a member that does not judge in time is not late, its
        // judgement just does not count.
        let expired: Vec<Hash> = inner
            .cases
            .iter()
            .filter(|(_, c)| c.at.elapsed() >= within)
            .map(|(r, _)| *r)
            .collect();
        for request in expired {
            if let Some(case) = inner.cases.remove(&request) {
                judged_case(&mut inner, case);
            }
        }
    }

    /// What the council did wrong, one request each: evidence for `DisputeResponses` or
    /// `JudgeResponses`.
    pub fn take_evidence(&self) -> Vec<Evidence> {
        std::mem::take(&mut self.lock().evidence)
    }

    /// Gives back evidence whose dispute could not be sent, to go again.
    pub fn return_evidence(&self, evidence: Evidence) {
        self.lock().evidence.push(evidence);
    }

    /// Members that let a request's time run out: for `DropMember`.
    pub fn take_late(&self) -> Vec<Address> {
        std::mem::take(&mut self.lock().late)
    }

    /// The latest receipt of every member that answered, for settling.
    pub fn receipts(&self) -> Vec<SignedReceipt> {
        let inner = self.lock();
        let mut members: Vec<(&Address, &Tally)> = inner.tallies.iter().collect();
        members.sort_by_key(|(a, _)| **a);
        members
            .into_iter()
            .map(|(a, t)| {
                StreamReceipt {
                    service: self.service,
                    provider: *a,
                    responses: t.responses,
                    units: t.units,
                    owed: Amount(t.owed),
                }
                .sign(&self.chain_id, &self.key)
            })
            .collect()
    }
}

/// `member`'s stream broke off: it no longer continues the pipe (it may answer the request
/// again, for the council's check).
fn broke(open: &mut Open, member: Address) {
    if let Some(pipe) = open.pipe.as_mut() {
        pipe.cannot(member);
    }
    advance(open);
}

/// Moves the user's stream on. It follows whichever member is furthest ahead while agreeing
/// with every byte sent (answers are deterministic, so an honest council's agree): a member
/// that opened first and then slows down holds nobody back, and one that dies is left behind.
/// A whole answer that agrees ends it whole. Once no member asked can continue it (each broke
/// off or answers otherwise), it is broken off for the user.
fn advance(open: &mut Open) {
    let Open {
        pipe: slot,
        got,
        streams,
        asked,
        ..
    } = open;
    let Some(pipe) = slot.as_mut() else {
        return;
    };
    for (member, answer, _) in got.iter() {
        if pipe.cannot.contains(member) {
            continue;
        }
        if pipe.agrees(*member, answer.status, &answer.content_type, &answer.body)
            && answer.body.len() >= pipe.sent.len()
        {
            let n = pipe.sent.len();
            pipe.send(&answer.body[n..]);
            pipe.end(Ok(()));
            *slot = None;
            return;
        }
        pipe.differs(*member);
    }
    let mut ahead: Option<&Partial> = None;
    for partial in streams.iter() {
        if pipe.cannot.contains(&partial.member) {
            continue;
        }
        if !pipe.agrees(
            partial.member,
            partial.status,
            &partial.content_type,
            &partial.body,
        ) {
            pipe.differs(partial.member);
            continue;
        }
        if ahead.is_none_or(|a| partial.body.len() > a.body.len()) {
            ahead = Some(partial);
        }
    }
    if let Some(partial) = ahead {
        let n = pipe.sent.len();
        if partial.body.len() > n {
            pipe.send(&partial.body[n..]);
        }
    }
    // Nobody can continue it; or most of the council answers otherwise, so what was sent is
    // not what an honest majority answers (a review found a member that opened first under
    // another status, then stalled, held the user until the request's time ran out).
    if asked.iter().all(|m| pipe.cannot.contains(m)) || 2 * pipe.differ.len() > asked.len() {
        // Dropped unfinished: broken off for the user.
        *slot = None;
    }
}

/// Whether responses `i` and `j` of `open` agree (from its table).
fn agree(open: &Open, i: usize, j: usize) -> bool {
    match i.cmp(&j) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => open.agrees[j][i],
        std::cmp::Ordering::Greater => open.agrees[i][j],
    }
}

/// Whether `answer` (signed `signed`) agrees with each of `others` under `e`.
fn verdicts(
    e: &Equivalence,
    answer: &Answer,
    signed: &SignedResponse,
    others: &[(Answer, SignedResponse)],
) -> Vec<bool> {
    others
        .iter()
        .map(|(a, s)| same(e, (answer, signed), (a, s)))
        .collect()
}

/// Whether two answers agree under `e`: by the hashes their members signed, or, for an
/// equivalence other than exact, by comparing them.
fn same(e: &Equivalence, a: (&Answer, &SignedResponse), b: (&Answer, &SignedResponse)) -> bool {
    if a.1.response.response == b.1.response.response {
        return true;
    }
    if *e == (Equivalence::ExactHash {}) {
        return false;
    }
    #[cfg(test)]
    tests::COMPARED.with(|c| c.set(c.get() + 1));
    fn view(x: &Answer) -> gridwork_verify::Answer<'_> {
        gridwork_verify::Answer {
            status: x.status,
            content_type: &x.content_type,
            body: &x.body,
        }
    }
    gridwork_verify::answers_equivalent(e, view(a.0), view(b.0)).is_same()
}

/// Sends the user its answer once the response method has what it waits for.
fn decide(method: ResponseMethod, council: u8, open: &mut Open) {
    if open.waiting.is_none() {
        return;
    }
    let quorum = usize::from(method.quorum(council))
        .min(open.asked.len())
        .max(1);
    let answer = match method {
        ResponseMethod::Optimistic {} => open.got.first().map(|(_, a, _)| Ok(a.clone())),
        ResponseMethod::Weighted { .. } if open.got.len() >= quorum => {
            // The response most of them gave. Tied, it waits for the next response (a liar
            // answering first would otherwise win a tie); tied with every member in, the
            // council disagreed.
            let n = open.got.len();
            let count = |k: usize| (0..n).filter(|j| agree(open, k, *j)).count();
            // Answers are told apart by what their members signed (status, content type and
            // body), under the service's equivalence: the same body under another status is
            // another answer (a review found it won a tie by answering first).
            let mut best: Option<(usize, usize)> = None;
            let mut tied = false;
            for k in 0..n {
                let c = count(k);
                match best {
                    Some((b, m)) if c == m && !agree(open, b, k) => tied = true,
                    Some((_, m)) if c > m => {
                        best = Some((k, c));
                        tied = false;
                    }
                    None => best = Some((k, c)),
                    _ => {}
                }
            }
            match (best, tied) {
                (Some((k, _)), false) => Some(Ok(open.got[k].1.clone())),
                (Some(_), true) if open.got.len() >= open.asked.len() => {
                    Some(Err(Refusal::Disagreed))
                }
                _ => None,
            }
        }
        ResponseMethod::Unanimous {} if open.got.len() >= open.asked.len() => {
            // Every pair agrees (a tolerance is not transitive: each agreeing with the first
            // is not enough, and the answers would then be judged after).
            let n = open.got.len();
            if (0..n).all(|k| (0..k).all(|j| agree(open, k, j))) {
                Some(Ok(open.got[0].1.clone()))
            } else {
                Some(Err(Refusal::Disagreed))
            }
        }
        _ => None,
    };
    if let Some(answer) = answer {
        if let Some(user) = open.waiting.take() {
            let _ = user.send(answer.map(Reply::Whole));
        }
    }
}

/// A request is over: responses that differ are evidence (`exact_hash`), or go to the
/// members to judge when some two are not equivalent.
fn close(inner: &mut Inner, open: Open, e: &Equivalence) {
    let first = open.got.first().map(|(_, _, s)| s.response.response);
    if open
        .got
        .iter()
        .all(|(_, _, s)| Some(s.response.response) == first)
    {
        return;
    }
    if *e == (Equivalence::ExactHash {}) {
        inner.evidence.push(Evidence::Hashes(
            open.got.into_iter().map(|(_, _, s)| s).collect(),
        ));
        return;
    }
    let got = &open.got;
    let n = got.len();
    if (0..n).all(|k| (0..k).all(|j| agree(&open, k, j))) {
        return;
    }
    // Who the case is for: the members outside the largest agreeing group. Each may hold a
    // share of the cases (a review found one member answering junk to every request, while
    // an accomplice never judged, filled them and hid a third member's lie): a case only for
    // members over their share is not opened.
    let anchor = (0..n)
        .max_by_key(|k| ((0..n).filter(|j| agree(&open, *k, *j)).count(), n - k))
        .unwrap_or(0);
    let suspects: Vec<Address> = (0..n)
        .filter(|k| !agree(&open, anchor, *k))
        .map(|k| got[k].0)
        .collect();
    let share = (MAX_CASES / inner.council.members.len().max(1)).max(1);
    let held_by = |m: &Address| {
        inner
            .cases
            .values()
            .filter(|c| c.suspects.contains(m))
            .count()
    };
    let suspects: Vec<Address> = suspects
        .into_iter()
        .filter(|m| held_by(m) < share)
        .collect();
    if suspects.is_empty() {
        tracing::warn!(
            request = %open.relay.request,
            "answers that are not equivalent go unjudged: the members they differ for hold their share of the cases"
        );
        return;
    }
    let bytes: usize = got.iter().map(|(_, a, _)| a.body.len()).sum();
    let held: usize = inner.cases.values().map(|c| c.bytes).sum();
    if inner.cases.len() >= MAX_CASES || held.saturating_add(bytes) > MAX_CASE_BYTES {
        tracing::warn!(
            request = %open.relay.request,
            "answers that are not equivalent go unjudged: {} cases of {held} bytes wait already",
            inner.cases.len()
        );
        return;
    }
    let task = JudgeTask {
        request: open.relay.request,
        answers: open
            .got
            .iter()
            .map(|(_, a, s)| JudgedAnswer {
                status: a.status,
                content_type: a.content_type.clone(),
                body: a.body.to_vec(),
                signed: s.clone(),
            })
            .collect(),
    };
    let encoded = Bytes::from(gridwork_types::Encode::to_bytes(&task));
    let asked: Vec<Address> = open.got.iter().map(|(m, _, _)| *m).collect();
    for member in &asked {
        inner
            .judging
            .entry(*member)
            .or_default()
            .push_back(encoded.clone());
    }
    inner.cases.insert(
        open.relay.request,
        Case {
            responses: task.answers.into_iter().map(|a| a.signed).collect(),
            asked,
            judgements: Vec::new(),
            at: Instant::now(),
            bytes,
            suspects,
        },
    );
}

/// A case's judging is over: judgements that find some answer not equivalent are evidence.
fn judged_case(inner: &mut Inner, case: Case) {
    if case
        .judgements
        .iter()
        .any(|j| !j.judgement.differ.is_empty())
    {
        inner.evidence.push(Evidence::Judged {
            responses: case.responses,
            judgements: case.judgements,
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gridwork_types::{Equivalence, Program, Requirements, StreamResponse};

    pub(crate) const CHAIN: &str = "gateway-test";

    thread_local! {
        /// Answers compared by their bodies on this thread.
        pub(crate) static COMPARED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    pub(crate) fn spec(method: ResponseMethod, council: u8) -> ServiceSpec {
        ServiceSpec {
            program: Program {
                command: "inputs/serve".into(),
                args: vec![],
                outputs: vec![],
                image: None,
                network: false,
                vendor_images: Vec::new(),
            },
            data: vec![],
            requirements: Requirements::default(),
            method,
            council_size: council,
            max_price: StreamPrice {
                per_response: Amount(100),
                per_unit: Amount(1),
            },
            equivalence: Equivalence::ExactHash {},
            max_response_ms: 200,
            response_ms_per_kib: 0,
            max_downtime_ms: 0,
            max_unsettled: Amount(1_000_000),
            gateway: Keypair::from_seed([9; 32]).public(),
        }
    }

    /// A gateway with `n` members (keys seeded 1..=n), up.
    pub(crate) fn gateway(method: ResponseMethod, n: u8) -> (Arc<Dispatcher>, Vec<Keypair>) {
        gateway_of(spec(method, n))
    }

    /// A gateway of `spec`, its members keys seeded 1..=council, up.
    pub(crate) fn gateway_of(spec: ServiceSpec) -> (Arc<Dispatcher>, Vec<Keypair>) {
        let n = spec.council_size;
        let members: Vec<Keypair> = (1..=n).map(|i| Keypair::from_seed([i; 32])).collect();
        let d = Arc::new(Dispatcher::new(
            Hash([5; 32]),
            spec,
            CHAIN,
            Keypair::from_seed([9; 32]),
        ));
        d.set_council(Council {
            members: members
                .iter()
                .map(|k| {
                    (
                        k.address(),
                        StreamPrice {
                            per_response: Amount(10),
                            per_unit: Amount(1),
                        },
                    )
                })
                .collect(),
            up: Ok(()),
        });
        (d, members)
    }

    /// A gateway whose members all connected.
    async fn connected(method: ResponseMethod, n: u8) -> (Arc<Dispatcher>, Vec<Keypair>) {
        let (d, m) = gateway(method, n);
        connect(&d, &m).await;
        (d, m)
    }

    /// The next request for `member`, which must come within a second.
    async fn fetched(d: &Dispatcher, member: &Keypair) -> Arc<Relay> {
        match d.next_for(&member.address(), Duration::from_secs(1)).await {
            Some(Work::Request(relay)) => relay,
            other => panic!("a request for the member, not {other:?}"),
        }
    }

    /// `member`'s signed response to `request`: `body` of `status` and `content_type`.
    fn signed(
        d: &Dispatcher,
        member: &Keypair,
        request: Hash,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> SignedResponse {
        StreamResponse {
            service: d.service(),
            request,
            response: response_hash(status, content_type, body),
            units: body.len() as u64,
        }
        .sign(CHAIN, member)
    }

    /// `member` answers the next request it gets with `body`.
    async fn answer(
        d: &Dispatcher,
        member: &Keypair,
        body: &str,
    ) -> Result<SignedReceipt, Refusal> {
        answer_as(d, member, body, "text/plain").await
    }

    /// [`answer`], of `content_type`.
    async fn answer_as(
        d: &Dispatcher,
        member: &Keypair,
        body: &str,
        content_type: &str,
    ) -> Result<SignedReceipt, Refusal> {
        let relay = fetched(d, member).await;
        let body = Bytes::copy_from_slice(body.as_bytes());
        let signed = signed(d, member, relay.request, 200, content_type, &body);
        d.respond(
            member.address(),
            relay.seq,
            Answer {
                status: 200,
                content_type: content_type.into(),
                body,
            },
            signed,
        )
    }

    /// Every member asks once (nothing waits yet): they are connected.
    async fn connect(d: &Dispatcher, members: &[Keypair]) {
        for k in members {
            assert!(d.next_for(&k.address(), Duration::ZERO).await.is_none());
        }
    }

    fn ask(d: &Arc<Dispatcher>) -> tokio::task::JoinHandle<Result<Answer, Refusal>> {
        let d = d.clone();
        tokio::spawn(async move {
            match d
                .submit(
                    "POST",
                    "/v1/x",
                    "text/plain",
                    Bytes::from_static(b"hi"),
                    true,
                )
                .await?
            {
                Reply::Whole(answer) => Ok(answer),
                Reply::Stream(s) => panic!("a whole answer was streamed ({})", s.status),
            }
        })
    }

    /// A user's request whose answer is streamed: its pieces, then how it ended (`Ok` whole,
    /// `Err` broken off).
    fn ask_streamed(
        d: &Arc<Dispatcher>,
    ) -> tokio::task::JoinHandle<(Vec<Bytes>, Result<(), Refusal>)> {
        let d = d.clone();
        tokio::spawn(async move {
            let reply = d
                .submit(
                    "POST",
                    "/v1/x",
                    "text/plain",
                    Bytes::from_static(b"hi"),
                    true,
                )
                .await;
            let Ok(Reply::Stream(mut s)) = reply else {
                panic!("not streamed: {reply:?}");
            };
            let mut pieces = Vec::new();
            while let Some(piece) = s.body.next().await {
                match piece {
                    Ok(p) => pieces.push(p),
                    Err(e) => return (pieces, Err(e)),
                }
            }
            (pieces, Ok(()))
        })
    }

    /// `member`'s stream of `pieces` for the next request it gets; signed at the end unless
    /// `end` is false. Its request's sequence number.
    async fn stream(
        d: &Dispatcher,
        member: &Keypair,
        pieces: &[&str],
        end: bool,
    ) -> Result<u64, Refusal> {
        let relay = fetched(d, member).await;
        d.open_stream(member.address(), relay.seq, 200, "text/event-stream")?;
        let mut hasher = gridwork_types::ResponseHasher::new(200, "text/event-stream");
        for piece in pieces {
            hasher.update(piece.as_bytes());
            d.stream_piece(member.address(), relay.seq, piece.as_bytes())?;
            tokio::task::yield_now().await;
        }
        if end {
            let signed = StreamResponse {
                service: d.service(),
                request: relay.request,
                response: hasher.finish(),
                units: hasher.units(),
            }
            .sign(CHAIN, member);
            d.end_stream(member.address(), relay.seq, signed)?;
        }
        Ok(relay.seq)
    }

    fn joined(pieces: &[Bytes]) -> String {
        pieces
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// Optimistic: the first member to stream is piped to the user piece by piece (before it
    /// ends); the others' answers check it after, and it is paid like a whole response.
    #[tokio::test]
    async fn optimistic_pipes_the_first_stream_to_the_user_as_it_comes() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let user = ask_streamed(&d);
        let relay = fetched(&d, &m[0]).await;
        d.open_stream(m[0].address(), relay.seq, 200, "text/event-stream")
            .unwrap();
        d.stream_piece(m[0].address(), relay.seq, b"data: a\n\n")
            .unwrap();
        // The user holds the first piece while the member has not ended.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!user.is_finished());
        d.stream_piece(m[0].address(), relay.seq, b"data: b\n\n")
            .unwrap();
        let body = b"data: a\n\ndata: b\n\n";
        let signed = signed(&d, &m[0], relay.request, 200, "text/event-stream", body);
        let receipt = d.end_stream(m[0].address(), relay.seq, signed).unwrap();
        assert_eq!(receipt.receipt.units, body.len() as u64);
        let (pieces, end) = user.await.unwrap();
        assert_eq!(end, Ok(()));
        assert_eq!(pieces.len(), 2, "piece by piece");
        assert_eq!(joined(&pieces), "data: a\n\ndata: b\n\n");
        // The others whole, one differing: evidence, as for whole answers.
        answer(&d, &m[1], "data: a\n\ndata: b\n\n").await.unwrap();
        answer(&d, &m[2], "data: z\n\n").await.unwrap();
        assert_eq!(d.take_evidence().len(), 1);
    }

    /// A provider killed mid-stream: the user's answer goes on from another member whose
    /// stream begins with every byte sent, and ends whole.
    #[tokio::test]
    async fn a_stream_whose_member_dies_goes_on_from_another_that_agrees() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let user = ask_streamed(&d);
        // m0 first, killed after two pieces; m1 streams the same, and further.
        let seq = stream(&d, &m[0], &["one ", "two "], false).await.unwrap();
        let relay = fetched(&d, &m[1]).await;
        d.open_stream(m[1].address(), seq, 200, "text/event-stream")
            .unwrap();
        d.stream_piece(m[1].address(), seq, b"one ").unwrap();
        d.give_up_stream(m[0].address(), seq);
        // m1 has not caught up yet: the user waits.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!user.is_finished());
        d.stream_piece(m[1].address(), seq, b"two three").unwrap();
        let body = b"one two three";
        let signed = signed(&d, &m[1], relay.request, 200, "text/event-stream", body);
        d.end_stream(m[1].address(), seq, signed).unwrap();
        let (pieces, end) = user.await.unwrap();
        assert_eq!(end, Ok(()));
        assert_eq!(joined(&pieces), "one two three");
        // The member that died answered nothing: late once the request's time runs out.
        answer(&d, &m[2], "one two three").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        d.sweep();
        assert_eq!(d.take_late(), vec![m[0].address()]);
    }

    /// `StreamVanisher`: a member streams a made-up answer first, then breaks off before its
    /// signed end (so there is nothing it signed to dispute). The honest members' answers do
    /// not begin with what was sent: the user's answer is broken off, never ended as if
    /// whole, and the vanisher is named late.
    #[tokio::test]
    async fn a_stream_that_vanishes_after_lying_is_broken_off_for_the_user() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let user = ask_streamed(&d);
        let seq = stream(&d, &m[0], &["made up "], false).await.unwrap();
        d.give_up_stream(m[0].address(), seq);
        // It answers the request no more, whole or streamed (a review found one that did was
        // paid, never late, and left no evidence).
        assert!(matches!(
            d.open_stream(m[0].address(), seq, 200, "text/event-stream"),
            Err(Refusal::BadResponse(why)) if why.contains("no more")
        ));
        let truth = Bytes::from_static(b"the truth");
        let request = d.lock().open[&seq].relay.request;
        let again = StreamResponse {
            service: d.service(),
            request,
            response: response_hash(200, "text/event-stream", &truth),
            units: truth.len() as u64,
        }
        .sign(CHAIN, &m[0]);
        let whole = Answer {
            status: 200,
            content_type: "text/event-stream".into(),
            body: truth,
        };
        assert!(d.respond(m[0].address(), seq, whole, again).is_err());
        // An honest member's stream that has not caught up yet, then one whole.
        let relay = fetched(&d, &m[1]).await;
        d.open_stream(m[1].address(), seq, 200, "text/event-stream")
            .unwrap();
        d.stream_piece(m[1].address(), seq, b"the").unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !user.is_finished(),
            "broken off while a member might continue it"
        );
        d.stream_piece(m[1].address(), seq, b" truth").unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !user.is_finished(),
            "broken off while a member might continue it"
        );
        answer(&d, &m[2], "the truth").await.unwrap();
        let (pieces, end) = user.await.unwrap();
        assert_eq!(joined(&pieces), "made up ");
        assert!(matches!(end, Err(Refusal::StreamBroken(_))), "{end:?}");
        let body = b"the truth";
        let signed = signed(&d, &m[1], relay.request, 200, "text/event-stream", body);
        d.end_stream(m[1].address(), seq, signed).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        d.sweep();
        assert_eq!(d.take_late(), vec![m[0].address()]);
    }

    /// A stream piped to the user whose signed end does not check out (signed over another
    /// body, or by another key) is given up like one that broke off; one that outlives the
    /// request's time is cut off for the user; one past the size limit is refused.
    #[tokio::test]
    async fn a_stream_whose_end_does_not_check_out_or_comes_late_is_not_whole() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 1).await;
        let user = ask_streamed(&d);
        let relay = fetched(&d, &m[0]).await;
        d.open_stream(m[0].address(), relay.seq, 200, "text/plain")
            .unwrap();
        d.stream_piece(m[0].address(), relay.seq, b"abc").unwrap();
        let forged = signed(&d, &m[0], relay.request, 200, "text/plain", b"abd");
        assert!(matches!(
            d.end_stream(m[0].address(), relay.seq, forged),
            Err(Refusal::BadResponse(_))
        ));
        let (pieces, end) = user.await.unwrap();
        assert_eq!(joined(&pieces), "abc");
        assert!(matches!(end, Err(Refusal::StreamBroken(_))), "{end:?}");
        assert!(d.receipts().is_empty(), "paid for a stream it did not sign");

        // `BodilessOpener`: a status with no body would reach the user whole, unsigned.
        let user = ask(&d);
        let relay = fetched(&d, &m[0]).await;
        for status in [101, 204, 304] {
            assert!(matches!(
                d.open_stream(m[0].address(), relay.seq, status, ""),
                Err(Refusal::BadResponse(why)) if why.contains("no body")
            ));
        }
        let body = Bytes::from_static(b"");
        let signed = signed(&d, &m[0], relay.request, 204, "", &body);
        let whole = Answer {
            status: 204,
            content_type: String::new(),
            body,
        };
        d.respond(m[0].address(), relay.seq, whole, signed).unwrap();
        assert_eq!(user.await.unwrap().unwrap().status, 204);

        let user = ask_streamed(&d);
        let seq = stream(&d, &m[0], &["slow"], false).await.unwrap();
        let too_much = vec![b'x'; MAX_STREAM_BYTES];
        assert!(matches!(
            d.stream_piece(m[0].address(), seq, &too_much),
            Err(Refusal::BadResponse(why)) if why.contains("at most")
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        d.sweep();
        let (pieces, end) = user.await.unwrap();
        assert_eq!(joined(&pieces), "slow");
        assert!(matches!(end, Err(Refusal::Timeout(_))), "{end:?}");
    }

    /// `SlowStreamer`: a member opens its stream first, then trickles. The user's answer
    /// follows whichever member is furthest ahead and agrees with what was sent, and ends once
    /// an agreeing answer is whole: nobody waits on the slowest.
    #[tokio::test]
    async fn a_slow_first_streamer_does_not_hold_the_user_back() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let user = ask_streamed(&d);
        let seq = stream(&d, &m[0], &["one "], false).await.unwrap();
        // m1 streams further and faster.
        let relay = fetched(&d, &m[1]).await;
        d.open_stream(m[1].address(), seq, 200, "text/event-stream")
            .unwrap();
        d.stream_piece(m[1].address(), seq, b"one two ").unwrap();
        // m2 answers whole, and agrees: the user's answer ends whole at once.
        answer_as(&d, &m[2], "one two three", "text/event-stream")
            .await
            .unwrap();
        let (pieces, end) = user.await.unwrap();
        assert_eq!(end, Ok(()));
        assert_eq!(joined(&pieces), "one two three");
        // The slow ones finish later, agreeing: nothing to dispute.
        d.stream_piece(m[1].address(), seq, b"three").unwrap();
        let body = b"one two three";
        let end_of = |k: &Keypair| signed(&d, k, relay.request, 200, "text/event-stream", body);
        d.end_stream(m[1].address(), seq, end_of(&m[1])).unwrap();
        d.stream_piece(m[0].address(), seq, b"two three").unwrap();
        d.end_stream(m[0].address(), seq, end_of(&m[0])).unwrap();
        assert!(d.take_evidence().is_empty());
        assert_eq!(d.receipts().len(), 3);
    }

    /// What `service status` shows of a gateway: each request counted by how it ended, and
    /// the latency of the answers.
    #[tokio::test]
    async fn the_gateway_counts_how_it_answered_and_how_fast() {
        let (d, m) = connected(ResponseMethod::Unanimous {}, 2).await;
        assert_eq!(d.stats(), Stats::default());
        let user = ask(&d);
        answer(&d, &m[0], "x").await.unwrap();
        answer(&d, &m[1], "x").await.unwrap();
        user.await.unwrap().unwrap();
        let user = ask(&d);
        answer(&d, &m[0], "x").await.unwrap();
        answer(&d, &m[1], "y").await.unwrap();
        assert_eq!(user.await.unwrap(), Err(Refusal::Disagreed));
        let user = ask(&d);
        tokio::time::sleep(Duration::from_millis(250)).await;
        d.sweep();
        assert!(matches!(user.await.unwrap(), Err(Refusal::Timeout(_))));
        d.set_council(Council {
            members: vec![],
            up: Err("down".into()),
        });
        assert!(ask(&d).await.unwrap().is_err());
        let s = d.stats();
        assert_eq!(
            (
                s.answered,
                s.streamed,
                s.disagreed,
                s.timed_out,
                s.refused,
                s.window
            ),
            (1, 0, 1, 1, 1, 1)
        );
        assert!(s.p50_ms > 0.0 && s.p99_ms >= s.p50_ms, "{s:?}");
    }

    /// `ErrorDresser`: the right body under another status (or content type) is another
    /// answer: members sign the status and content type with the body, so it is evidence.
    #[tokio::test]
    async fn the_right_body_under_another_status_is_another_answer() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let _user = ask(&d);
        for (k, status) in m.iter().zip([500, 200, 200]) {
            let relay = fetched(&d, k).await;
            let body = Bytes::from_static(b"same");
            let honest = signed(&d, k, relay.request, status, "text/plain", &body);
            // Signed as 200 and sent as 500: refused.
            if status == 500 {
                let lying = signed(&d, k, relay.request, 200, "text/plain", &body);
                let sent = Answer {
                    status,
                    content_type: "text/plain".into(),
                    body: body.clone(),
                };
                assert!(d.respond(k.address(), relay.seq, sent, lying).is_err());
            }
            let sent = Answer {
                status,
                content_type: "text/plain".into(),
                body,
            };
            d.respond(k.address(), relay.seq, sent, honest).unwrap();
        }
        assert_eq!(d.take_evidence().len(), 1);
    }

    /// `member` answers its next request whole with `status` and `body`.
    async fn answer_status(
        d: &Dispatcher,
        member: &Keypair,
        status: u16,
        body: &'static [u8],
    ) -> Result<SignedReceipt, Refusal> {
        let relay = fetched(d, member).await;
        let signed = signed(d, member, relay.request, status, "application/json", body);
        let answer = Answer {
            status,
            content_type: "application/json".into(),
            body: Bytes::from_static(body),
        };
        d.respond(member.address(), relay.seq, answer, signed)
    }

    /// Weighted: the same body under another status is another answer, so it ties, and the
    /// tie waits for the answer that breaks it (a review found the first of the two won).
    #[tokio::test]
    async fn weighted_tells_answers_apart_by_status_too() {
        let (d, m) = connected(ResponseMethod::Weighted { weight_bps: 5_000 }, 3).await;
        let user = ask(&d);
        answer_status(&d, &m[0], 200, b"{}").await.unwrap();
        answer_status(&d, &m[1], 500, b"{}").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!user.is_finished(), "a tie answered");
        answer_status(&d, &m[2], 500, b"{}").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().status, 500);
    }

    /// `StallingOpener`: a member opens its stream first under a status the council does not
    /// give, then sends nothing. Once most of the council answered otherwise, the user's
    /// answer is broken off at once, not held until the request's time runs out.
    #[tokio::test]
    async fn a_stream_most_of_the_council_contradicts_is_broken_off_at_once() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let user = ask_streamed(&d);
        let relay = fetched(&d, &m[0]).await;
        d.open_stream(m[0].address(), relay.seq, 500, "application/json")
            .unwrap();
        answer_status(&d, &m[1], 200, b"{}").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!user.is_finished(), "broken off by one answer of three");
        answer_status(&d, &m[2], 200, b"{}").await.unwrap();
        let (pieces, end) = tokio::time::timeout(Duration::from_millis(100), user)
            .await
            .expect("held until the request's time ran out")
            .unwrap();
        assert!(pieces.is_empty());
        assert!(matches!(end, Err(Refusal::StreamBroken(_))), "{end:?}");
    }

    /// A user that reads slowly holds what it has not read as one buffer, however many
    /// pieces the members cut it into (a review found one-byte pieces cost 72 times their
    /// bytes, queued one by one).
    #[tokio::test]
    async fn what_a_slow_user_has_not_read_waits_as_one_buffer() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 1).await;
        let reply = {
            let d = d.clone();
            tokio::spawn(async move { d.submit("POST", "/", "", Bytes::new(), true).await })
        };
        let relay = fetched(&d, &m[0]).await;
        d.open_stream(m[0].address(), relay.seq, 200, "text/event-stream")
            .unwrap();
        let Ok(Reply::Stream(mut streamed)) = reply.await.unwrap() else {
            panic!("not streamed");
        };
        for _ in 0..10_000 {
            d.stream_piece(m[0].address(), relay.seq, b"x").unwrap();
        }
        let first = streamed.body.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 10_000);
    }

    /// A user that cannot take a stream (HTTP/1.0) gets the answer whole, even under the
    /// optimistic method.
    #[tokio::test]
    async fn a_user_that_cannot_take_a_stream_gets_the_answer_whole() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 1).await;
        let reply = {
            let d = d.clone();
            tokio::spawn(async move { d.submit("POST", "/", "", Bytes::new(), false).await })
        };
        stream(&d, &m[0], &["data: a\n\n", "data: b\n\n"], true)
            .await
            .unwrap();
        let Ok(Reply::Whole(answer)) = reply.await.unwrap() else {
            panic!("streamed to a user that cannot take it");
        };
        assert_eq!(answer.body, "data: a\n\ndata: b\n\n");
    }

    /// Weighted and unanimous wait for streams to end, signed, and answer whole.
    #[tokio::test]
    async fn weighted_and_unanimous_answer_streams_whole_once_they_end() {
        for method in [
            ResponseMethod::Weighted { weight_bps: 5_000 },
            ResponseMethod::Unanimous {},
        ] {
            let (d, m) = connected(method, 3).await;
            let user = ask(&d);
            for k in &m {
                stream(&d, k, &["data: a\n\n", "data: b\n\n"], true)
                    .await
                    .unwrap();
            }
            let answer = user.await.unwrap().unwrap();
            assert_eq!(answer.body, "data: a\n\ndata: b\n\n");
            assert_eq!(answer.content_type, "text/event-stream");
            assert_eq!(d.receipts().len(), 3);
        }
    }

    #[tokio::test]
    async fn optimistic_answers_with_the_first_and_the_rest_check_it() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 3).await;
        let user = ask(&d);
        answer(&d, &m[1], "fast").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().body, "fast");
        answer(&d, &m[0], "fast").await.unwrap();
        // A late checker that differs: evidence, once every member answered.
        answer(&d, &m[2], "other").await.unwrap();
        let evidence = d.take_evidence();
        assert_eq!(evidence.len(), 1);
        assert!(
            matches!(&evidence[0], Evidence::Hashes(r) if r.len() == 3),
            "{evidence:?}"
        );
    }

    #[tokio::test]
    async fn weighted_answers_with_what_most_of_the_quorum_gave() {
        let (d, m) = connected(ResponseMethod::Weighted { weight_bps: 6_000 }, 5).await;
        let user = ask(&d);
        // Quorum 3 of 5: one liar first, then two that agree.
        answer(&d, &m[0], "lie").await.unwrap();
        answer(&d, &m[1], "truth").await.unwrap();
        assert!(!user.is_finished());
        answer(&d, &m[2], "truth").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().body, "truth");
    }

    /// Quorum 2 of 3, the liar first: a tie waits for the third response, which breaks it.
    #[tokio::test]
    async fn weighted_waits_past_a_tie_for_the_response_that_breaks_it() {
        let (d, m) = connected(ResponseMethod::Weighted { weight_bps: 5_000 }, 3).await;
        let user = ask(&d);
        answer(&d, &m[0], "lie").await.unwrap();
        answer(&d, &m[1], "truth").await.unwrap();
        tokio::task::yield_now().await;
        assert!(!user.is_finished(), "answered on a tie");
        answer(&d, &m[2], "truth").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().body, "truth");
    }

    #[tokio::test]
    async fn unanimous_answers_only_when_all_agree() {
        let (d, m) = connected(ResponseMethod::Unanimous {}, 3).await;
        let user = ask(&d);
        for k in &m {
            answer(&d, k, "same").await.unwrap();
        }
        assert_eq!(user.await.unwrap().unwrap().body, "same");
        assert!(d.take_evidence().is_empty());
        let user = ask(&d);
        answer(&d, &m[0], "same").await.unwrap();
        answer(&d, &m[1], "same").await.unwrap();
        answer(&d, &m[2], "liar").await.unwrap();
        assert_eq!(user.await.unwrap(), Err(Refusal::Disagreed));
        assert_eq!(d.take_evidence().len(), 1);
    }

    /// Every response is paid, at its member's price, in one cumulative receipt per member.
    #[tokio::test]
    async fn each_response_is_acknowledged_cumulatively_at_the_members_price() {
        let (d, m) = connected(ResponseMethod::Optimistic {}, 1).await;
        for body in ["abc", "de"] {
            let user = ask(&d);
            let receipt = answer(&d, &m[0], body).await.unwrap();
            user.await.unwrap().unwrap();
            assert_eq!(
                receipt.verify(CHAIN, &Keypair::from_seed([9; 32]).public()),
                Ok(())
            );
            if body == "de" {
                // 2 responses at 10 each, 5 bytes at 1 each.
                assert_eq!((receipt.receipt.responses, receipt.receipt.units), (2, 5));
                assert_eq!(receipt.receipt.owed, Amount(25));
            }
        }
        assert_eq!(d.receipts().len(), 1);
    }

    /// Byzantine members at the gateway: one that answers twice, answers for another's request
    /// or body, or is not on the council, is refused and paid nothing more.
    #[tokio::test]
    async fn forged_repeated_or_foreign_responses_are_refused() {
        let (d, m) = connected(ResponseMethod::Unanimous {}, 2).await;
        let _user = ask(&d);
        let relay = fetched(&d, &m[0]).await;
        let body = Bytes::from_static(b"ok");
        let sign = |k: &Keypair, body: &Bytes| signed(&d, k, relay.request, 200, "", body);
        let a = |body: &Bytes| Answer {
            status: 200,
            content_type: String::new(),
            body: body.clone(),
        };
        // Signed over another body than the one sent.
        let other = Bytes::from_static(b"not ok");
        assert!(matches!(
            d.respond(m[0].address(), relay.seq, a(&body), sign(&m[0], &other)),
            Err(Refusal::BadResponse(_))
        ));
        // Signed by another member.
        assert!(matches!(
            d.respond(m[0].address(), relay.seq, a(&body), sign(&m[1], &body)),
            Err(Refusal::BadResponse(_))
        ));
        let stranger = Keypair::from_seed([77; 32]);
        assert!(matches!(
            d.respond(
                stranger.address(),
                relay.seq,
                a(&body),
                sign(&stranger, &body)
            ),
            Err(Refusal::BadResponse(_))
        ));
        d.respond(m[0].address(), relay.seq, a(&body), sign(&m[0], &body))
            .unwrap();
        assert!(matches!(
            d.respond(m[0].address(), relay.seq, a(&body), sign(&m[0], &body)),
            Err(Refusal::BadResponse(_))
        ));
        assert_eq!(d.receipts()[0].receipt.responses, 1);
    }

    /// Requests wait until every member connected (asked for a request): a member still
    /// starting its server would otherwise be named late for requests it could not answer.
    #[tokio::test]
    async fn requests_wait_until_every_member_connected() {
        let (d, m) = gateway(ResponseMethod::Unanimous {}, 2);
        connect(&d, &m[..1]).await;
        let refused = d.submit("GET", "/", "", Bytes::new(), true).await;
        assert!(matches!(refused, Err(Refusal::Down(why)) if why.contains("1 of 2")));
        connect(&d, &m[1..]).await;
        let user = ask(&d);
        answer(&d, &m[0], "x").await.unwrap();
        answer(&d, &m[1], "x").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().body, "x");
        assert!(d.take_late().is_empty());
    }

    /// A member that does not answer in time is named late; the user hears the council did
    /// not answer; a service not up answers nobody.
    #[tokio::test]
    async fn silent_members_are_named_late_and_a_down_service_answers_nobody() {
        let (d, m) = connected(ResponseMethod::Unanimous {}, 2).await;
        let user = ask(&d);
        answer(&d, &m[0], "x").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        d.sweep();
        assert!(matches!(user.await.unwrap(), Err(Refusal::Timeout(_))));
        assert_eq!(d.take_late(), vec![m[1].address()]);
        d.set_council(Council {
            members: vec![],
            up: Err("its council has 0 of 2 members".into()),
        });
        let refused = d.submit("GET", "/", "", Bytes::new(), true).await;
        assert!(matches!(refused, Err(Refusal::Down(why)) if why.contains("0 of 2")));
    }

    /// A gateway whose answers agree when their numbers are within a millionth.
    fn tolerant(method: ResponseMethod, n: u8) -> (Arc<Dispatcher>, Vec<Keypair>) {
        gateway_of(ServiceSpec {
            equivalence: Equivalence::NumericTolerance {
                abs_ppb: 1_000,
                rel_ppb: 1_000,
            },
            ..spec(method, n)
        })
    }

    /// Under a tolerance, answers whose numbers differ within it are one answer: weighted
    /// counts them together, unanimous agrees; one beyond it is another.
    #[tokio::test]
    async fn answers_within_the_tolerance_count_as_one() {
        let (d, m) = tolerant(ResponseMethod::Weighted { weight_bps: 6_000 }, 5);
        connect(&d, &m).await;
        let user = ask(&d);
        answer(&d, &m[0], "[0.5]").await.unwrap();
        answer(&d, &m[1], "[0.1000001]").await.unwrap();
        answer(&d, &m[2], "[0.1]").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().body, "[0.1000001]");
        let (d, m) = tolerant(ResponseMethod::Unanimous {}, 3);
        connect(&d, &m).await;
        let user = ask(&d);
        for (k, body) in m.iter().zip(["[0.1]", "[0.1000002]", "[0.0999999]"]) {
            answer(&d, k, body).await.unwrap();
        }
        assert_eq!(user.await.unwrap().unwrap().body, "[0.1]");
        // Equivalent answers are nothing to judge.
        assert!(d.take_evidence().is_empty());
        for k in &m {
            assert!(d.next_for(&k.address(), Duration::ZERO).await.is_none());
        }
        let user = ask(&d);
        for (k, body) in m.iter().zip(["[0.1]", "[0.1000002]", "[0.2]"]) {
            answer(&d, k, body).await.unwrap();
        }
        assert!(matches!(user.await.unwrap(), Err(Refusal::Disagreed)));
    }

    /// A member whose answers are long holds the gateway once per pair of answers, not at
    /// every arrival: five answers that agree within the tolerance, each in its own bytes,
    /// are compared ten times (each pair once; before, every answer against every other at
    /// each arrival, and all again at the close).
    #[tokio::test]
    async fn each_pair_of_answers_is_compared_once() {
        let (d, m) = tolerant(ResponseMethod::Weighted { weight_bps: 10_000 }, 5);
        connect(&d, &m).await;
        let user = ask(&d);
        COMPARED.with(|c| c.set(0));
        for (i, k) in m.iter().enumerate() {
            answer(&d, k, &format!("[0.{}]", 1_000_000 + i))
                .await
                .unwrap();
        }
        assert_eq!(COMPARED.with(std::cell::Cell::get), 10);
        assert_eq!(user.await.unwrap().unwrap().body, "[0.1000000]");
    }

    /// A tolerance is not transitive: under the unanimous method every pair must agree, not
    /// each with the first (the middle answer first agreed with both ends, which did not agree
    /// with each other, and the user was answered as if the council agreed).
    #[tokio::test]
    async fn unanimous_wants_every_pair_within_the_tolerance() {
        let (d, m) = tolerant(ResponseMethod::Unanimous {}, 3);
        connect(&d, &m).await;
        let user = ask(&d);
        for (k, body) in m.iter().zip(["[1.0000009]", "[1.0]", "[1.0000018]"]) {
            answer(&d, k, body).await.unwrap();
        }
        assert!(matches!(user.await.unwrap(), Err(Refusal::Disagreed)));
    }

    /// `member`'s judgement of `task`, as an honest member makes it.
    fn judgement(d: &Dispatcher, member: &Keypair, task: &JudgeTask) -> SignedJudgement {
        let own = task
            .answers
            .iter()
            .find(|a| a.signed.provider == member.public())
            .unwrap();
        let (mut agree, mut differ) = (Vec::new(), Vec::new());
        for a in &task.answers {
            let h = a.signed.response.response;
            if h == own.signed.response.response || agree.contains(&h) || differ.contains(&h) {
                continue;
            }
            if gridwork_verify::answers_equivalent(&d.spec().equivalence, own.into(), a.into())
                .is_same()
            {
                agree.push(h);
            } else {
                differ.push(h);
            }
        }
        gridwork_types::StreamJudgement {
            service: d.service(),
            request: task.request,
            own: own.signed.response.response,
            agree,
            differ,
        }
        .sign(CHAIN, member)
    }

    async fn judge_task(d: &Dispatcher, member: &Keypair) -> JudgeTask {
        use gridwork_types::Decode;
        match d.next_for(&member.address(), Duration::from_secs(1)).await {
            Some(Work::Judge(task)) => JudgeTask::from_bytes(&task).unwrap(),
            other => panic!("answers to judge, not {other:?}"),
        }
    }

    /// `LyingMember` under a tolerance: once every member answered, the answers go to each to
    /// judge (before any request); their judgements are the evidence for `JudgeResponses`. A
    /// judgement of another's answer as its own, a second one, or one from a member not asked
    /// is refused.
    #[tokio::test]
    async fn answers_beyond_the_tolerance_go_to_the_council_to_judge() {
        let (d, m) = tolerant(ResponseMethod::Optimistic {}, 3);
        connect(&d, &m).await;
        let user = ask(&d);
        answer(&d, &m[0], "[0.1]").await.unwrap();
        assert_eq!(user.await.unwrap().unwrap().body, "[0.1]");
        answer(&d, &m[1], "[0.1000001]").await.unwrap();
        answer(&d, &m[2], "[0.9]").await.unwrap();
        // A request after: each member judges first.
        let user = ask(&d);
        let mut tasks = Vec::new();
        for k in &m {
            tasks.push(judge_task(&d, k).await);
        }
        assert_eq!(tasks[0].answers.len(), 3);
        let mut other = judgement(&d, &m[0], &tasks[0]);
        other.judgement.own = tasks[0].answers[1].signed.response.response;
        let other = other.judgement.sign(CHAIN, &m[0]);
        assert!(matches!(
            d.judged(m[0].address(), other),
            Err(Refusal::BadResponse(_))
        ));
        let stranger = Keypair::from_seed([77; 32]);
        assert!(d
            .judged(stranger.address(), judgement(&d, &m[0], &tasks[0]))
            .is_err());
        for (k, task) in m.iter().zip(&tasks) {
            d.judged(k.address(), judgement(&d, k, task)).unwrap();
        }
        assert!(d
            .judged(m[0].address(), judgement(&d, &m[0], &tasks[0]))
            .is_err());
        let evidence = d.take_evidence();
        let [Evidence::Judged {
            responses,
            judgements,
        }] = evidence.as_slice()
        else {
            panic!("{evidence:?}")
        };
        assert_eq!((responses.len(), judgements.len()), (3, 3));
        let liar = tasks[0].answers[2].signed.response.response;
        assert!(judgements[0].judgement.differ.contains(&liar));
        assert!(judgements[1].judgement.differ.contains(&liar));
        // The request waiting behind the judging goes on.
        for k in &m {
            answer(&d, k, "[1]").await.unwrap();
        }
        assert_eq!(user.await.unwrap().unwrap().body, "[1]");
    }

    /// A member that does not judge in time is not late; the judgements that came are the
    /// evidence once the case's time runs out.
    #[tokio::test]
    async fn judgements_that_came_in_time_are_the_evidence() {
        let (d, m) = tolerant(ResponseMethod::Optimistic {}, 3);
        connect(&d, &m).await;
        let user = ask(&d);
        for (k, body) in m.iter().zip(["[1]", "[1.0000001]", "[7]"]) {
            answer(&d, k, body).await.unwrap();
        }
        user.await.unwrap().unwrap();
        for k in &m[..2] {
            let task = judge_task(&d, k).await;
            d.judged(k.address(), judgement(&d, k, &task)).unwrap();
        }
        d.sweep();
        assert!(d.take_evidence().is_empty(), "the case is still open");
        tokio::time::sleep(d.answer_within()).await;
        d.sweep();
        assert!(d.take_late().is_empty());
        let evidence = d.take_evidence();
        assert!(
            matches!(evidence.as_slice(), [Evidence::Judged { judgements, .. }] if judgements.len() == 2),
            "{evidence:?}"
        );
    }

    /// Under a tolerance, honest streams differ in their bytes: the user's stream follows the
    /// member that opened it alone, and another's whole answer neither ends nor breaks it.
    #[tokio::test]
    async fn a_tolerant_stream_follows_the_member_that_opened_it() {
        let (d, m) = tolerant(ResponseMethod::Optimistic {}, 3);
        connect(&d, &m).await;
        let user = ask_streamed(&d);
        let relay = fetched(&d, &m[0]).await;
        d.open_stream(m[0].address(), relay.seq, 200, "text/event-stream")
            .unwrap();
        d.stream_piece(m[0].address(), relay.seq, b"data: 0.25\n\n")
            .unwrap();
        answer_as(
            &d,
            &m[1],
            "data: 0.2500001\n\ndata: end\n\n",
            "text/event-stream",
        )
        .await
        .unwrap();
        d.stream_piece(m[0].address(), relay.seq, b"data: end\n\n")
            .unwrap();
        let signed = signed(
            &d,
            &m[0],
            relay.request,
            200,
            "text/event-stream",
            b"data: 0.25\n\ndata: end\n\n",
        );
        d.end_stream(m[0].address(), relay.seq, signed).unwrap();
        let (pieces, end) = user.await.unwrap();
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(joined(&pieces), "data: 0.25\n\ndata: end\n\n");
    }

    /// A refused answer costs no comparison: an answer again, or one its member did not sign,
    /// is refused before anything is compared (a review found them compared first).
    #[tokio::test]
    async fn a_refused_response_costs_no_comparison() {
        let (d, m) = tolerant(ResponseMethod::Unanimous {}, 3);
        connect(&d, &m).await;
        let _user = ask(&d);
        let relay = fetched(&d, &m[0]).await;
        let body = Bytes::from_static(b"[0.1]");
        let whole = |body: &Bytes| Answer {
            status: 200,
            content_type: "text/plain".into(),
            body: body.clone(),
        };
        let s = signed(&d, &m[0], relay.request, 200, "text/plain", &body);
        d.respond(m[0].address(), relay.seq, whole(&body), s.clone())
            .unwrap();
        let relay1 = fetched(&d, &m[1]).await;
        let other = Bytes::from_static(b"[0.1000001]");
        let s1 = signed(&d, &m[1], relay1.request, 200, "text/plain", &other);
        d.respond(m[1].address(), relay1.seq, whole(&other), s1)
            .unwrap();
        COMPARED.with(|c| c.set(0));
        assert!(d
            .respond(m[0].address(), relay.seq, whole(&body), s)
            .is_err());
        let relay2 = fetched(&d, &m[2]).await;
        let forged = signed(&d, &m[1], relay2.request, 200, "text/plain", &other);
        assert!(d
            .respond(m[2].address(), relay2.seq, whole(&other), forged)
            .is_err());
        assert_eq!(COMPARED.with(std::cell::Cell::get), 0);
    }

    /// An answer that came in time and is being compared (outside the lock) when the request's
    /// time runs out is not named late: its member is not dropped for the gateway's work.
    #[tokio::test]
    async fn an_answer_being_compared_when_time_runs_out_is_not_late() {
        let (d, m) = tolerant(ResponseMethod::Unanimous {}, 3);
        connect(&d, &m).await;
        let user = ask(&d);
        let relay = fetched(&d, &m[0]).await;
        {
            let mut inner = d.lock();
            inner
                .open
                .get_mut(&relay.seq)
                .unwrap()
                .pending
                .push(m[0].address());
        }
        tokio::time::sleep(d.answer_within()).await;
        d.sweep();
        let late = d.take_late();
        assert!(!late.contains(&m[0].address()), "{late:?}");
        assert!(late.contains(&m[1].address()), "{late:?}");
        assert!(matches!(user.await.unwrap(), Err(Refusal::Timeout(_))));
    }

    /// `CaseFiller`: a member answers junk to request after request while nobody judges
    /// (an accomplice that never does keeps each case open its whole time). It holds at most
    /// its share of the gateway's cases, so a third member's lie after it is still sent to be
    /// judged (before, the flood filled all 64 cases and the lie went unjudged).
    #[tokio::test]
    async fn a_member_that_fills_the_cases_does_not_hide_another_liar() {
        let (d, m) = tolerant(ResponseMethod::Optimistic {}, 3);
        connect(&d, &m).await;
        // The next request for `k`, past any answers it was sent to judge.
        async fn request_for(d: &Dispatcher, k: &Keypair) -> Arc<Relay> {
            loop {
                match d.next_for(&k.address(), Duration::from_secs(1)).await {
                    Some(Work::Request(relay)) => return relay,
                    Some(Work::Judge(_)) => continue,
                    None => panic!("no request for the member"),
                }
            }
        }
        let give = |k: &Keypair, relay: &Relay, body: &'static str| {
            let body = Bytes::from_static(body.as_bytes());
            let s = signed(&d, k, relay.request, 200, "text/plain", &body);
            d.respond(
                k.address(),
                relay.seq,
                Answer {
                    status: 200,
                    content_type: "text/plain".into(),
                    body,
                },
                s,
            )
            .unwrap();
        };
        for _ in 0..MAX_CASES + 6 {
            let user = ask(&d);
            for (k, body) in m.iter().zip(["[1]", "[1.0000001]", "junk"]) {
                let relay = request_for(&d, k).await;
                give(k, &relay, body);
            }
            user.await.unwrap().unwrap();
        }
        let filled = d.lock().cases.len();
        assert_eq!(filled, MAX_CASES / 3, "the filler holds its share");
        // Now the second member lies, the filler answers honestly.
        let user = ask(&d);
        let mut request = None;
        for (k, body) in m.iter().zip(["[1]", "[9]", "[1.0000001]"]) {
            let relay = request_for(&d, k).await;
            request = Some(relay.request);
            give(k, &relay, body);
        }
        user.await.unwrap().unwrap();
        let inner = d.lock();
        let case = inner
            .cases
            .get(&request.unwrap())
            .expect("the lie is sent to be judged");
        assert_eq!(case.suspects, vec![m[1].address()]);
    }
}
