//! A typed client of the node's REST API.

use std::time::{Duration, Instant};

use gridwork_api::{
    decline_message, log_message, AccountView, BlockEvent, BlockList, BlockView, ChainInfo,
    ErrorBody, Health, JobList, JobView, LogAppended, LogStream, PostDecline, PostLog,
    ProviderList, ProviderView, SubmitTx, Submitted, TaskLog, TxStatus,
};
use gridwork_types::{Address, Hash, Keypair, SignedTx};
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The node could not be reached.
    #[error("cannot reach the node at {url}: {message} (is it running? start one with `gridwork node --dev`, or set --node / GRIDWORK_NODE)")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The node answered with an error.
    #[error("{message} [{code}]")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// The node's message.
        message: String,
        /// With `mempool_underpriced`: the fee that would have the transaction admitted.
        needed_fee: Option<gridwork_types::Amount>,
    },
    /// The node answered something this client does not understand.
    #[error("unexpected answer from {url}: {message}")]
    BadResponse {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// Waited too long.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What.
        what: String,
        /// How long.
        seconds: u64,
    },
}

impl ClientError {
    /// The API error code, if the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The fee that would have a refused transaction admitted, when the node's mempool is
    /// full of cheaper ones (`mempool_underpriced`).
    pub fn needed_fee(&self) -> Option<gridwork_types::Amount> {
        match self {
            ClientError::Api { needed_fee, .. } => *needed_fee,
            _ => None,
        }
    }
}

/// A client of one node.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Signs data-plane writes (uploads, pins, key grants); nodes refuse them unsigned.
    signer: Option<std::sync::Arc<gridwork_types::Keypair>>,
    /// The node's key, asked on the first write (`GET /v1/chain`) and again when the node
    /// refuses a signature: writes are signed for it and holder proofs made for it, so
    /// neither can be replayed to another node.
    node_key: std::sync::Arc<std::sync::Mutex<Option<gridwork_types::PublicKey>>>,
    /// The node's chain id, asked once (`GET /v1/chain`) for signing transactions.
    chain_id: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// Maps a transport error on `url` to [`ClientError::Unreachable`].
fn unreachable(url: &str) -> impl Fn(reqwest::Error) -> ClientError + '_ {
    move |e| ClientError::Unreachable {
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// Which log a worker appends to: one stream of its run of one attempt of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The job.
    pub job: Hash,
    /// Task index.
    pub task: u32,
    /// The attempt.
    pub attempt: u32,
    /// Which output.
    pub stream: LogStream,
}

impl Client {
    /// A client of the node at `base` (for example `http://127.0.0.1:7650`).
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Client {
            base,
            http,
            signer: None,
            node_key: Default::default(),
            chain_id: Default::default(),
        }
    }

    /// This client with `key` signing its data-plane writes (chunk uploads, pins, key
    /// grants): nodes take them only from ledger accounts that hold funds or stake.
    pub fn signed_by(mut self, key: gridwork_types::Keypair) -> Client {
        self.signer = Some(std::sync::Arc::new(key));
        self
    }

    /// The key of the node (`node_key` in `GET /v1/chain`), asked once and kept.
    pub async fn node_key(&self) -> Result<gridwork_types::PublicKey, ClientError> {
        let known = *self.node_key.lock().unwrap_or_else(|p| p.into_inner());
        match known {
            Some(key) => Ok(key),
            None => self.refresh_node_key().await,
        }
    }

    /// Asks the node's key again and keeps it.
    async fn refresh_node_key(&self) -> Result<gridwork_types::PublicKey, ClientError> {
        let key = self.chain().await?.node_key;
        *self.node_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(key)
    }

    /// Runs a signed write (`write` signs, and makes holder proofs, for [`Client::node_key`]).
    /// When the node refuses the signature because its key is no longer the one kept (a node
    /// given a new key, another node behind the same address), asks the key again and runs
    /// the write once more. A write the node answers `busy` (its body budget is spent) is
    /// sent again after 0.5, 1, 2, ... 16 s.
    pub(crate) async fn signed_write<T, F>(&self, write: impl Fn() -> F) -> Result<T, ClientError>
    where
        F: std::future::Future<Output = Result<T, ClientError>>,
    {
        let write = || async {
            // The node holds as many bodies as its memory budget allows and tells the rest
            // `busy`: wait and send again, a little longer each time, for about a minute.
            let mut wait = Duration::from_millis(500);
            loop {
                match write().await {
                    Err(e) if e.code() == Some("busy") && wait < Duration::from_secs(32) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    other => return other,
                }
            }
        };
        if self.signer.is_none() {
            return write().await;
        }
        let signed_for = self.node_key().await?;
        match write().await {
            Err(e) if e.code() == Some("bad_signature") => {
                if self.refresh_node_key().await? == signed_for {
                    return Err(e);
                }
                write().await
            }
            other => other,
        }
    }

    /// Whether requests are signed (the client was given a key).
    pub(crate) fn has_signer(&self) -> bool {
        self.signer.is_some()
    }

    /// Adds the signature header of a data-plane write for this node to `request` (none
    /// without a signer: the node then says what is missing).
    pub(crate) async fn sign(
        &self,
        request: reqwest::RequestBuilder,
        method: &str,
        path: &str,
        digest: &Hash,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        let Some(key) = &self.signer else {
            return Ok(request);
        };
        let node = self.node_key().await?;
        let signature = gridwork_api::signature_header(key, &node, method, path, now_ms(), digest);
        Ok(request
            .header(gridwork_api::DIGEST_HEADER, digest.to_string())
            .header(gridwork_api::SIGNATURE_HEADER, signature))
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let resp = req
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(unreachable(url))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable(url))?;
        if !status.is_success() {
            return Err(refusal(status, &bytes, url));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        self.send(req, url).await
    }

    /// Sends a request whose success has no body.
    pub(crate) async fn send_empty(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(), ClientError> {
        self.send_bytes(req, url).await.map(|_| ())
    }

    /// Sends a request and returns the body of a success; a failure becomes the node's error.
    pub(crate) async fn send_bytes(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<bytes::Bytes, ClientError> {
        let resp = req
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(unreachable(url))?;
        let status = resp.status();
        if status.is_success() {
            // Into a reused buffer (see `frames::take_buffer`); chunks parsed from it are
            // slices of it, and it returns to the pool when the last is dropped.
            let mut resp = resp;
            let mut body = gridwork_api::frames::take_buffer(
                resp.content_length().unwrap_or(0).min(1 << 27) as usize,
            );
            while let Some(piece) = resp.chunk().await.map_err(unreachable(url))? {
                body.extend_from_slice(&piece);
            }
            return Ok(gridwork_api::frames::share(body));
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(refusal(status, &bytes, url))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.get(&url), &url).await
    }

    async fn get_optional<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /health` (a halted node answers 503 with its reason; this returns it as an error).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = format!("{}/health", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(unreachable(&url))?;
        resp.json().await.map_err(|e| ClientError::BadResponse {
            url,
            message: e.to_string(),
        })
    }

    /// `GET /v1/chain`.
    pub async fn chain(&self) -> Result<ChainInfo, ClientError> {
        self.get("/v1/chain").await
    }

    /// `GET /v1/accounts/{address}`.
    pub async fn account(&self, address: &Address) -> Result<AccountView, ClientError> {
        self.get(&format!("/v1/accounts/{address}")).await
    }

    /// Signs `kind` with `key` for this node's chain at the account's next nonce (which counts
    /// its pending transactions), paying `fee`, and submits it. One key's transactions are
    /// sent one at a time: the nonce is read, then used (the worker holds a lock around this).
    pub async fn sign_and_send(
        &self,
        key: &Keypair,
        fee: gridwork_types::Amount,
        kind: gridwork_types::TxKind,
    ) -> Result<Hash, ClientError> {
        let chain_id = self.chain_id().await?;
        let account = self.account(&key.address()).await?;
        let tx = gridwork_types::Transaction {
            from: key.public(),
            nonce: account.next_nonce,
            fee,
            kind,
        }
        .sign(&chain_id, key);
        self.submit(&tx).await
    }

    /// The node's chain id, asked once.
    async fn chain_id(&self) -> Result<String, ClientError> {
        let known = self
            .chain_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(id) = known {
            return Ok(id);
        }
        let id = self.chain().await?.chain_id;
        *self.chain_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
        Ok(id)
    }

    /// `POST /v1/txs`.
    pub async fn submit(&self, tx: &SignedTx) -> Result<Hash, ClientError> {
        let url = format!("{}/v1/txs", self.base);
        let submitted: Submitted = self
            .send(self.http.post(&url).json(&SubmitTx::new(tx)), &url)
            .await?;
        Ok(submitted.hash)
    }

    /// `GET /v1/txs/{hash}`; `None` if the node does not know it.
    pub async fn tx(&self, hash: &Hash) -> Result<Option<TxStatus>, ClientError> {
        self.get_optional(&format!("/v1/txs/{hash}")).await
    }

    /// `GET /v1/blocks/{id}` with `latest`, a height or a hash.
    pub async fn block(&self, id: &str) -> Result<Option<BlockView>, ClientError> {
        self.get_optional(&format!("/v1/blocks/{id}")).await
    }

    /// `GET /v1/blocks?limit=`.
    pub async fn blocks(&self, limit: usize) -> Result<Vec<BlockView>, ClientError> {
        let list: BlockList = self.get(&format!("/v1/blocks?limit={limit}")).await?;
        Ok(list.blocks)
    }

    /// `GET /v1/jobs`: ids of open jobs.
    pub async fn open_jobs(&self) -> Result<Vec<Hash>, ClientError> {
        self.all_pages("/v1/jobs", |list: JobList| (list.open, list.next))
            .await
    }

    /// Every entry of a paged list at `path`, walking its `next` cursors (`?after=`).
    async fn all_pages<L, T, C>(
        &self,
        path: &str,
        split: impl Fn(L) -> (Vec<T>, Option<C>),
    ) -> Result<Vec<T>, ClientError>
    where
        L: DeserializeOwned,
        C: std::fmt::Display,
    {
        let mut all = Vec::new();
        let mut page = path.to_string();
        loop {
            let (entries, next) = split(self.get(&page).await?);
            all.extend(entries);
            match next {
                Some(next) => page = format!("{path}?after={next}"),
                None => return Ok(all),
            }
        }
    }

    /// `GET /v1/jobs/{id}`; `None` if the node does not know it.
    pub async fn job(&self, id: &Hash) -> Result<Option<JobView>, ClientError> {
        self.get_optional(&format!("/v1/jobs/{id}")).await
    }

    /// `POST /v1/jobs/{id}/declines`: says why `key`'s provider will not bid.
    pub async fn decline(
        &self,
        job: &Hash,
        key: &Keypair,
        reason: &str,
    ) -> Result<(), ClientError> {
        let url = format!("{}/v1/jobs/{job}/declines", self.base);
        let node = self.node_key().await?;
        let time_ms = now_ms();
        let message = decline_message(&node, job, reason, time_ms);
        let body = PostDecline {
            public_key: hex::encode(key.public().to_bytes()),
            reason: reason.to_string(),
            time_ms,
            signature: hex::encode(key.sign(&message).to_bytes()),
        };
        self.send_empty(self.http.post(&url).json(&body), &url)
            .await
    }

    /// `POST /v1/jobs/{id}/tasks/{task}/logs`: appends `data` at `offset` to the log of
    /// `key`'s run of `attempt`. Returns the log's size on the node.
    pub async fn append_log(
        &self,
        key: &Keypair,
        at: LogPosition,
        offset: u64,
        data: &str,
    ) -> Result<u64, ClientError> {
        let url = format!("{}/v1/jobs/{}/tasks/{}/logs", self.base, at.job, at.task);
        let message = log_message(&at.job, at.task, at.attempt, at.stream, offset, data);
        let body = PostLog {
            attempt: at.attempt,
            stream: at.stream,
            offset,
            data: data.to_string(),
            public_key: hex::encode(key.public().to_bytes()),
            signature: hex::encode(key.sign(&message).to_bytes()),
        };
        let appended: LogAppended = self
            .send_json(self.http.post(&url).json(&body), &url)
            .await?;
        Ok(appended.size)
    }

    /// `GET /v1/jobs/{id}/tasks/{task}/logs`: a task run's log from `offset` (`provider`
    /// defaults to the executor, `attempt` to the current one), signed by the client's key
    /// (the job's requester, or the task's executor or a council member).
    pub async fn task_log(
        &self,
        job: &Hash,
        task: u32,
        provider: Option<&Address>,
        attempt: Option<u32>,
        stream: LogStream,
        offset: u64,
    ) -> Result<TaskLog, ClientError> {
        let mut path = format!(
            "/v1/jobs/{job}/tasks/{task}/logs?stream={}&offset={offset}",
            stream.as_str()
        );
        if let Some(p) = provider {
            path.push_str(&format!("&provider={p}"));
        }
        if let Some(a) = attempt {
            path.push_str(&format!("&attempt={a}"));
        }
        // Only the requester, executor and council may read a log: the read is signed, over
        // the path with the digest of the query.
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        let digest = Hash::of(query.as_bytes());
        let url = format!("{}{path}", self.base);
        let request = self
            .sign(self.http.get(&url), "GET", route, &digest)
            .await?;
        self.send(request, &url).await
    }

    /// `GET /v1/providers/{address}`; `None` if not registered.
    pub async fn provider(&self, address: &Address) -> Result<Option<ProviderView>, ClientError> {
        self.get_optional(&format!("/v1/providers/{address}")).await
    }

    /// `GET /v1/services/{id}`; `None` if there is no such service.
    pub async fn service(
        &self,
        id: &Hash,
    ) -> Result<Option<gridwork_api::ServiceView>, ClientError> {
        self.get_optional(&format!("/v1/services/{id}")).await
    }

    /// `GET /v1/services`: ids of the services not closed.
    pub async fn services(&self) -> Result<Vec<Hash>, ClientError> {
        self.all_pages("/v1/services", |list: gridwork_api::ServiceList| {
            (list.open, list.next)
        })
        .await
    }

    /// `GET /v1/providers`.
    pub async fn providers(&self) -> Result<Vec<ProviderView>, ClientError> {
        self.all_pages("/v1/providers", |list: ProviderList| {
            (list.providers, list.next)
        })
        .await
    }

    /// Polls until the transaction is committed, or `timeout` passes. A transaction the
    /// market refused in its block (`TxFailed`: it paid its fee and nonce and did nothing
    /// else) is an error with the refusal's code.
    pub async fn wait_committed(
        &self,
        hash: &Hash,
        timeout: Duration,
    ) -> Result<TxStatus, ClientError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.tx(hash).await? {
                if let Some(receipt) = &status.receipt {
                    if let Some((code, reason)) = receipt.failure() {
                        return Err(ClientError::Api {
                            status: 422,
                            code: code.into(),
                            message: format!(
                                "the ledger refused transaction {hash} in block {} (its fee \
                                 and nonce are spent): {reason}",
                                receipt.height
                            ),
                            needed_fee: None,
                        });
                    }
                    return Ok(status);
                }
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout {
                    what: format!("transaction {hash}"),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Opens the event stream and yields committed blocks as they come.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(unreachable(&url))?;
        // A refusal (`too_many_subscribers`) is an error, not an empty stream.
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(refusal(status, &bytes, &url));
        }
        Ok(EventStream {
            resp,
            buf: String::new(),
            url,
        })
    }
}

/// Committed blocks from the node's event stream.
#[derive(Debug)]
pub struct EventStream {
    resp: reqwest::Response,
    buf: String,
    url: String,
}

impl EventStream {
    /// The next committed block, or `None` when the stream ends.
    pub async fn next_block(&mut self) -> Result<Option<BlockEvent>, ClientError> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut name = "message";
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if name == "block" {
                    return serde_json::from_str(&data).map(Some).map_err(|e| {
                        ClientError::BadResponse {
                            url: self.url.clone(),
                            message: e.to_string(),
                        }
                    });
                }
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        url: self.url.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }
}

/// The node's refusal of a request: its error body, or what came back instead.
fn refusal(status: reqwest::StatusCode, bytes: &[u8], url: &str) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            needed_fee: body.error.needed_fee,
        },
        Err(_) => ClientError::BadResponse {
            url: url.to_string(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(bytes)),
        },
    }
}

/// This machine's clock, in ms since the Unix epoch (what signed requests carry).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
