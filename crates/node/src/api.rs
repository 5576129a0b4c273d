//! The HTTP API: `/v1/...`, `/health`, `/metrics`, the event stream and the OpenAPI document.
//!
//! HTTP status codes and error codes live here and only here: the ledger and the mempool
//! return typed errors and this module maps them. Every error body is
//! `{"error": {"code": "...", "message": "..."}}` with a stable snake_case code.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::stream::{Stream, StreamExt};
use gridwork_api::{
    frames, signed_request_message, BlockList, ChunkIds, ChunksStored, ErrorBody, ErrorDetail,
    JobList, KeyGrant, KeyGrants, LogAppended, LogStream, MissingChunks, PinAnswer, PostDecline,
    PostLog, ProviderList, SubmitTx, Submitted, DIGEST_HEADER, KEY_PROOF_HEADER, SIGNATURE_HEADER,
    SIGNATURE_WINDOW_MS,
};
#[allow(unused_imports)] // Named only by the `#[utoipa::path]` attributes.
use gridwork_api::{
    AccountView, BlockEvent, BlockView, ChainInfo, Health, JobView, PinView, ProviderView,
    StorageView, TaskLog, TxStatus,
};
use gridwork_transfer::StoreError as ChunkStoreError;
use gridwork_types::{Address, Amount, Hash, PublicKey, Signature};
use serde::Deserialize;

use crate::logs::LogError;
use crate::mempool::MempoolError;
use crate::node::{AdmitError, BlockId, Node, NodeError};
use crate::ServeLimits;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest `POST /v1/chunks/missing` question (a million ids in binary, with room).
const MISSING_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The largest `POST /v1/chunks/fetch` question.
const FETCH_BODY_BYTES: usize = 1024 * 1024;

/// The largest sealed chunk accepted (the largest chunk plus sealing overhead).
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

mod openapi;

pub use openapi::document as openapi_document;
use openapi::{
    Binary, BODY_TIMEOUT, BUSY, DIGEST_HEADER_DOC, FETCH_SIGNATURE_DOC, IDS_BODY_DOC, INTERNAL,
    KEY_PROOF_HEADER_DOC, LOG_SIGNATURE_DOC, SIGNATURE_401, SIGNATURE_HEADER_DOC,
};

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            NodeError::BadSignature { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_signature",
                e.to_string(),
            ),
            NodeError::NotAssigned { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "not_assigned", e.to_string())
            }
            NodeError::NotPermitted { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "not_permitted", e.to_string())
            }
            NodeError::NotAProvider { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "not_a_provider", e.to_string())
            }
            NodeError::Log(LogError::Gap { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "log_gap", e.to_string())
            }
            NodeError::Log(LogError::Full { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "log_full", e.to_string())
            }
            NodeError::Chunks(ChunkStoreError::Mismatch { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "chunk_mismatch",
                e.to_string(),
            ),
            NodeError::Chunks(ChunkStoreError::Full { .. }) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                e.to_string(),
            ),
            NodeError::StoreFull { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                e.to_string(),
            ),
            NodeError::TreeIncomplete { .. } => {
                ApiError::new(StatusCode::CONFLICT, "tree_incomplete", e.to_string())
            }
            NodeError::AccountQuota { .. } => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "account_quota_exceeded",
                e.to_string(),
            ),
            NodeError::PinBaseGone { .. } => {
                ApiError::new(StatusCode::CONFLICT, "pin_base_gone", e.to_string())
            }
            NodeError::PinSetMismatch { .. } => {
                ApiError::new(StatusCode::CONFLICT, "pin_set_mismatch", e.to_string())
            }
            NodeError::TreeNotPinned { .. } => {
                ApiError::new(StatusCode::CONFLICT, "tree_not_pinned", e.to_string())
            }
            NodeError::NotKeyHolder { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "not_key_holder", e.to_string())
            }
            NodeError::TooManyGrants => {
                ApiError::new(StatusCode::CONFLICT, "too_many_grants", e.to_string())
            }
            NodeError::Halted { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "halted", e.to_string())
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl From<AdmitError> for ApiError {
    fn from(e: AdmitError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            AdmitError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_transaction"),
            AdmitError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "transaction_too_large"),
            AdmitError::Halted { .. } => (StatusCode::SERVICE_UNAVAILABLE, "halted"),
            AdmitError::InputNotHeld { .. } => (StatusCode::FORBIDDEN, "input_not_held"),
            AdmitError::Mempool(MempoolError::AlreadyPending { .. }) => {
                (StatusCode::CONFLICT, "already_pending")
            }
            AdmitError::Mempool(MempoolError::Full { .. } | MempoolError::FullBytes { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "mempool_full")
            }
            AdmitError::Mempool(MempoolError::Underpriced { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "mempool_underpriced")
            }
            AdmitError::Mempool(MempoolError::SenderFull { .. }) => {
                (StatusCode::TOO_MANY_REQUESTS, "sender_mempool_full")
            }
            AdmitError::Mempool(MempoolError::Invalid(tx)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, tx.code())
            }
        };
        ApiError::new(status, code, message)
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    if let Some(late) = timed_out(&r) {
        return late;
    }
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {MAX_BODY_BYTES} bytes"),
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("request body is not the expected JSON: {}", r.body_text()),
    )
}

fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid {what}: {e}"),
        )
    })
}

/// What the handlers share: the node, the memory budget for bodies, and the event streams
/// open per client.
#[derive(Clone)]
struct ApiState {
    node: Node,
    budget: Budget,
    streams: StreamsPerClient,
}

/// The client a request came from (its address, or an IPv6 client's /64), set by the server
/// (`serve_with`); absent when the router is used on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientAddr(pub(crate) std::net::IpAddr);

/// The event streams open, by client: one client may hold only
/// [`MAX_EVENT_STREAMS_PER_CLIENT`] of the node's [`MAX_EVENT_SUBSCRIBERS`] (or four addresses
/// would hold them all), and when all are taken a newcomer holding fewer than the busiest
/// client by two or more takes the place of that client's oldest stream, which is told to
/// resume later (so sixteen addresses cannot lock everyone else out; it takes one stream each
/// from 256 addresses).
#[derive(Clone)]
struct StreamsPerClient {
    open: Arc<std::sync::Mutex<OpenStreams>>,
    max: usize,
    per_client: usize,
}

impl Default for StreamsPerClient {
    fn default() -> Self {
        StreamsPerClient {
            open: Arc::default(),
            max: MAX_EVENT_SUBSCRIBERS,
            per_client: MAX_EVENT_STREAMS_PER_CLIENT,
        }
    }
}

#[derive(Default)]
struct OpenStreams {
    next_id: u64,
    total: usize,
    /// Each client's streams, oldest first: an id and how to tell it its place was given
    /// away.
    by_client: std::collections::HashMap<ClientAddr, Vec<(u64, Arc<tokio::sync::Notify>)>>,
}

/// One client's place among the event streams, given back when its stream ends.
struct StreamPlace {
    streams: StreamsPerClient,
    client: ClientAddr,
    id: u64,
    /// Notified when a newcomer took this place.
    displaced: Arc<tokio::sync::Notify>,
}

/// Why no event stream was opened.
#[derive(Debug, PartialEq, Eq)]
enum NoStream {
    /// The client holds its share.
    ClientFull,
    /// The node serves as many as it may, and nobody holds more than the client by two.
    NodeFull,
}

impl StreamsPerClient {
    fn take(&self, client: ClientAddr) -> Result<StreamPlace, NoStream> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.by_client.get(&client).map_or(0, Vec::len);
        if mine >= self.per_client {
            return Err(NoStream::ClientFull);
        }
        if open.total >= self.max {
            let busiest = open
                .by_client
                .iter()
                // Ties go to the client whose oldest stream is oldest: the same choice every time.
                .max_by_key(|(_, streams)| {
                    (
                        streams.len(),
                        std::cmp::Reverse(streams.first().map_or(0, |s| s.0)),
                    )
                })
                .map(|(c, streams)| (*c, streams.len()));
            // Only for a newcomer that then holds fewer than the busiest did: otherwise two
            // clients would take places back and forth.
            let Some((busiest, _)) = busiest.filter(|(_, held)| mine + 1 < *held) else {
                return Err(NoStream::NodeFull);
            };
            let streams = open
                .by_client
                .get_mut(&busiest)
                .expect("the busiest holds some");
            let (_, displaced) = streams.remove(0);
            displaced.notify_one();
            open.total -= 1;
        }
        open.total += 1;
        open.next_id += 1;
        let id = open.next_id;
        let displaced = Arc::new(tokio::sync::Notify::new());
        open.by_client
            .entry(client)
            .or_default()
            .push((id, displaced.clone()));
        Ok(StreamPlace {
            streams: self.clone(),
            client,
            id,
            displaced,
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(streams) = open.by_client.get_mut(&self.client) else {
            return;
        };
        // A displaced stream's place is already someone else's.
        let Some(at) = streams.iter().position(|(id, _)| *id == self.id) else {
            return;
        };
        streams.remove(at);
        if streams.is_empty() {
            open.by_client.remove(&self.client);
        }
        open.total -= 1;
    }
}

impl FromRef<ApiState> for StreamsPerClient {
    fn from_ref(state: &ApiState) -> StreamsPerClient {
        state.streams.clone()
    }
}

impl FromRef<ApiState> for Node {
    fn from_ref(state: &ApiState) -> Node {
        state.node.clone()
    }
}

/// The budget, for the client a request came from.
impl axum::extract::FromRequestParts<ApiState> for Budget {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &ApiState,
    ) -> Result<Budget, Self::Rejection> {
        Ok(Budget {
            client: parts.extensions.get::<ClientAddr>().copied(),
            ..state.budget.clone()
        })
    }
}

/// How long a request waits for its share of the body budget before it is answered `busy`.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// Memory for the bodies the API holds (uploads being read, fetch answers being sent), in
/// KiB permits: a request takes its share before it reads or builds a body and gives it back
/// when the body is gone, so a thousand uploads at once wait or are told `busy` instead of
/// taking 64 GiB.
///
/// Unsigned work (whole-chunk reads, unsigned fetches, missing-chunk questions) also draws on
/// its client's part, an eighth of the whole ([`UNSIGNED_SHARE`]; at least 72 MiB where the
/// whole has it): a stranger reading slowly from a few addresses cannot hold the budget
/// everyone's data plane needs.
#[derive(Clone)]
struct Budget {
    permits: Arc<tokio::sync::Semaphore>,
    total_kib: usize,
    /// Each client's part for unsigned work.
    clients:
        Arc<std::sync::Mutex<std::collections::HashMap<ClientAddr, Arc<tokio::sync::Semaphore>>>>,
    /// The client of this request (none when the router is used without `serve_with`).
    client: Option<ClientAddr>,
}

/// The part of the budget one client's unsigned work may hold: one in this many.
const UNSIGNED_SHARE: usize = 8;

/// A share of the budget: the whole's, and for unsigned work its client's too.
struct Share {
    all: tokio::sync::OwnedSemaphorePermit,
    client: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Share {
    fn merge(&mut self, other: Share) {
        self.all.merge(other.all);
        match (&mut self.client, other.client) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Gives back what the share holds beyond `bytes`.
    fn shrink(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(1024).max(1);
        for permit in std::iter::once(&mut self.all).chain(self.client.as_mut()) {
            if permit.num_permits() > keep {
                drop(permit.split(permit.num_permits() - keep));
            }
        }
    }
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "the node is holding as many request and answer bodies as it allows; try again shortly",
    )
}

impl Budget {
    fn new(bytes: usize) -> Self {
        let total_kib = bytes.div_ceil(1024).max(1);
        Budget {
            permits: Arc::new(tokio::sync::Semaphore::new(total_kib)),
            total_kib,
            clients: Arc::default(),
            client: None,
        }
    }

    /// A share of `bytes` for a signed request, waited for at most [`BUSY_WAIT`].
    async fn take(&self, bytes: usize) -> Result<Share, ApiError> {
        let kib = self.kib(bytes, self.total_kib);
        match tokio::time::timeout(BUSY_WAIT, self.permits.clone().acquire_many_owned(kib)).await {
            Ok(Ok(all)) => Ok(Share { all, client: None }),
            _ => Err(busy()),
        }
    }

    /// A share of `bytes` for unsigned work: from the client's part first, then the whole,
    /// both within [`BUSY_WAIT`].
    async fn take_unsigned(&self, bytes: usize) -> Result<Share, ApiError> {
        let Some(client) = self.client else {
            return self.take(bytes).await;
        };
        // At least room for the largest unsigned request (a 16 MiB missing-chunk question
        // and its answer), where the whole has it.
        let part_kib = (self.total_kib / UNSIGNED_SHARE).max(self.total_kib.min(72 << 10));
        let part = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if !clients.contains_key(&client) {
                // Parts nobody holds go as new clients come, so the map follows the clients
                // of the moment (a pass over it per new client, not per request).
                clients.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < part_kib);
            }
            clients
                .entry(client)
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(part_kib)))
                .clone()
        };
        let both = async {
            let mine = part.acquire_many_owned(self.kib(bytes, part_kib)).await;
            let all = self
                .permits
                .clone()
                .acquire_many_owned(self.kib(bytes, self.total_kib))
                .await;
            (mine, all)
        };
        match tokio::time::timeout(BUSY_WAIT, both).await {
            Ok((Ok(mine), Ok(all))) => Ok(Share {
                all,
                client: Some(mine),
            }),
            _ => Err(busy()),
        }
    }

    fn kib(&self, bytes: usize, most: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024).clamp(1, most)).unwrap_or(u32::MAX)
    }
}

/// The router of every endpoint, with the default [`ServeLimits`].
pub fn router(node: Node) -> Router {
    router_with(node, &ServeLimits::default())
}

/// The router of every endpoint, holding bodies to `limits`.
pub fn router_with(node: Node, limits: &ServeLimits) -> Router {
    let state = ApiState {
        node: node.clone(),
        budget: Budget::new(limits.body_memory_bytes),
        streams: StreamsPerClient::default(),
    };
    let clock = BodyClock {
        idle: limits.body_idle_timeout,
        whole: limits.body_timeout,
        grace: limits.header_read_timeout,
        min_rate: limits.body_min_rate,
    };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/chain", get(chain))
        .route("/v1/txs", post(submit_tx))
        .route("/v1/txs/{hash}", get(get_tx))
        .route("/v1/accounts/{address}", get(get_account))
        .route("/v1/accounts/{address}/storage", get(get_storage))
        .route("/v1/blocks", get(list_blocks))
        .route("/v1/blocks/{id}", get(get_block))
        .route("/v1/events", get(events))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/declines", post(post_decline))
        .route(
            "/v1/jobs/{id}/tasks/{task}/logs",
            get(get_log).post(post_log),
        )
        .route("/v1/providers", get(list_providers))
        .route("/v1/providers/{address}", get(get_provider))
        .route(
            "/v1/chunks/missing",
            post(missing_chunks).layer(DefaultBodyLimit::max(MISSING_BODY_BYTES)),
        )
        .route("/v1/chunks", post(put_chunks))
        .route(
            "/v1/chunks/fetch",
            post(fetch_chunks).layer(DefaultBodyLimit::max(FETCH_BODY_BYTES)),
        )
        .route("/v1/chunks/{id}", get(get_chunk).put(put_chunk))
        .route("/v1/trees/{cid}/keys", get(get_grants).post(post_grant))
        .route("/v1/trees/{cid}/pin", get(get_pin).put(pin_tree))
        .route("/v1/trees/{cid}/pin-from/{base}", put(pin_tree_from))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(clock, time_bodies))
        .layer(axum::middleware::from_fn_with_state(node, observe_request))
        .with_state(state)
}

/// How long a request body may take: no gap longer than `idle`, the whole within `whole`.
#[derive(Debug, Clone, Copy)]
struct BodyClock {
    idle: Duration,
    whole: Duration,
    /// A body must have arrived at `min_rate` bytes a second after this (and within
    /// `whole` in any case): a 64 KiB JSON body trickled a byte at a time would otherwise
    /// hold its connection, which nobody may take while a request is in flight, for `whole`.
    grace: Duration,
    min_rate: u64,
}

/// A request body that stopped arriving in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body {0}")]
struct BodyTimedOut(&'static str);

/// Puts every request body on the clock ([`BodyClock`]): a client that sends headers and then
/// a byte a minute holds nothing for long.
async fn time_bodies(
    State(clock): State<BodyClock>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let empty = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (req.headers().get(header::CONTENT_LENGTH).is_none()
            && req.headers().get(header::TRANSFER_ENCODING).is_none());
    if empty {
        return next.run(req).await;
    }
    let start = tokio::time::Instant::now();
    let whole = start + clock.whole;
    let req = req.map(|body| {
        let timed = futures_util::stream::unfold(
            Some((body.into_data_stream(), 0u64)),
            move |state| async move {
                let (mut stream, received) = state?;
                let now = tokio::time::Instant::now();
                // What has arrived buys time at the minimum rate (after the grace).
                let earned =
                    Duration::from_secs_f64(received as f64 / clock.min_rate.max(1) as f64);
                let paced = start + clock.grace + earned;
                let (deadline, why) = if paced < whole {
                    (paced, "arrived slower than the node's minimum rate")
                } else {
                    (whole, "took longer than the node waits for a whole body")
                };
                let left = deadline.saturating_duration_since(now);
                let (wait, why) = if clock.idle < left {
                    (
                        clock.idle,
                        "paused longer than the node waits between pieces",
                    )
                } else {
                    (left, why)
                };
                match tokio::time::timeout(wait, stream.next()).await {
                    Ok(Some(Ok(bytes))) => {
                        let received = received + bytes.len() as u64;
                        Some((Ok(bytes), Some((stream, received))))
                    }
                    Ok(Some(Err(e))) => Some((Err(e), None)),
                    Ok(None) => None,
                    Err(_) => Some((Err(axum::Error::new(BodyTimedOut(why))), None)),
                }
            },
        );
        Body::from_stream(timed)
    });
    next.run(req).await
}

/// The `body_timeout` error, if `error` comes of a body that stopped arriving in time.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(late) = cause.downcast_ref::<BodyTimedOut>() {
            return Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                late.to_string(),
            ));
        }
        source = cause.source();
    }
    None
}

/// Why a body could not be read: too large, too slow, or broken.
fn body_error(e: &axum::Error, limit: usize) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return too_large(limit);
        }
        if let Some(late) = cause.downcast_ref::<BodyTimedOut>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                late.to_string(),
            );
        }
        source = cause.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_body",
        format!("the request body could not be read: {e}"),
    )
}

/// The budget a body takes at first and then in steps as it arrives.
const BODY_STEP: usize = 256 * 1024;

/// Who a body is read for: a signed write draws on the whole budget; unsigned work on its
/// client's part too.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    Signed,
    Unsigned,
}

impl Budget {
    async fn take_for(&self, reader: Reader, bytes: usize) -> Result<Share, ApiError> {
        match reader {
            Reader::Signed => self.take(bytes).await,
            Reader::Unsigned => self.take_unsigned(bytes).await,
        }
    }
}

/// The length a request declares (`Content-Length`), if any.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads a body of at most `limit` bytes, taking its share of the budget as its bytes
/// arrive rather than for its declared length: a client that declares 64 MiB and trickles
/// holds what it sent, not 64 MiB (sixteen such uploads from one funded account used to hold
/// the whole budget). Every body the API buffers is read this way, unsigned questions too
/// (a 16 MiB missing-chunk question used to be read whole before its share was asked).
async fn read_body_budgeted(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
    budget: &Budget,
    reader: Reader,
) -> Result<(Bytes, Share), ApiError> {
    use http_body_util::BodyExt;
    if declared.is_some_and(|d| d > limit) {
        return Err(too_large(limit));
    }
    let first = declared.map_or(BODY_STEP, |d| d.clamp(1, BODY_STEP));
    let mut memory = budget.take_for(reader, first).await?;
    let mut held = first;
    // Address space for the declared length; pages are touched (and resident) as written.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| body_error(&e, limit))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = out.len() + data.len();
        if len > limit {
            return Err(too_large(limit));
        }
        if len > held {
            let more = (len - held).next_multiple_of(BODY_STEP).max(held / 4);
            memory.merge(budget.take_for(reader, more).await?);
            held += more;
        }
        out.extend_from_slice(&data);
    }
    Ok((Bytes::from(out), memory))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("this route takes bodies of at most {limit} bytes; send less at once"),
    )
}

/// A signed data-plane write. The signer is checked from the headers before a byte of the
/// body is read (an unsigned 60 MiB upload used to be read and parsed first): the signature
/// covers the digest in [`DIGEST_HEADER`]; then the body is read, within the route's limit and
/// the memory budget, and must match that digest ([`SignedWrite::expect`]).
struct SignedWrite {
    signer: Address,
    digest: Hash,
    body: Bytes,
    /// The body's share of the budget, held while the write is handled.
    _memory: Share,
}

impl SignedWrite {
    async fn read(
        node: &Node,
        budget: &Budget,
        headers: &HeaderMap,
        body: Body,
        (method, path): (&str, &str),
        limit: usize,
    ) -> Result<SignedWrite, ApiError> {
        if !headers.contains_key(SIGNATURE_HEADER) {
            return Err(signature_required());
        }
        let digest = headers
            .get(DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "digest_required",
                    format!(
                        "a signed write carries the digest its signature covers in the \
                         {DIGEST_HEADER} header (hex BLAKE3; gridwork's client sends it)"
                    ),
                )
            })?;
        let digest: Hash = digest.parse().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_digest",
                format!("the {DIGEST_HEADER} header is not 64 hex digits"),
            )
        })?;
        let signer = data_signer(node, headers, method, path, &digest)?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large(limit));
        }
        let (body, memory) =
            read_body_budgeted(body, limit, declared, budget, Reader::Signed).await?;
        Ok(SignedWrite {
            signer,
            digest,
            body,
            _memory: memory,
        })
    }

    /// Refuses a body that is not the one signed.
    fn expect(&self, actual: &Hash) -> Result<(), ApiError> {
        if *actual == self.digest {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
            format!(
                "the body's digest is {actual}, not the {} the request signed; nothing was stored",
                self.digest
            ),
        ))
    }
}

/// Counts every request by route template, method and status, and times it to its
/// response head (`Router::layer` runs inside the routing, so the matched route is known;
/// the fallback has none and counts as `unmatched`).
async fn observe_request(
    State(node): State<Node>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = crate::metrics::method_label(req.method());
    let response = next.run(req).await;
    node.metrics().http_request(
        route.as_deref(),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "node",
    summary = "Liveness and head height",
    responses(
        (status = 200, description = "The node is live", body = Health),
        (status = 503, description = "The node halted (a block failed to commit); `reason` says why", body = Health),
    ),
)]
async fn health(State(node): State<Node>) -> Response {
    let health = node.health();
    let status = if health.reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(health)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
    ),
)]
async fn metrics(State(node): State<Node>) -> Response {
    (
        [(header::CONTENT_TYPE, gridwork_api::exposition::CONTENT_TYPE)],
        node.render_metrics(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "node",
    summary = "This document",
    responses(
        (status = 200, description = "The OpenAPI document of this API", body = Object, content_type = "application/json"),
    ),
)]
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/chain",
    tag = "chain",
    summary = "Chain id, head, parameters and the node key",
    responses(
        (status = 200, description = "The chain as this node holds it", body = ChainInfo),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn chain(State(node): State<Node>) -> Result<Response, ApiError> {
    Ok(Json(node.chain_info()?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/txs",
    tag = "chain",
    summary = "Submit a signed transaction to the mempool",
    request_body = SubmitTx,
    responses(
        (status = 202, description = "Accepted into the mempool", body = Submitted),
        (status = 400, description = "`malformed_json` (not a SubmitTx), `malformed_transaction` (not hex, or not a transaction)", body = ErrorBody),
        (status = 403, description = "`input_not_held`: a job names an input tree whose key the node was not given", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`already_pending`: the same transaction waits in the mempool", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `transaction_too_large`", body = ErrorBody),
        (status = 422, description = "The ledger refuses it; the code names why (`bad_signature`, `nonce_replayed`, `nonce_future`, `fee_too_low`, `insufficient_balance`, ...)", body = ErrorBody),
        (status = 429, description = "`sender_mempool_full`: the sender has as many transactions pending as one account may", body = ErrorBody),
        (status = 503, description = "`mempool_full`, `mempool_underpriced` (the pool is full: the message names the fee that takes the place of cheaper transactions), `halted`", body = ErrorBody),
    ),
)]
async fn submit_tx(
    State(node): State<Node>,
    body: Result<Json<SubmitTx>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(json_rejection)?;
    let bytes = hex::decode(body.tx.trim())
        .map_err(|e| AdmitError::Malformed(format!("`tx` is not hex: {e}")))?;
    let hash = node.submit_bytes(&bytes)?;
    Ok((StatusCode::ACCEPTED, Json(Submitted { hash })).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/txs/{hash}",
    tag = "chain",
    summary = "A transaction, pending or committed",
    params(
        ("hash" = Hash, Path, description = "Transaction hash: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The transaction and, once committed, its receipt", body = TxStatus),
        (status = 400, description = "`bad_request`: not a hash", body = ErrorBody),
        (status = 404, description = "`not_found`: neither pending nor in a block", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn get_tx(State(node): State<Node>, Path(hash): Path<String>) -> Result<Response, ApiError> {
    let hash: Hash = parse("transaction hash", &hash)?;
    match node.tx(&hash)? {
        Some(status) => Ok(Json(status).into_response()),
        None => Err(ApiError::not_found(format!("transaction {hash}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{address}",
    tag = "chain",
    summary = "An account",
    params(
        ("address" = Address, Path, description = "A bech32 address (grid1...)"),
    ),
    responses(
        (status = 200, description = "The account (all zero if it never held anything)", body = AccountView),
        (status = 400, description = "`bad_request`: not an address", body = ErrorBody),
    ),
)]
async fn get_account(
    State(node): State<Node>,
    Path(address): Path<String>,
) -> Result<Response, ApiError> {
    let address: Address = parse("address", &address)?;
    Ok(Json(node.account(&address)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{address}/storage",
    tag = "data",
    summary = "What the node stores for an account",
    params(
        ("address" = Address, Path, description = "A bech32 address (grid1...)"),
    ),
    responses(
        (status = 200, description = "Pinned and pending bytes, and the quota", body = StorageView),
        (status = 400, description = "`bad_request`: not an address", body = ErrorBody),
    ),
)]
async fn get_storage(
    State(node): State<Node>,
    Path(address): Path<String>,
) -> Result<Response, ApiError> {
    let address: Address = parse("address", &address)?;
    Ok(Json(node.storage(&address)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
    before: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/blocks",
    tag = "chain",
    summary = "Recent blocks, newest first",
    params(
        ("limit" = Option<u32>, Query, description = "At most this many (default 20; more than 1000 is 1000)"),
        ("before" = Option<u64>, Query, description = "Only blocks below this height"),
    ),
    responses(
        (status = 200, description = "Block headers, newest first", body = BlockList),
        (status = 400, description = "`bad_request`: a query parameter is not a number", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn list_blocks(
    State(node): State<Node>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let limit = q.limit.unwrap_or(20).min(1000) as usize;
    Ok(Json(BlockList {
        blocks: node.blocks(limit, q.before)?,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/blocks/{id}",
    tag = "chain",
    summary = "A block by height or hash",
    params(
        ("id" = String, Path, pattern = "^(latest|[0-9]{1,20}|(0x)?[0-9a-fA-F]{64})$", description = "`latest`, a height, or a block hash"),
    ),
    responses(
        (status = 200, description = "The block header and its transaction hashes", body = BlockView),
        (status = 400, description = "`bad_request`: not a block id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such block", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn get_block(
    State(node): State<Node>,
    budget: Budget,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: BlockId = id
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let Some((height, header)) = node.block_header(id)? else {
        return Err(ApiError::not_found("block"));
    };
    // Unsigned, and a full block's answer is over a megabyte: it draws on the body budget
    // like a chunk read, or readers that never read would each hold one. The share is taken
    // from the header's count before the hashes are read.
    let count = header.tx_count as usize;
    let mut memory = budget
        .take_unsigned(BLOCK_JSON_BYTES + BLOCK_JSON_BYTES_PER_TX * count)
        .await?;
    let block = node.block_at(height, &header)?;
    let mut json = Vec::with_capacity(BLOCK_JSON_BYTES + BLOCK_JSON_BYTES_PER_TX * count);
    serde_json::to_writer(&mut json, &block).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding block: {e}"),
        )
    })?;
    memory.shrink(json.capacity());
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        held_body(Bytes::from(json), memory),
    )
        .into_response())
}

/// What a block's JSON takes besides its transactions' hashes (the header's fields).
const BLOCK_JSON_BYTES: usize = 1024;
/// What each transaction hash takes in a block's JSON (64 hex digits, quotes and a comma).
const BLOCK_JSON_BYTES_PER_TX: usize = 67;

/// Most event-stream subscribers at once; more get 503 `too_many_subscribers`.
pub(crate) const MAX_EVENT_SUBSCRIBERS: usize = 256;

/// Event streams one client (an address, an IPv6 /64) may hold at once.
pub(crate) const MAX_EVENT_STREAMS_PER_CLIENT: usize = 16;

/// `GET /v1/events`: committed blocks as server-sent events, each with its height as the
/// event id. A subscriber that falls more than the node's ring of blocks behind gets a
/// `lagged` event naming the height it last received and is disconnected (it holds nothing
/// meanwhile); it catches up from `GET /v1/blocks` and subscribes again.
/// `GET /v1/events`: committed blocks as server-sent events, each with its height as the
/// event id. A client that reconnects with `Last-Event-ID: H` first gets the blocks after H
/// that the node still holds (`RECENT_EVENTS`), then live ones; if the block after H is no
/// longer held, a `lagged` event says so and the stream ends (catch up from `GET /v1/blocks`).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "chain",
    summary = "Committed blocks as server-sent events",
    params(
        ("last-event-id" = Option<u64>, Header, description = "Resume after this height"),
    ),
    responses(
        (status = 200, description = "An event stream: `block` events (data: BlockEvent, id: height) and a final `lagged` event if the client fell behind", body = BlockEvent, content_type = "text/event-stream"),
        (status = 400, description = "`bad_last_event_id`: Last-Event-ID is not a height", body = ErrorBody),
        (status = 503, description = "`too_many_subscribers`: poll GET /v1/blocks or retry later", body = ErrorBody),
    ),
)]
async fn events(
    State(node): State<Node>,
    State(streams): State<StreamsPerClient>,
    client: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID is the block height of the last event received",
                    )
                })?,
        ),
    };
    // The places below are the cap for clients the server knows; this one bounds the
    // router used on its own, and memory in any case (a displaced stream lets go of its
    // subscription when it is next polled). Subscribed before a place is taken, so a
    // newcomer refused here displaces nobody.
    let sub = node
        .subscribe_limited(if client.is_some() {
            2 * MAX_EVENT_SUBSCRIBERS
        } else {
            MAX_EVENT_SUBSCRIBERS
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_subscribers",
                format!(
                    "the node serves at most {MAX_EVENT_SUBSCRIBERS} event streams; poll GET /v1/blocks or retry later"
                ),
            )
        })?;
    let place = match client {
        Some(axum::Extension(client)) => Some(streams.take(client).map_err(|why| {
            let message = match why {
                NoStream::ClientFull => format!(
                    "one client may hold at most {MAX_EVENT_STREAMS_PER_CLIENT} event streams; close one, or poll GET /v1/blocks"
                ),
                NoStream::NodeFull => format!(
                    "the node serves at most {MAX_EVENT_SUBSCRIBERS} event streams; poll GET /v1/blocks or retry later"
                ),
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_subscribers", message)
        })?),
        None => None,
    };
    // Subscribed first, then the backlog read: a block committed in between is in both, and
    // is sent once (heights only rise).
    let (backlog, gap) = match resume.map(|h| (h, node.events_after(h))) {
        None => (Vec::new(), None),
        Some((_, Ok(backlog))) => (backlog, None),
        Some((after, Err(oldest))) => (Vec::new(), Some((after, oldest))),
    };
    let last = resume.unwrap_or(0);
    let backlog: std::collections::VecDeque<_> = backlog.into();
    let state = ((sub, place), backlog, last, gap);
    let stream = futures_util::stream::unfold(Some(state), |state| async move {
        use tokio::sync::broadcast::error::RecvError;
        let ((mut sub, place), mut backlog, last, gap) = state?;
        if let Some((after, oldest)) = gap {
            let event = SseEvent::default()
                .event("lagged")
                .id(after.to_string())
                .data(format!("the node no longer holds the blocks after height {after} (it holds events from height {oldest}); catch up from GET /v1/blocks and subscribe again"));
            return Some((Ok(event), None));
        }
        loop {
            let next = match backlog.pop_front() {
                Some(block) => Ok(block),
                None => {
                    let displaced = async {
                        match &place {
                            Some(p) => p.displaced.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        next = sub.rx.recv() => next,
                        () = displaced => {
                            let event = SseEvent::default()
                                .event("lagged")
                                .id(last.to_string())
                                .data(format!("the node serves at most {MAX_EVENT_SUBSCRIBERS} event streams and gave this one's place to a client holding fewer; subscribe again later with Last-Event-ID: {last}, or poll GET /v1/blocks"));
                            return Some((Ok(event), None));
                        }
                    }
                }
            };
            let block = match next {
                Ok(block) => block,
                // Too slow: say from where to catch up, then end (the subscription is freed).
                Err(RecvError::Lagged(n)) => {
                    let event = SseEvent::default()
                        .event("lagged")
                        .id(last.to_string())
                        .data(format!("{n} blocks missed after height {last}; catch up from GET /v1/blocks and subscribe again"));
                    return Some((Ok(event), None));
                }
                Err(RecvError::Closed) => return None,
            };
            let height = block.block.height;
            if height <= last {
                continue;
            }
            let event = SseEvent::default()
                .event("block")
                .id(height.to_string())
                .json_data(&*block)
                .unwrap_or_else(|_| SseEvent::default().event("error"));
            return Some((Ok(event), Some(((sub, place), backlog, height, None))));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "A job and its tasks",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "`bad_request`: not a job id", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job", body = ErrorBody),
    ),
)]
async fn get_job(State(node): State<Node>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: Hash = parse("job id", &id)?;
    match node.job(&id) {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::not_found(format!("job {id}"))),
    }
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/declines",
    tag = "jobs",
    summary = "A provider says why it will not bid",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
    ),
    request_body = PostDecline,
    responses(
        (status = 204, description = "Recorded", body = ()),
        (status = 400, description = "`bad_request` (bad job id, key or signature hex), `malformed_json`", body = ErrorBody),
        (status = 401, description = "`signature_expired`: `time_ms` more than 10 minutes from the node's clock", body = ErrorBody),
        (status = 403, description = "`not_a_provider`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`bad_signature`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn post_decline(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: Result<Json<PostDecline>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id: Hash = parse("job id", &id)?;
    let Json(body) = body.map_err(json_rejection)?;
    let (key, sig) = signer(&body.public_key, &body.signature)?;
    let now = crate::now_ms();
    if now.abs_diff(body.time_ms) > SIGNATURE_WINDOW_MS {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_expired",
            format!(
                "the decline was signed at {} ms, {} s from the node's clock; sign it again (and check the clock)",
                body.time_ms,
                now.abs_diff(body.time_ms) / 1000
            ),
        ));
    }
    node.decline(&id, &key, &body.reason, body.time_ms, &sig)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A request's signer: its public key and signature from hex.
fn signer(public_key: &str, signature: &str) -> Result<(PublicKey, Signature), ApiError> {
    let bad = |what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{what} is not valid hex of the right length"),
        )
    };
    let key: [u8; 32] = hex::decode(public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("public_key"))?;
    let key = PublicKey::from_bytes(&key).map_err(|_| bad("public_key"))?;
    let sig: [u8; 64] = hex::decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("signature"))?;
    Ok((key, Signature::from_bytes(&sig)))
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/tasks/{task}/logs",
    tag = "jobs",
    summary = "An executor or council member appends its run's output",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
        ("task" = u32, Path, description = "Task index"),
    ),
    request_body = PostLog,
    responses(
        (status = 200, description = "Appended; the size of the log now", body = LogAppended),
        (status = 400, description = "`bad_request` (bad job id, task index, key or signature hex), `malformed_json`", body = ErrorBody),
        (status = 403, description = "`not_assigned`: the signer neither executes nor checks this task", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job or task", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`log_gap`: `offset` is past the end of the node's copy", body = ErrorBody),
        (status = 413, description = "`log_full`, `body_too_large`", body = ErrorBody),
        (status = 422, description = "`bad_signature`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn post_log(
    State(node): State<Node>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<PostLog>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, task) = task_path(path)?;
    let Json(body) = body.map_err(json_rejection)?;
    let (key, sig) = signer(&body.public_key, &body.signature)?;
    let size = node.append_log(&id, task, &body, &key, &sig)?;
    Ok(Json(LogAppended { size }).into_response())
}

/// The job id and task index of a task's path, with errors the API reports (axum's own
/// answer to a task index that is not a number is plain text).
fn task_path(path: Result<Path<(String, String)>, PathRejection>) -> Result<(Hash, u32), ApiError> {
    let Path((id, task)) =
        path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    Ok((parse("job id", &id)?, parse("task index", &task)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    provider: Option<String>,
    attempt: Option<u32>,
    stream: Option<LogStream>,
    #[serde(default)]
    offset: u64,
}

/// A task log is what a program printed of its decrypted inputs: the request is signed
/// (`gridwork-signature` over the path, with the digest of the query string) by the job's
/// requester, the provider whose log it is, or the task's executor or a council member.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/tasks/{task}/logs",
    tag = "jobs",
    summary = "Part of a task run's log (signed)",
    params(
        ("id" = Hash, Path, description = "Job id: 64 hex digits"),
        ("task" = u32, Path, description = "Task index"),
        ("gridwork-signature" = String, Header, description = LOG_SIGNATURE_DOC),
        ("provider" = Option<Address>, Query, description = "Whose run (default: the executor)"),
        ("attempt" = Option<u32>, Query, description = "The attempt (default: the current one)"),
        ("stream" = Option<LogStream>, Query, description = "stdout (default) or stderr"),
        ("offset" = Option<u64>, Query, description = "Byte offset to read from (default 0)"),
    ),
    responses(
        (status = 200, description = "The log from `offset`, at most 1 MiB", body = TaskLog),
        (status = 400, description = "`bad_request`: bad job id, task index or query", body = ErrorBody),
        (status = 401, description = "`signature_required`, `bad_signature`, `signature_expired`", body = ErrorBody),
        (status = 403, description = "`not_permitted`: the signer is not the requester, the provider, the executor or a council member", body = ErrorBody),
        (status = 404, description = "`not_found`: no such job, task, run or log", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn get_log(
    State(node): State<Node>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (id, task) = task_path(path)?;
    if !headers.contains_key(SIGNATURE_HEADER) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "signature_required",
            format!(
                "task logs are read by the job's requester, the task's executor and its council \
                 only: sign the request in the {SIGNATURE_HEADER} header (gridwork signs with --key)"
            ),
        ));
    }
    let digest = Hash::of(uri.query().unwrap_or_default().as_bytes());
    let reader = request_signer(&node, &headers, "GET", uri.path(), &digest)?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{e}; use ?provider=ADDRESS&attempt=N&stream=stdout|stderr&offset=BYTES"),
        )
    })?;
    let provider = q
        .provider
        .as_deref()
        .map(|p| parse::<Address>("provider", p))
        .transpose()?;
    let log = node.task_log(
        &id,
        task,
        provider,
        q.attempt,
        q.stream.unwrap_or(LogStream::Stdout),
        q.offset,
        &reader,
    )?;
    Ok(Json(log).into_response())
}

/// `?after=&limit=` of a paged list.
#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<u32>,
}

impl PageQuery {
    fn read(
        query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<PageQuery, ApiError> {
        let Query(q) = query
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        Ok(q)
    }

    /// The `after` cursor as a `what` (an address, a job id), if given.
    fn after<T: FromStr>(&self, what: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        self.after.as_deref().map(|a| parse(what, a)).transpose()
    }

    fn limit(&self) -> usize {
        self.limit.map_or(gridwork_api::MAX_PAGE, |l| {
            (l as usize).clamp(1, gridwork_api::MAX_PAGE)
        })
    }
}

#[utoipa::path(
    get,
    path = "/v1/providers",
    tag = "jobs",
    summary = "Registered providers, a page at a time",
    params(
        ("after" = Option<Address>, Query, description = "Only providers after this address (the `next` of the page before)"),
        ("limit" = Option<u32>, Query, description = "At most this many (default and most: 1000)"),
    ),
    responses(
        (status = 200, description = "Providers in address order; `next` names where the next page starts", body = ProviderList),
        (status = 400, description = "`bad_request`: `after` is not an address or `limit` not a number", body = ErrorBody),
    ),
)]
async fn list_providers(
    State(node): State<Node>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = PageQuery::read(query)?;
    let (providers, next) = node.providers_page(q.after("address")?, q.limit());
    Ok(Json(ProviderList { providers, next }).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/providers/{address}",
    tag = "jobs",
    summary = "A provider",
    params(
        ("address" = Address, Path, description = "A bech32 address (grid1...)"),
    ),
    responses(
        (status = 200, description = "The provider", body = ProviderView),
        (status = 400, description = "`bad_request`: not an address", body = ErrorBody),
        (status = 404, description = "`not_found`: not a provider", body = ErrorBody),
    ),
)]
async fn get_provider(
    State(node): State<Node>,
    Path(address): Path<String>,
) -> Result<Response, ApiError> {
    let address: Address = parse("address", &address)?;
    match node.provider(&address) {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(ApiError::not_found(format!("provider {address}"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Open jobs, a page at a time",
    params(
        ("after" = Option<Hash>, Query, description = "Only jobs after this id (the `next` of the page before)"),
        ("limit" = Option<u32>, Query, description = "At most this many (default and most: 1000)"),
    ),
    responses(
        (status = 200, description = "Ids of jobs neither finished nor cancelled, in id order; `next` names where the next page starts", body = JobList),
        (status = 400, description = "`bad_request`: `after` is not a job id or `limit` not a number", body = ErrorBody),
    ),
)]
async fn list_jobs(
    State(node): State<Node>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = PageQuery::read(query)?;
    let (open, next) = node.open_jobs_page(q.after("job id")?, q.limit());
    Ok(Json(JobList { open, next }).into_response())
}

/// The chunk ids a question names: `{"ids": [hex]}`, or (with `content-type:
/// application/octet-stream`) ids of 32 bytes end to end; with whether it was binary.
fn asked_ids(headers: &HeaderMap, body: &[u8]) -> Result<(Vec<Hash>, bool), ApiError> {
    let binary = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if !binary {
        let Json(asked) = Json::<ChunkIds>::from_bytes(body).map_err(json_rejection)?;
        return Ok((asked.ids, false));
    }
    if body.len() % 32 != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_ids",
            format!(
                "a binary question is chunk ids of 32 bytes each; got {} bytes",
                body.len()
            ),
        ));
    }
    let ids = body
        .chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(Hash))
        .collect();
    Ok((ids, true))
}

/// `POST /v1/chunks/missing`: `{"ids": [hex]}` answered `{"missing": [hex]}`, or ids in the
/// binary form ([`asked_ids`]) answered with one bit per id asked, set when the node lacks it
/// (bit `i % 8` of byte `i / 8`): a fifth of the bytes, and none of the hex.
#[utoipa::path(
    post,
    path = "/v1/chunks/missing",
    tag = "data",
    summary = "Which of these chunks the node lacks",
    request_body(content((ChunkIds = "application/json"), (Binary = "application/octet-stream")), description = IDS_BODY_DOC),
    responses(
        (status = 200, description = "JSON: the ids lacking; binary: one bit per id asked, set when lacking (bit i % 8 of byte i / 8)", content((MissingChunks = "application/json"), (Binary = "application/octet-stream"))),
        (status = 400, description = "`malformed_json`, `bad_ids` (binary ids not a multiple of 32 bytes), `bad_body`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`too_many_ids` (more than 1,000,000), `body_too_large` (more than 16 MiB)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn missing_chunks(
    State(node): State<Node>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (body, mut memory) = read_body_budgeted(
        body,
        MISSING_BODY_BYTES,
        declared_length(&headers),
        &budget,
        Reader::Unsigned,
    )
    .await?;
    let (ids, binary) = asked_ids(&headers, &body)?;
    drop(body);
    if ids.len() > 1_000_000 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_ids",
            "ask about at most 1,000,000 chunks at once",
        ));
    }
    // Unsigned and up to 16 MiB each way: the question's share carries over to its ids (no
    // larger than the body they were read from), then the answer's is added (a question that
    // cannot get its share is told `busy` and dropped; one that asked the client's part for
    // more while holding its body would wait on itself on a small budget). The store is asked
    // off the async threads.
    memory.shrink(32 * ids.len());
    let answer_bytes = if binary {
        ids.len().div_ceil(8)
    } else {
        67 * ids.len() + 16
    };
    memory.merge(budget.take_unsigned(answer_bytes).await?);
    let reader = node.clone();
    let (ids, missing) = blocking(move || {
        let missing = reader.missing_chunks(&ids)?;
        Ok((ids, missing))
    })
    .await?;
    let answer = if binary {
        let lacking: std::collections::HashSet<&Hash> = missing.iter().collect();
        let mut bits = vec![0u8; ids.len().div_ceil(8)];
        for (i, id) in ids.iter().enumerate() {
            if lacking.contains(id) {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        bits
    } else {
        serde_json::to_vec(&MissingChunks { missing }).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?
    };
    drop(ids);
    memory.shrink(answer.len());
    let content_type = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        held_body(Bytes::from(answer), memory),
    )
        .into_response())
}

#[utoipa::path(
    put,
    path = "/v1/chunks/{id}",
    tag = "data",
    summary = "Upload one chunk (signed)",
    params(
        ("id" = Hash, Path, description = "Chunk id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The sealed chunk; the digest is BLAKE3 of its id"),
    responses(
        (status = 201, description = "Stored", body = ()),
        (status = 400, description = "`bad_request` (not a chunk id), `bad_digest`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`body_too_large` (more than 8 MiB)", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`, `chunk_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
async fn put_chunk(
    State(node): State<Node>,
    budget: Budget,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id: Hash = parse("chunk id", &id)?;
    let path = format!("/v1/chunks/{id}");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("PUT", &path),
        MAX_CHUNK_BYTES,
    )
    .await?;
    write.expect(&ids_digest([id].iter()))?;
    node.metrics().data_received(write.body.len());
    blocking(move || node.put_chunk_by(&id, &write.body, &write.signer)).await?;
    Ok(StatusCode::CREATED.into_response())
}

#[utoipa::path(
    get,
    path = "/v1/chunks/{id}",
    tag = "data",
    summary = "One chunk, or a byte range of it",
    params(
        ("id" = Hash, Path, description = "Chunk id: 64 hex digits"),
        ("range" = Option<String>, Header, description = "One range: `bytes=a-b`, `bytes=a-` or `bytes=-n`"),
    ),
    responses(
        (status = 200, description = "The sealed chunk", content_type = "application/octet-stream", body = Binary),
        (status = 206, description = "The range asked", content_type = "application/octet-stream", body = Binary),
        (status = 400, description = "`bad_request`: not a chunk id", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 416, description = "The range cannot be served; Content-Range names the size"),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn get_chunk(
    State(node): State<Node>,
    budget: Budget,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id: Hash = parse("chunk id", &id)?;
    // Unsigned, and held until the client takes it: a chunk read draws on the body budget
    // like a fetch answer, or a thousand readers that never read would hold 8 MiB each.
    let mut memory = budget.take_unsigned(MAX_CHUNK_BYTES).await?;
    let reader = node.clone();
    let found = blocking(move || reader.chunk(&id)).await?;
    let Some(bytes) = found else {
        return Err(ApiError::not_found(format!("chunk {id}")));
    };
    memory.shrink(bytes.len());
    let bytes = Bytes::from(bytes);
    let octets = (header::CONTENT_TYPE, "application/octet-stream");
    let ranges = (header::ACCEPT_RANGES, "bytes");
    let Some(range) = headers.get(header::RANGE) else {
        node.metrics().data_served(bytes.len());
        return Ok(([octets, ranges], held_body(bytes, memory)).into_response());
    };
    let total = bytes.len();
    match byte_range(range.to_str().unwrap_or_default(), total) {
        Some((start, end)) => {
            node.metrics().data_served(end + 1 - start);
            Ok((
                StatusCode::PARTIAL_CONTENT,
                [
                    octets,
                    ranges,
                    (
                        header::CONTENT_RANGE,
                        &format!("bytes {start}-{end}/{total}") as &str,
                    ),
                ],
                held_body(bytes.slice(start..=end), memory),
            )
                .into_response())
        }
        None => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
    }
}

/// The inclusive byte range a `Range: bytes=...` header asks of `total` bytes (one range:
/// `a-b`, `a-`, or the last `-n`), or `None` if it cannot be served.
fn byte_range(header: &str, total: usize) -> Option<(usize, usize)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if total == 0 || spec.contains(',') {
        return None;
    }
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (total.checked_sub(n.min(total))?, total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

/// Runs chunk-store work (hashing, file I/O) off the async threads.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

/// `POST /v1/chunks`: several chunks in one body (frames, see `gridwork_api::frames`).
#[utoipa::path(
    post,
    path = "/v1/chunks",
    tag = "data",
    summary = "Upload several chunks (signed)",
    params(
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "Frames (gridwork_api::frames); the digest is BLAKE3 of the frames' chunk ids in order"),
    responses(
        (status = 200, description = "Stored", body = ChunksStored),
        (status = 400, description = "`bad_digest`, `bad_frames`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`, `chunk_mismatch` (a chunk is not its id)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
async fn put_chunks(
    State(node): State<Node>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("POST", "/v1/chunks"),
        frames::MAX_UPLOAD_BYTES + 1024 * 1024,
    )
    .await?;
    let parsed = frames::parse_frames(&write.body, MAX_CHUNK_BYTES)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_frames", e.to_string()))?;
    write.expect(&ids_digest(parsed.iter().map(|(id, _)| id)))?;
    node.metrics().data_received(write.body.len());
    let stored = blocking(move || {
        let mut n = 0u64;
        for (id, frame) in &parsed {
            if let frames::Frame::Chunk(bytes) = frame {
                node.put_chunk_by(id, bytes, &write.signer)?;
                n += 1;
            }
        }
        // Uploads are synced as they arrive, every 64 MiB: the disk writes while the push
        // goes on, and the pin's sync finds little left (it took seconds at the end of a
        // 1 GiB push), and the push's pace is the disk's.
        node.sync_chunks_every(64 << 20)?;
        Ok(n)
    })
    .await?;
    Ok(Json(ChunksStored { stored }).into_response())
}

/// `POST /v1/chunks/fetch {"ids": [...]}`: several chunks in one response (frames).
///
/// A fetch signed by a funded account (`gridwork-signature` over the body's digest) is
/// answered up to [`frames::MAX_RESPONSE_BYTES`]; an unsigned one up to
/// [`frames::UNSIGNED_RESPONSE_BYTES`] (the rest deferred): a stranger's few ids cannot make
/// the node build and hold 64 MiB. The answer holds its share of the body budget until sent.
#[utoipa::path(
    post,
    path = "/v1/chunks/fetch",
    tag = "data",
    summary = "Fetch several chunks",
    params(
        ("gridwork-signature" = Option<String>, Header, description = FETCH_SIGNATURE_DOC),
    ),
    request_body(content((ChunkIds = "application/json"), (Binary = "application/octet-stream")), description = IDS_BODY_DOC),
    responses(
        (status = 200, description = "Frames (gridwork_api::frames): each id's chunk, missing, or deferred (ask again)", content_type = "application/octet-stream", body = Binary),
        (status = 400, description = "`malformed_json`, `bad_ids`, `bad_body`", body = ErrorBody),
        (status = 401, description = "`bad_signature`, `signature_expired` (only when signed)", body = ErrorBody),
        (status = 403, description = "`unfunded_account` (only when signed)", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = "`too_many_ids`, `body_too_large` (more than 1 MiB)", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn fetch_chunks(
    State(node): State<Node>,
    budget: Budget,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The ids are read on the unsigned part whether or not the request is signed: the
    // signature covers the body, so it is checked once the body is in.
    let (body, question) = read_body_budgeted(
        body,
        FETCH_BODY_BYTES,
        declared_length(&headers),
        &budget,
        Reader::Unsigned,
    )
    .await?;
    let (ids, _) = asked_ids(&headers, &body)?;
    if ids.len() > frames::MAX_FETCH_IDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_ids",
            format!("fetch at most {} chunks at once", frames::MAX_FETCH_IDS),
        ));
    }
    let signed = headers.contains_key(SIGNATURE_HEADER);
    let max_bytes = if signed {
        data_signer(
            &node,
            &headers,
            "POST",
            "/v1/chunks/fetch",
            &Hash::of(&body),
        )?;
        frames::MAX_RESPONSE_BYTES
    } else {
        frames::UNSIGNED_RESPONSE_BYTES
    };
    // Room for the largest answer: the cap, one chunk past it, a frame header per id.
    let room = max_bytes + MAX_CHUNK_BYTES + 37 * ids.len();
    let mut memory = if signed {
        budget.take(room).await?
    } else {
        budget.take_unsigned(room).await?
    };
    drop((body, question));
    let reader = node.clone();
    let out = blocking(move || reader.fetch_answer(&ids, max_bytes)).await?;
    // The buffer is what memory holds, and a pooled one may be larger than the answer.
    memory.shrink(out.capacity());
    let length = out.len();
    node.metrics().data_served(length);
    // The body goes back to the buffer pool once sent, and its share of the budget with it.
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        held_body(frames::share(out), memory),
    )
        .into_response())
}

/// A response body whose bytes hold their share of the body budget until the last of them is
/// written or dropped. The share goes with the bytes, not the body: hyper takes a body's
/// bytes into its write queue and drops the body long before a client that does not read
/// has taken them.
fn held_body(bytes: Bytes, memory: Share) -> Body {
    struct Held {
        bytes: Bytes,
        _memory: Share,
    }
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    Body::from(Bytes::from_owner(Held {
        bytes,
        _memory: memory,
    }))
}

/// `PUT /v1/trees/{cid}/pin`: the body is the tree's chunk ids, 32 bytes each; the node
/// keeps them for its retention period from now.
/// The funded ledger account that signed a data-plane write (`gridwork-signature`), or why
/// the write is refused.
fn data_signer(
    node: &Node,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    digest: &Hash,
) -> Result<Address, ApiError> {
    let address = request_signer(node, headers, method, path, digest)?;
    let account = node.account(&address);
    let held = Amount(account.balance.0.saturating_add(account.stake_locked.0));
    let min = node.data_min_funds();
    if held < min {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unfunded_account",
            format!(
                "{address} holds {held} (balance and stake) on the ledger; the node stores data \
                 only for accounts holding at least {min} (send it some GRID first)"
            ),
        ));
    }
    Ok(address)
}

/// The account that signed a request (`gridwork-signature` over [`signed_request_message`]
/// for this node, within the time window), or why it is refused.
fn request_signer(
    node: &Node,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    digest: &Hash,
) -> Result<Address, ApiError> {
    let refused = |status, code, message: String| ApiError::new(status, code, message);
    let value = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(signature_required)?;
    let bad = |why: &str| {
        refused(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            format!("the {SIGNATURE_HEADER} header {why}; it is <public key hex>.<time ms>.<signature hex>"),
        )
    };
    let mut parts = value.split('.');
    let (Some(key), Some(time), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("has not three parts"));
    };
    let key: PublicKey = key.parse().map_err(|_| bad("names no valid public key"))?;
    let time_ms: u64 = time.parse().map_err(|_| bad("has no valid time"))?;
    let sig: [u8; 64] = hex::decode(sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("has no 64-byte signature"))?;
    let now = crate::now_ms();
    if now.abs_diff(time_ms) > SIGNATURE_WINDOW_MS {
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            "signature_expired",
            format!(
                "the request was signed at {time_ms} ms, {} s from the node's clock; sign it again (and check the clock)",
                now.abs_diff(time_ms) / 1000
            ),
        ));
    }
    let message = signed_request_message(&node.public_key(), method, path, time_ms, digest);
    key.verify(&message, &Signature::from_bytes(&sig))
        .map_err(|_| {
            bad("does not verify for this request to this node (it signs the node_key of GET /v1/chain)")
        })?;
    Ok(key.address())
}

fn signature_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "signature_required",
        format!(
            "uploads, pins and key grants must be signed by a funded ledger account in the \
             {SIGNATURE_HEADER} header (gridwork signs with --key)"
        ),
    )
}

/// BLAKE3 of the ids, in order: what an upload signs.
fn ids_digest<'a>(ids: impl Iterator<Item = &'a Hash>) -> Hash {
    let bytes: Vec<u8> = ids.flat_map(|id| id.0).collect();
    Hash::of(&bytes)
}

/// The holder proof a request to pin a tree or share its key carries.
fn key_proof(headers: &HeaderMap) -> Result<Hash, ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "key_proof_required",
            format!(
                "pinning a tree or sharing its key needs the {KEY_PROOF_HEADER} header: the hex of \
                 BLAKE3 derive_key(\"gridwork tree holder proof v2\", data key || tree id || \
                 node key) (gridwork's client sends it)"
            ),
        )
    };
    let value = headers
        .get(KEY_PROOF_HEADER)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    parse("key proof", value)
}

#[utoipa::path(
    get,
    path = "/v1/trees/{cid}/pin",
    tag = "data",
    summary = "What the node keeps of a pinned tree",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The pin", body = PinView),
        (status = 400, description = "`bad_request`: not a tree id", body = ErrorBody),
        (status = 404, description = "`not_pinned`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn get_pin(
    State(node): State<Node>,
    budget: Budget,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    // Unsigned, and a pin file may list two million chunks: reading, decoding and sorting it
    // draws on the client's part of the body budget.
    let size = usize::try_from(node.pin_file_bytes(&cid)).unwrap_or(usize::MAX);
    let _memory = budget.take_unsigned(size.saturating_mul(2)).await?;
    let view = {
        let node = node.clone();
        blocking(move || node.pin_view(&cid)).await?
    };
    match view {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_pinned",
            format!("tree {cid} is not pinned on this node"),
        )),
    }
}

/// Chunk ids of 32 bytes each, end to end, or a `bad_pin` error naming the length.
fn chunk_ids(bytes: &[u8]) -> Result<Vec<Hash>, ApiError> {
    if bytes.len() % 32 != 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_pin",
            format!(
                "a pin lists chunk ids of 32 bytes each; got {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(Hash))
        .collect())
}

/// The pin's answer: until when, and what the pinner's account now keeps.
fn pinned(node: &Node, cid: &Hash, until_ms: u64, pinner: &Address) -> Response {
    let (used, quota) = node.pinned_bytes(pinner);
    Json(PinAnswer {
        cid: *cid,
        until_ms,
        account_pinned_bytes: used,
        account_quota_bytes: quota,
    })
    .into_response()
}

#[utoipa::path(
    put,
    path = "/v1/trees/{cid}/pin",
    tag = "data",
    summary = "Pin a tree (signed)",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
        ("gridwork-key-proof" = Hash, Header, description = KEY_PROOF_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "The tree's chunk ids, 32 bytes each; the digest is BLAKE3 of the body"),
    responses(
        (status = 200, description = "Pinned", body = PinAnswer),
        (status = 400, description = "`bad_request` (bad tree id or key proof), `bad_digest`, `key_proof_required`, `bad_pin`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`, `not_key_holder`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`tree_incomplete`: a chunk named is not stored", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
async fn pin_tree(
    State(node): State<Node>,
    budget: Budget,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    let path = format!("/v1/trees/{cid}/pin");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("PUT", &path),
        frames::MAX_UPLOAD_BYTES,
    )
    .await?;
    write.expect(&Hash::of(&write.body))?;
    let proof = key_proof(&headers)?;
    let pinner = write.signer;
    let ids = chunk_ids(&write.body)?;
    let until_ms = {
        let node = node.clone();
        blocking(move || node.pin_tree(&cid, &ids, &proof, &pinner)).await?
    };
    Ok(pinned(&node, &cid, until_ms, &pinner))
}

/// `PUT /v1/trees/{cid}/pin-from/{base}`: body `chunk_set [32] || added u32 LE || added ids
/// || removed ids` (docs/data-plane.md).
#[utoipa::path(
    put,
    path = "/v1/trees/{cid}/pin-from/{base}",
    tag = "data",
    summary = "Pin a tree as changes to a pinned base (signed)",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
        ("base" = Hash, Path, description = "Base tree content id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
        ("gridwork-key-proof" = Hash, Header, description = KEY_PROOF_HEADER_DOC),
    ),
    request_body(content = Binary, content_type = "application/octet-stream", description = "chunk_set [32] || added count u32 LE || added ids || removed ids (docs/data-plane.md); the digest is BLAKE3 of the body"),
    responses(
        (status = 200, description = "Pinned", body = PinAnswer),
        (status = 400, description = "`bad_request` (bad tree ids or key proof), `bad_digest`, `key_proof_required`, `bad_pin`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`, `not_key_holder`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`pin_base_gone`, `pin_set_mismatch`, `tree_incomplete`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
        (status = 507, description = "`store_full`, `account_quota_exceeded`", body = ErrorBody),
    ),
)]
async fn pin_tree_from(
    State(node): State<Node>,
    budget: Budget,
    Path((cid, base)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    let base: Hash = parse("base tree id", &base)?;
    let path = format!("/v1/trees/{cid}/pin-from/{base}");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("PUT", &path),
        frames::MAX_UPLOAD_BYTES,
    )
    .await?;
    write.expect(&Hash::of(&write.body))?;
    let proof = key_proof(&headers)?;
    let (pinner, body) = (write.signer, &write.body);
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_pin",
            format!(
                "a pin from a base is the expected chunk set digest (32 bytes), the count of ids added (u32 LE), the ids added and the ids removed (32 bytes each); got {} bytes",
                body.len()
            ),
        )
    };
    let chunk_set = body
        .get(..32)
        .and_then(|b| b.try_into().ok())
        .map(Hash)
        .ok_or_else(bad)?;
    let added = body
        .get(32..36)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(bad)? as usize;
    let ids = chunk_ids(&body[36..])?;
    if added > ids.len() {
        return Err(bad());
    }
    let (added, removed) = ids.split_at(added);
    let (added, removed) = (added.to_vec(), removed.to_vec());
    let until_ms = {
        let node = node.clone();
        blocking(move || {
            node.pin_tree_from(&cid, &base, &added, &removed, &chunk_set, &proof, &pinner)
        })
        .await?
    };
    Ok(pinned(&node, &cid, until_ms, &pinner))
}

#[utoipa::path(
    get,
    path = "/v1/trees/{cid}/keys",
    tag = "data",
    summary = "Data keys granted for a tree",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "The grants, one per recipient", body = KeyGrants),
        (status = 400, description = "`bad_request`: not a tree id", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
    ),
)]
async fn get_grants(
    State(node): State<Node>,
    Path(cid): Path<String>,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    Ok(Json(KeyGrants {
        keys: node.grants(&cid)?,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/trees/{cid}/keys",
    tag = "data",
    summary = "Grant a tree's data key to a recipient (signed)",
    params(
        ("cid" = Hash, Path, description = "Tree content id: 64 hex digits"),
        ("gridwork-signature" = String, Header, description = SIGNATURE_HEADER_DOC),
        ("gridwork-digest" = Hash, Header, description = DIGEST_HEADER_DOC),
        ("gridwork-key-proof" = Hash, Header, description = KEY_PROOF_HEADER_DOC),
    ),
    request_body(content = KeyGrant, description = "The wrapped key; the digest is BLAKE3 of the body"),
    responses(
        (status = 204, description = "Granted", body = ()),
        (status = 400, description = "`bad_request` (bad tree id, key proof or body), `bad_digest`, `key_proof_required`, `bad_body`", body = ErrorBody),
        (status = 401, description = SIGNATURE_401, body = ErrorBody),
        (status = 403, description = "`unfunded_account`, `not_key_holder`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 409, description = "`tree_not_pinned`, `too_many_grants`", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = BUSY, body = ErrorBody, headers(("retry-after" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
async fn post_grant(
    State(node): State<Node>,
    budget: Budget,
    Path(cid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cid: Hash = parse("tree id", &cid)?;
    let path = format!("/v1/trees/{cid}/keys");
    let write = SignedWrite::read(
        &node,
        &budget,
        &headers,
        body,
        ("POST", &path),
        MAX_BODY_BYTES,
    )
    .await?;
    write.expect(&Hash::of(&write.body))?;
    let proof = key_proof(&headers)?;
    let grant: KeyGrant = serde_json::from_slice(&write.body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not a key grant: {e}"),
        )
    })?;
    node.add_grants_as_holder(&cid, vec![grant], &proof)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::byte_range;
    use axum::http::StatusCode;

    /// `(METHOD, path)` of every route `router_with` registers, read from its source: the
    /// router cannot list its routes, and a route added without a `#[utoipa::path]` must fail
    /// a test.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("api.rs");
        let start = source
            .find("    Router::new()")
            .expect("router_with builds a Router");
        let end = start
            + source[start..]
                .find(".fallback(")
                .expect("router has a fallback");
        let mut routes = BTreeSet::new();
        for route in source[start..end].split(".route(").skip(1) {
            let path = route.split('"').nth(1).expect("a route names its path");
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = route
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !route.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    routes.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
        routes
    }

    fn document() -> serde_json::Value {
        serde_json::from_str(super::openapi::document_json()).expect("the document is JSON")
    }

    fn operations(doc: &serde_json::Value) -> Vec<(String, String, &serde_json::Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                ops.push((method.to_uppercase(), path.clone(), op));
            }
        }
        ops
    }

    #[test]
    fn openapi_document_names_every_route_and_only_those() {
        let doc = document();
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "{}",
            doc["openapi"]
        );
        let documented: BTreeSet<_> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        let routed = routed();
        assert_eq!(routed.len(), 28, "{routed:?}");
        assert_eq!(documented, routed);
    }

    #[test]
    fn openapi_operations_document_the_errors_their_inputs_can_cause() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let responses = op["responses"].as_object().expect("responses");
            let has = |status: &str| responses.contains_key(status);
            let at = format!("{method} {path}");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{at}: no 2xx");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path = params.iter().any(|p| p["in"] == "path");
            let signed = params
                .iter()
                .any(|p| p["name"] == "gridwork-signature" && p["required"] == true);
            let body = op.get("requestBody").is_some();
            if in_path {
                assert!(has("400"), "{at}: a bad path parameter is a 400");
            }
            if body {
                for status in ["400", "408", "413"] {
                    assert!(has(status), "{at}: a body can cause {status}");
                }
            }
            if signed {
                assert!(has("401") && has("400"), "{at}: signed, but no 401");
            }
            if signed && method != "GET" {
                assert!(has("403") && has("422") && has("503"), "{at}");
                let retry = &responses["503"]["headers"]["retry-after"];
                assert!(retry.is_object(), "{at}: busy says when to retry");
            }
            for (status, response) in responses {
                if status.starts_with('4') && status != "416" || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    let named = schema["$ref"].as_str().unwrap_or_default();
                    let health = path == "/health";
                    assert!(
                        named.ends_with("/ErrorBody") || health,
                        "{at} {status}: errors are ErrorBody, not {schema}"
                    );
                }
            }
        }
    }

    #[test]
    fn openapi_request_schemas_refuse_unknown_fields_as_the_server_does() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        for name in [
            "SubmitTx",
            "PostDecline",
            "PostLog",
            "ChunkIds",
            "WrappedKey",
        ] {
            assert_eq!(
                schemas[name]["additionalProperties"],
                serde_json::json!(false),
                "{name}: {}",
                schemas[name]
            );
        }
    }

    /// A node whose block at the returned height holds 3,000 transfers, and its router with
    /// a body budget of 256 KiB: room for one such block's answer (about 200 KB).
    fn node_with_a_full_block(dir: &std::path::Path) -> (crate::Node, axum::Router, u64) {
        use gridwork_types::{Address, Amount, Transaction, TxKind};
        let config = crate::NodeConfig {
            data_dir: dir.to_path_buf(),
            ..crate::NodeConfig::default()
        };
        let node = crate::Node::open(&config, crate::GenesisSource::dev(2)).unwrap();
        let key = gridwork_protocol::dev_keypair(0);
        let txs = (0..3000)
            .map(|nonce| {
                Transaction {
                    from: key.public(),
                    nonce,
                    fee: Amount::ZERO,
                    kind: TxKind::Transfer {
                        to: Address([7; 20]),
                        amount: Amount(1),
                    },
                }
                .sign(node.chain_id(), &key)
            })
            .collect();
        assert!(node.submit(txs).iter().all(Result::is_ok));
        let height = node.produce_block(true).unwrap().unwrap().block.height;
        let router = super::router_with(
            node.clone(),
            &crate::ServeLimits {
                body_memory_bytes: 256 << 10,
                ..crate::ServeLimits::default()
            },
        );
        (node, router, height)
    }

    fn get(path: &str) -> axum::http::Request<axum::body::Body> {
        axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    /// A block's answer (unsigned, 67 bytes a transaction) holds its share of the body
    /// budget until it is taken: with room for one answer of 3,000 transactions, a second
    /// request beside an untaken answer is told `busy`, and served once that answer is gone.
    #[tokio::test]
    async fn a_block_answer_holds_its_share_of_the_body_budget_until_taken() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let (_node, router, height) = node_with_a_full_block(dir.path());
        let path = format!("/v1/blocks/{height}");
        let untaken = router.clone().oneshot(get(&path)).await.unwrap();
        assert_eq!(untaken.status(), StatusCode::OK);
        let refused = router.clone().oneshot(get(&path)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(untaken);
        let served = router.oneshot(get(&path)).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
        let body = axum::body::to_bytes(served.into_body(), usize::MAX)
            .await
            .unwrap();
        let view: gridwork_api::BlockView = serde_json::from_slice(&body).unwrap();
        assert_eq!(view.txs.map(|t| t.len()), Some(3000));
    }

    /// Reading a pin (unsigned; its file may list two million chunks) waits for a share of
    /// the body budget twice its file's size: beside an untaken block answer, a pin of 2,000
    /// chunks is told `busy`, and is read once the answer is gone.
    #[tokio::test]
    async fn a_pin_view_waits_for_its_share_of_the_body_budget() {
        use gridwork_types::{Address, Hash};
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let (node, router, height) = node_with_a_full_block(dir.path());
        let ids: Vec<Hash> = (0..2000u32)
            .map(|i| {
                let bytes = i.to_le_bytes();
                let id = Hash::of(&bytes);
                node.put_chunk(&id, &bytes).unwrap();
                id
            })
            .collect();
        node.pin_tree(&ids[0], &ids, &Hash::of(b"proof"), &Address([7; 20]))
            .unwrap();
        assert!(node.pin_file_bytes(&ids[0]) > 2000 * 32);
        let pin = format!("/v1/trees/{}/pin", ids[0]);
        let untaken = router
            .clone()
            .oneshot(get(&format!("/v1/blocks/{height}")))
            .await
            .unwrap();
        assert_eq!(untaken.status(), StatusCode::OK);
        let refused = router.clone().oneshot(get(&pin)).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(untaken);
        let served = router.oneshot(get(&pin)).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
    }

    /// At the cap a newcomer holding fewer streams than the busiest client by two takes that
    /// client's oldest place (it is told); between clients two apart or less nothing moves,
    /// so places do not go back and forth; a displaced place is not given back twice.
    #[test]
    fn a_newcomer_takes_the_oldest_place_of_the_client_holding_the_most() {
        use super::{ClientAddr, NoStream, StreamsPerClient};
        let streams = StreamsPerClient {
            max: 4,
            per_client: 3,
            ..StreamsPerClient::default()
        };
        let client = |n: u8| ClientAddr(std::net::IpAddr::from([10, 0, 0, n]));
        let a: Vec<_> = (0..3).map(|_| streams.take(client(1)).unwrap()).collect();
        assert_eq!(streams.take(client(1)).err(), Some(NoStream::ClientFull));
        let b1 = streams.take(client(2)).unwrap();
        // Full: the newcomer (0) is two below the busiest (3): a's oldest goes.
        let c1 = streams.take(client(3)).unwrap();
        let told = a[0].displaced.clone();
        assert!(
            futures_util::FutureExt::now_or_never(told.notified()).is_some(),
            "the displaced stream was not told"
        );
        // a 2, b 1, c 1: b is not two below a, so nothing moves for it; a newcomer is.
        assert_eq!(streams.take(client(2)).err(), Some(NoStream::NodeFull));
        let d1 = streams.take(client(4)).unwrap();
        assert!(futures_util::FutureExt::now_or_never(a[1].displaced.notified()).is_some());
        // One each: nobody moves any more.
        assert_eq!(streams.take(client(5)).err(), Some(NoStream::NodeFull));
        // Displaced streams ending give nothing back (their places are c's and d's); a live
        // one does.
        let mut a = a.into_iter();
        drop(a.next());
        drop(a.next());
        assert_eq!(streams.take(client(5)).err(), Some(NoStream::NodeFull));
        drop(a.next());
        let e1 = streams.take(client(5)).unwrap();
        assert_eq!(streams.open.lock().unwrap().total, 4);
        drop((b1, c1, d1, e1));
        assert_eq!(streams.open.lock().unwrap().total, 0);
        assert!(streams.open.lock().unwrap().by_client.is_empty());
    }

    #[test]
    fn byte_ranges_follow_http_semantics() {
        assert_eq!(byte_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(byte_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(byte_range("bytes=990-2000", 1000), Some((990, 999)));
        assert_eq!(byte_range("bytes=1000-", 1000), None);
        assert_eq!(byte_range("bytes=5-2", 1000), None);
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(byte_range("items=0-1", 1000), None);
        assert_eq!(byte_range("bytes=-0", 1000), None);
    }
}
