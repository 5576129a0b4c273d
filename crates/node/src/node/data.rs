//! The data service: chunks, pins, per-account quotas and pending uploads, and garbage
//! collection (key grants are in `keys.rs`).

use super::*;

/// Where pins live and how long things are kept.
pub(super) struct Pins {
    pub(super) dir: std::path::PathBuf,
    pub(super) retention: Duration,
    pub(super) grace: Duration,
    pub(super) every: Duration,
    /// Serialises pin writes with collections (a pin written mid-collection must count).
    pub(super) lock: Mutex<()>,
    /// When a full store last made a put collect: a store that stays full must not make
    /// every upload run a collection.
    pub(super) collected_when_full: Mutex<Option<Instant>>,
    /// Most bytes of pinned trees per account.
    pub(super) account_quota: Option<u64>,
    /// What an account must hold for its writes to be taken.
    pub(super) min_funds: Amount,
    /// Bytes of pinned trees charged to each account (from the pin files at open).
    pub(super) usage: Mutex<HashMap<Address, u64>>,
    /// Chunks stored by a signed upload that no pin names yet, with their uploader: charged
    /// to it until a pin takes them or a collection drops them (logged in
    /// `DATA_DIR/pending-uploads`, so a restart keeps them).
    pub(super) pending: Mutex<Pending>,
}

/// Uploads not yet pinned, per chunk and per account. Each new charge is appended to a log
/// (`id [32] || uploader [20] || bytes u64 LE` per record) that the node reads back at open,
/// leaving out chunks gone or pinned by then, and that each collection rewrites: a restart
/// does not forgive an account its uploads. The log is synced before the chunk store is
/// (`Node::sync_chunks`), so a chunk that survives a crash has its record.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) chunks: HashMap<Hash, (Address, u64)>,
    pub(super) by_account: HashMap<Address, u64>,
    pub(super) log: Option<(std::path::PathBuf, std::fs::File)>,
}

/// Bytes of one record of the pending log.
pub(super) const PENDING_RECORD: usize = 32 + 20 + 8;

impl Pending {
    /// The charges the log at `path` records for chunks `store` still holds (pins not yet
    /// taken into account: see [`Pending::open`]).
    pub(super) fn logged(
        path: &std::path::Path,
        store: &ChunkStore,
    ) -> HashMap<Hash, (Address, u64)> {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut chunks = HashMap::new();
        for record in bytes.chunks_exact(PENDING_RECORD) {
            let (id, rest) = record.split_at(32);
            let (who, len) = rest.split_at(20);
            let (Ok(id), Ok(who), Ok(len)) = (
                <[u8; 32]>::try_from(id),
                <[u8; 20]>::try_from(who),
                <[u8; 8]>::try_from(len),
            ) else {
                continue;
            };
            if store.has(&Hash(id)) {
                chunks
                    .entry(Hash(id))
                    .or_insert((Address(who), u64::from_le_bytes(len)));
            }
        }
        chunks
    }

    /// The charges in `logged` (what [`Pending::logged`] read, less the chunks pins name),
    /// appending to the log at `path` from then on.
    pub(super) fn open(path: std::path::PathBuf, logged: HashMap<Hash, (Address, u64)>) -> Pending {
        let mut pending = Pending::default();
        for (id, (who, len)) in logged {
            pending.add(id, who, len);
        }
        pending.rewrite(path);
        pending
    }

    /// Writes the log afresh with the charges held now, and appends to it from then on.
    fn rewrite(&mut self, path: std::path::PathBuf) {
        let mut body = Vec::with_capacity(self.chunks.len() * PENDING_RECORD);
        for (id, (who, len)) in &self.chunks {
            body.extend_from_slice(&record(id, who, *len));
        }
        // Synced before it replaces the log: a crash must not leave an empty one.
        let tmp = path.with_extension("tmp");
        let written = write_durably(&tmp, &body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::OpenOptions::new().append(true).open(&path));
        self.log = match written {
            Ok(file) => Some((path, file)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the log of uploads not yet pinned; a restart forgets their charges");
                None
            }
        };
    }

    /// Charges `who` for chunk `id`, unless another upload of it was charged first.
    fn add(&mut self, id: Hash, who: Address, bytes: u64) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.chunks.entry(id) {
            e.insert((who, bytes));
            *self.by_account.entry(who).or_insert(0) += bytes;
            if let Some((_, file)) = &mut self.log {
                use std::io::Write;
                let _ = file.write_all(&record(&id, &who, bytes));
            }
        }
    }

    /// Makes the records appended so far durable.
    fn sync(&self) -> Result<(), NodeError> {
        match &self.log {
            Some((path, file)) => file.sync_data().map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn take(&mut self, id: &Hash) {
        if let Some((who, bytes)) = self.chunks.remove(id) {
            uncharge(&mut self.by_account, &who, bytes);
        }
    }
}

/// One record of the pending log.
pub(super) fn record(id: &Hash, who: &Address, bytes: u64) -> [u8; PENDING_RECORD] {
    let mut r = [0u8; PENDING_RECORD];
    r[..32].copy_from_slice(id.as_bytes());
    r[32..52].copy_from_slice(&who.0);
    r[52..].copy_from_slice(&bytes.to_le_bytes());
    r
}

/// Takes `bytes` off what `who` is charged.
pub(super) fn uncharge(usage: &mut HashMap<Address, u64>, who: &Address, bytes: u64) {
    if let Some(n) = usage.get_mut(who) {
        *n = n.saturating_sub(bytes);
        if *n == 0 {
            usage.remove(who);
        }
    }
}

/// The tree a pin file at `path` keeps (its name is `<cid>.pin`).
pub(super) fn pin_cid(path: &std::path::Path) -> Option<Hash> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pin"))
        .and_then(|n| n.parse::<Hash>().ok())
}

/// One pass over the pins in `dir` at open: what each account is charged for them, and
/// `pending` without the chunks they name (a pin's root is in its file name).
pub(super) fn read_pins(
    dir: &std::path::Path,
    pending: &mut HashMap<Hash, (Address, u64)>,
) -> HashMap<Address, u64> {
    let mut usage = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let pin = std::fs::read(&path).ok().and_then(|b| PinFile::decode(&b));
        for (who, bytes) in pin.iter().flat_map(|p| &p.charges) {
            *usage.entry(*who).or_insert(0) += bytes;
        }
        if !pending.is_empty() {
            for id in pin_cid(&path)
                .iter()
                .chain(pin.iter().flat_map(|p| &p.chunks))
            {
                pending.remove(id);
            }
        }
    }
    usage
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
    /// Jobs whose task logs went (closed, and unwritten for the log retention).
    pub job_logs_pruned: u64,
}

impl Node {
    pub(super) fn chunk_store(&self) -> Result<&ChunkStore, NodeError> {
        self.shared.chunks.as_ref().ok_or(NodeError::NoChunkStore)
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
    pub(super) fn sync_chunks(&self, store: &ChunkStore) -> Result<(), NodeError> {
        if let Some(pins) = self.shared.pins.as_ref() {
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
        let Some(pins) = self.shared.pins.as_ref() else {
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
            Err(ChunkStoreError::Full { .. }) if self.shared.pins.is_some() => {
                // Full: drop what nothing keeps any more (at most every 30 s: a store that
                // stays full must not make every upload collect), then try once more.
                let due = self.shared.pins.as_ref().is_some_and(|pins| {
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
                        retention_days: self
                            .shared
                            .pins
                            .as_ref()
                            .map_or(0, |p| p.retention.as_secs() / 86_400),
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
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
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
        let until = self.now_ms() + pins.retention.as_millis() as u64;
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
        self.shared.pins.as_ref().map_or(0, |pins| {
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
        let min = self
            .shared
            .pins
            .as_ref()
            .map_or(Amount::ZERO, |p| p.min_funds);
        min.max(Amount(1))
    }

    /// What the node stores for `account`: pinned and pending bytes, and its quota.
    pub fn storage(&self, account: &Address) -> StorageView {
        let (pinned_bytes, quota_bytes) = self.pinned_bytes(account);
        let pending_bytes = self.shared.pins.as_ref().map_or(0, |pins| {
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
        let Some(pins) = self.shared.pins.as_ref() else {
            return (0, None);
        };
        let usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
        (usage.get(account).copied().unwrap_or(0), pins.account_quota)
    }

    /// The pin of tree `cid`, if one is stored (a damaged file counts as none).
    pub(super) fn read_pin(&self, cid: &Hash) -> Result<Option<PinFile>, NodeError> {
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
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
    pub fn collect_garbage(&self) -> Result<GcReport, NodeError> {
        let grace = self
            .shared
            .pins
            .as_ref()
            .ok_or(NodeError::NoChunkStore)?
            .grace;
        self.collect_garbage_at(self.now_ms(), grace)
    }

    /// [`collect_garbage`](Self::collect_garbage) as of `now_ms`, keeping unpinned chunks
    /// younger than `grace`.
    pub fn collect_garbage_at(&self, now_ms: u64, grace: Duration) -> Result<GcReport, NodeError> {
        let store = self.chunk_store()?;
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
        let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.referenced_trees();
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
                if let Some(dir) = &self.shared.grants_dir {
                    let _ = std::fs::remove_file(dir.join(format!("{cid}.json")));
                }
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
        let open = self.open_job_ids();
        report.job_logs_pruned = self.shared.logs.prune(
            |job| open.contains(job),
            now_ms.saturating_sub(self.shared.log_retention_ms),
        );
        self.shared.metrics.gc_ran(&report);
        Ok(report)
    }

    /// Jobs still open (not finished, not cancelled).
    pub(super) fn open_job_ids(&self) -> HashSet<Hash> {
        let inner = self.lock();
        inner
            .state
            .jobs()
            .filter(|(_, j)| !j.finished && !j.cancelled)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Trees open jobs read (inputs) or produced (revealed outputs).
    pub(super) fn referenced_trees(&self) -> HashSet<Hash> {
        let inner = self.lock();
        let state = &inner.state;
        let mut used = HashSet::new();
        for (id, job) in state.jobs().filter(|(_, j)| !j.finished && !j.cancelled) {
            used.extend(job.prescription.data.iter().map(|d| d.cid));
            for (_, task) in state.tasks_of(id) {
                used.extend(task.reveals.iter().map(|r| r.output));
                used.extend(task.result);
            }
        }
        used
    }

    /// Runs [`collect_garbage`](Self::collect_garbage) on its own thread every configured
    /// interval until [`Node::shutdown`]; `None` for a node without a chunk store.
    pub fn spawn_gc(&self) -> Option<JoinHandle<()>> {
        let every = self.shared.pins.as_ref()?.every;
        let node = self.clone();
        std::thread::Builder::new()
            .name("gridwork-gc".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !node.shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    match node.collect_garbage() {
                        Ok(r) => tracing::info!(
                            freed = r.freed_bytes,
                            expired = r.pins_expired,
                            kept = r.pins_kept,
                            "garbage collection"
                        ),
                        Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                    }
                }
            })
            .ok()
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
