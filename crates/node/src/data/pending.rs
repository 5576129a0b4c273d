//! Pins and uploads not yet pinned: what each account is charged, and the log that keeps
//! the charges of pending uploads across a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gridwork_transfer::ChunkStore;
use gridwork_types::{Address, Amount, Hash};

use super::write_durably;
use crate::pinfile::PinFile;
use crate::NodeError;

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
/// (`DataService::sync_chunks`), so a chunk that survives a crash has its record.
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
    pub(super) fn rewrite(&mut self, path: std::path::PathBuf) {
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
    pub(super) fn add(&mut self, id: Hash, who: Address, bytes: u64) {
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
    pub(super) fn sync(&self) -> Result<(), NodeError> {
        match &self.log {
            Some((path, file)) => file.sync_data().map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    pub(super) fn take(&mut self, id: &Hash) {
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
