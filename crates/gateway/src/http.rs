//! The gateway on the wire.
//!
//! For the requester's users, any method at `/s/<service>/<path>` with `Authorization: Bearer
//! gw_...` (a key `gridwork service key new` made): the request goes to the council and the
//! answer comes back as the service gave it (status, content type, body). Refusals: 401 (no
//! or unknown key), 502 (the council disagreed, unanimous method), 503 (the service is not
//! up, or too many requests wait), 504 (the council did not answer in time).
//!
//! For anyone, `GET /g/<service>/stats`: how the gateway answered its users lately (counts,
//! latencies; [`crate::Stats`]), which `gridwork service status` shows.
//!
//! For the council's members, every request signed like a node's signed requests
//! ([`gridwork_api::SIGNATURE_HEADER`], over the gateway's public key), by a member seated now:
//!
//! - `GET /m/<service>/next?wait_ms=N`: the next request for the member, waiting up to N ms
//!   (at most 30 s): 204 when none, else 200 with the request's body and headers
//!   `gridwork-seq`, `gridwork-request` (the hash it signs), `gridwork-method`, `gridwork-path`
//!   and `gridwork-content-type` (the user's, possibly empty).
//! - `POST /m/<service>/responses/<seq>`: the response body, with headers `gridwork-status`,
//!   `content-type` and `gridwork-response` (hex of the member's `SignedResponse`): 200 with
//!   hex of the member's new cumulative `SignedReceipt`, or 409 naming why it was refused.
//! - The same fetch, for a service whose equivalence is not exact, may instead give answers
//!   to judge: 200 with header `gridwork-judge: 1` and a [`gridwork_types::JudgeTask`] (its
//!   encoding) as the body: the answers to one request that are not all equivalent, the
//!   member's own among them. The member answers `POST /m/<service>/judgements` with its
//!   [`SignedJudgement`] (its encoding): 200, or 409 naming why it was refused.
//! - `POST /m/<service>/streams/<seq>`: the response streamed as the server writes it (token
//!   streams), with headers `gridwork-status` and `content-type`, its body a sequence of
//!   [`StreamFrame`]s: data, then the member's `SignedResponse` over the whole. Its request
//!   signature is over an empty body (the body is not known when it starts); the signed end
//!   binds every byte. Answered as `responses` is, once the end is in; the stream must end
//!   within the request's time. Under the optimistic method the user's answer is piped from
//!   the first stream opened (see [`crate::Dispatcher::open_stream`]).
//!
//! A streamed answer reaches the user chunk by chunk; one that breaks off (its member gone and
//! no other's answer continuing it) is cut off mid-body, so the user's client sees an
//! incomplete response, never a short one that looks whole.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use gridwork_types::{
    Decode, Encode, FrameReader, Hash, PublicKey, SignedJudgement, SignedResponse, StreamFrame,
};

use crate::dispatch::{Answer, Dispatcher, Refusal, Reply, Work, MAX_STREAM_BYTES};

/// The largest request body the gateway takes from a user.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;
/// The longest a member's fetch waits for a request.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The API keys of a service's users: BLAKE3 hashes of `gw_...` keys, one hex per line, in a
/// file the gateway reads again when it changes (`gridwork service key new` appends to it).
pub struct ApiKeys {
    path: PathBuf,
    known: Mutex<(Option<SystemTime>, HashSet<Hash>)>,
}

impl ApiKeys {
    /// The keys in `path` (none yet if it does not exist).
    pub fn open(path: &Path) -> ApiKeys {
        ApiKeys {
            path: path.to_path_buf(),
            known: Mutex::new((None, HashSet::new())),
        }
    }

    /// Makes a key, remembers its hash in `path` (readable by its owner alone), and returns it
    /// to give a user.
    pub fn new_key(path: &Path) -> std::io::Result<String> {
        use rand_core::RngCore;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut secret = [0u8; 24];
        rand_core::OsRng.fill_bytes(&mut secret);
        let key = format!("gw_{}", hex::encode(secret));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        writeln!(file, "{}", Hash::of(key.as_bytes()))?;
        file.sync_all()?;
        Ok(key)
    }

    /// Whether `key` is one of them (the file is read again when it changed).
    pub fn allows(&self, key: &str) -> bool {
        let hash = Hash::of(key.as_bytes());
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.1.contains(&hash) {
            return true;
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified != known.0 {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            known.1 = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            known.0 = modified;
        }
        known.1.contains(&hash)
    }
}

/// One service a gateway serves: its dispatcher and its users' keys.
#[derive(Clone)]
struct Shared {
    dispatcher: Arc<Dispatcher>,
    keys: Arc<ApiKeys>,
    /// The gateway's public key: what members' signed requests sign.
    gateway: PublicKey,
}

/// The services a gateway serves, by id: one for `gridwork service gateway`, every one whose
/// gateway key a node holds for `gridwork node --gateway-key` (added as they appear).
#[derive(Default)]
pub struct Gateways {
    served: std::sync::RwLock<std::collections::HashMap<Hash, Shared>>,
    /// Told when a service is added.
    added: tokio::sync::Notify,
    /// Told when a request names a service not served (yet): whoever adds services may look
    /// at once rather than at its next round ([`Gateways::asked`]).
    unknown: tokio::sync::Notify,
}

/// How long a request for a service a gateway does not serve waits for it to be added (a
/// node's gateway finds a new service of its key within a round).
const WAIT_FOR_NEW: Duration = Duration::from_secs(3);

impl Gateways {
    /// Serves `dispatcher`'s service to the users whose keys are in `keys` (in place of any
    /// dispatcher it had for the service).
    pub fn insert(&self, dispatcher: Arc<Dispatcher>, keys: Arc<ApiKeys>) {
        let gateway = dispatcher.spec().gateway;
        let shared = Shared {
            dispatcher,
            keys,
            gateway,
        };
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(shared.dispatcher.service(), shared);
        self.added.notify_waiters();
    }

    /// Resolves once a request named a service not served: the caller may look for new ones.
    pub async fn asked(&self) {
        self.unknown.notified().await;
    }

    /// Stops serving `service`.
    pub fn remove(&self, service: &Hash) {
        self.served
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(service);
    }

    fn find(&self, id: &Hash) -> Option<Shared> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The service a request names; one not served yet is waited for a moment, and whoever
    /// adds services told to look.
    async fn get(&self, service: &str) -> Result<Shared, Refused> {
        let not_served = || {
            refused(
                StatusCode::NOT_FOUND,
                format!("this gateway does not serve service {service}"),
            )
        };
        let id = service.parse::<Hash>().map_err(|_| not_served())?;
        let deadline = tokio::time::Instant::now() + WAIT_FOR_NEW;
        loop {
            let added = self.added.notified();
            if let Some(shared) = self.find(&id) {
                return Ok(shared);
            }
            self.unknown.notify_one();
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return Err(not_served());
            }
        }
    }
}

/// The gateway's routes for one service (with `/health`).
pub fn router(dispatcher: Arc<Dispatcher>, keys: Arc<ApiKeys>) -> Router {
    let gateways = Gateways::default();
    gateways.insert(dispatcher, keys);
    routes(Arc::new(gateways)).route("/health", get(|| async { "ok" }))
}

/// The gateway's routes for every service in `gateways`: `/s/...` for users, `/m/...` for
/// members; to serve beside other routes (a node's API).
pub fn routes(gateways: Arc<Gateways>) -> Router {
    Router::new()
        .route("/s/{service}", any(user_request))
        .route("/s/{service}/{*rest}", any(user_request))
        .route("/m/{service}/next", get(member_next))
        .route("/m/{service}/responses/{seq}", post(member_response))
        .route("/m/{service}/streams/{seq}", post(member_stream))
        .route("/m/{service}/judgements", post(member_judgement))
        .route("/g/{service}/stats", get(gateway_stats))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(gateways)
}

fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// A refusal before the request is handled: its status and why.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

fn refused(status: StatusCode, why: impl std::fmt::Display) -> Refused {
    Refused(status, why.to_string())
}

async fn user_request(
    State(gateways): State<Arc<Gateways>>,
    UrlPath(params): UrlPath<Vec<(String, String)>>,
    method: Method,
    uri: Uri,
    version: axum::http::Version,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let service = params
        .iter()
        .find(|(k, _)| k == "service")
        .map_or("", |(_, v)| v.as_str());
    let shared = match gateways.get(service).await {
        Ok(shared) => shared,
        Err(r) => return r.into_response(),
    };
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if key.is_empty() || !shared.keys.allows(key) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer gw_...` with a key the service's requester made (`gridwork service key new <SERVICE>`)",
        );
    }
    // Read only once the service and the user's key are known: a stranger's body is never
    // taken into memory.
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                "the request body could not be read whole (at most {MAX_REQUEST_BYTES} bytes): {e}"
            ),
            )
        }
    };
    let prefix = format!("/s/{service}");
    let mut path = uri.path().strip_prefix(&prefix).unwrap_or("/").to_string();
    if path.is_empty() {
        path.push('/');
    }
    if let Some(q) = uri.query() {
        path = format!("{path}?{q}");
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match shared
        .dispatcher
        // HTTP/1.0 ends a body of no stated length by closing the connection, which a body
        // cut off would look like: such a user gets answers whole (a review found a stock
        // nginx in front, HTTP/1.0 to its upstream, passing a broken stream on as whole).
        .submit(
            method.as_str(),
            &path,
            content_type,
            body,
            version >= axum::http::Version::HTTP_11,
        )
        .await
    {
        Ok(Reply::Whole(answer)) => answered(answer.status, &answer.content_type, answer.body),
        Ok(Reply::Stream(streamed)) => {
            let pieces = futures_util::stream::unfold(streamed.body, |mut body| async move {
                body.next().await.map(|piece| (piece, body))
            });
            let mut response = answered(
                streamed.status,
                &streamed.content_type,
                axum::body::Body::from_stream(pieces),
            );
            // Proxies between the gateway and its user hold nothing back.
            response.headers_mut().insert(
                "cache-control",
                axum::http::HeaderValue::from_static("no-cache"),
            );
            response
        }
        Err(e @ Refusal::Disagreed) => refuse(StatusCode::BAD_GATEWAY, e),
        Err(e @ Refusal::Timeout(_)) => refuse(StatusCode::GATEWAY_TIMEOUT, e),
        Err(e @ (Refusal::Down(_) | Refusal::Busy(_))) => {
            let mut r = refuse(StatusCode::SERVICE_UNAVAILABLE, e);
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            r
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /g/<service>/stats`: how the gateway answered its users ([`crate::Stats`]), for
/// `gridwork service status`. Public, as what the ledger says of the service is: counts and
/// latencies, nothing of any request.
async fn gateway_stats(
    State(gateways): State<Arc<Gateways>>,
    UrlPath(service): UrlPath<String>,
) -> Response {
    match gateways.get(&service).await {
        Ok(shared) => axum::Json(shared.dispatcher.stats()).into_response(),
        Err(r) => r.into_response(),
    }
}

/// A server's answer as the user gets it: its status and content type, the body.
fn answered(status: u16, content_type: &str, body: impl Into<axum::body::Body>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, body.into()).into_response();
    if let Ok(ct) = content_type.parse() {
        if !content_type.is_empty() {
            response.headers_mut().insert("content-type", ct);
        }
    }
    response
}

/// The member that signed a request to this gateway, seated now.
fn member(
    shared: &Shared,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<gridwork_types::Address, Refused> {
    let value = headers
        .get(gridwork_api::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                format!(
                    "members sign their requests ({})",
                    gridwork_api::SIGNATURE_HEADER
                ),
            )
        })?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let key = gridwork_api::verify_signature_header(
        value,
        &shared.gateway,
        method,
        path,
        &Hash::of(body),
        now,
    )
    .map_err(|e| refused(StatusCode::UNAUTHORIZED, e))?;
    let address = key.address();
    if !shared.dispatcher.is_member(&address) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            format!("{address} does not sit on the service's council"),
        ));
    }
    Ok(address)
}

#[derive(serde::Deserialize)]
struct Wait {
    wait_ms: Option<u64>,
}

async fn member_next(
    State(gateways): State<Arc<Gateways>>,
    UrlPath(service): UrlPath<String>,
    Query(wait): Query<Wait>,
    headers: HeaderMap,
) -> Response {
    let shared = match gateways.get(&service).await {
        Ok(shared) => shared,
        Err(r) => return r.into_response(),
    };
    let path = format!("/m/{service}/next");
    let member = match member(&shared, &headers, "GET", &path, b"") {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let wait = Duration::from_millis(wait.wait_ms.unwrap_or(10_000)).min(MAX_WAIT);
    let relay = match shared.dispatcher.next_for(&member, wait).await {
        None => return StatusCode::NO_CONTENT.into_response(),
        Some(Work::Request(relay)) => relay,
        Some(Work::Judge(task)) => {
            let mut response = (StatusCode::OK, task).into_response();
            response
                .headers_mut()
                .insert("gridwork-judge", axum::http::HeaderValue::from_static("1"));
            return response;
        }
    };
    let mut response = (StatusCode::OK, relay.body.clone()).into_response();
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    };
    set("gridwork-seq", &relay.seq.to_string());
    set("gridwork-request", &relay.request.to_string());
    set("gridwork-method", &relay.method);
    set("gridwork-path", &relay.path);
    // Its own header, empty or not: the hash the member signs covers it, and `content-type`
    // gets a default on the way.
    set("gridwork-content-type", &relay.content_type);
    response
}

async fn member_response(
    State(gateways): State<Arc<Gateways>>,
    UrlPath((service, seq)): UrlPath<(String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = match gateways.get(&service).await {
        Ok(shared) => shared,
        Err(r) => return r.into_response(),
    };
    let path = format!("/m/{service}/responses/{seq}");
    let member = match member(&shared, &headers, "POST", &path, &body) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(status) = header("gridwork-status").and_then(|s| s.parse::<u16>().ok()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "gridwork-status: the server's HTTP status",
        );
    };
    let Some(signed) = header("gridwork-response")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| SignedResponse::from_bytes(&b).ok())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "gridwork-response: hex of the member's SignedResponse over this body",
        );
    };
    let answer = Answer {
        status,
        content_type: header("content-type").unwrap_or("").to_string(),
        body,
    };
    // Comparing answers under a tolerance (or images) takes time: not on the server's own
    // threads.
    let d = shared.dispatcher.clone();
    let responded =
        tokio::task::spawn_blocking(move || d.respond(member, seq, answer, signed)).await;
    match responded {
        Ok(Ok(receipt)) => (StatusCode::OK, hex::encode(receipt.to_bytes())).into_response(),
        Ok(Err(e)) => refuse(StatusCode::CONFLICT, e),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn member_judgement(
    State(gateways): State<Arc<Gateways>>,
    UrlPath(service): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = match gateways.get(&service).await {
        Ok(shared) => shared,
        Err(r) => return r.into_response(),
    };
    let path = format!("/m/{service}/judgements");
    let member = match member(&shared, &headers, "POST", &path, &body) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let Ok(signed) = SignedJudgement::from_bytes(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body is the member's SignedJudgement (its encoding)",
        );
    };
    match shared.dispatcher.judged(member, signed) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => refuse(StatusCode::CONFLICT, e),
    }
}

/// Gives a member's stream up unless it ended: a stream whose connection closed, whose handler
/// was dropped, or that was refused part way.
struct StreamGuard<'a> {
    dispatcher: &'a Dispatcher,
    member: gridwork_types::Address,
    seq: u64,
    ended: bool,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.dispatcher.give_up_stream(self.member, self.seq);
        }
    }
}

async fn member_stream(
    State(gateways): State<Arc<Gateways>>,
    UrlPath((service, seq)): UrlPath<(String, u64)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    use futures_util::StreamExt;
    let shared = match gateways.get(&service).await {
        Ok(shared) => shared,
        Err(r) => return r.into_response(),
    };
    let path = format!("/m/{service}/streams/{seq}");
    let member = match member(&shared, &headers, "POST", &path, b"") {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    let Some(status) = headers
        .get("gridwork-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "gridwork-status: the server's HTTP status",
        );
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let d = &shared.dispatcher;
    let until = match d.open_stream(member, seq, status, content_type) {
        Ok(until) => tokio::time::Instant::from_std(until),
        Err(e) => return refuse(StatusCode::CONFLICT, e),
    };
    let mut guard = StreamGuard {
        dispatcher: d,
        member,
        seq,
        ended: false,
    };
    let mut frames = FrameReader::default();
    let mut data = body.into_data_stream();
    loop {
        let bytes = match tokio::time::timeout_at(until, data.next()).await {
            Ok(Some(Ok(bytes))) => bytes,
            Ok(Some(Err(e))) => {
                return refuse(StatusCode::BAD_REQUEST, format!("reading the stream: {e}"))
            }
            Ok(None) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "the stream ended without its signed response (an `E` frame)",
                )
            }
            Err(_) => {
                return refuse(
                    StatusCode::CONFLICT,
                    "the stream did not end within the request's time",
                )
            }
        };
        frames.push(&bytes);
        // What this read carried, taken at once: many small frames cost one turn.
        let mut piece = Vec::new();
        loop {
            match frames.next_frame() {
                Ok(None) => break,
                Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
                Ok(Some(StreamFrame::Data(data))) => {
                    piece.extend_from_slice(&data);
                    if piece.len() > MAX_STREAM_BYTES {
                        break;
                    }
                }
                Ok(Some(StreamFrame::End(signed))) => {
                    if let Err(e) = d.stream_piece(member, seq, &piece) {
                        return refuse(StatusCode::CONFLICT, e);
                    }
                    let Ok(signed) = SignedResponse::from_bytes(&signed) else {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            "the `E` frame is not a SignedResponse",
                        );
                    };
                    if !frames.is_empty() {
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            "bytes after the `E` frame: it ends the stream",
                        );
                    }
                    // Given up by `end_stream` itself when refused.
                    guard.ended = true;
                    let owned = shared.dispatcher.clone();
                    let ended =
                        tokio::task::spawn_blocking(move || owned.end_stream(member, seq, signed))
                            .await;
                    return match ended {
                        Ok(Ok(receipt)) => {
                            (StatusCode::OK, hex::encode(receipt.to_bytes())).into_response()
                        }
                        Ok(Err(e)) => refuse(StatusCode::CONFLICT, e),
                        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
                    };
                }
            }
        }
        if !piece.is_empty() {
            if let Err(e) = d.stream_piece(member, seq, &piece) {
                return refuse(StatusCode::CONFLICT, e);
            }
        }
        // A member that sends as fast as the link allows does not keep this thread (on a
        // node, the API's) from others.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::tests::{gateway, CHAIN};
    use gridwork_types::{response_hash, Keypair, ResponseMethod, StreamResponse};

    /// A gateway on a port of its own: its URL, the dispatcher, its members and a user's key.
    async fn serve(
        method: ResponseMethod,
        n: u8,
        keys: &Path,
    ) -> (String, Arc<Dispatcher>, Vec<Keypair>, String) {
        let (d, members) = gateway(method, n);
        let key = ApiKeys::new_key(keys).unwrap();
        let app = router(d.clone(), Arc::new(ApiKeys::open(keys)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, d, members, key)
    }

    fn signed(k: &Keypair, d: &Dispatcher, method: &str, path: &str, body: &[u8]) -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        gridwork_api::signature_header(k, &d.spec().gateway, method, path, now, &Hash::of(body))
    }

    /// `member` asks for its next request over HTTP: its sequence number and request hash.
    async fn next(
        http: &reqwest::Client,
        url: &str,
        d: &Dispatcher,
        member: &Keypair,
    ) -> Option<(u64, Hash)> {
        let path = format!("/m/{}/next", d.service());
        let r = http
            .get(format!("{url}{path}?wait_ms=2000"))
            .header(
                gridwork_api::SIGNATURE_HEADER,
                signed(member, d, "GET", &path, b""),
            )
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::NO_CONTENT {
            return None;
        }
        let h = |n: &str| r.headers()[n].to_str().unwrap().to_string();
        Some((
            h("gridwork-seq").parse().unwrap(),
            h("gridwork-request").parse().unwrap(),
        ))
    }

    /// What feeds a member's stream body.
    type Feed = tokio::sync::mpsc::UnboundedSender<std::io::Result<Vec<u8>>>;
    /// What the gateway answered a member's stream: its status and text.
    type Sent = tokio::task::JoinHandle<Result<(StatusCode, String), reqwest::Error>>;

    /// A member's stream, fed by the test: the pieces sent through the returned sender go as
    /// the body; an `Err` breaks it off. Resolves to the gateway's status and text.
    fn open_stream(
        http: &reqwest::Client,
        url: &str,
        d: &Dispatcher,
        member: &Keypair,
        seq: u64,
    ) -> (Feed, Sent) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|piece| (piece, rx))
        });
        let path = format!("/m/{}/streams/{seq}", d.service());
        let request = http
            .post(format!("{url}{path}"))
            .header(
                gridwork_api::SIGNATURE_HEADER,
                signed(member, d, "POST", &path, b""),
            )
            .header("gridwork-status", "200")
            .header("content-type", "text/event-stream")
            .body(reqwest::Body::wrap_stream(pieces));
        let sent = tokio::spawn(async move {
            let r = request.send().await?;
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            Ok((status, r.text().await?))
        });
        (tx, sent)
    }

    fn end(d: &Dispatcher, member: &Keypair, request: Hash, body: &[u8]) -> Vec<u8> {
        StreamFrame::end(
            &StreamResponse {
                service: d.service(),
                request,
                response: response_hash(200, "text/event-stream", body),
                units: body.len() as u64,
            }
            .sign(CHAIN, member),
        )
    }

    /// Over the wire: a member's framed stream reaches the user piece by piece under the
    /// optimistic method and ends whole once signed, the member paid for it; a stream whose
    /// member breaks off with no other member's answer continuing it is cut off mid-body, so
    /// the user's client sees an error, never a short answer that looks whole.
    #[tokio::test]
    async fn a_streamed_answer_reaches_the_user_as_it_comes_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (url, d, m, key) =
            serve(ResponseMethod::Optimistic {}, 2, &dir.path().join("keys")).await;
        let http = reqwest::Client::new();
        for k in &m {
            let path = format!("/m/{}/next", d.service());
            let r = http
                .get(format!("{url}{path}?wait_ms=0"))
                .header(
                    gridwork_api::SIGNATURE_HEADER,
                    signed(k, &d, "GET", &path, b""),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::NO_CONTENT);
        }
        let user = |http: reqwest::Client| {
            let (url, key, service) = (url.clone(), key.clone(), d.service());
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                let mut r = http
                    .post(format!("{url}/s/{service}/v1/completions"))
                    .bearer_auth(key)
                    .body("{}")
                    .send()
                    .await?;
                assert_eq!(r.headers()["content-type"], "text/event-stream");
                while let Some(piece) = r.chunk().await? {
                    let _ = tx.send(piece);
                }
                Ok::<_, reqwest::Error>(())
            });
            (rx, task)
        };

        // Whole: the user holds each piece before the member sends the next.
        let (mut pieces, ended) = user(http.clone());
        let (seq, request) = next(&http, &url, &d, &m[0]).await.unwrap();
        let (tx, sent) = open_stream(&http, &url, &d, &m[0], seq);
        tx.send(Ok(StreamFrame::data(b"data: a\n\n"))).unwrap();
        assert_eq!(pieces.recv().await.unwrap(), "data: a\n\n");
        tx.send(Ok(StreamFrame::data(b"data: [DONE]\n\n"))).unwrap();
        assert_eq!(pieces.recv().await.unwrap(), "data: [DONE]\n\n");
        tx.send(Ok(end(&d, &m[0], request, b"data: a\n\ndata: [DONE]\n\n")))
            .unwrap();
        drop(tx);
        let (status, receipt) = sent.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "{receipt}");
        let receipt =
            gridwork_types::SignedReceipt::from_bytes(&hex::decode(receipt.trim()).unwrap())
                .unwrap();
        assert_eq!(receipt.receipt.units, 23);
        ended.await.unwrap().unwrap();

        // Broken off: m0 sends a piece and its connection dies; m1's answer differs.
        let (mut pieces, ended) = user(http.clone());
        let (seq, _) = next(&http, &url, &d, &m[0]).await.unwrap();
        let (tx, sent) = open_stream(&http, &url, &d, &m[0], seq);
        tx.send(Ok(StreamFrame::data(b"data: made up\n\n")))
            .unwrap();
        assert_eq!(pieces.recv().await.unwrap(), "data: made up\n\n");
        tx.send(Err(std::io::Error::other("killed"))).unwrap();
        assert!(sent.await.unwrap().is_err(), "the member's body broke off");
        // The first request's m1 answer is still due; then this one's.
        for _ in 0..2 {
            let (seq, request) = next(&http, &url, &d, &m[1]).await.unwrap();
            let body = b"data: truth\n\n";
            let path = format!("/m/{}/responses/{seq}", d.service());
            let signed_response = StreamResponse {
                service: d.service(),
                request,
                response: response_hash(200, "text/event-stream", body),
                units: body.len() as u64,
            }
            .sign(CHAIN, &m[1]);
            let r = http
                .post(format!("{url}{path}"))
                .header(
                    gridwork_api::SIGNATURE_HEADER,
                    signed(&m[1], &d, "POST", &path, body),
                )
                .header("gridwork-status", "200")
                .header("content-type", "text/event-stream")
                .header("gridwork-response", hex::encode(signed_response.to_bytes()))
                .body(&body[..])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::OK);
        }
        let broke = ended.await.unwrap();
        assert!(broke.is_err(), "a broken-off stream ended as if whole");
        assert!(pieces.recv().await.is_none(), "more than was sent");
        // The member that broke off is paid for its one whole stream alone.
        let paid = d.receipts();
        let m0 = paid
            .iter()
            .find(|r| r.receipt.provider == m[0].address())
            .unwrap();
        assert_eq!(m0.receipt.responses, 1);

        // An HTTP/1.0 user (or a proxy speaking it upstream) cannot tell a body cut off from
        // one whole when neither states a length: it is answered whole, with its length.
        let service = d.service();
        let raw = tokio::spawn({
            let (url, key) = (url.clone(), key.clone());
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut tcp = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
                    .await
                    .unwrap();
                let head = format!(
                    "POST /s/{service}/v1/x HTTP/1.0\r\nauthorization: Bearer {key}\r\ncontent-length: 2\r\n\r\n{{}}"
                );
                tcp.write_all(head.as_bytes()).await.unwrap();
                let mut answer = String::new();
                tcp.read_to_string(&mut answer).await.unwrap();
                answer
            }
        });
        let (seq, request) = next(&http, &url, &d, &m[0]).await.unwrap();
        let (tx, sent) = open_stream(&http, &url, &d, &m[0], seq);
        tx.send(Ok(StreamFrame::data(b"data: whole\n\n"))).unwrap();
        tx.send(Ok(end(&d, &m[0], request, b"data: whole\n\n")))
            .unwrap();
        drop(tx);
        assert_eq!(sent.await.unwrap().unwrap().0, StatusCode::OK);
        let answer = raw.await.unwrap().to_ascii_lowercase();
        assert!(answer.contains("content-length: 13"), "{answer}");
        assert!(answer.ends_with("data: whole\n\n"), "{answer}");
    }
}
