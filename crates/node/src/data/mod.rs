//! The data service: sealed chunks, pins, per-account quotas and uploads not yet pinned,
//! key grants of trees (`grants.rs`), and garbage collection. Its state and locks are its
//! own; it reads the ledger only for the trees open jobs use, which collection keeps.
//!
//! On disk, under the node's data directory: `chunks/` (the chunk store), `pins/<cid>.pin`
//! (until when a tree is kept, who is charged, its chunk ids), `grants/<cid>.json` and
//! `pending-uploads` (the charges of uploads no pin names yet; see `pending.rs`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridwork_api::{PinView, StorageView};
use gridwork_transfer::{
    chunk_set_digest, proof_lock, sorted_difference, sorted_ids, ChunkStore,
    StoreError as ChunkStoreError,
};
use gridwork_types::{Address, Amount, Hash};

use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::pinfile::{PinFile, MAX_PINNERS};
use crate::{NodeConfig, NodeError};

mod grants;
mod pending;

use pending::{pin_cid, read_pins, uncharge, Pending, Pins};

struct DataShared {
    /// Sealed chunks of the data plane.
    chunks: ChunkStore,
    /// Pins of trees (`<cid>.pin`: kept-until ms, then the tree's chunk ids), quotas, and
    /// how long they and unpinned uploads are kept.
    pins: Pins,
    /// Where the key grants of trees are kept.
    grants_dir: std::path::PathBuf,
    /// Serialises writes of grant files.
    grants_lock: Mutex<()>,
    /// For the trees open jobs use, and the time.
    ledger: Ledger,
    metrics: Arc<Metrics>,
}

/// The data service. Cheap to clone; clones share it. A node built without a data
/// directory has none: every call answers [`NodeError::NoChunkStore`].
#[derive(Clone, Default)]
pub struct DataService {
    shared: Option<Arc<DataShared>>,
}

impl std::fmt::Debug for DataService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            Some(s) => write!(f, "DataService({} chunks)", s.chunks.len()),
            None => write!(f, "DataService(none)"),
        }
    }
}

impl DataService {
    /// Opens the data plane under `dir`: the chunk store, the pins (with what each account
    /// is charged) and the log of uploads not yet pinned.
    pub(crate) fn open(
        dir: &Path,
        config: &NodeConfig,
        ledger: Ledger,
        metrics: Arc<Metrics>,
    ) -> Result<DataService, NodeError> {
        let chunks =
            ChunkStore::open(dir.join("chunks"), config.chunk_quota_bytes).map_err(|e| {
                NodeError::File {
                    path: dir.display().to_string(),
                    message: format!("cannot open the chunk store: {e}"),
                }
            })?;
        let mut logged = Pending::logged(&dir.join("pending-uploads"), &chunks);
        let usage = read_pins(&dir.join("pins"), &mut logged);
        let pending = Pending::open(dir.join("pending-uploads"), logged);
        let pins = Pins {
            dir: dir.join("pins"),
            retention: Duration::from_secs(config.chunk_retention_secs),
            grace: Duration::from_secs(config.chunk_upload_grace_secs),
            every: Duration::from_secs(config.chunk_gc_interval_secs.max(1)),
            lock: Mutex::new(()),
            collected_when_full: Mutex::new(None),
            account_quota: config.chunk_account_quota_bytes,
            min_funds: config.chunk_min_funds,
            usage: Mutex::new(usage),
            pending: Mutex::new(pending),
        };
        Ok(DataService {
            shared: Some(Arc::new(DataShared {
                chunks,
                pins,
                grants_dir: dir.join("grants"),
                grants_lock: Mutex::new(()),
                ledger,
                metrics,
            })),
        })
    }

    /// Whether this node keeps a data plane.
    pub fn is_present(&self) -> bool {
        self.shared.is_some()
    }

    /// Bytes charged to accounts (pinned and pending) and the per-account quota, for the
    /// metrics page; `None` without a chunk store.
    pub(crate) fn quota_use(&self) -> Option<(u64, Option<u64>)> {
        let pins = self.pins()?;
        let pinned: u64 = (pins.usage.lock().unwrap_or_else(|p| p.into_inner()))
            .values()
            .sum();
        let pending: u64 = (pins.pending.lock().unwrap_or_else(|p| p.into_inner()))
            .by_account
            .values()
            .sum();
        Some((pinned + pending, pins.account_quota))
    }
}

/// Trees open jobs read (inputs) or produced (revealed outputs), and the inputs of services
/// not closed (a member drawn later fetches them then).
fn referenced_trees(ledger: &Ledger) -> HashSet<Hash> {
    ledger.with_state(|state, _| {
        let mut used = HashSet::new();
        for (_, service) in state
            .services()
            .filter(|(_, s)| s.status != gridwork_protocol::ServiceStatus::Closed)
        {
            used.extend(service.spec.data.iter().map(|d| d.cid));
        }
        for (id, job) in state.jobs().filter(|(_, j)| !j.finished && !j.cancelled) {
            used.extend(job.prescription.data.iter().map(|d| d.cid));
            for (_, task) in state.tasks_of(id) {
                used.extend(task.reveals.iter().map(|r| r.output));
                used.extend(task.result);
            }
        }
        used
    })
}

/// Writes `bytes` to a new file at `path` and syncs it.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Pins still in force (or kept by open jobs).
    pub pins_kept: u64,
    /// Pins that ran out and were dropped.
    pub pins_expired: u64,
    /// Chunk bytes freed.
    pub freed_bytes: u64,
    /// Chunk bytes still held.
    pub used_bytes: u64,
    /// Trees open jobs use that no push pinned: only their root is kept (a pushed tree is
    /// pinned before its id can reach the ledger, so only a Byzantine requester or worker
    /// names such a tree; its chunks below the root are unknown to the node, and uploads
    /// younger than the grace period stay anyway).
    pub unpinned_in_use: u64,
    /// Jobs whose task logs went (closed, and unwritten for the log retention; the task
    /// records prune them, in [`crate::Node::collect_garbage`]).
    pub job_logs_pruned: u64,
}

impl DataService {
    fn parts(&self) -> Result<&DataShared, NodeError> {
        self.shared.as_deref().ok_or(NodeError::NoChunkStore)
    }

    fn pins(&self) -> Option<&Pins> {
        self.shared.as_deref().map(|s| &s.pins)
    }

    fn chunk_store(&self) -> Result<&ChunkStore, NodeError> {
        Ok(&self.parts()?.chunks)
    }

    /// The answer to a batched fetch of `ids` (frames; see `gridwork_api::frames`): each
    /// chunk read from the store straight into the body, which is allocated once.
    pub fn fetch_answer(&self, ids: &[Hash], max_bytes: usize) -> Result<Vec<u8>, NodeError> {
        let store = self.chunk_store()?;
        // Repeats are answered once (`answer_fetch`), so they size nothing.
        let mut distinct = ids.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let capacity = store.stored_bytes(&distinct) as usize + 37 * ids.len();
        Ok(gridwork_api::frames::answer_fetch(
            ids,
            capacity,
            max_bytes,
            |id, out| store.read_into(id, out),
        )?)
    }

    /// Which of `ids` the node lacks.
    pub fn missing_chunks(&self, ids: &[Hash]) -> Result<Vec<Hash>, NodeError> {
        Ok(self.chunk_store()?.missing(ids.iter()))
    }

    /// Syncs the chunk store once `bytes` were stored since its last sync (see
    /// `ChunkStore::sync_every`).
    pub fn sync_chunks_every(&self, bytes: u64) -> Result<(), NodeError> {
        let store = self.chunk_store()?;
        if store.unsynced_past(bytes) {
            self.sync_chunks(store)?;
        }
        Ok(())
    }

    /// Makes the chunks stored so far durable, the charges of those not yet pinned first: a
    /// chunk that survives a crash keeps its uploader charged (the log may also keep a charge
    /// of a chunk lost in the crash; it is left out when the log is read back).
    fn sync_chunks(&self, store: &ChunkStore) -> Result<(), NodeError> {
        if let Some(pins) = self.pins() {
            pins.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sync()?;
        }
        Ok(store.sync()?)
    }

    /// Stores a sealed chunk uploaded by `uploader`, charged to it (against its quota)
    /// until a pin names the chunk or a collection drops it.
    pub fn put_chunk_by(
        &self,
        id: &Hash,
        bytes: &[u8],
        uploader: &Address,
    ) -> Result<(), NodeError> {
        let Some(pins) = self.pins() else {
            return self.put_chunk(id, bytes);
        };
        if self.chunk_store()?.has(id) {
            return Ok(());
        }
        let len = bytes.len() as u64;
        if let Some(quota) = pins.account_quota {
            let pinned = self.pinned_bytes(uploader).0;
            let pending = pins
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .by_account
                .get(uploader)
                .copied()
                .unwrap_or(0);
            if pinned + pending + len > quota {
                return Err(NodeError::AccountQuota {
                    account: *uploader,
                    used: pinned + pending,
                    needed: len,
                    quota,
                    retention_days: pins.retention.as_secs() / 86_400,
                });
            }
        }
        self.put_chunk(id, bytes)?;
        pins.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(*id, *uploader, len);
        Ok(())
    }

    /// Stores a sealed chunk (checked against its id).
    pub fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), NodeError> {
        let store = self.chunk_store()?;
        match store.put(id, bytes) {
            Err(ChunkStoreError::Full { .. }) if self.pins().is_some() => {
                // Full: drop what nothing keeps any more (at most every 30 s: a store that
                // stays full must not make every upload collect), then try once more.
                let due = self.pins().is_some_and(|pins| {
                    let mut last = pins
                        .collected_when_full
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                });
                if due {
                    let report = self.collect_garbage()?;
                    tracing::info!(
                        freed = report.freed_bytes,
                        "chunk store full; collected garbage"
                    );
                }
                match store.put(id, bytes) {
                    Err(ChunkStoreError::Full { used, quota, .. }) => Err(NodeError::StoreFull {
                        used,
                        quota,
                        retention_days: self.pins().map_or(0, |p| p.retention.as_secs() / 86_400),
                    }),
                    other => Ok(other?),
                }
            }
            other => Ok(other?),
        }
    }

    /// Pins tree `cid` with its chunk ids (root, manifest and data chunks, as the pusher
    /// lists them): the node keeps them for the retention period from now. Every named chunk
    /// must be stored. `proof` is the pusher's [`DataKey::holder_proof`](gridwork_transfer::DataKey::holder_proof):
    /// the first pin sets the tree's lock, later ones must open it. Returns when the pin runs
    /// out (ms since the epoch).
    pub fn pin_tree(
        &self,
        cid: &Hash,
        chunks: &[Hash],
        proof: &Hash,
        pinner: &Address,
    ) -> Result<u64, NodeError> {
        let store = self.chunk_store()?;
        let pins = &self.parts()?.pins;
        // Each chunk once, in order: the pin lists them so, and its set digest is then one
        // pass over them (`pin_view`); what the tree keeps stored is the root besides.
        let named = sorted_ids(chunks.to_vec());
        let mut distinct = named.clone();
        if let Err(at) = distinct.binary_search(cid) {
            distinct.insert(at, *cid);
        }
        let (missing, bytes) = store.tally(&distinct);
        if let Some(first) = missing.first() {
            return Err(NodeError::TreeIncomplete {
                cid: *cid,
                missing: missing.len(),
                total: distinct.len(),
                first: *first,
            });
        }
        // The pin promises the tree: its chunks are made durable before it is written.
        self.sync_chunks(store)?;
        let until = self.parts()?.ledger.now_ms() + pins.retention.as_millis() as u64;
        let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
        let lock = proof_lock(proof);
        let earlier = self.read_pin(cid)?;
        if earlier
            .as_ref()
            .and_then(|p| p.lock)
            .is_some_and(|l| l != lock)
        {
            return Err(NodeError::NotKeyHolder {
                cid: *cid,
                what: "pin it",
            });
        }
        // Every account that pins the tree is charged for it (a pin again replaces its own
        // charge): each account's pins stay within its quota whoever else keeps the tree.
        let mut charges = earlier.map(|p| p.charges).unwrap_or_default();
        let own = charges
            .iter()
            .position(|(who, _)| who == pinner)
            .map(|i| charges.remove(i));
        let mut usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(quota) = pins.account_quota {
            let used = usage
                .get(pinner)
                .copied()
                .unwrap_or(0)
                .saturating_sub(own.map_or(0, |(_, b)| b));
            if used + bytes > quota {
                return Err(NodeError::AccountQuota {
                    account: *pinner,
                    used,
                    needed: bytes,
                    quota,
                    retention_days: pins.retention.as_secs() / 86_400,
                });
            }
        }
        charges.push((*pinner, bytes));
        // A pin records the latest MAX_PINNERS accounts; the earliest beyond them is no
        // longer charged.
        let dropped: Vec<(Address, u64)> = charges
            .drain(..charges.len().saturating_sub(MAX_PINNERS))
            .collect();
        let path = pins.dir.join(format!("{cid}.pin"));
        let file_err = |e: std::io::Error| NodeError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&pins.dir).map_err(file_err)?;
        let body = PinFile {
            until_ms: until,
            lock: Some(lock),
            charges,
            chunks: named,
        }
        .encode(&lock);
        let tmp = path.with_extension("tmp");
        write_durably(&tmp, &body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::File::open(&pins.dir)?.sync_all())
            .map_err(file_err)?;
        // Its chunks are no longer uploads in progress.
        for (who, b) in own.into_iter().chain(dropped) {
            uncharge(&mut usage, &who, b);
        }
        *usage.entry(*pinner).or_insert(0) += bytes;
        let mut pending = pins.pending.lock().unwrap_or_else(|p| p.into_inner());
        for id in distinct.iter() {
            pending.take(id);
        }
        Ok(until)
    }

    /// Bytes of tree `cid`'s pin file (0 if it has none): what reading its view holds in
    /// memory.
    pub fn pin_file_bytes(&self, cid: &Hash) -> u64 {
        self.pins().map_or(0, |pins| {
            std::fs::metadata(pins.dir.join(format!("{cid}.pin"))).map_or(0, |m| m.len())
        })
    }

    /// What this node keeps of tree `cid` (until when, and the set of chunks its pin lists);
    /// `None` if no pin of it is stored.
    pub fn pin_view(&self, cid: &Hash) -> Result<Option<PinView>, NodeError> {
        Ok(self.read_pin(cid)?.map(|pin| {
            // Pins list each chunk once, in order (sorting them again is a pass over them).
            let distinct = sorted_ids(pin.chunks);
            PinView {
                until_ms: pin.until_ms,
                chunks: distinct.len() as u64,
                chunk_set: chunk_set_digest(&distinct),
                lock: pin.lock,
            }
        }))
    }

    /// [`pin_tree`](Self::pin_tree) with the chunks of tree `base`'s pin, less `removed`,
    /// plus `added`: a re-push names only what changed since the tree it pushed before.
    /// `chunk_set` is the [`chunk_set_digest`] the pinner expects of the result; a base this
    /// node does not keep, or a result that differs, is refused (the pinner then names every
    /// chunk), so a pin never lists less than its tree needs.
    #[allow(clippy::too_many_arguments)]
    pub fn pin_tree_from(
        &self,
        cid: &Hash,
        base: &Hash,
        added: &[Hash],
        removed: &[Hash],
        chunk_set: &Hash,
        proof: &Hash,
        pinner: &Address,
    ) -> Result<u64, NodeError> {
        let gone = NodeError::PinBaseGone {
            cid: *cid,
            base: *base,
        };
        let base_pin = self.read_pin(base)?.ok_or(gone)?;
        let removed = sorted_ids(removed.to_vec());
        let mut chunks = sorted_difference(&sorted_ids(base_pin.chunks), &removed);
        chunks.extend_from_slice(added);
        let chunks = sorted_ids(chunks);
        if chunk_set_digest(&chunks) != *chunk_set {
            return Err(NodeError::PinSetMismatch {
                cid: *cid,
                base: *base,
            });
        }
        self.pin_tree(cid, &chunks, proof, pinner)
    }

    /// What an account must hold, balance and stake together, for the node to take its
    /// data-plane writes (at least one base unit).
    pub fn data_min_funds(&self) -> Amount {
        let min = self.pins().map_or(Amount::ZERO, |p| p.min_funds);
        min.max(Amount(1))
    }

    /// What the node stores for `account`: pinned and pending bytes, and its quota.
    pub fn storage(&self, account: &Address) -> StorageView {
        let (pinned_bytes, quota_bytes) = self.pinned_bytes(account);
        let pending_bytes = self.pins().map_or(0, |pins| {
            let pending = pins.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.by_account.get(account).copied().unwrap_or(0)
        });
        StorageView {
            pinned_bytes,
            pending_bytes,
            quota_bytes,
            min_funds: self.data_min_funds(),
        }
    }

    /// Bytes of pinned trees charged to `account`, and its quota (none: no limit).
    pub fn pinned_bytes(&self, account: &Address) -> (u64, Option<u64>) {
        let Some(pins) = self.pins() else {
            return (0, None);
        };
        let usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
        (usage.get(account).copied().unwrap_or(0), pins.account_quota)
    }

    /// The pin of tree `cid`, if one is stored (a damaged file counts as none).
    fn read_pin(&self, cid: &Hash) -> Result<Option<PinFile>, NodeError> {
        let pins = &self.parts()?.pins;
        let path = pins.dir.join(format!("{cid}.pin"));
        match std::fs::read(&path) {
            Ok(bytes) => Ok(PinFile::decode(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Drops every chunk that no live pin, open job or upload in progress keeps: pins run
    /// out after the retention period unless an open job reads or produced their tree.
    /// (Task logs are the records' to prune: [`crate::Node::collect_garbage`] does both.)
    pub fn collect_garbage(&self) -> Result<GcReport, NodeError> {
        let parts = self.parts()?;
        self.collect_garbage_at(parts.ledger.now_ms(), parts.pins.grace)
    }

    /// [`collect_garbage`](Self::collect_garbage) as of `now_ms`, keeping unpinned chunks
    /// younger than `grace`.
    pub fn collect_garbage_at(&self, now_ms: u64, grace: Duration) -> Result<GcReport, NodeError> {
        let parts = self.parts()?;
        let (store, pins) = (&parts.chunks, &parts.pins);
        let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
        let used = referenced_trees(&parts.ledger);
        let mut report = GcReport::default();
        let mut keep = HashSet::new();
        let mut pinned = HashSet::new();
        let entries = match std::fs::read_dir(&pins.dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(NodeError::File {
                    path: pins.dir.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        for path in entries {
            let Some(cid) = pin_cid(&path) else { continue };
            let body = std::fs::read(&path).map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            // A damaged pin keeps nothing but its root: the pusher's next push pins again.
            let pin = PinFile::decode(&body);
            let until = pin.as_ref().map_or(0, |p| p.until_ms);
            if until < now_ms && !used.contains(&cid) {
                let _ = std::fs::remove_file(&path);
                let mut usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
                for (who, b) in pin.iter().flat_map(|p| &p.charges) {
                    uncharge(&mut usage, who, *b);
                }
                let _ = std::fs::remove_file(parts.grants_dir.join(format!("{cid}.json")));
                report.pins_expired += 1;
                continue;
            }
            report.pins_kept += 1;
            pinned.insert(cid);
            keep.insert(cid);
            keep.extend(pin.into_iter().flat_map(|p| p.chunks));
        }
        // A tree an open job uses but nobody pinned: its chunk list is sealed in its
        // manifest, so the node keeps its root only. (Collection used to stop altogether
        // here, so one job naming an uploaded, unpinned chunk stopped it for every tree.)
        for cid in used.iter().filter(|c| !pinned.contains(c) && store.has(c)) {
            tracing::warn!(%cid, "an open job uses a tree no push pinned; keeping its root only");
            report.unpinned_in_use += 1;
            keep.insert(*cid);
        }
        report.freed_bytes = store.gc_unless(&keep, grace)?;
        let mut pending = pins.pending.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<Hash> = pending
            .chunks
            .keys()
            .filter(|id| !store.has(id))
            .copied()
            .collect();
        for id in &gone {
            pending.take(id);
        }
        // Pinned and collected chunks leave the log too.
        if let Some((path, _)) = pending.log.take() {
            pending.rewrite(path);
        }
        report.used_bytes = store.used();
        drop(pending);
        parts.metrics.gc_ran(&report);
        Ok(report)
    }

    /// How often the node collects; `None` without a chunk store.
    pub(crate) fn gc_every(&self) -> Option<Duration> {
        self.pins().map(|p| p.every)
    }

    /// A sealed chunk.
    pub fn chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.chunk_store()?.get(id)?)
    }

    /// The node's chunk store, to serve peer to peer; `None` for a node without one.
    pub fn chunks(&self) -> Option<ChunkStore> {
        self.chunk_store().ok().cloned()
    }
}
