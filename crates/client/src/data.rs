//! Moving trees in the data plane's format: push only what the node lacks, pull only what
//! the local store lacks, several streams at once, every chunk checked against its id.
//!
//! A push is a pipeline: packing threads seal chunks into a bounded channel; batches of them
//! ask the node which it lacks (one round trip per batch) and upload only those, while the
//! next chunks are being packed; the root object goes last, so a tree the node names is
//! complete. A pull fetches chunks in tree order from one or more [`ChunkSource`]s, checks
//! each against its id once, keeps it in the local store (so an interrupted pull resumes
//! where it stopped) and hands the opened plaintext straight to the file writer.
//!
//! Several sources: the first requests probe each source; afterwards each chunk goes to the
//! source with the lowest expected finishing time (requests in flight over measured rate), so
//! the fastest takes most. A probe has 3 s while another source could be asked: a source that
//! does not answer it (an unreachable peer) is then asked only if no other is left. A chunk
//! that does not match its id is fetched from another source and the source that sent it is
//! not asked again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use gridwork_api::frames::{read_answer, ChunkSource, Fetch, Frame, SourceError};
use gridwork_api::{
    ChunkIds, KeyGrant, KeyGrants, MissingChunks, PinView, StorageView, KEY_PROOF_HEADER,
};
use gridwork_transfer::{
    chunk_set_digest, manifest_ids, open, pack_with_index, proof_lock, read_manifest,
    root_children, sealed_prefix, sorted_difference, sorted_ids, unwrap_key, wrap_key,
    write_tree_with, ChunkParams, ChunkSink, ChunkStore, DataKey, NotKept, PackIndex, StoreError,
    TreeError, TreeManifest, VerifiedChunk, WriteHooks,
};
use gridwork_types::{Address, Hash, Keypair, PublicKey};
use serde::Serialize;

use crate::client::{Client, ClientError};
use crate::journal::Checkpoints;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The node failed or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Packing, opening or unpacking failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No source has a chunk the tree needs.
    #[error("no source has chunk {id} (asked: {asked})")]
    Missing {
        /// The chunk.
        id: Hash,
        /// The sources asked, and what each said.
        asked: String,
    },
    /// Nobody granted this key the tree's data key.
    #[error("tree {cid} has no key for {address}; ask its owner to run `gridwork data share {cid} {address}`")]
    NoGrant {
        /// The tree.
        cid: Hash,
        /// Who asked.
        address: Address,
    },
    /// Every key granted to this key is not the tree's (a holder granted a wrong one).
    #[error("the keys granted to {address} for tree {cid} do not open it (a holder shared a wrong key); ask its owner to run `gridwork data share {cid} {address}` again")]
    WrongKeyGranted {
        /// The tree.
        cid: Hash,
        /// Who asked.
        address: Address,
    },
}

/// How a transfer runs.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Chunk sizes for file data.
    pub params: ChunkParams,
    /// Requests in flight at once.
    pub streams: usize,
    /// Where the transfer counts its bytes, for a progress display.
    pub progress: Progress,
    /// Push only: also keep the sealed chunks in this store (a worker that serves its
    /// outputs to peers).
    pub keep: Option<ChunkStore>,
    /// Pull only: the journal of files written and synced (see `journal.rs`): a pull run
    /// again with the same journal skips them. None: a resumed pull writes every file again,
    /// from the chunks its local store kept.
    pub journal: Option<std::path::PathBuf>,
    /// Pull only: bytes of written files between checkpoints (a `syncfs` and a journal
    /// line per file), and between trims of the local store.
    pub checkpoint_bytes: u64,
    /// Pull only: at each checkpoint, trim the local store to this many bytes, least
    /// recently used first (chunks of files not yet checkpointed stay).
    pub cache_max_bytes: Option<u64>,
    /// Push only: the tree's [`PackIndex`] from the last push. Files that look as it knows
    /// them (and whose chunks the node still has) are not read again; a successful push
    /// writes it anew. None: every file is read.
    pub index: Option<std::path::PathBuf>,
    /// Pull only: fetched chunks go to their files only, not also to the local store (a
    /// chunk the tree names twice aside), so each byte is written once; a pull run again into
    /// the same directory finds the chunks a cut-off pull finished in the files themselves
    /// (re-cut, re-sealed and compared with the manifest's ids). Off: fetched chunks are kept
    /// in the local store (a worker's cache that serves peers) and a resumed pull takes them
    /// from there.
    pub resume_from_files: bool,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            params: ChunkParams::DEFAULT,
            streams: 8,
            progress: Progress::default(),
            keep: None,
            journal: None,
            checkpoint_bytes: 1 << 30,
            cache_max_bytes: None,
            index: None,
            resume_from_files: false,
        }
    }
}

impl TransferOptions {
    /// Default options with `streams` requests in flight.
    pub fn with_streams(streams: usize) -> TransferOptions {
        TransferOptions {
            streams,
            ..TransferOptions::default()
        }
    }
}

/// File bytes a transfer has handled, out of how many; shared with whoever displays them.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<ProgressCounts>);

#[derive(Debug, Default)]
struct ProgressCounts {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// File bytes packed (push) or written (pull) so far.
    pub fn done(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    /// File bytes in the tree (0 until known).
    pub fn total(&self) -> u64 {
        self.0.total.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.done.fetch_add(n, Ordering::Relaxed);
    }

    fn set_total(&self, n: u64) {
        self.0.total.store(n, Ordering::Relaxed);
    }
}

impl ChunkSource for Client {
    fn label(&self) -> String {
        self.base_url().to_string()
    }

    fn fetch_chunks<'a>(&'a self, ids: &'a [Hash]) -> Fetch<'a> {
        Box::pin(async move {
            self.get_chunks(ids).await.map_err(|e| match e {
                ClientError::Unreachable { message, .. } => SourceError::Unreachable(message),
                ClientError::Timeout { .. } => SourceError::Unreachable(e.to_string()),
                ClientError::Api { .. } => SourceError::Refused(e.to_string()),
                ClientError::BadResponse { message, .. } => SourceError::BadAnswer(message),
            })
        })
    }
}

/// Request sizes that adapt to measured throughput: a request should take between 50 and
/// 500 ms at the rate it achieved, so a size doubles after a full request that finished
/// sooner and halves after one that took longer, between 256 KiB and 16 MiB. Small requests
/// keep a slow link responsive; large ones spread per-request costs on a fast one.
#[derive(Debug)]
struct Sizer {
    target: AtomicU64,
}

impl Sizer {
    const MIN: u64 = 256 * 1024;
    const MAX: u64 = 16 * 1024 * 1024;

    fn new() -> Sizer {
        Sizer {
            target: AtomicU64::new(1024 * 1024),
        }
    }

    fn target(&self) -> u64 {
        self.target.load(Ordering::Relaxed)
    }

    fn observe(&self, bytes: u64, seconds: f64) {
        let target = self.target();
        if seconds < 0.05 && bytes >= target / 2 {
            self.target
                .store((target * 2).min(Sizer::MAX), Ordering::Relaxed);
        } else if seconds > 0.5 {
            self.target
                .store((target / 2).max(Sizer::MIN), Ordering::Relaxed);
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The tree's content id.
    pub cid: Hash,
    /// Files in the tree.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks of the tree.
    pub chunks: u64,
    /// Files not read again: unchanged since the last push (see [`TransferOptions::index`]).
    pub unchanged_files: u64,
    /// Chunks actually sent.
    pub chunks_sent: u64,
    /// Bytes actually sent.
    pub bytes_sent: u64,
    /// The request size the transfer settled on (adapted to measured throughput).
    pub request_bytes: u64,
    /// The tree pushed before (from [`TransferOptions::index`]) whose pin the node still
    /// kept: the pin named only the chunk ids that changed since, and the index's chunks were
    /// not asked about one by one.
    pub pinned_from: Option<Hash>,
    /// Until when the node keeps the tree (ms since the epoch; each push pins it again).
    pub pinned_until_ms: u64,
    /// Bytes of pinned trees the node charges the pushing account, this one included.
    pub account_pinned_bytes: u64,
    /// The most the node lets the account keep pinned (none: no limit).
    pub account_quota_bytes: Option<u64>,
    /// What a pull of the tree will not give back as it was (setuid bits, device nodes,
    /// sockets), in path order: a push tells its user ([`NotKept`] displays as a sentence).
    pub not_kept: Vec<NotKept>,
}

/// What the node answered a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Pinned {
    /// Until when it keeps the tree (ms since the epoch).
    pub until_ms: u64,
    /// Bytes of pinned trees it charges the signer, this one included.
    #[serde(default)]
    pub account_pinned_bytes: u64,
    /// The signer's quota of pinned bytes (none: no limit).
    #[serde(default)]
    pub account_quota_bytes: Option<u64>,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// The tree's content id.
    pub cid: Hash,
    /// Files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks fetched from sources (the rest came from the local store).
    pub chunks_received: u64,
    /// Bytes fetched.
    pub bytes_received: u64,
    /// File bytes already in place, not fetched: files the journal lists, and the chunks a
    /// cut-off pull finished (see [`TransferOptions::resume_from_files`]).
    pub bytes_in_place: u64,
    /// What each source did.
    pub sources: Vec<SourceReport>,
    /// The request size the transfer settled on (adapted to measured throughput).
    pub request_bytes: u64,
}

/// What one source did during a pull.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The source.
    pub source: String,
    /// Chunks it delivered that matched their ids.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Requests sent to it.
    pub requests: u64,
    /// Chunks it sent that did not match their ids (it was not asked again).
    pub rejected: u64,
    /// Requests that failed (unreachable, refused, malformed).
    pub failed: u64,
    /// Chunks it said it does not have.
    pub lacked: u64,
}

/// Runs blocking work (hashing, sealing, file I/O) off the async threads that move bytes.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, DataError> {
    tokio::task::spawn_blocking(op).await.map_err(|e| {
        DataError::Store(StoreError::Io {
            path: "transfer worker".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?
}

impl Client {
    /// Posts `ids` to `url` in the binary form (32 bytes an id) and returns the answer;
    /// `None` when the node reads only JSON (an earlier version).
    async fn post_ids(
        &self,
        url: &str,
        ids: &[Hash],
        signed_as: Option<&str>,
    ) -> Result<Option<bytes::Bytes>, ClientError> {
        let body: Vec<u8> = ids.iter().flat_map(|id| id.0).collect();
        let digest = Hash::of(&body);
        let mut request = self
            .http()
            .post(url)
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(path) = signed_as {
            request = self.sign(request, "POST", path, &digest).await?;
        }
        match self.send_bytes(request, url).await {
            Err(e) if e.code() == Some("malformed_json") => Ok(None),
            other => other.map(Some),
        }
    }

    /// Which of `ids` the node lacks, asked in the binary form (32 bytes an id, a bit an
    /// answer: JSON with hex ids took 67 bytes each way).
    async fn missing_chunks(&self, ids: Vec<Hash>) -> Result<Vec<Hash>, ClientError> {
        let url = format!("{}/v1/chunks/missing", self.base_url());
        let Some(bits) = self.post_ids(&url, &ids, None).await? else {
            let answer: MissingChunks = self
                .send_json(self.http().post(&url).json(&ChunkIds { ids }), &url)
                .await?;
            return Ok(answer.missing);
        };
        if bits.len() != ids.len().div_ceil(8) {
            return Err(ClientError::BadResponse {
                url,
                message: format!(
                    "{} bytes of answer for {} chunk ids (one bit each)",
                    bits.len(),
                    ids.len()
                ),
            });
        }
        Ok(ids
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0)
            .map(|(_, id)| id)
            .collect())
    }

    /// Several chunks in one request: one frame per id, in order. Signed when the client
    /// has a key (a node answers unsigned fetches only up to
    /// [`UNSIGNED_RESPONSE_BYTES`](gridwork_api::frames::UNSIGNED_RESPONSE_BYTES)), unsigned
    /// when that key holds nothing on the ledger.
    async fn get_chunks(&self, ids: &[Hash]) -> Result<Vec<Frame>, ClientError> {
        let url = format!("{}/v1/chunks/fetch", self.base_url());
        let signed = match self.has_signer() {
            true => match self
                .signed_write(|| self.post_ids(&url, ids, Some("/v1/chunks/fetch")))
                .await
            {
                Err(e) if e.code() == Some("unfunded_account") => None,
                other => Some(other?),
            },
            false => None,
        };
        let answer = match signed {
            Some(answer) => answer,
            None => self.post_ids(&url, ids, None).await?,
        };
        let body = match answer {
            Some(body) => body,
            None => {
                self.send_bytes(
                    self.http().post(&url).json(&ChunkIds { ids: ids.to_vec() }),
                    &url,
                )
                .await?
            }
        };
        read_answer(&body, ids, MAX_SEALED)
            .map_err(|message| ClientError::BadResponse { url, message })
    }

    /// Several chunks in one upload.
    async fn put_chunks(&self, chunks: &[(Hash, bytes::Bytes)]) -> Result<(), ClientError> {
        self.signed_write(|| self.put_chunks_once(chunks)).await
    }

    async fn put_chunks_once(&self, chunks: &[(Hash, bytes::Bytes)]) -> Result<(), ClientError> {
        let url = format!("{}/v1/chunks", self.base_url());
        // The body streams the sealed chunks as they are (a copy of each into one buffer was
        // 3% of a push's CPU).
        let pieces = gridwork_api::frames::upload_pieces(chunks);
        let length: usize = pieces.iter().map(|p| p.len()).sum();
        let body = reqwest::Body::wrap_stream(stream::iter(
            pieces.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let ids: Vec<u8> = chunks.iter().flat_map(|(id, _)| id.0).collect();
        let request = self
            .http()
            .post(&url)
            .header("content-type", "application/octet-stream")
            .header("content-length", length)
            .body(body);
        let digest = Hash::of(&ids);
        let request = self.sign(request, "POST", "/v1/chunks", &digest).await?;
        self.send_empty(request, &url).await
    }

    /// What the node stores for `account` (pinned and pending bytes, its quota).
    pub async fn storage(&self, account: &Address) -> Result<StorageView, ClientError> {
        let url = format!("{}/v1/accounts/{account}/storage", self.base_url());
        self.send_json(self.http().get(&url), &url).await
    }

    /// The key grants of a tree.
    pub async fn key_grants(&self, cid: &Hash) -> Result<Vec<KeyGrant>, ClientError> {
        let url = format!("{}/v1/trees/{cid}/keys", self.base_url());
        let grants: KeyGrants = self.send_json(self.http().get(&url), &url).await?;
        Ok(grants.keys)
    }

    /// The data key of tree `cid` granted to `me`. Every grant to `me` is tried; where the
    /// node shows the tree's pin lock, only a key that opens it is taken, so a wrong key some
    /// holder granted `me` (by mistake or to make `me` fail) is passed over.
    pub async fn granted_key(&self, cid: &Hash, me: &Keypair) -> Result<DataKey, DataError> {
        let grants = self.key_grants(cid).await?;
        let keys: Vec<DataKey> = grants
            .iter()
            .filter(|g| g.recipient == me.address())
            .filter_map(|g| unwrap_key(g, me))
            .collect();
        if keys.is_empty() {
            return Err(DataError::NoGrant {
                cid: *cid,
                address: me.address(),
            });
        }
        let lock = self.pin_view(cid).await?.and_then(|pin| pin.lock);
        let Some(lock) = lock else {
            // Nothing to check against (an expired pin, or one of the oldest format).
            return Ok(keys[0].clone());
        };
        let node = self.node_key().await?;
        keys.into_iter()
            .find(|key| proof_lock(&key.holder_proof(cid, &node)) == lock)
            .ok_or(DataError::WrongKeyGranted {
                cid: *cid,
                address: me.address(),
            })
    }

    /// Lets `recipient` decrypt tree `cid` (whose data key is `key`).
    pub async fn share_key(
        &self,
        cid: &Hash,
        key: &DataKey,
        recipient: &PublicKey,
    ) -> Result<(), ClientError> {
        self.add_key_grant(cid, key, &wrap_key(key, recipient))
            .await
    }

    /// The proof for this node that the client holds `key`, the data key of tree `cid`.
    async fn holder_proof(&self, key: &DataKey, cid: &Hash) -> Result<Hash, ClientError> {
        Ok(key.holder_proof(cid, &self.node_key().await?))
    }

    /// Adds a key grant to tree `cid`, proving the sender holds its data key `key` (the node
    /// takes grants only from holders).
    pub async fn add_key_grant(
        &self,
        cid: &Hash,
        key: &DataKey,
        grant: &KeyGrant,
    ) -> Result<(), ClientError> {
        self.signed_write(|| self.add_key_grant_once(cid, key, grant))
            .await
    }

    async fn add_key_grant_once(
        &self,
        cid: &Hash,
        key: &DataKey,
        grant: &KeyGrant,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/trees/{cid}/keys");
        let url = format!("{}{path}", self.base_url());
        let body = serde_json::to_vec(grant).map_err(|e| ClientError::BadResponse {
            url: url.clone(),
            message: format!("cannot encode the grant: {e}"),
        })?;
        let digest = Hash::of(&body);
        let request = self
            .http()
            .post(&url)
            .header(
                KEY_PROOF_HEADER,
                self.holder_proof(key, cid).await?.to_string(),
            )
            .header("content-type", "application/json")
            .body(body);
        let request = self.sign(request, "POST", &path, &digest).await?;
        self.send_empty(request, &url).await
    }

    /// Packs `root` and sends the node the chunks it lacks, while packing goes on.
    pub async fn push_tree(
        &self,
        root: &Path,
        key: &DataKey,
        opts: &TransferOptions,
    ) -> Result<PushReport, DataError> {
        match self.push_tree_once(root, key, opts).await {
            // The node dropped a chunk it reported present while the push ran (a collection
            // of an expired tree that shared it): push again, which sends what is missing.
            Err(DataError::Client(e)) if e.code() == Some("tree_incomplete") => {
                self.push_tree_once(root, key, opts).await
            }
            other => other,
        }
    }

    /// Pins tree `cid` (whose data key is `key`) with its chunk ids on the node, charged to
    /// this client's signer; returns until when it is kept.
    pub async fn pin_tree(
        &self,
        cid: &Hash,
        key: &DataKey,
        chunks: &[Hash],
    ) -> Result<Pinned, ClientError> {
        self.signed_write(|| self.pin_tree_once(cid, key, chunks))
            .await
    }

    async fn pin_tree_once(
        &self,
        cid: &Hash,
        key: &DataKey,
        chunks: &[Hash],
    ) -> Result<Pinned, ClientError> {
        let body: Vec<u8> = chunks.iter().flat_map(|id| id.0).collect();
        self.put_pin(cid, key, format!("/v1/trees/{cid}/pin"), body)
            .await
    }

    /// A signed `PUT` of a pin body to `path`, with the key proof for tree `cid`.
    async fn put_pin(
        &self,
        cid: &Hash,
        key: &DataKey,
        path: String,
        body: Vec<u8>,
    ) -> Result<Pinned, ClientError> {
        let url = format!("{}{path}", self.base_url());
        let digest = Hash::of(&body);
        let request = self
            .http()
            .put(&url)
            .header("content-type", "application/octet-stream")
            .header(
                KEY_PROOF_HEADER,
                self.holder_proof(key, cid).await?.to_string(),
            )
            .body(body);
        let request = self.sign(request, "PUT", &path, &digest).await?;
        self.send_json(request, &url).await
    }

    /// What the node keeps of tree `cid` (`None`: it is not pinned there).
    pub async fn pin_view(&self, cid: &Hash) -> Result<Option<PinView>, ClientError> {
        let url = format!("{}/v1/trees/{cid}/pin", self.base_url());
        match self.send_json(self.http().get(&url), &url).await {
            Ok(view) => Ok(Some(view)),
            Err(e) if e.code() == Some("not_pinned") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`pin_tree`](Self::pin_tree) naming only the chunks that differ from tree `base`'s
    /// pin, whose chunks are `base_chunks` (as the pinner recorded them): `chunks` is the
    /// whole set the new pin must list, which the node checks by its digest; both each once,
    /// in increasing order ([`sorted_ids`]). `None` (nothing sent) when the changes would be
    /// no shorter than the whole list.
    async fn pin_tree_from(
        &self,
        cid: &Hash,
        key: &DataKey,
        base: &Hash,
        base_chunks: &[Hash],
        chunks: &[Hash],
    ) -> Result<Option<Pinned>, ClientError> {
        let added = sorted_difference(chunks, base_chunks);
        let removed = sorted_difference(base_chunks, chunks);
        if added.len() + removed.len() >= chunks.len() {
            return Ok(None);
        }
        let mut body = Vec::with_capacity(36 + 32 * (added.len() + removed.len()));
        body.extend_from_slice(chunk_set_digest(chunks).as_bytes());
        body.extend_from_slice(&(added.len() as u32).to_le_bytes());
        for id in added.iter().chain(&removed) {
            body.extend_from_slice(id.as_bytes());
        }
        self.signed_write(|| {
            self.put_pin(
                cid,
                key,
                format!("/v1/trees/{cid}/pin-from/{base}"),
                body.clone(),
            )
        })
        .await
        .map(Some)
    }

    async fn push_tree_once(
        &self,
        root: &Path,
        key: &DataKey,
        opts: &TransferOptions,
    ) -> Result<PushReport, DataError> {
        let streams = opts.streams.max(1);
        let (index, base) = self.pack_index(opts, key).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Hash, Vec<u8>)>(streams * 4);
        let root_slot = Arc::new(Mutex::new(None));
        let reused = Arc::new(Mutex::new(Vec::new()));
        let sink = ChannelSink {
            tx,
            root: root_slot.clone(),
            reused: reused.clone(),
            progress: opts.progress.clone(),
            keep: opts.keep.clone(),
        };
        let (path, key_copy, params) = (root.to_path_buf(), key.clone(), opts.params);
        let packer = tokio::task::spawn_blocking(move || {
            pack_with_index(&path, &key_copy, params, &sink, index)
        });

        let sizer = Arc::new(Sizer::new());
        let permits = Arc::new(tokio::sync::Semaphore::new(streams));
        let mut uploads = tokio::task::JoinSet::new();
        let mut seen = HashSet::new();
        // Chunks the pin of the tree pushed before lists (in increasing order) are held by the
        // node (it keeps that pin): an unchanged manifest chunk is neither asked about nor sent.
        let held = base.as_ref().map_or(&[][..], |(_, chunks)| &chunks[..]);
        let mut failure = None;
        let (mut chunks_sent, mut bytes_sent) = (0u64, 0u64);
        let mut tally = |done| match joined(done) {
            Ok((c, b)) => {
                chunks_sent += c;
                bytes_sent += b;
                None
            }
            Err(e) => Some(e),
        };
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let mut batch_bytes = batch[0].1.len();
            while batch.len() < BATCH_CHUNKS && batch_bytes < BATCH_BYTES {
                let next = match rx.try_recv() {
                    Ok(chunk) => Some(chunk),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty)
                        if batch_bytes < LINGER_BELOW_BYTES =>
                    {
                        tokio::time::timeout(BATCH_LINGER, rx.recv())
                            .await
                            .ok()
                            .flatten()
                    }
                    Err(_) => None,
                };
                let Some(chunk) = next else { break };
                batch_bytes += chunk.1.len();
                batch.push(chunk);
            }
            batch.retain(|(id, _)| seen.insert(*id) && held.binary_search(id).is_err());
            if batch.is_empty() {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (client, sizer) = (self.clone(), sizer.clone());
            uploads.spawn(async move {
                let _permit = permit;
                client.upload_batch(batch, &sizer).await
            });
            while let Some(done) = uploads.try_join_next() {
                failure = failure.or(tally(done));
            }
            if failure.is_some() {
                break;
            }
        }
        // Dropping the receiver stops the packer at its next chunk if an upload failed.
        drop(rx);
        while let Some(done) = uploads.join_next().await {
            failure = failure.or(tally(done));
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let (cid, stats, next_index) = packer.await.map_err(|e| {
            DataError::Tree(TreeError::Malformed(format!("packing stopped: {e}")))
        })??;
        let root_object = root_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((id, bytes)) = root_object {
            let (c, b) = self.upload_batch(vec![(id, bytes)], &sizer).await?;
            chunks_sent += c;
            bytes_sent += b;
        }
        let mut ids = std::mem::take(&mut *reused.lock().unwrap_or_else(|p| p.into_inner()));
        ids.extend(seen);
        let ids = sorted_ids(ids);
        let mut pinned_from = None;
        let mut pinned = None;
        if let Some((base, base_chunks)) = &base {
            // The node still keeps the tree pushed before: name only what changed.
            match self.pin_tree_from(&cid, key, base, base_chunks, &ids).await {
                Err(e) if PIN_FROM_REFUSED.contains(&e.code().unwrap_or_default()) => {}
                other => {
                    pinned = other?;
                    pinned_from = pinned.map(|_| *base);
                }
            }
        }
        let pinned = match pinned {
            Some(pinned) => pinned,
            None => self.pin_tree(&cid, key, &ids).await?,
        };
        if let Some(path) = &opts.index {
            let (path, mut next_index) = (path.clone(), next_index);
            blocking(move || {
                next_index.pinned_in(cid, &ids);
                Ok(next_index.write(&path)?)
            })
            .await?;
        }
        Ok(PushReport {
            cid,
            files: stats.files,
            bytes: stats.bytes,
            chunks: stats.chunks,
            unchanged_files: stats.unchanged_files,
            chunks_sent,
            bytes_sent,
            request_bytes: sizer.target(),
            pinned_from,
            pinned_until_ms: pinned.until_ms,
            account_pinned_bytes: pinned.account_pinned_bytes,
            account_quota_bytes: pinned.account_quota_bytes,
            not_kept: stats.not_kept,
        })
    }

    /// The push index `opts` names, without the files whose chunks the node (or the store
    /// the push keeps its chunks in) no longer has: those are read and sent again. With it,
    /// the tree the index was last pushed in and that pin's chunks, if the node still keeps
    /// that pin as the index knows it: then it holds every chunk the index names (no need to
    /// ask about each), and the new pin can name only what changed.
    async fn pack_index(
        &self,
        opts: &TransferOptions,
        key: &DataKey,
    ) -> Result<(PackIndex, Option<(Hash, Vec<Hash>)>), DataError> {
        let Some(path) = opts.index.clone() else {
            return Ok((PackIndex::new(key, opts.params), None));
        };
        let (key, params) = (key.clone(), opts.params);
        let mut index = blocking(move || Ok(PackIndex::read(&path, &key, params))).await?;
        let mut base = None;
        if let Some((cid, chunks)) = index.pinned_tree() {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            // Any answer but a live pin of the same chunks (an older node, an expired or
            // changed pin, another node) means asking about each chunk.
            let kept = self
                .pin_view(&cid)
                .await
                .ok()
                .flatten()
                .is_some_and(|view| {
                    view.until_ms > now_ms + PIN_MARGIN_MS
                        && view.chunk_set == chunk_set_digest(&chunks)
                });
            base = kept.then_some((cid, chunks));
        }
        if base.is_some() && opts.keep.is_none() {
            return Ok((index, base));
        }
        let ids = index.chunk_ids();
        let mut missing = HashSet::new();
        for batch in ids.chunks(INDEX_CHECK_IDS) {
            if base.is_none() {
                missing.extend(self.missing_chunks(batch.to_vec()).await?);
            }
            if let Some(keep) = &opts.keep {
                missing.extend(keep.missing(batch.iter()));
            }
        }
        index.forget_files_with(&missing);
        Ok((index, base))
    }

    /// Asks the node which chunks of `batch` it lacks and uploads those, in requests sized by
    /// `sizer`; returns the chunks and bytes sent.
    async fn upload_batch(
        &self,
        batch: Vec<(Hash, Vec<u8>)>,
        sizer: &Sizer,
    ) -> Result<(u64, u64), DataError> {
        let ids = batch.iter().map(|(id, _)| *id).collect();
        let missing: HashSet<Hash> = self.missing_chunks(ids).await?.into_iter().collect();
        let mut pending: Vec<(Hash, bytes::Bytes)> = batch
            .into_iter()
            .filter(|(id, _)| missing.contains(id))
            .map(|(id, sealed)| (id, bytes::Bytes::from(sealed)))
            .collect();
        let (mut chunks, mut bytes) = (0, 0);
        while !pending.is_empty() {
            let target = sizer.target();
            let mut size = 0u64;
            let take = pending
                .iter()
                .take_while(|(_, b)| {
                    let first = size == 0;
                    size += b.len() as u64;
                    first || size <= target
                })
                .count();
            let request: Vec<(Hash, bytes::Bytes)> = pending.drain(..take).collect();
            let n: u64 = request.iter().map(|(_, b)| b.len() as u64).sum();
            let started = Instant::now();
            self.put_chunks(&request).await?;
            sizer.observe(n, started.elapsed().as_secs_f64());
            chunks += request.len() as u64;
            bytes += n;
        }
        Ok((chunks, bytes))
    }

    /// Fetches a tree's root and manifest chunks into `local` and opens the manifest.
    pub async fn tree_manifest(
        &self,
        cid: &Hash,
        key: &DataKey,
        params: ChunkParams,
        local: &ChunkStore,
    ) -> Result<TreeManifest, DataError> {
        fetch_manifest(&Sources::new(&[self], local), cid, key, params, local).await
    }

    /// Fetches tree `cid` from the node into `dest`; chunks already in `local` are not
    /// fetched again.
    pub async fn pull_tree(
        &self,
        cid: &Hash,
        key: &DataKey,
        local: &ChunkStore,
        dest: &Path,
        opts: &TransferOptions,
    ) -> Result<PullReport, DataError> {
        pull_tree_from(&[self], cid, key, local, dest, opts).await
    }
}

/// The largest sealed chunk a source may answer with (the node's upload limit).
const MAX_SEALED: usize = 8 * 1024 * 1024;

/// Slices of a pull opened (decrypted) at once, ahead of the file writer: half the cores, at
/// least 2, at most 16. Opening is most of a pull's CPU time; on 16 cores a 1 GiB pull ran
/// 839 MB/s with 2 (one slice at a time per core pair was the limit), 1,219 with 4, 1,387
/// with 8 and 1,435 with 16 (`bench data`, H100 host, 2026-11-23).
fn open_ahead() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get().div_ceil(2))
        .clamp(2, 16)
}

/// Most plaintext bytes (as estimated from the manifest) opened at once.
const OPEN_SLICE_BYTES: u64 = 8 * 1024 * 1024;

/// The next fetch: chunks (each with its estimated plaintext size) until about `target`
/// bytes, at least one, at most [`MAX_FETCH_IDS`](gridwork_api::frames::MAX_FETCH_IDS).
fn next_request(
    remaining: &mut std::iter::Peekable<impl Iterator<Item = (Hash, u64)>>,
    target: u64,
) -> Vec<(Hash, u64)> {
    let (mut batch, mut size) = (Vec::new(), 0u64);
    while let Some(chunk) = remaining.next_if(|_| {
        batch.is_empty() || (size < target && batch.len() < gridwork_api::frames::MAX_FETCH_IDS)
    }) {
        size += chunk.1;
        batch.push(chunk);
    }
    batch
}

/// A fetched batch with its chunks.
type Fetched = (Vec<(Hash, u64)>, HashMap<Hash, VerifiedChunk>);

/// A fetched batch cut into slices of at most [`OPEN_SLICE_BYTES`] of estimated plaintext
/// (or one chunk), each with the chunks fetched for it; an error stays one item.
fn open_slices(fetched: Result<Fetched, DataError>) -> Vec<Result<Fetched, DataError>> {
    let (batch, mut chunks) = match fetched {
        Ok(fetched) => fetched,
        Err(e) => return vec![Err(e)],
    };
    let mut slices = Vec::new();
    let (mut ids, mut part, mut bytes) = (Vec::new(), HashMap::new(), 0u64);
    for (id, estimate) in batch {
        // A chunk the batch repeats is in the slice that came first; one not fetched is in
        // the local store.
        if let Some(chunk) = chunks.remove(&id) {
            part.insert(id, chunk);
        }
        ids.push((id, estimate));
        bytes += estimate;
        if bytes >= OPEN_SLICE_BYTES {
            slices.push(Ok((std::mem::take(&mut ids), std::mem::take(&mut part))));
            bytes = 0;
        }
    }
    if !ids.is_empty() {
        slices.push(Ok((ids, part)));
    }
    slices
}

/// How long a probe (one chunk from a source not yet measured) may take while another source
/// could be asked instead; past it the source counts as failing for the rest of the pull.
const PROBE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// Chunks per upload batch, and bytes: one `missing` round trip covers a batch.
const BATCH_CHUNKS: usize = 64;
/// How long a small upload batch waits for the packer's next chunk before it goes: chunks
/// that come out together (a re-push's few changed files and its manifest) share a request.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// Batches of fewer bytes linger ([`BATCH_LINGER`]); larger ones go at once.
const LINGER_BELOW_BYTES: usize = 256 * 1024;
/// Chunk ids per question when checking a push index against the node (4.4 MB of JSON).
const INDEX_CHECK_IDS: usize = 65_536;
/// How long past now the pin of the tree pushed before must last for a push to count on
/// its chunks without asking (a pin that runs out during the push anyway fails it with
/// `tree_incomplete`, and the push runs again asking about each chunk).
const PIN_MARGIN_MS: u64 = 10 * 60 * 1000;
/// Answers to a pin from a base tree after which the push pins with every chunk id: the node
/// no longer keeps the base, keeps it with other chunks, or does not know such pins.
const PIN_FROM_REFUSED: [&str; 3] = ["pin_base_gone", "pin_set_mismatch", "not_found"];
const BATCH_BYTES: usize = 16 * 1024 * 1024;

fn joined<T>(r: Result<Result<T, DataError>, tokio::task::JoinError>) -> Result<T, DataError> {
    r.map_err(|e| {
        DataError::Store(StoreError::Io {
            path: "upload".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })?
}

/// Hands sealed chunks from the packing threads to the uploader; keeps the root for last.
/// A sealed chunk and its id.
type Sealed = (Hash, Vec<u8>);

struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<Sealed>,
    root: Arc<Mutex<Option<Sealed>>>,
    /// Chunks of unchanged files: not sent, but pinned with the rest.
    reused: Arc<Mutex<Vec<Hash>>>,
    progress: Progress,
    keep: Option<ChunkStore>,
}

impl ChunkSink for ChannelSink {
    fn put(&self, id: &Hash, sealed: Vec<u8>) -> Result<bool, TreeError> {
        if let Some(store) = &self.keep {
            store.put(id, &sealed)?;
        }
        self.tx
            .blocking_send((*id, sealed))
            .map_err(|_| TreeError::Malformed("the upload stopped".into()))?;
        Ok(true)
    }

    fn put_root(&self, id: &Hash, root: Vec<u8>) -> Result<bool, TreeError> {
        if let Some(store) = &self.keep {
            store.put(id, &root)?;
        }
        *self.root.lock().unwrap_or_else(|p| p.into_inner()) = Some((*id, root));
        Ok(true)
    }

    fn reuse(&self, ids: &[Hash]) -> Result<(), TreeError> {
        let mut reused = self.reused.lock().unwrap_or_else(|p| p.into_inner());
        reused.extend(ids.iter().copied());
        Ok(())
    }

    fn planned(&self, total_bytes: u64) {
        self.progress.set_total(total_bytes);
    }

    fn packed(&self, plain_bytes: u64) {
        self.progress.add(plain_bytes);
    }
}

/// The sources of a pull, with what each has done so far.
struct Sources<'a> {
    sources: &'a [&'a dyn ChunkSource],
    state: Mutex<Vec<SourceState>>,
    /// Where verified chunks go as soon as they are checked, so a pull cut off later keeps
    /// them.
    local: ChunkStore,
    /// None: every verified chunk goes there. Some: only the chunks the tree names more than
    /// once; the others are held until opened for the writer, and put there only if the pull
    /// fails first (fetched before a cut, they are not fetched again).
    unwritten: Arc<Mutex<Option<Unwritten>>>,
    /// A permit per answer being checked: checks run on to the end when the pull that asked
    /// stops, so a failed pull waits for them before it keeps what they held.
    checks: Arc<tokio::sync::Semaphore>,
}

/// Answers checked at once, at most (more than any pull has in flight).
const CHECKS: u32 = 1 << 16;

/// Chunks a pull that writes only its files holds between fetch and file.
struct Unwritten {
    /// Chunks the tree names more than once: kept in the local store.
    again: HashSet<Hash>,
    /// Fetched, not yet opened for the writer.
    held: HashMap<Hash, VerifiedChunk>,
}

#[derive(Debug, Default, Clone)]
struct SourceState {
    in_flight: u64,
    requests: u64,
    chunks: u64,
    bytes: u64,
    seconds: f64,
    rejected: u64,
    failed: u64,
    lacked: u64,
    /// Failed requests since the last answer.
    failing: u64,
}

impl<'a> Sources<'a> {
    fn new(sources: &'a [&'a dyn ChunkSource], local: &ChunkStore) -> Sources<'a> {
        Sources {
            sources,
            state: Mutex::new(vec![SourceState::default(); sources.len()]),
            local: local.clone(),
            unwritten: Arc::new(Mutex::new(None)),
            checks: Arc::new(tokio::sync::Semaphore::new(CHECKS as usize)),
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, Option<Unwritten>> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, keep only the chunks in `again` in the local store, and hold the others
    /// until [`Sources::opened`].
    fn keep_only(&self, again: HashSet<Hash>) {
        *self.unwritten() = Some(Unwritten {
            again,
            held: HashMap::new(),
        });
    }

    /// Chunk `id` is opened for the writer: no longer held.
    fn opened(&self, id: &Hash) {
        if let Some(u) = self.unwritten().as_mut() {
            u.held.remove(id);
        }
    }

    /// The chunks fetched and not yet handed to the writer, once every check in progress
    /// ended (taken: a failed pull puts them into the local store, so a pull run again does
    /// not fetch them).
    async fn take_held(&self) -> Vec<VerifiedChunk> {
        let _all = self.checks.acquire_many(CHECKS).await;
        match self.unwritten().as_mut() {
            Some(u) => std::mem::take(&mut u.held).into_values().collect(),
            None => Vec::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Vec<SourceState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source to ask next, among those not yet `tried` for this chunk and never caught
    /// lying: one not yet measured and idle (the probe), else the one expected to finish
    /// soonest. Marks the request in flight; says whether it is a probe, and whether another
    /// source not failing could be asked instead.
    fn pick(&self, tried: &[usize]) -> Option<(usize, bool, bool)> {
        let mut state = self.state();
        let usable = |i: &usize| !tried.contains(i) && state[*i].rejected == 0;
        let mut candidates: Vec<usize> = (0..state.len()).filter(usable).collect();
        // A source whose last request failed (unreachable, timed out) is asked only when no
        // other is left, so a dead peer costs one timeout, not one per request.
        if candidates.iter().any(|i| state[*i].failing == 0) {
            candidates.retain(|i| state[*i].failing == 0);
        }
        let rate = |s: &SourceState| (s.seconds > 0.0).then(|| s.bytes as f64 / s.seconds);
        let known: Vec<f64> = candidates.iter().filter_map(|i| rate(&state[*i])).collect();
        let best_known = known.iter().copied().fold(0.0, f64::max);
        let chosen = candidates
            .iter()
            .copied()
            .find(|i| rate(&state[*i]).is_none() && state[*i].in_flight == 0)
            .or_else(|| {
                candidates.iter().copied().min_by(|a, b| {
                    let cost = |i: usize| {
                        let s = &state[i];
                        // An unmeasured source counts as slow until its probe returns.
                        let r = rate(s).unwrap_or(best_known / 4.0).max(1.0);
                        (s.in_flight + 1) as f64 / r
                    };
                    cost(*a).total_cmp(&cost(*b))
                })
            })?;
        let probe = rate(&state[chosen]).is_none();
        let alternative = candidates
            .iter()
            .any(|&i| i != chosen && state[i].failing == 0);
        state[chosen].in_flight += 1;
        Some((chosen, probe, alternative))
    }

    /// The chunks `ids` from whichever sources deliver ones that match their ids, each kept
    /// in the local store as soon as it is checked.
    async fn fetch(&self, ids: Vec<Hash>) -> Result<HashMap<Hash, VerifiedChunk>, DataError> {
        let mut need: Vec<Hash> = ids;
        need.sort_unstable();
        need.dedup();
        let mut got = HashMap::with_capacity(need.len());
        let mut tried = Vec::new();
        let mut said = Vec::new();
        while !need.is_empty() {
            let Some((i, probe, alternative)) = self.pick(&tried) else {
                return Err(DataError::Missing {
                    id: need[0],
                    asked: if said.is_empty() {
                        "no usable source".into()
                    } else {
                        said.join("; ")
                    },
                });
            };
            // A probe asks for one chunk, so an unmeasured slow source costs one chunk's wait.
            let most = if probe {
                1
            } else {
                gridwork_api::frames::MAX_FETCH_IDS
            };
            let ask = &need[..need.len().min(most)];
            let label = self.sources[i].label();
            let started = Instant::now();
            let request = self.sources[i].fetch_chunks(ask);
            // A probe that keeps the chunk waiting while another source could send it has a
            // deadline: a source that never answers cannot hold the pull up. (3 s, not less:
            // a peer's first request includes its QUIC handshake, on a loaded machine too.)
            let answer = if probe && alternative {
                tokio::time::timeout(PROBE_PATIENCE, request)
                    .await
                    .unwrap_or_else(|_| {
                        Err(SourceError::Unreachable(format!(
                            "no answer to a one-chunk probe in {} ms",
                            PROBE_PATIENCE.as_millis()
                        )))
                    })
            } else {
                request.await
            };
            let seconds = started.elapsed().as_secs_f64();
            let checked = match answer {
                Ok(frames) if frames.len() == ask.len() => {
                    let (asked, store) = (ask.to_vec(), self.local.clone());
                    let unwritten = self.unwritten.clone();
                    let permit = self.checks.clone().acquire_owned().await;
                    blocking(move || {
                        let _checking = permit;
                        check_frames(asked, frames, &store, &unwritten)
                    })
                    .await?
                }
                Ok(_) => Checked::failed("answered other ids than asked"),
                Err(e) => Checked::failed(&e.to_string()),
            };
            let mut state = self.state();
            let s = &mut state[i];
            s.in_flight -= 1;
            s.requests += 1;
            s.rejected += checked.forged;
            s.lacked += checked.lacked;
            s.failed += u64::from(checked.failure.is_some());
            s.failing = if checked.failure.is_some() {
                s.failing + 1
            } else {
                0
            };
            let bytes: u64 = checked.ok.iter().map(|c| c.bytes().len() as u64).sum();
            if !checked.ok.is_empty() {
                s.chunks += checked.ok.len() as u64;
                s.bytes += bytes;
                s.seconds += seconds;
            }
            drop(state);
            if let Some(f) = &checked.failure {
                said.push(format!("{label}: {f}"));
            }
            if checked.forged > 0 {
                said.push(format!(
                    "{label}: sent bytes that do not match the id ({} chunks)",
                    checked.forged
                ));
            }
            if checked.lacked > 0 {
                said.push(format!("{label}: does not have {} chunks", checked.lacked));
            }
            // A source that only deferred part of the answer may be asked again; one that
            // failed, lacked or lied is not asked again for these chunks.
            if checked.failure.is_some()
                || checked.forged > 0
                || checked.lacked > 0
                || checked.ok.is_empty()
            {
                tried.push(i);
            }
            for c in checked.ok {
                got.insert(*c.id(), c);
            }
            need.retain(|id| !got.contains_key(id));
        }
        Ok(got)
    }

    fn reports(&self) -> Vec<SourceReport> {
        self.state()
            .iter()
            .zip(self.sources)
            .map(|(s, source)| SourceReport {
                source: source.label(),
                chunks: s.chunks,
                bytes: s.bytes,
                requests: s.requests,
                rejected: s.rejected,
                failed: s.failed,
                lacked: s.lacked,
            })
            .collect()
    }
}

/// What a source's answer held, after checking each chunk against its id.
struct Checked {
    ok: Vec<VerifiedChunk>,
    forged: u64,
    lacked: u64,
    failure: Option<String>,
}

impl Checked {
    fn failed(why: &str) -> Checked {
        Checked {
            ok: Vec::new(),
            forged: 0,
            lacked: 0,
            failure: Some(why.to_string()),
        }
    }
}

/// Checks each chunk of an answer against its id and keeps the good ones in `store` (or
/// holds them in `unwritten`: see [`Sources`]).
fn check_frames(
    ids: Vec<Hash>,
    frames: Vec<Frame>,
    store: &ChunkStore,
    unwritten: &Mutex<Option<Unwritten>>,
) -> Result<Checked, DataError> {
    let mut checked = Checked {
        ok: Vec::new(),
        forged: 0,
        lacked: 0,
        failure: None,
    };
    for (id, frame) in ids.into_iter().zip(frames) {
        match frame {
            Frame::Chunk(bytes) => match VerifiedChunk::check(id, bytes) {
                Ok(c) => {
                    let mut unwritten = unwritten.lock().unwrap_or_else(|p| p.into_inner());
                    match unwritten.as_mut() {
                        Some(u) if !u.again.contains(c.id()) => {
                            u.held.insert(*c.id(), c.clone());
                        }
                        _ => {
                            drop(unwritten);
                            store.put_verified(&c)?;
                        }
                    }
                    checked.ok.push(c);
                }
                Err(_) => checked.forged += 1,
            },
            Frame::Missing => checked.lacked += 1,
            Frame::Deferred => {}
        }
    }
    Ok(checked)
}

/// Puts a chunk into `local` unless it is there.
async fn ensure_local(
    sources: &Sources<'_>,
    id: Hash,
    local: &ChunkStore,
) -> Result<(), DataError> {
    if local.has(&id) {
        return Ok(());
    }
    sources.fetch(vec![id]).await?;
    Ok(())
}

async fn fetch_manifest(
    sources: &Sources<'_>,
    cid: &Hash,
    key: &DataKey,
    params: ChunkParams,
    local: &ChunkStore,
) -> Result<TreeManifest, DataError> {
    ensure_local(sources, *cid, local).await?;
    let root = local.get(cid)?.ok_or(TreeError::Missing { id: *cid })?;
    // The root names id lists, which name the manifest's chunks (a v1 root names those
    // itself).
    fetch_missing(sources, local, &root_children(&root)?).await?;
    fetch_missing(sources, local, &manifest_ids(&root, local)?).await?;
    Ok(read_manifest(cid, key, params, local)?)
}

/// Fetches the chunks of `ids` that `local` lacks: a large tree's manifest is thousands of
/// small chunks, a request per thousand.
async fn fetch_missing(
    sources: &Sources<'_>,
    local: &ChunkStore,
    ids: &[Hash],
) -> Result<(), DataError> {
    for group in local.missing(ids.iter()).chunks(1024) {
        sources.fetch(group.to_vec()).await?;
    }
    Ok(())
}

/// Fetches tree `cid` from `sources` (nodes, peers) into `dest`, `opts.streams` chunks at a
/// time; chunks already in `local` are not fetched again, fetched ones are kept there.
pub async fn pull_tree_from(
    sources: &[&dyn ChunkSource],
    cid: &Hash,
    key: &DataKey,
    local: &ChunkStore,
    dest: &Path,
    opts: &TransferOptions,
) -> Result<PullReport, DataError> {
    let sources = Sources::new(sources, local);
    let manifest = fetch_manifest(&sources, cid, key, opts.params, local).await?;
    let files = manifest
        .entries
        .iter()
        .filter(|e| e.kind == gridwork_transfer::EntryKind::File);
    let (file_count, file_bytes) = files.fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    opts.progress.set_total(file_bytes);
    let mut hooks = Checkpoints::open(
        &manifest,
        cid,
        dest,
        opts.journal.as_deref(),
        opts.checkpoint_bytes,
        opts.cache_max_bytes.map(|max| (local.clone(), max)),
    )?;
    if opts.resume_from_files {
        // What a cut-off pull finished in files it had not journaled yet.
        let partial: Vec<(usize, String, Vec<Hash>)> = manifest
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| e.kind == gridwork_transfer::EntryKind::File && !hooks.done(*i))
            .map(|(i, e)| (i, e.path.clone(), e.chunks.clone()))
            .collect();
        let (key, params, dest) = (key.clone(), opts.params, dest.to_path_buf());
        let kept = blocking(move || {
            let mut kept = HashMap::new();
            for (i, path, chunks) in partial {
                // Read without following a link: one planted there is not taken for the file.
                let prefix = sealed_prefix(&dest, &path, &chunks, &key, params)?;
                if prefix.0 > 0 {
                    kept.insert(i, prefix);
                }
            }
            Ok(kept)
        })
        .await?;
        hooks.keep_prefixes(kept);
    }
    let in_place = hooks.done_bytes(&manifest);
    opts.progress.add(in_place);
    // The chunks of the files still to write, in manifest order, each with its share of its
    // file's size.
    let ids: Vec<(Hash, u64)> = manifest
        .entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !hooks.done(*i))
        .flat_map(|(i, e)| {
            let share = e.size.div_ceil(e.chunks.len().max(1) as u64).max(1);
            e.chunks[hooks.kept(i).0.min(e.chunks.len())..]
                .iter()
                .map(move |id| (*id, share))
        })
        .collect();
    if opts.resume_from_files {
        // Fetched chunks go to their files only; one the tree names again later is kept, so
        // it is not fetched twice.
        let mut seen = HashSet::with_capacity(ids.len());
        let again: HashSet<Hash> = ids
            .iter()
            .filter(|(id, _)| !seen.insert(*id))
            .map(|(id, _)| *id)
            .collect();
        sources.keep_only(again);
    }

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, TreeError>>(4);
    let dest_path = dest.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        write_tree_with(
            &manifest,
            &dest_path,
            std::iter::from_fn(|| rx.blocking_recv()),
            &mut hooks,
        )
    });
    let max = opts.params.max;
    let sizer = Sizer::new();
    // Requests of about the target size, by each chunk's share of its file (a chunk count
    // from an average would let a tree's many small chunks make requests for its large
    // ones hundreds of megabytes).
    let mut remaining = ids.into_iter().peekable();
    let batches = std::iter::from_fn(|| {
        let batch = next_request(&mut remaining, sizer.target());
        (!batch.is_empty()).then_some(batch)
    });
    // Two stages: fetching runs `streams` requests ahead, opening (decryption into
    // plaintext buffers) only `open_ahead()` slices of at most OPEN_SLICE_BYTES ahead of the
    // writer. Opened as soon as fetched, every batch in flight held its plaintext, more
    // buffers than the pool keeps: each miss was a fresh allocation whose pages the kernel
    // zeroed (a fifth of a pull's CPU time).
    // The sizer sees a request's estimated (plaintext) bytes, the measure of its target: the
    // sealed bytes of a compressible tree would never look like a full request.
    let fetch = |wanted: Vec<(Hash, u64)>| {
        let (sources, sizer) = (&sources, &sizer);
        async move {
            if wanted.is_empty() {
                return Ok(HashMap::new());
            }
            let estimated = wanted.iter().map(|(_, n)| n).sum();
            let started = Instant::now();
            let fetched = sources
                .fetch(wanted.into_iter().map(|(id, _)| id).collect())
                .await?;
            sizer.observe(estimated, started.elapsed().as_secs_f64());
            Ok::<_, DataError>(fetched)
        }
    };
    let open_all = |batch: &[(Hash, u64)], fetched: HashMap<Hash, VerifiedChunk>| {
        let (key, store) = (key.clone(), local.clone());
        let ids: Vec<Hash> = batch.iter().map(|(id, _)| *id).collect();
        blocking(move || {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let plain = match fetched.get(&id) {
                    Some(chunk) => open(&key, &id, chunk.bytes(), max),
                    None => {
                        let sealed = store.get(&id)?.ok_or(TreeError::Missing { id })?;
                        open(&key, &id, &sealed, max)
                    }
                };
                out.push(plain.map_err(TreeError::from)?);
            }
            Ok(out)
        })
    };
    let mut plaintexts = stream::iter(batches)
        .map(|batch| {
            let wanted: Vec<(Hash, u64)> = batch
                .iter()
                .filter(|(id, _)| !local.has(id))
                .copied()
                .collect();
            let fetching = fetch(wanted);
            async move { Ok::<_, DataError>((batch, fetching.await?)) }
        })
        .buffered(opts.streams.max(1))
        .flat_map(|fetched| stream::iter(open_slices(fetched)))
        .map(|slice| async {
            let (batch, fetched) = slice?;
            let opened = match open_all(&batch, fetched).await {
                // A chunk left the local store after it was counted there (a trim of the
                // cache to its size): fetch the whole slice from the sources.
                Err(DataError::Tree(TreeError::Missing { .. })) => {
                    open_all(&batch, fetch(batch.clone()).await?).await
                }
                other => other,
            };
            Ok::<_, DataError>((batch, opened?))
        })
        .buffered(open_ahead());
    let mut failure = None;
    'fetching: while let Some(slice) = plaintexts.next().await {
        match slice {
            Ok((batch, plaintexts)) => {
                for plain in plaintexts {
                    opts.progress.add(plain.len() as u64);
                    if tx.send(Ok(plain)).await.is_err() {
                        break 'fetching; // the writer stopped; its error says why
                    }
                }
                // With the writer now: a failure from here on need not keep them.
                for (id, _) in &batch {
                    sources.opened(id);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(plaintexts);
    drop(tx);
    let written = writer
        .await
        .map_err(|e| DataError::Tree(TreeError::Malformed(format!("writing stopped: {e}"))))?;
    if let Some(e) = failure.or(written.err().map(DataError::from)) {
        // Best effort: the pull's own error says what went wrong (a full disk fails this too).
        let (held, store) = (sources.take_held().await, local.clone());
        let _ = blocking(move || {
            held.iter()
                .try_for_each(|c| store.put_verified(c))
                .map_err(DataError::from)
        })
        .await;
        return Err(e);
    }
    let sources = sources.reports();
    Ok(PullReport {
        cid: *cid,
        files: file_count,
        bytes: file_bytes,
        chunks_received: sources.iter().map(|s| s.chunks).sum(),
        bytes_received: sources.iter().map(|s| s.bytes).sum(),
        bytes_in_place: in_place,
        sources,
        request_bytes: sizer.target(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Hash {
        Hash::of(&n.to_le_bytes())
    }

    #[test]
    fn requests_follow_the_chunks_sizes_not_their_count() {
        const MIB: u64 = 1024 * 1024;
        // Many tiny chunks, then large ones: the large ones must not ride in a request sized
        // by the tiny ones.
        let chunks = (0..5000)
            .map(|n| (id(n), 2_000))
            .chain((5000..5010).map(|n| (id(n), 4 * MIB)));
        let mut remaining = chunks.peekable();
        let mut sizes = Vec::new();
        loop {
            let batch = next_request(&mut remaining, 16 * MIB);
            assert!(batch.len() == 1 || batch.iter().map(|c| c.1).sum::<u64>() <= 20 * MIB);
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
        }
        assert_eq!(
            sizes[0],
            gridwork_api::frames::MAX_FETCH_IDS,
            "at most this many ids"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 5010);
        assert!(sizes.iter().rev().take(2).all(|&n| n <= 4), "{sizes:?}");
        // A chunk larger than the target still goes, alone.
        let mut one = vec![(id(1), 64 * MIB), (id(2), 1)].into_iter().peekable();
        assert_eq!(next_request(&mut one, 16 * MIB), vec![(id(1), 64 * MIB)]);
    }

    #[test]
    fn fetched_batches_are_opened_in_slices_of_bounded_size() {
        const MIB: u64 = 1024 * 1024;
        let chunk = |n: u32| {
            let bytes = bytes::Bytes::from(vec![n as u8; 1000]);
            let id = Hash::of(&bytes);
            (id, VerifiedChunk::check(id, bytes).unwrap())
        };
        // Sealed small, estimated 3 MiB each (compressible plaintext): slices follow the
        // plaintext the writer gets, not the bytes fetched.
        let fetched: Vec<(Hash, VerifiedChunk)> = (0..10).map(chunk).collect();
        let mut batch: Vec<(Hash, u64)> = fetched.iter().map(|(id, _)| (*id, 3 * MIB)).collect();
        // One already in the local store, not fetched; and a repeat of the first chunk.
        batch.insert(4, (id(99), MIB));
        batch.push((batch[0].0, 3 * MIB));
        let slices = open_slices(Ok((batch.clone(), fetched.into_iter().collect())));
        let slices: Vec<Fetched> = slices.into_iter().map(Result::unwrap).collect();
        let lens: Vec<usize> = slices.iter().map(|(ids, _)| ids.len()).collect();
        assert_eq!(lens, vec![3, 4, 3, 2]);
        let fetched_per_slice: Vec<usize> = slices.iter().map(|(_, c)| c.len()).collect();
        assert_eq!(
            fetched_per_slice,
            vec![3, 3, 3, 1],
            "each fetched chunk travels with the first slice that needs it"
        );
        let order: Vec<(Hash, u64)> = slices.into_iter().flat_map(|s| s.0).collect();
        assert_eq!(order, batch, "in order, each id once");
        let failed = open_slices(Err(DataError::Missing {
            id: id(1),
            asked: "nobody".into(),
        }));
        assert!(matches!(
            failed.as_slice(),
            [Err(DataError::Missing { .. })]
        ));
    }

    #[test]
    fn request_sizes_grow_on_quick_full_requests_and_shrink_on_slow_ones() {
        let sizer = Sizer::new();
        for _ in 0..10 {
            sizer.observe(sizer.target(), 0.01);
        }
        assert_eq!(sizer.target(), Sizer::MAX);
        // A short tail request does not make the next one larger.
        sizer.observe(1024, 0.001);
        assert_eq!(sizer.target(), Sizer::MAX);
        for _ in 0..10 {
            sizer.observe(sizer.target(), 2.0);
        }
        assert_eq!(sizer.target(), Sizer::MIN);
    }
}
