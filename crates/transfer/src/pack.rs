//! Packing a tree's files on every core, in bounded memory, reading only what changed.
//!
//! Each thread takes the next file and cuts it as it reads ([`Cutter`]: one window per
//! thread, whatever the file's size). A thread with no file left seals chunks that a cutting
//! thread hands it, so one large file keeps every core busy; a cutting thread hands a chunk
//! over only while a thread waits for one, so at most one chunk per thread is in hand.
//!
//! A [`PackIndex`] remembers each file packed before with what identifies its content on disk
//! (size, modification and change times, inode): a file that still matches keeps its chunk
//! ids and is not read again, as git's index and rsync's quick check do. Only files whose
//! change time was at least a second old when packing began are remembered, so an edit in the
//! same clock tick as the read cannot hide behind an unchanged time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use gridwork_types::Hash;

use crate::chunk::{ChunkParams, Cutter};
use crate::keys::DataKey;
use crate::tree::{
    io, mode_of, put_sealed, sorted_difference, sorted_ids, ChunkSink, Entry, EntryKind, PackStats,
    TreeError,
};

/// A file found by the scan: its name in the tree and what packing needs of its metadata
/// (not all of it, nor its path on disk: a million files held 300 MB of those).
#[derive(Debug)]
pub(crate) struct ScannedFile {
    pub(crate) rel: String,
    pub(crate) size: u64,
    pub(crate) mode: u32,
    stamp: Option<Stamp>,
    /// It has other names (hard links), in the tree or not.
    linked: bool,
}

impl ScannedFile {
    pub(crate) fn new(rel: String, meta: &Metadata) -> ScannedFile {
        ScannedFile {
            rel,
            size: meta.len(),
            mode: mode_of(meta),
            stamp: Stamp::of(meta),
            linked: links(meta) > 1,
        }
    }

    /// Its device and inode, if it has other names: what finds them in the tree.
    pub(crate) fn inode(&self) -> Option<(u64, u64)> {
        self.stamp
            .filter(|_| self.linked)
            .map(|stamp| (stamp.dev, stamp.ino))
    }
}

#[cfg(unix)]
fn links(meta: &Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(meta)
}

#[cfg(not(unix))]
fn links(_meta: &Metadata) -> u64 {
    1
}

/// Where a scan's files are on disk: under a directory, or the one file a tree of one file is.
#[derive(Debug)]
pub(crate) enum FileRoot {
    Dir(PathBuf),
    File(PathBuf),
}

impl FileRoot {
    pub(crate) fn path(&self, file: &ScannedFile) -> PathBuf {
        match self {
            FileRoot::Dir(dir) => dir.join(&file.rel),
            FileRoot::File(path) => path.clone(),
        }
    }
}

/// A tree's files as the scan found them, and where they are.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) root: FileRoot,
    pub(crate) files: Vec<ScannedFile>,
}

/// What identifies a file's content on disk without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    #[cfg(unix)]
    fn of(meta: &Metadata) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Some(Stamp {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        })
    }

    /// No change time to trust: every file is read.
    #[cfg(not(unix))]
    fn of(_meta: &Metadata) -> Option<Stamp> {
        None
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Known {
    stamp: Stamp,
    chunks: Vec<Hash>,
}

/// The push index's first bytes (its second format: the first was JSON).
const INDEX_MAGIC: &[u8; 8] = b"GWPIDX\0\x02";

/// Reads little-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn hash(&mut self) -> Option<Hash> {
        Some(Hash(self.take(32)?.try_into().ok()?))
    }

    fn ids(&mut self) -> Option<Vec<Hash>> {
        let n = self.u32()? as usize;
        let bytes = self.take(n.checked_mul(32)?)?;
        Some(
            bytes
                .chunks_exact(32)
                .filter_map(|c| c.try_into().ok().map(Hash))
                .collect(),
        )
    }
}

/// The files of a tree packed before, with their chunk ids: what lets a re-push read only the
/// files that changed. Bound to one data key and chunk sizes (files packed under others seal
/// to other chunks); a cache, so an unreadable or foreign index is simply empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    /// `derive_key("gridwork pack index v1", data key)`: which key, without revealing it.
    key: Hash,
    /// Minimum, average and maximum chunk size.
    params: [u32; 3],
    files: HashMap<String, Known>,
    /// The tree these files were last pushed in, if its pin succeeded.
    pinned: Option<PinnedTree>,
}

/// A pushed tree: its id, and the chunks its pin lists beyond the files' (the manifest's, and
/// those of files too recently changed to remember).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PinnedTree {
    cid: Hash,
    others: Vec<Hash>,
}

impl PackIndex {
    /// An index that knows no file.
    pub fn new(key: &DataKey, params: ChunkParams) -> PackIndex {
        PackIndex {
            key: Hash(blake3::derive_key("gridwork pack index v1", &key.0)),
            params: [params.min, params.avg, params.max],
            files: HashMap::new(),
            pinned: None,
        }
    }

    /// The index at `path` if it was written for `key` and `params`; an empty one if there is
    /// none, it is damaged or it belongs to another key.
    pub fn read(path: &Path, key: &DataKey, params: ChunkParams) -> PackIndex {
        let fresh = PackIndex::new(key, params);
        std::fs::read(path)
            .ok()
            .and_then(|bytes| PackIndex::decode(&bytes))
            .filter(|i| i.key == fresh.key && i.params == fresh.params)
            .unwrap_or(fresh)
    }

    /// Writes the index to `path` (whole or not at all: a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> Result<(), TreeError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.encode()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    }

    /// The binary form (docs/data-plane.md, "The push index"): `INDEX_MAGIC || key [32] ||
    /// min, avg, max u32 LE || has_pinned u8 [|| cid [32] || n u32 LE || ids [32] * n] ||
    /// files u64 LE || per file (path_len u32 LE || path || size u64 || mtime_ns i64 ||
    /// ctime_ns i64 || ino u64 || dev u64 || n u32 || ids [32] * n) || BLAKE3 of all before
    /// [32]`. About 100 bytes a file (JSON with hex ids took 200, and a tenth of a re-push's
    /// time to read and write).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let ids: usize = self.files.values().map(|k| k.chunks.len()).sum();
        let mut out = Vec::with_capacity(128 + self.files.len() * 80 + ids * 32);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(self.key.as_bytes());
        for p in self.params {
            out.extend_from_slice(&p.to_le_bytes());
        }
        let put_ids = |out: &mut Vec<u8>, ids: &[Hash]| {
            out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
            for id in ids {
                out.extend_from_slice(id.as_bytes());
            }
        };
        match &self.pinned {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p.cid.as_bytes());
                put_ids(&mut out, &p.others);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
        for (path, k) in &self.files {
            out.extend_from_slice(&(path.len() as u32).to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            let st = &k.stamp;
            out.extend_from_slice(&st.size.to_le_bytes());
            out.extend_from_slice(&st.mtime_ns.to_le_bytes());
            out.extend_from_slice(&st.ctime_ns.to_le_bytes());
            out.extend_from_slice(&st.ino.to_le_bytes());
            out.extend_from_slice(&st.dev.to_le_bytes());
            put_ids(&mut out, &k.chunks);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Reads [`encode`](Self::encode)'s bytes; `None` if they are damaged or of another form.
    pub(crate) fn decode(bytes: &[u8]) -> Option<PackIndex> {
        let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let mut r = Reader(body.strip_prefix(INDEX_MAGIC)?);
        let key = r.hash()?;
        let params = [r.u32()?, r.u32()?, r.u32()?];
        let pinned = match r.take(1)?[0] {
            0 => None,
            1 => Some(PinnedTree {
                cid: r.hash()?,
                others: r.ids()?,
            }),
            _ => return None,
        };
        let n = r.u64()?;
        // Each file takes at least 48 bytes: a count past them is damage, not a reservation.
        let mut files = HashMap::with_capacity(usize::try_from(n).ok()?.min(r.0.len() / 48));
        for _ in 0..n {
            let len = r.u32()? as usize;
            let path = std::str::from_utf8(r.take(len)?).ok()?.to_string();
            let stamp = Stamp {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
                ino: r.u64()?,
                dev: r.u64()?,
            };
            files.insert(
                path,
                Known {
                    stamp,
                    chunks: r.ids()?,
                },
            );
        }
        r.0.is_empty().then_some(PackIndex {
            key,
            params,
            files,
            pinned,
        })
    }

    /// Files it knows.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether it knows no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Every chunk id of the files it knows, each once, in increasing order.
    pub fn chunk_ids(&self) -> Vec<Hash> {
        sorted_ids(
            self.files
                .values()
                .flat_map(|k| k.chunks.iter().copied())
                .collect(),
        )
    }

    /// The tree these files were last pushed in and every chunk its pin lists (each once, in
    /// increasing order), as [`pinned_in`](Self::pinned_in) recorded them; none once files
    /// were forgotten.
    pub fn pinned_tree(&self) -> Option<(Hash, Vec<Hash>)> {
        let pinned = self.pinned.as_ref()?;
        let mut ids = self.chunk_ids();
        ids.extend_from_slice(&pinned.others);
        Some((pinned.cid, sorted_ids(ids)))
    }

    /// Records that these files were pushed in tree `cid`, whose pin lists `chunks` (fastest
    /// each once, in increasing order: [`sorted_ids`]).
    pub fn pinned_in(&mut self, cid: Hash, chunks: &[Hash]) {
        let sorted;
        let chunks = if chunks.is_sorted_by(|a, b| a < b) {
            chunks
        } else {
            sorted = sorted_ids(chunks.to_vec());
            &sorted
        };
        let others = sorted_difference(chunks, &self.chunk_ids());
        self.pinned = Some(PinnedTree { cid, others });
    }

    /// Forgets every file with a chunk in `missing` (gone from where the tree is packed to):
    /// those files are read and sealed again.
    pub fn forget_files_with(&mut self, missing: &HashSet<Hash>) {
        let before = self.files.len();
        self.files
            .retain(|_, k| !k.chunks.iter().any(|id| missing.contains(id)));
        if self.files.len() != before {
            // Its chunk set no longer follows from the files it knows.
            self.pinned = None;
        }
    }

    /// What it knows of `file`, taken out, if the file still looks as it did when packed.
    fn take_unchanged(&mut self, file: &ScannedFile) -> Option<(String, Known)> {
        let stamp = file.stamp?;
        if self.files.get(&file.rel)?.stamp != stamp {
            return None;
        }
        self.files.remove_entry(&file.rel)
    }
}

/// Packs `files`, reusing what `index` knows (its entries move to the index returned);
/// returns their entries (in no particular order) and the index of this pack. `started_ns`
/// is when packing began (Unix time in ns).
pub(crate) fn pack_files(
    scanned: &Scanned,
    key: &DataKey,
    params: ChunkParams,
    sink: &dyn ChunkSink,
    mut index: PackIndex,
    started_ns: i64,
    stats: &mut PackStats,
) -> Result<(Vec<Entry>, PackIndex), TreeError> {
    let (root, files) = (&scanned.root, &scanned.files[..]);
    let mut next = PackIndex::new(key, params);
    next.files.reserve(files.len().min(index.files.len()));
    let mut entries = Vec::with_capacity(files.len());
    let mut to_read = Vec::new();
    let mut reused = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let Some((rel, known)) = index.take_unchanged(file) else {
            to_read.push(i);
            continue;
        };
        let size = file.size;
        reused.extend_from_slice(&known.chunks);
        stats.files += 1;
        stats.unchanged_files += 1;
        stats.bytes += size;
        stats.chunks += known.chunks.len() as u64;
        entries.push(entry(&rel, file.mode, size, known.chunks.clone()));
        // Remembered when its change time was old enough, so it still is.
        next.files.insert(rel, known);
    }
    drop(index);
    // One call for every unchanged file (a call each took a lock a million times).
    sink.reuse(&reused)?;
    drop(reused);
    sink.packed(stats.bytes);

    let shared = Shared {
        root,
        files,
        to_read: &to_read,
        key,
        params,
        sink,
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results: Vec<Result<Done, TreeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| shared.worker()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TreeError::Malformed("a packing thread panicked".into()))
                })
            })
            .collect()
    });
    let mut chunks: HashMap<usize, Vec<(u32, Hash)>> = HashMap::new();
    let mut sizes = Vec::new();
    for done in results {
        let done = done?;
        stats.add(&done.stats);
        for (file, index, id) in done.ids {
            chunks.entry(file).or_default().push((index, id));
        }
        sizes.extend(done.sizes);
    }
    for (i, size) in sizes {
        let file = &files[i];
        let mut ids = chunks.remove(&i).unwrap_or_default();
        ids.sort_unstable_by_key(|(index, _)| *index);
        let ids: Vec<Hash> = ids.into_iter().map(|(_, id)| id).collect();
        remember(&mut next, &file.rel, file.stamp, size, &ids, started_ns);
        entries.push(entry(&file.rel, file.mode, size, ids));
    }
    Ok((entries, next))
}

fn entry(rel: &str, mode: u32, size: u64, chunks: Vec<Hash>) -> Entry {
    Entry {
        path: rel.to_string(),
        kind: EntryKind::File,
        mode,
        size,
        chunks,
        target: None,
    }
}

/// Records `rel` in `index` if what was read matches its stamp and the stamp is old enough
/// to change with any later edit.
fn remember(
    index: &mut PackIndex,
    rel: &str,
    stamp: Option<Stamp>,
    size: u64,
    chunks: &[Hash],
    started_ns: i64,
) {
    let Some(stamp) = stamp else {
        return;
    };
    if stamp.size == size && stamp.ctime_ns < started_ns.saturating_sub(1_000_000_000) {
        index.files.insert(
            rel.to_string(),
            Known {
                stamp,
                chunks: chunks.to_vec(),
            },
        );
    }
}

/// A chunk a cutting thread handed over, to seal.
struct Job {
    file: usize,
    index: u32,
    plain: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Next position in `to_read`.
    next: usize,
    jobs: VecDeque<Job>,
    /// Threads waiting for work.
    idle: usize,
    /// Threads cutting a file.
    cutting: usize,
    failed: bool,
}

/// What one thread packed: stats, `(file, chunk index, id)` and `(file, bytes read)`.
#[derive(Default)]
struct Done {
    stats: PackStats,
    ids: Vec<(usize, u32, Hash)>,
    sizes: Vec<(usize, u64)>,
}

enum Work {
    Seal(Job),
    Cut(usize),
    Stop,
}

/// What a cutting thread does with its next chunk.
enum Offer {
    Taken,
    Keep,
    Stop,
}

struct Shared<'a> {
    root: &'a FileRoot,
    files: &'a [ScannedFile],
    to_read: &'a [usize],
    key: &'a DataKey,
    params: ChunkParams,
    sink: &'a dyn ChunkSink,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn worker(&self) -> Result<Done, TreeError> {
        let mut done = Done::default();
        let mut window = Vec::new();
        loop {
            let result = match self.next_work() {
                Work::Stop => return Ok(done),
                Work::Seal(job) => self.seal(job.file, job.index, &job.plain, &mut done),
                Work::Cut(file) => {
                    let r = self.cut(file, &mut window, &mut done);
                    self.lock().cutting -= 1;
                    self.wake.notify_all();
                    r
                }
            };
            if let Err(e) = result {
                self.lock().failed = true;
                self.wake.notify_all();
                return Err(e);
            }
        }
    }

    /// A handed-over chunk if there is one, else the next file, else a wait while files are
    /// still being cut.
    fn next_work(&self) -> Work {
        let mut st = self.lock();
        loop {
            if st.failed {
                return Work::Stop;
            }
            if let Some(job) = st.jobs.pop_front() {
                return Work::Seal(job);
            }
            if let Some(&file) = self.to_read.get(st.next) {
                st.next += 1;
                st.cutting += 1;
                return Work::Cut(file);
            }
            if st.cutting == 0 {
                return Work::Stop;
            }
            st.idle += 1;
            st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
    }

    /// Hands chunk `index` of `file` to a waiting thread, if one waits without a chunk.
    fn offer(&self, file: usize, index: u32, plain: &[u8]) -> Offer {
        let mut st = self.lock();
        if st.failed {
            return Offer::Stop;
        }
        if st.idle <= st.jobs.len() {
            return Offer::Keep;
        }
        st.jobs.push_back(Job {
            file,
            index,
            plain: plain.to_vec(),
        });
        drop(st);
        self.wake.notify_one();
        Offer::Taken
    }

    fn cut(&self, file: usize, window: &mut Vec<u8>, done: &mut Done) -> Result<(), TreeError> {
        let path = &self.root.path(&self.files[file]);
        let source = crate::tree::open_scanned(path)?;
        let mut cutter = Cutter::new(source, self.params, window);
        let mut index = 0u32;
        while let Some(plain) = cutter.next_chunk().map_err(io(path))? {
            match self.offer(file, index, plain) {
                Offer::Taken => {}
                Offer::Keep => self.seal(file, index, plain, done)?,
                Offer::Stop => return Ok(()),
            }
            index += 1;
        }
        let size = cutter.bytes_read();
        done.sizes.push((file, size));
        done.stats.files += 1;
        done.stats.bytes += size;
        Ok(())
    }

    fn seal(
        &self,
        file: usize,
        index: u32,
        plain: &[u8],
        done: &mut Done,
    ) -> Result<(), TreeError> {
        let id = put_sealed(self.sink, self.key, plain, &mut done.stats)?;
        self.sink.packed(plain.len() as u64);
        done.ids.push((file, index, id));
        Ok(())
    }
}

/// How many of `chunks` (a file's chunk ids, in order) the file at `path` (a path in the
/// tree) under `dest` already holds at its start, and their bytes: its bytes are cut as
/// packing cuts them and sealed under `key`, and each chunk counts while its id matches. A
/// pull that was cut off takes these from the file instead of fetching them again. No file,
/// another kind of entry there, or a link on the way ([`open_inside`]): none.
///
/// [`open_inside`]: crate::open_inside
pub fn sealed_prefix(
    dest: &Path,
    path: &str,
    chunks: &[Hash],
    key: &DataKey,
    params: ChunkParams,
) -> Result<(usize, u64), TreeError> {
    let Some(file) = crate::tree::open_inside(dest, path)? else {
        return Ok((0, 0));
    };
    let path = &dest.join(path);
    let mut window = Vec::new();
    let mut cutter = Cutter::new(file, params, &mut window);
    let (mut count, mut bytes) = (0usize, 0u64);
    while let Some(expected) = chunks.get(count) {
        let Some(plain) = cutter.next_chunk().map_err(io(path))? else {
            break;
        };
        if crate::chunk::seal(key, plain).0 != *expected {
            break;
        }
        count += 1;
        bytes += plain.len() as u64;
    }
    Ok((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_for_another_key_or_chunk_size_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let (key, other) = (DataKey([1; 32]), DataKey([2; 32]));
        let mut index = PackIndex::new(&key, ChunkParams::DEFAULT);
        let meta = std::fs::metadata(dir.path()).unwrap();
        remember(
            &mut index,
            "a",
            Stamp::of(&meta),
            meta.len(),
            &[Hash([9; 32])],
            i64::MAX,
        );
        index.write(&path).unwrap();
        assert_eq!(PackIndex::read(&path, &key, ChunkParams::DEFAULT).len(), 1);
        assert!(PackIndex::read(&path, &other, ChunkParams::DEFAULT).is_empty());
        let smaller = ChunkParams {
            avg: 512 * 1024,
            ..ChunkParams::DEFAULT
        };
        assert!(PackIndex::read(&path, &key, smaller).is_empty());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(PackIndex::read(&path, &key, ChunkParams::DEFAULT).is_empty());
    }

    #[test]
    fn an_index_reads_back_as_written_and_any_damage_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let key = DataKey([1; 32]);
        let mut index = PackIndex::new(&key, ChunkParams::DEFAULT);
        let meta = std::fs::metadata(dir.path()).unwrap();
        for (i, name) in ["a", "dir/b", "dir/ünïcode c"].iter().enumerate() {
            let ids: Vec<Hash> = (0..i as u8).map(|n| Hash([n; 32])).collect();
            remember(
                &mut index,
                name,
                Stamp::of(&meta),
                meta.len(),
                &ids,
                i64::MAX,
            );
        }
        index.pinned_in(
            Hash([7; 32]),
            &[Hash([0; 32]), Hash([1; 32]), Hash([8; 32])],
        );
        index.write(&path).unwrap();
        let read = PackIndex::read(&path, &key, ChunkParams::DEFAULT);
        assert_eq!(read, index);
        assert_eq!(
            read.pinned_tree(),
            Some((
                Hash([7; 32]),
                vec![Hash([0; 32]), Hash([1; 32]), Hash([8; 32])]
            ))
        );

        // A flipped bit anywhere, or a cut, and the index is simply empty (read files again).
        let bytes = std::fs::read(&path).unwrap();
        for at in [0, 9, 60, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            assert!(
                PackIndex::read(&path, &key, ChunkParams::DEFAULT).is_empty(),
                "bit flipped at {at}"
            );
        }
        std::fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        assert!(PackIndex::read(&path, &key, ChunkParams::DEFAULT).is_empty());
    }

    #[test]
    fn files_changed_within_the_last_second_are_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let ctime = Stamp::of(&meta).unwrap().ctime_ns;
        let mut index = PackIndex::new(&DataKey([1; 32]), ChunkParams::DEFAULT);
        // Remembers "a" as read with `size` bytes by a pack that began at `started_ns`.
        let mut remember_at = |size: u64, started_ns: i64| {
            remember(&mut index, "a", Stamp::of(&meta), size, &[], started_ns);
            index.len()
        };
        assert_eq!(
            remember_at(meta.len(), ctime + 500_000_000),
            0,
            "changed half a second before packing began"
        );
        assert_eq!(
            remember_at(meta.len() + 1, ctime + 5_000_000_000),
            0,
            "read a size other than its stamp's"
        );
        assert_eq!(remember_at(meta.len(), ctime + 5_000_000_000), 1);
    }
}
