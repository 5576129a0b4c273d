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
//! the fastest takes most. A chunk that does not match its id is fetched from another source
//! and the source that sent it is not asked again.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use gridwork_api::{ChunkIds, KeyGrant, KeyGrants, MissingChunks};
use gridwork_transfer::{
    manifest_chunks, open, pack_into, read_manifest, unwrap_key, wrap_key, write_tree, ChunkParams,
    ChunkSink, ChunkStore, DataKey, StoreError, TreeError, TreeManifest, VerifiedChunk,
};
use gridwork_types::{Address, Hash, Keypair, PublicKey};
use serde::Serialize;

use crate::client::{Client, ClientError};

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
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            params: ChunkParams::DEFAULT,
            streams: 8,
            progress: Progress::default(),
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

/// Somewhere chunks can be fetched from by id: a node, a peer. What it returns is checked
/// against the id by the caller; a source may lie.
pub trait ChunkSource: Send + Sync {
    /// A name for reports and errors (a URL).
    fn label(&self) -> String;
    /// The stored bytes of a chunk, `None` if the source does not have it.
    fn fetch_chunk<'a>(
        &'a self,
        id: &'a Hash,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ClientError>>;
}

impl ChunkSource for Client {
    fn label(&self) -> String {
        self.base_url().to_string()
    }

    fn fetch_chunk<'a>(
        &'a self,
        id: &'a Hash,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ClientError>> {
        Box::pin(self.get_chunk(id))
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
    /// Chunks actually sent.
    pub chunks_sent: u64,
    /// Bytes actually sent.
    pub bytes_sent: u64,
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
    /// What each source did.
    pub sources: Vec<SourceReport>,
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
    /// Chunks it sent that did not match their ids (it was not asked again).
    pub rejected: u64,
    /// Requests that failed (unreachable, refused) or found nothing.
    pub failed: u64,
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
    async fn missing_chunks(&self, ids: Vec<Hash>) -> Result<Vec<Hash>, ClientError> {
        let url = format!("{}/v1/chunks/missing", self.base_url());
        let answer: MissingChunks = self
            .send_json(self.http().post(&url).json(&ChunkIds { ids }), &url)
            .await?;
        Ok(answer.missing)
    }

    async fn put_chunk(&self, id: &Hash, bytes: Vec<u8>) -> Result<(), ClientError> {
        let url = format!("{}/v1/chunks/{id}", self.base_url());
        self.send_empty(
            self.http()
                .put(&url)
                .header("content-type", "application/octet-stream")
                .body(bytes),
            &url,
        )
        .await
    }

    async fn get_chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, ClientError> {
        let url = format!("{}/v1/chunks/{id}", self.base_url());
        self.get_bytes(&url).await
    }

    /// The key grants of a tree.
    pub async fn key_grants(&self, cid: &Hash) -> Result<Vec<KeyGrant>, ClientError> {
        let url = format!("{}/v1/trees/{cid}/keys", self.base_url());
        let grants: KeyGrants = self.send_json(self.http().get(&url), &url).await?;
        Ok(grants.keys)
    }

    /// The data key of tree `cid` granted to `me`.
    pub async fn granted_key(&self, cid: &Hash, me: &Keypair) -> Result<DataKey, DataError> {
        let grants = self.key_grants(cid).await?;
        grants
            .iter()
            .filter(|g| g.recipient == me.address())
            .find_map(|g| unwrap_key(g, me))
            .ok_or(DataError::NoGrant {
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
        self.add_key_grant(cid, &wrap_key(key, recipient)).await
    }

    /// Adds a key grant to a tree.
    pub async fn add_key_grant(&self, cid: &Hash, grant: &KeyGrant) -> Result<(), ClientError> {
        let url = format!("{}/v1/trees/{cid}/keys", self.base_url());
        self.send_empty(self.http().post(&url).json(grant), &url)
            .await
    }

    /// Packs `root` and sends the node the chunks it lacks, while packing goes on.
    pub async fn push_tree(
        &self,
        root: &Path,
        key: &DataKey,
        opts: &TransferOptions,
    ) -> Result<PushReport, DataError> {
        let streams = opts.streams.max(1);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(Hash, Vec<u8>)>(streams * 4);
        let root_slot = Arc::new(Mutex::new(None));
        let sink = ChannelSink {
            tx,
            root: root_slot.clone(),
            progress: opts.progress.clone(),
        };
        let (path, key_copy, params) = (root.to_path_buf(), key.clone(), opts.params);
        let packer =
            tokio::task::spawn_blocking(move || pack_into(&path, &key_copy, params, &sink));

        let permits = Arc::new(tokio::sync::Semaphore::new(streams));
        let mut uploads = tokio::task::JoinSet::new();
        let mut seen = HashSet::new();
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
                match rx.try_recv() {
                    Ok(chunk) => {
                        batch_bytes += chunk.1.len();
                        batch.push(chunk);
                    }
                    Err(_) => break,
                }
            }
            batch.retain(|(id, _)| seen.insert(*id));
            if batch.is_empty() {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let client = self.clone();
            uploads.spawn(async move {
                let _permit = permit;
                client.upload_batch(batch).await
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
        let (cid, stats) = packer.await.map_err(|e| {
            DataError::Tree(TreeError::Malformed(format!("packing stopped: {e}")))
        })??;
        let root_object = root_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((id, bytes)) = root_object {
            let (c, b) = self.upload_batch(vec![(id, bytes)]).await?;
            chunks_sent += c;
            bytes_sent += b;
        }
        Ok(PushReport {
            cid,
            files: stats.files,
            bytes: stats.bytes,
            chunks: stats.chunks,
            chunks_sent,
            bytes_sent,
        })
    }

    /// Asks the node which chunks of `batch` it lacks and uploads those, in order; returns the
    /// chunks and bytes sent.
    async fn upload_batch(&self, batch: Vec<(Hash, Vec<u8>)>) -> Result<(u64, u64), DataError> {
        let ids = batch.iter().map(|(id, _)| *id).collect();
        let missing: HashSet<Hash> = self.missing_chunks(ids).await?.into_iter().collect();
        let (mut chunks, mut bytes) = (0, 0);
        for (id, sealed) in batch.into_iter().filter(|(id, _)| missing.contains(id)) {
            bytes += sealed.len() as u64;
            chunks += 1;
            self.put_chunk(&id, sealed).await?;
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
        fetch_manifest(&Sources::new(&[self]), cid, key, params, local).await
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

/// Chunks per upload batch, and bytes: one `missing` round trip covers a batch.
const BATCH_CHUNKS: usize = 64;
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
struct ChannelSink {
    tx: tokio::sync::mpsc::Sender<(Hash, Vec<u8>)>,
    root: Arc<Mutex<Option<(Hash, Vec<u8>)>>>,
    progress: Progress,
}

impl ChunkSink for ChannelSink {
    fn put(&self, id: &Hash, sealed: Vec<u8>) -> Result<bool, TreeError> {
        self.tx
            .blocking_send((*id, sealed))
            .map_err(|_| TreeError::Malformed("the upload stopped".into()))?;
        Ok(true)
    }

    fn put_root(&self, id: &Hash, root: Vec<u8>) -> Result<bool, TreeError> {
        *self.root.lock().unwrap_or_else(|p| p.into_inner()) = Some((*id, root));
        Ok(true)
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
}

#[derive(Debug, Default, Clone)]
struct SourceState {
    in_flight: u64,
    chunks: u64,
    bytes: u64,
    seconds: f64,
    rejected: u64,
    failed: u64,
}

impl<'a> Sources<'a> {
    fn new(sources: &'a [&'a dyn ChunkSource]) -> Sources<'a> {
        Sources {
            sources,
            state: Mutex::new(vec![SourceState::default(); sources.len()]),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Vec<SourceState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source to ask next, among those not yet `tried` for this chunk and never caught
    /// lying: one not yet measured and idle (the probe), else the one expected to finish
    /// soonest. Marks the request in flight.
    fn pick(&self, tried: &[usize]) -> Option<usize> {
        let mut state = self.state();
        let usable = |i: &usize| !tried.contains(i) && state[*i].rejected == 0;
        let candidates: Vec<usize> = (0..state.len()).filter(usable).collect();
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
        state[chosen].in_flight += 1;
        Some(chosen)
    }

    /// A chunk from whichever source delivers one that matches its id.
    async fn fetch(&self, id: Hash) -> Result<VerifiedChunk, DataError> {
        let mut tried = Vec::new();
        let mut said = Vec::new();
        while let Some(i) = self.pick(&tried) {
            tried.push(i);
            let started = Instant::now();
            let answer = self.sources[i].fetch_chunk(&id).await;
            let seconds = started.elapsed().as_secs_f64();
            let outcome = match answer {
                Ok(Some(bytes)) => {
                    let n = bytes.len() as u64;
                    match blocking(move || Ok(VerifiedChunk::check(id, bytes)?)).await {
                        Ok(chunk) => Ok((chunk, n)),
                        Err(_) => Err("sent bytes that do not match the id".to_string()),
                    }
                }
                Ok(None) => Err("does not have it".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut state = self.state();
            let s = &mut state[i];
            s.in_flight -= 1;
            match outcome {
                Ok((chunk, n)) => {
                    s.chunks += 1;
                    s.bytes += n;
                    s.seconds += seconds;
                    return Ok(chunk);
                }
                Err(why) => {
                    if why.starts_with("sent bytes") {
                        s.rejected += 1;
                    } else {
                        s.failed += 1;
                    }
                    said.push(format!("{}: {why}", self.sources[i].label()));
                }
            }
        }
        Err(DataError::Missing {
            id,
            asked: if said.is_empty() {
                "no usable source".into()
            } else {
                said.join("; ")
            },
        })
    }

    fn reports(&self) -> Vec<SourceReport> {
        self.state()
            .iter()
            .zip(self.sources)
            .map(|(s, source)| SourceReport {
                source: source.label(),
                chunks: s.chunks,
                bytes: s.bytes,
                rejected: s.rejected,
                failed: s.failed,
            })
            .collect()
    }
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
    let chunk = sources.fetch(id).await?;
    let store = local.clone();
    blocking(move || Ok(store.put_verified(&chunk)?)).await
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
    for id in manifest_chunks(&root)? {
        ensure_local(sources, id, local).await?;
    }
    Ok(read_manifest(cid, key, params, local)?)
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
    let sources = Sources::new(sources);
    let manifest = fetch_manifest(&sources, cid, key, opts.params, local).await?;
    let files = manifest
        .entries
        .iter()
        .filter(|e| e.kind == gridwork_transfer::EntryKind::File);
    let (file_count, file_bytes) = files.fold((0, 0), |(n, b), e| (n + 1, b + e.size));
    opts.progress.set_total(file_bytes);
    let ids = manifest.chunk_ids();

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, TreeError>>(opts.streams * 2);
    let dest_path = dest.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        write_tree(
            &manifest,
            &dest_path,
            std::iter::from_fn(|| rx.blocking_recv()),
        )
    });
    let max = opts.params.max;
    let mut plaintexts = stream::iter(ids)
        .map(|id| {
            let sources = &sources;
            let (key, store) = (key.clone(), local.clone());
            async move {
                if store.has(&id) {
                    return blocking(move || {
                        let sealed = store.get(&id)?.ok_or(TreeError::Missing { id })?;
                        Ok(open(&key, &id, &sealed, max).map_err(TreeError::from)?)
                    })
                    .await;
                }
                let chunk = sources.fetch(id).await?;
                blocking(move || {
                    store.put_verified(&chunk)?;
                    Ok(open(&key, &id, chunk.bytes(), max).map_err(TreeError::from)?)
                })
                .await
            }
        })
        .buffered(opts.streams.max(1));
    let mut failure = None;
    while let Some(plain) = plaintexts.next().await {
        match plain {
            Ok(plain) => {
                opts.progress.add(plain.len() as u64);
                if tx.send(Ok(plain)).await.is_err() {
                    break; // the writer stopped; its error says why
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
    if let Some(e) = failure {
        return Err(e);
    }
    written?;
    let sources = sources.reports();
    Ok(PullReport {
        cid: *cid,
        files: file_count,
        bytes: file_bytes,
        chunks_received: sources.iter().map(|s| s.chunks).sum(),
        bytes_received: sources.iter().map(|s| s.bytes).sum(),
        sources,
    })
}
