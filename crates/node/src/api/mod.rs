//! The HTTP API: `/v1/...`, `/health`, `/metrics`, the event stream and the OpenAPI document.
//!
//! HTTP status codes and error codes live here and only here: the ledger and the mempool
//! return typed errors and this module maps them. Every error body is
//! `{"error": {"code": "...", "message": "..."}}` with a stable snake_case code.
//!
//! Here: the router, error codes, health, metrics and the document. The routes of the ledger
//! and the market are in `ledger.rs`, of the data plane in `data.rs`, the event stream in
//! `events.rs`, and the memory and clocks every buffered body is held to in `budget.rs`.

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
    frames, BlockList, ChunkIds, ChunksStored, ErrorBody, ErrorDetail, JobList, KeyGrant,
    KeyGrants, LogAppended, LogStream, MissingChunks, PinAnswer, PostDecline, PostLog,
    ProviderList, ServiceList, SubmitTx, Submitted, DIGEST_HEADER, KEY_PROOF_HEADER,
    SIGNATURE_HEADER, SIGNATURE_WINDOW_MS,
};
#[allow(unused_imports)] // Named only by the `#[utoipa::path]` attributes.
use gridwork_api::{
    AccountView, BlockEvent, BlockView, ChainInfo, Health, JobView, PinView, ProviderView,
    ServiceView, StorageView, TaskLog, TxStatus,
};
use gridwork_transfer::StoreError as ChunkStoreError;
use gridwork_types::{Address, Amount, Hash, PublicKey, Signature};
use serde::Deserialize;

use crate::logs::LogError;
use crate::mempool::MempoolError;
use crate::ServeLimits;
use crate::{AdmitError, BlockId, Node, NodeError};

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest `POST /v1/chunks/missing` question (a million ids in binary, with room).
const MISSING_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The largest `POST /v1/chunks/fetch` question.
const FETCH_BODY_BYTES: usize = 1024 * 1024;

/// The largest sealed chunk accepted (the largest chunk plus sealing overhead).
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

mod budget;
mod data;
mod events;
mod ledger;
mod openapi;
mod trees;
pub mod views;

use budget::*;
use data::*;
use events::*;
use ledger::*;
use trees::*;

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
    /// The fee that would have a refused transaction admitted (`mempool_underpriced`).
    needed_fee: Option<Amount>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            needed_fee: None,
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
                needed_fee: self.needed_fee,
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
        let mut error = ApiError::new(status, code, message);
        if let AdmitError::Mempool(MempoolError::Underpriced { needed, .. }) = e {
            error.needed_fee = Some(needed);
        }
        error
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

impl FromRef<ApiState> for Node {
    fn from_ref(state: &ApiState) -> Node {
        state.node.clone()
    }
}

/// The router of every endpoint, with the default [`ServeLimits`].
pub fn router(node: Node) -> Router {
    router_with(node, &ServeLimits::default())
}

/// The router of every endpoint, holding bodies to `limits`.
pub fn router_with(node: Node, limits: &ServeLimits) -> Router {
    router_beside(node, limits, Router::new())
}

/// [`router_with`], with `beside` (a gateway's routes, `gridwork node --gateway`) under the
/// same body clock, request metrics and default body limit: layers apply to the routes a
/// router has when they are added, so `beside` is merged first (a review found the gateway's
/// routes served with no body timeout at all).
pub fn router_beside(node: Node, limits: &ServeLimits, beside: Router) -> Router {
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
        .route("/v1/services", get(list_services))
        .route("/v1/services/{id}", get(get_service))
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
        .with_state(state)
        .merge(beside)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(clock, time_bodies))
        .layer(axum::middleware::from_fn_with_state(node, observe_request))
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
    let health = views::health(&node);
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
    Ok(Json(views::chain(&node)?).into_response())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::byte_range;
    use axum::http::StatusCode;

    /// `(METHOD, path)` of every route `router_with` registers, read from its source: the
    /// router cannot list its routes, and a route added without a `#[utoipa::path]` must fail
    /// a test.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
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
        assert_eq!(routed.len(), 30, "{routed:?}");
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
                .sign(node.ledger().chain_id(), &key)
            })
            .collect();
        assert!(node.submit(txs).iter().all(Result::is_ok));
        let height = node.ledger().produce_block(true).unwrap().unwrap().height();
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
                node.data().put_chunk(&id, &bytes).unwrap();
                id
            })
            .collect();
        node.data()
            .pin_tree(&ids[0], &ids, &Hash::of(b"proof"), &Address([7; 20]))
            .unwrap();
        assert!(node.data().pin_file_bytes(&ids[0]) > 2000 * 32);
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
