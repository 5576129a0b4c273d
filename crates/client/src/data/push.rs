//! Pushes: the packing and upload pipeline, the push index, and pins (from the tree pushed before
//! where the node still keeps it).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gridwork_api::{PinView, StorageView, KEY_PROOF_HEADER};
use gridwork_transfer::{
    chunk_set_digest, pack_with_index, sorted_difference, sorted_ids, ChunkSink, ChunkStore,
    DataKey, PackIndex, StoreError, TreeError,
};
use gridwork_types::{Address, Hash};

use crate::client::{Client, ClientError};

use super::{blocking, DataError, Pinned, Progress, PushReport, Sizer, TransferOptions};

impl Client {
    /// What the node stores for `account` (pinned and pending bytes, its quota).
    pub async fn storage(&self, account: &Address) -> Result<StorageView, ClientError> {
        let url = format!("{}/v1/accounts/{account}/storage", self.base_url());
        self.send_json(self.http().get(&url), &url).await
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
}

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
pub(super) type Sealed = (Hash, Vec<u8>);

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
