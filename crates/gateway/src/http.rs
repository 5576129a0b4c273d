//! The gateway on the wire.
//!
//! For the requester's users, any method at `/s/<service>/<path>` with `Authorization: Bearer
//! gw_...` (a key `gridwork service key new` made): the request goes to the council and the
//! answer comes back as the service gave it (status, content type, body). Refusals: 401 (no
//! or unknown key), 502 (the council disagreed, unanimous method), 503 (the service is not
//! up, or too many requests wait), 504 (the council did not answer in time).
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
use gridwork_types::{Decode, Encode, Hash, PublicKey, SignedResponse};

use crate::dispatch::{Answer, Dispatcher, Refusal};

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
        .submit(method.as_str(), &path, content_type, body)
        .await
    {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, answer.body).into_response();
            if let Ok(ct) = answer.content_type.parse() {
                if !answer.content_type.is_empty() {
                    response.headers_mut().insert("content-type", ct);
                }
            }
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
    let Some(relay) = shared.dispatcher.next_for(&member, wait).await else {
        return StatusCode::NO_CONTENT.into_response();
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
    match shared.dispatcher.respond(member, seq, answer, signed) {
        Ok(receipt) => (StatusCode::OK, hex::encode(receipt.to_bytes())).into_response(),
        Err(e) => refuse(StatusCode::CONFLICT, e),
    }
}
