//! Chunks on disk, named by their hash, in append-only pack files with an index, a quota and
//! garbage collection.
//!
//! Layout: `DIR/packs/<n>.pack` holds records `id (32) | len (u32 LE) | bytes`, appended;
//! `DIR/packs/<n>.idx` lists `id (32) | offset (u64 LE) | len (u32 LE)` for each record once
//! its bytes are written. Opening reads the indexes into memory, then checks the records past
//! the last indexed one (a crash can leave written records unindexed, or a torn one at the
//! end): complete records whose bytes match their id are indexed, the rest is cut off. So a
//! crash or a full disk never leaves a partial chunk under its name, and reads re-hash, so
//! damage is reported, never served.
//!
//! Why packs and not a file per chunk: creating, renaming and later deleting an inode per
//! chunk cost more than the bytes on a fast disk (perf showed ext4 inode work on every
//! megabyte), and `has` on a million chunks is a hash-map lookup instead of a `stat` each.
//! Garbage collection drops unreferenced chunks from the index and rewrites the packs that
//! held them, so disk use follows the live bytes.
//!
//! The store's live bytes are counted at open and kept current; a put that would pass the
//! quota is refused before anything is written.
//!
//! Several processes may open one store (two `gridwork data pull`s at once): each appends
//! only to packs it holds an exclusive `flock` on, new packs are created exclusively, and
//! a pack locked by someone else is read but never repaired, appended to or rewritten.
//! Chunks another process writes later are not seen until the store is opened again (a
//! cache miss, fetched again).

mod gc;
mod recover;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use gridwork_types::Hash;

use recover::{load_pack, open_index};

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bytes are not what the id names.
    #[error("chunk {id} does not match its bytes (corrupt or forged)")]
    Mismatch {
        /// The claimed id.
        id: Hash,
    },
    /// The quota would be passed.
    #[error("the chunk store is full: {used} of {quota} bytes used, {needed} more needed; run garbage collection or raise the quota")]
    Full {
        /// Bytes used.
        used: u64,
        /// The quota.
        quota: u64,
        /// Bytes the put needed.
        needed: u64,
    },
    /// A chunk is larger than a record can hold.
    #[error("a chunk of {len} bytes is larger than the store takes ({max} bytes)")]
    TooLarge {
        /// The chunk's length.
        len: usize,
        /// The largest chunk stored.
        max: usize,
    },
    /// The file system failed (a full disk among others).
    #[error("chunk store {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A chunk whose bytes have been checked against its id, so storing it need not hash again.
#[derive(Debug, Clone)]
pub struct VerifiedChunk {
    id: Hash,
    bytes: Bytes,
}

impl VerifiedChunk {
    /// Checks `bytes` against `id`.
    pub fn check(id: Hash, bytes: Bytes) -> Result<VerifiedChunk, StoreError> {
        if Hash::of(&bytes) != id {
            return Err(StoreError::Mismatch { id });
        }
        Ok(VerifiedChunk { id, bytes })
    }

    /// The id.
    pub fn id(&self) -> &Hash {
        &self.id
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Bytes before a record's chunk: its id and length.
const RECORD_HEADER: u64 = 36;
/// Bytes of an index entry: id, offset, length.
const INDEX_ENTRY: usize = 44;
/// A pack takes no new records once it is this long; the next put opens the next pack.
const PACK_LIMIT: u64 = 256 << 20;
/// Packs written at once.
const ACTIVE_PACKS: usize = 4;
/// The largest chunk a record holds (chunks are at most a few MiB; this only bounds what a
/// damaged header can make `open` read).
const MAX_CHUNK: usize = 64 << 20;

/// A directory of pack files.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    quota: Option<u64>,
    /// Shared by clones, so a clone can move to a blocking thread.
    state: Arc<Mutex<State>>,
}

/// Where a chunk lies.
#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    /// Offset of the record (its header).
    offset: u64,
    len: u32,
    /// When it was written, or when the store was opened for chunks written before: what
    /// keeps a chunk of an upload still in progress from being collected.
    written: Instant,
    /// When it was last written or read (or the store opened): what a trim to a size keeps.
    touched: Instant,
}

/// One pack file and its index.
#[derive(Debug)]
struct Pack {
    data: Arc<File>,
    index: File,
    /// Where the next record goes (the active pack) or the file's length.
    end: u64,
    /// Record bytes (headers included) the index still points at.
    live: u64,
    /// Records reserved but not yet indexed: garbage collection leaves such a pack alone.
    pending: usize,
    /// This store holds the pack's lock: it may append to, repair or rewrite it. A pack
    /// another process (or another open store) holds is only read.
    owned: bool,
}

/// The index and what is being written.
#[derive(Debug)]
struct State {
    index: HashMap<Hash, Loc>,
    packs: BTreeMap<u32, Arc<Mutex<Pack>>>,
    /// The packs new records go to, one per writer lane (a chunk's lane is its id's first
    /// byte): parallel writes to one file queue on its inode lock (perf: 9% of a pull spent
    /// spinning there).
    active: [u32; ACTIVE_PACKS],
    /// Live chunk bytes (headers not counted).
    used: u64,
    writing: HashSet<Hash>,
    /// Packs written to since the last [`ChunkStore::sync`], and the bytes written.
    dirty: HashSet<u32>,
    unsynced: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn record_header(id: &Hash, len: u32) -> [u8; RECORD_HEADER as usize] {
    let mut h = [0; RECORD_HEADER as usize];
    h[..32].copy_from_slice(id.as_bytes());
    h[32..].copy_from_slice(&len.to_le_bytes());
    h
}

fn index_entry(id: &Hash, loc: Loc) -> [u8; INDEX_ENTRY] {
    let mut e = [0; INDEX_ENTRY];
    e[..32].copy_from_slice(id.as_bytes());
    e[32..40].copy_from_slice(&loc.offset.to_le_bytes());
    e[40..].copy_from_slice(&loc.len.to_le_bytes());
    e
}

impl ChunkStore {
    /// Opens (or creates) a store, reading its indexes and repairing what an interrupted
    /// write left. A store in the older layout (a file per chunk under two-digit shard
    /// directories) is moved into packs, each chunk checked on the way.
    pub fn open(dir: impl Into<PathBuf>, quota: Option<u64>) -> Result<ChunkStore, StoreError> {
        let dir = dir.into();
        let packs_dir = dir.join("packs");
        std::fs::create_dir_all(&packs_dir).map_err(io(&packs_dir))?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&packs_dir).map_err(io(&packs_dir))? {
            let path = entry.map_err(io(&packs_dir))?.path();
            let number = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pack"))
                .and_then(|n| n.parse::<u32>().ok());
            numbers.extend(number);
        }
        numbers.sort_unstable();
        let mut state = State {
            index: HashMap::new(),
            packs: BTreeMap::new(),
            active: [u32::MAX; ACTIVE_PACKS],
            used: 0,
            writing: HashSet::new(),
            dirty: HashSet::new(),
            unsynced: 0,
        };
        for number in numbers {
            let pack = load_pack(&packs_dir, number, &mut state)?;
            state.packs.insert(number, Arc::new(Mutex::new(pack)));
            state.active[0] = number;
        }
        let store = ChunkStore {
            dir,
            quota,
            state: Arc::new(Mutex::new(state)),
        };
        store.import_legacy()?;
        Ok(store)
    }

    fn pack_path(&self, number: u32, ext: &str) -> PathBuf {
        pack_path(&self.dir.join("packs"), number, ext)
    }

    /// Live chunk bytes stored.
    pub fn used(&self) -> u64 {
        lock(&self.state).used
    }

    /// How many chunks are stored.
    pub fn len(&self) -> usize {
        lock(&self.state).index.len()
    }

    /// Whether the store holds no chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a chunk is stored.
    pub fn has(&self, id: &Hash) -> bool {
        lock(&self.state).index.contains_key(id)
    }

    /// The ids of `wanted` this store lacks (what a sender must still move).
    pub fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a Hash>) -> Vec<Hash> {
        let state = lock(&self.state);
        let mut seen = HashSet::new();
        wanted
            .into_iter()
            .filter(|id| seen.insert(**id) && !state.index.contains_key(id))
            .copied()
            .collect()
    }

    /// Which of `ids` (each once) this store lacks, and the stored bytes of the others: one
    /// look-up each, for a pin of a million chunks.
    pub fn tally(&self, ids: &[Hash]) -> (Vec<Hash>, u64) {
        let state = lock(&self.state);
        let (mut missing, mut bytes) = (Vec::new(), 0);
        for id in ids {
            match state.index.get(id) {
                Some(loc) => bytes += u64::from(loc.len),
                None => missing.push(*id),
            }
        }
        (missing, bytes)
    }

    /// Stores a chunk after checking it against its id. Storing a chunk twice is a no-op.
    pub fn put(&self, id: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        if Hash::of(bytes) != *id {
            return Err(StoreError::Mismatch { id: *id });
        }
        self.write(id, bytes)
    }

    /// Stores a chunk checked on arrival. Storing a chunk twice is a no-op.
    pub fn put_verified(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.write(&chunk.id, &chunk.bytes)
    }

    fn write(&self, id: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l as usize <= MAX_CHUNK)
            .ok_or(StoreError::TooLarge {
                len: bytes.len(),
                max: MAX_CHUNK,
            })?;
        let needed = u64::from(len);
        let record = RECORD_HEADER + needed;
        // The lock covers the index check, the quota and the reservation of the record's
        // place; the bytes are written outside it, so puts of different chunks proceed in
        // parallel. A chunk being written by another put counts as present (its writer
        // finishes it).
        let (number, pack, offset) = {
            let mut state = lock(&self.state);
            if let Some(loc) = state.index.get_mut(id) {
                loc.touched = Instant::now();
                return Ok(());
            }
            if state.writing.contains(id) {
                return Ok(());
            }
            if let Some(quota) = self.quota {
                if state.used + needed > quota {
                    return Err(StoreError::Full {
                        used: state.used,
                        quota,
                        needed,
                    });
                }
            }
            let lane = usize::from(id.0[0]) % ACTIVE_PACKS;
            let (number, pack) = self.active_pack(&mut state, lane)?;
            let offset = {
                let mut p = lock(&pack);
                let offset = p.end;
                p.end += record;
                p.pending += 1;
                offset
            };
            state.used += needed;
            state.writing.insert(*id);
            (number, pack, offset)
        };
        let data = lock(&pack).data.clone();
        let written = data
            .write_all_at(&record_header(id, len), offset)
            .and_then(|()| data.write_all_at(bytes, offset + RECORD_HEADER));
        let mut state = lock(&self.state);
        state.writing.remove(id);
        let mut p = lock(&pack);
        p.pending -= 1;
        let loc = Loc {
            pack: number,
            offset,
            len,
            written: Instant::now(),
            touched: Instant::now(),
        };
        let indexed = written.and_then(|()| (&p.index).write_all(&index_entry(id, loc)));
        if let Err(e) = indexed {
            // The reserved place stays as dead space; garbage collection reclaims it.
            state.used -= needed;
            return Err(io(&self.pack_path(number, "pack"))(e));
        }
        p.live += record;
        drop(p);
        state.index.insert(*id, loc);
        state.dirty.insert(number);
        state.unsynced += record;
        Ok(())
    }

    /// [`ChunkStore::sync`] once `bytes` or more were written since the last sync: a writer
    /// that calls it as it goes keeps the disk writing while it works, so the sync that
    /// commits the whole (a pin) finds little left to write. Whether it synced.
    pub fn sync_every(&self, bytes: u64) -> Result<bool, StoreError> {
        if lock(&self.state).unsynced < bytes {
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    /// Whether `bytes` or more were written since the last sync.
    pub fn unsynced_past(&self, bytes: u64) -> bool {
        lock(&self.state).unsynced >= bytes
    }

    /// Makes every chunk stored so far durable: syncs the packs (and their indexes) written
    /// to since the last sync, and the directory that lists them. Puts are not synced one by
    /// one; a node syncs before it answers a pin, so a tree it said it keeps survives a
    /// crash of the machine.
    pub fn sync(&self) -> Result<(), StoreError> {
        let dirty: Vec<(u32, Arc<Mutex<Pack>>)> = {
            let mut state = lock(&self.state);
            state.unsynced = 0;
            let numbers = std::mem::take(&mut state.dirty);
            numbers
                .into_iter()
                .filter_map(|n| state.packs.get(&n).map(|p| (n, p.clone())))
                .collect()
        };
        if dirty.is_empty() {
            return Ok(());
        }
        let synced = dirty.iter().try_for_each(|(number, pack)| {
            let (data, index) = {
                let p = lock(pack);
                let index = p
                    .index
                    .try_clone()
                    .map_err(io(&self.pack_path(*number, "idx")))?;
                (p.data.clone(), index)
            };
            data.sync_data()
                .map_err(io(&self.pack_path(*number, "pack")))?;
            index
                .sync_data()
                .map_err(io(&self.pack_path(*number, "idx")))
        });
        let synced = synced.and_then(|()| sync_dir(&self.dir.join("packs")));
        if synced.is_err() {
            // Still to be made durable by the next sync.
            lock(&self.state)
                .dirty
                .extend(dirty.iter().map(|(n, _)| *n));
        }
        synced
    }

    /// The pack `lane`'s new records go to, opening the next one when it is full (or not
    /// this store's to write).
    fn active_pack(
        &self,
        state: &mut State,
        lane: usize,
    ) -> Result<(u32, Arc<Mutex<Pack>>), StoreError> {
        let current = state.active[lane];
        if let Some(pack) = state.packs.get(&current) {
            let p = lock(pack);
            if p.owned && p.end < PACK_LIMIT {
                drop(p);
                return Ok((current, pack.clone()));
            }
        }
        let (number, pack) = self.create_pack(state)?;
        let pack = Arc::new(Mutex::new(pack));
        state.packs.insert(number, pack.clone());
        state.active[lane] = number;
        Ok((number, pack))
    }

    /// Creates the next free pack, exclusively (another process may be creating one too),
    /// and locks it.
    fn create_pack(&self, state: &State) -> Result<(u32, Pack), StoreError> {
        let mut number = state.packs.keys().next_back().map_or(0, |n| n + 1);
        loop {
            let data_path = self.pack_path(number, "pack");
            let data = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&data_path)
            {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    number += 1;
                    continue;
                }
                Err(e) => return Err(io(&data_path)(e)),
            };
            if !try_lock(&data) {
                number += 1;
                continue;
            }
            let index_path = self.pack_path(number, "idx");
            let index = open_index(&index_path)?;
            // A stale index of a pack deleted by an interrupted collection names nothing.
            index.set_len(0).map_err(io(&index_path))?;
            return Ok((
                number,
                Pack {
                    data: Arc::new(data),
                    index,
                    end: 0,
                    live: 0,
                    pending: 0,
                    owned: true,
                },
            ));
        }
    }

    /// A chunk's bytes, checked against its id; `None` if not stored.
    pub fn get(&self, id: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let mut bytes = Vec::new();
        Ok(self.read_into(id, &mut bytes)?.then_some(bytes))
    }

    /// Appends a chunk's bytes to `out`, checked against its id; false if not stored (and
    /// `out` unchanged). What a fetch answer is built with: no buffer per chunk.
    pub fn read_into(&self, id: &Hash, out: &mut Vec<u8>) -> Result<bool, StoreError> {
        let (loc, data) = {
            let mut state = lock(&self.state);
            let Some(loc) = state.index.get_mut(id) else {
                return Ok(false);
            };
            loc.touched = Instant::now();
            let loc = *loc;
            let Some(pack) = state.packs.get(&loc.pack) else {
                return Ok(false);
            };
            let data = lock(pack).data.clone();
            (loc, data)
        };
        let start = out.len();
        out.resize(start + loc.len as usize, 0);
        let read = data.read_exact_at(&mut out[start..], loc.offset + RECORD_HEADER);
        if let Err(e) = read {
            out.truncate(start);
            return Err(io(&self.pack_path(loc.pack, "pack"))(e));
        }
        if Hash::of(&out[start..]) != *id {
            out.truncate(start);
            return Err(StoreError::Mismatch { id: *id });
        }
        Ok(true)
    }

    /// The stored bytes of those of `ids` the store holds (what answering them takes).
    pub fn stored_bytes<'a>(&self, ids: impl IntoIterator<Item = &'a Hash>) -> u64 {
        let state = lock(&self.state);
        ids.into_iter()
            .filter_map(|id| state.index.get(id))
            .map(|loc| u64::from(loc.len))
            .sum()
    }
}

/// Syncs directory `dir`, so the files created in or removed from it stay so after a crash.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Takes the exclusive lock on a pack without waiting; false if someone else holds it.
fn try_lock(file: &File) -> bool {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

fn pack_path(packs_dir: &Path, number: u32, ext: &str) -> PathBuf {
    packs_dir.join(format!("{number:08}.{ext}"))
}
