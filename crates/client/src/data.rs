//! Moving trees in the data plane's format: push only what the node lacks, pull only what
//! the local store lacks, several streams at once, every chunk checked against its id.
//!
//! Both directions resume for free: a push asks the node which chunks it lacks (one round
//! trip) and sends only those; a pull keeps every verified chunk in the local store, so a
//! second run fetches only what the first did not finish.

use std::path::Path;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use gridwork_api::{ChunkIds, KeyGrant, KeyGrants, MissingChunks};
use gridwork_transfer::{
    pack, read_manifest, unpack, unwrap_key, wrap_key, ChunkParams, ChunkStore, DataKey, TreeError,
    TreeManifest,
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
    Store(#[from] gridwork_transfer::StoreError),
    /// A chunk the node should have is not there.
    #[error("the node does not have chunk {id}")]
    Missing {
        /// The chunk.
        id: Hash,
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
    /// Chunks fetched from the node.
    pub chunks_received: u64,
    /// Bytes fetched.
    pub bytes_received: u64,
}

/// The chunks a tree consists of: the root, the manifest's chunks, the data chunks.
fn all_chunks(cid: &Hash, root: &[u8], manifest: &TreeManifest) -> Vec<Hash> {
    let mut ids = vec![*cid];
    let listed = root.get(17..).unwrap_or_default();
    ids.extend(
        listed
            .chunks(32)
            .filter_map(|c| c.try_into().ok().map(Hash)),
    );
    ids.extend(manifest.chunk_ids());
    ids
}

/// Runs a chunk cache operation on a blocking thread (hashing and file I/O stay off the async
/// threads that move the bytes).
async fn on_cache<T: Send + 'static>(
    local: &ChunkStore,
    op: impl FnOnce(&ChunkStore) -> Result<T, gridwork_transfer::StoreError> + Send + 'static,
) -> Result<T, DataError> {
    let store = local.clone();
    tokio::task::spawn_blocking(move || op(&store))
        .await
        .map_err(|e| {
            DataError::Store(gridwork_transfer::StoreError::Io {
                path: "chunk cache".into(),
                source: std::io::Error::other(e.to_string()),
            })
        })?
        .map_err(DataError::Store)
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

    /// Packs `root` into `local` and sends the node the chunks it lacks, `streams` at a time.
    pub async fn push_tree(
        &self,
        root: &Path,
        key: &DataKey,
        params: ChunkParams,
        local: &ChunkStore,
        streams: usize,
    ) -> Result<PushReport, DataError> {
        let (cid, stats) = pack(root, key, params, local)?;
        let manifest = read_manifest(&cid, key, params, local)?;
        let root_object = local.get(&cid)?.ok_or(DataError::Missing { id: cid })?;
        let ids = all_chunks(&cid, &root_object, &manifest);
        let missing = self.missing_chunks(ids.clone()).await?;
        // Data first and the root last, so a tree the node names is always complete.
        let mut order: Vec<Hash> = missing.iter().filter(|id| **id != cid).copied().collect();
        if missing.contains(&cid) {
            order.push(cid);
        }
        let root_last = order.last().copied().filter(|id| *id == cid);
        let body: Vec<Hash> = order
            .iter()
            .filter(|id| Some(**id) != root_last)
            .copied()
            .collect();
        let sent: Vec<u64> = stream::iter(body)
            .map(|id| async move {
                let bytes = on_cache(local, move |s| s.get(&id))
                    .await?
                    .ok_or(DataError::Missing { id })?;
                let n = bytes.len() as u64;
                self.put_chunk(&id, bytes).await?;
                Ok::<u64, DataError>(n)
            })
            .buffer_unordered(streams.max(1))
            .try_collect()
            .await?;
        let mut bytes_sent: u64 = sent.iter().sum();
        let mut chunks_sent = sent.len() as u64;
        if let Some(id) = root_last {
            self.put_chunk(&id, root_object.clone()).await?;
            bytes_sent += root_object.len() as u64;
            chunks_sent += 1;
        }
        Ok(PushReport {
            cid,
            files: stats.files,
            bytes: stats.bytes,
            chunks: ids.len() as u64,
            chunks_sent,
            bytes_sent,
        })
    }

    /// Fetches a tree's root and manifest chunks into `local` and opens the manifest.
    pub async fn tree_manifest(
        &self,
        cid: &Hash,
        key: &DataKey,
        params: ChunkParams,
        local: &ChunkStore,
    ) -> Result<TreeManifest, DataError> {
        if !local.has(cid) {
            let bytes = self
                .get_chunk(cid)
                .await?
                .ok_or(DataError::Missing { id: *cid })?;
            local.put(cid, &bytes)?;
        }
        let root_object = local.get(cid)?.ok_or(DataError::Missing { id: *cid })?;
        for id in root_object
            .get(17..)
            .unwrap_or_default()
            .chunks(32)
            .filter_map(|c| c.try_into().ok().map(Hash))
        {
            if !local.has(&id) {
                let bytes = self
                    .get_chunk(&id)
                    .await?
                    .ok_or(DataError::Missing { id })?;
                local.put(&id, &bytes)?;
            }
        }
        Ok(read_manifest(cid, key, params, local)?)
    }

    /// Fetches what `local` lacks of tree `cid`, `streams` at a time, then unpacks it into
    /// `dest`.
    pub async fn pull_tree(
        &self,
        cid: &Hash,
        key: &DataKey,
        params: ChunkParams,
        local: &ChunkStore,
        streams: usize,
        dest: &Path,
    ) -> Result<PullReport, DataError> {
        let (mut chunks_received, mut bytes_received) = (0u64, 0u64);
        let fetch = |ids: Vec<Hash>| {
            let wanted = local.missing(ids.iter());
            async move {
                let got: Vec<u64> = stream::iter(wanted)
                    .map(|id| async move {
                        let bytes = self
                            .get_chunk(&id)
                            .await?
                            .ok_or(DataError::Missing { id })?;
                        let n = bytes.len() as u64;
                        on_cache(local, move |s| s.put(&id, &bytes)).await?;
                        Ok::<u64, DataError>(n)
                    })
                    .buffer_unordered(streams.max(1))
                    .try_collect()
                    .await?;
                Ok::<(u64, u64), DataError>((got.len() as u64, got.iter().sum()))
            }
        };
        let (c, b) = fetch(vec![*cid]).await?;
        chunks_received += c;
        bytes_received += b;
        let root_object = local.get(cid)?.ok_or(DataError::Missing { id: *cid })?;
        let manifest_ids: Vec<Hash> = root_object
            .get(17..)
            .unwrap_or_default()
            .chunks(32)
            .filter_map(|c| c.try_into().ok().map(Hash))
            .collect();
        let (c, b) = fetch(manifest_ids).await?;
        chunks_received += c;
        bytes_received += b;
        let manifest = read_manifest(cid, key, params, local)?;
        let (c, b) = fetch(manifest.chunk_ids()).await?;
        chunks_received += c;
        bytes_received += b;
        let manifest = unpack(cid, key, params, local, dest)?;
        let files = manifest
            .entries
            .iter()
            .filter(|e| e.kind == gridwork_transfer::EntryKind::File)
            .count() as u64;
        Ok(PullReport {
            cid: *cid,
            files,
            chunks_received,
            bytes_received,
        })
    }
}
