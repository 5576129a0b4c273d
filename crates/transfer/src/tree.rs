//! Packing a file tree into chunks, and unpacking it.
//!
//! The manifest (binary: `crate::manifest`; sealed and chunked like file data) lists entries
//! in path order: files with mode, size and chunk ids, directories, and symbolic links whose
//! targets stay inside the tree. The root object, stored in clear as a chunk of its own, is
//! `"gridwork/tree/v2\n"` followed by the manifest's chunk ids; the tree's content id is the
//! root's hash. Unpacking reads and checks the whole manifest before writing anything: no
//! absolute paths, no `..`, no links that escape.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use gridwork_types::Hash;
use serde::{Deserialize, Serialize};

use crate::chunk::{chunk_ranges, open, seal, ChunkParams, SealError};
use crate::dest::{write_sparse, Dest};
use crate::keys::DataKey;
use crate::pack::{pack_files, FileRoot, PackIndex, Scanned, ScannedFile};
use crate::store::{ChunkStore, StoreError};

/// The root object's first bytes. A v2 root lists id lists ([`ID_LIST_CUT`]) that list the
/// manifest's chunks, and the manifest is binary (`crate::manifest`); a v1 root, pushed by
/// earlier versions, lists the chunks of a JSON manifest itself (still read).
const ROOT_TAG: &[u8] = b"gridwork/tree/v2\n";
const ROOT_TAG_V1: &[u8] = b"gridwork/tree/v1\n";

/// An id list ends after a manifest chunk id whose first byte is below this (one id in 64,
/// so about 2 KiB of ids a list) or at [`ID_LIST_MAX`] ids. Content-defined: an edit that
/// changes one manifest chunk changes one list, and the root stays about 500 bytes per
/// megabyte of manifest (a million small files: 22 KB where a flat list of ids took 1.4 MB,
/// sent again by every push).
const ID_LIST_CUT: u8 = 4;
const ID_LIST_MAX: usize = 1024;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (target relative, inside the tree).
    Link,
    /// A named pipe (FIFO).
    Fifo,
    /// Another name of a regular file of the tree: its target is the path of the file's
    /// first name in path order, an entry of kind [`File`](EntryKind::File).
    #[serde(rename = "hardlink")]
    HardLink,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated.
    pub path: String,
    /// Kind.
    pub kind: EntryKind,
    /// Unix permission bits.
    pub mode: u32,
    /// Bytes (files).
    pub size: u64,
    /// Chunk ids in order (files).
    #[serde(default)]
    pub chunks: Vec<Hash>,
    /// Link target (links), or the path of the file a hard link names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A tree's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TreeManifest {
    /// `gridwork-tree-v2` (binary), or `gridwork-tree-v1` (JSON, from earlier versions).
    pub format: String,
    /// Entries in path order.
    pub entries: Vec<Entry>,
}

impl TreeManifest {
    /// Every chunk id the tree needs, data first.
    pub fn chunk_ids(&self) -> Vec<Hash> {
        self.entries
            .iter()
            .flat_map(|e| e.chunks.iter().copied())
            .collect()
    }
}

/// What packing did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PackStats {
    /// Files packed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks referenced (data and manifest).
    pub chunks: u64,
    /// Chunks the store did not already hold.
    pub new_chunks: u64,
    /// Sealed bytes of those new chunks.
    pub new_bytes: u64,
    /// Files not read again: they looked as when last packed ([`PackIndex`]).
    pub unchanged_files: u64,
    /// What a pull of the tree will not give back as it was, in path order: for the pusher
    /// to see before anyone relies on it.
    pub not_kept: Vec<NotKept>,
}

/// Something in a packed tree that a pull will not give back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotKept {
    /// Its path in the tree.
    pub path: String,
    /// What is lost.
    pub loss: Loss,
}

/// What a pull loses of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Loss {
    /// Setuid or setgid bits: the manifest keeps the mode whole, but a pull drops these (a
    /// tree from someone else must not make a program that runs as its puller's owner or
    /// group, which is why tar restores them only for root).
    SetIdBits {
        /// The mode on disk.
        mode: u32,
    },
    /// A block or character device: left out (only root may make one, and a device node
    /// moved to another machine names another device).
    Device,
    /// A socket: left out (it means something only to the process listening on it).
    Socket,
}

impl std::fmt::Display for NotKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = &self.path;
        match self.loss {
            Loss::SetIdBits { mode } => write!(
                f,
                "`{path}` has mode {mode:04o}: its setuid/setgid bits are not kept, a pull gives it mode {:04o}",
                mode & KEPT_MODE_BITS
            ),
            Loss::Device => write!(f, "`{path}` is a device node: it is left out of the tree"),
            Loss::Socket => write!(f, "`{path}` is a socket: it is left out of the tree"),
        }
    }
}

/// The mode bits a pull sets: permissions and the sticky bit, not setuid or setgid.
pub(crate) const KEPT_MODE_BITS: u32 = 0o1777;

/// A rule a name in a tree must keep, which push and pull check alike ([`check_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameRule {
    /// No backslash: on Windows it separates directories, so a tree that held one could
    /// climb out of its destination there.
    NoBackslash,
    /// Names are UTF-8 (the manifest's paths are).
    Utf8,
    /// Link targets are UTF-8.
    Utf8LinkTarget,
}

impl std::fmt::Display for NameRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameRule::NoBackslash => "a name with a backslash cannot be stored (on Windows it separates directories, so every pull refuses it)",
            NameRule::Utf8 => "its name is not UTF-8 (shown with \u{fffd} for the bytes that are not), and a tree's names must be",
            NameRule::Utf8LinkTarget => "it is a link whose target is not UTF-8, and a tree's link targets must be",
        })
    }
}

impl PackStats {
    pub(crate) fn add(&mut self, other: &PackStats) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.chunks += other.chunks;
        self.new_chunks += other.new_chunks;
        self.new_bytes += other.new_bytes;
        self.unchanged_files += other.unchanged_files;
        self.not_kept.extend_from_slice(&other.not_kept);
    }
}

/// Why a tree did not pack or unpack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A path that is absolute, climbs out, or a link that escapes.
    #[error("`{path}` is not allowed in a tree: paths must be relative and stay inside it")]
    UnsafePath {
        /// The path.
        path: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A chunk did not open.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A chunk the tree needs is not in the store.
    #[error("chunk {id} is missing from the store")]
    Missing {
        /// The chunk.
        id: Hash,
    },
    /// A name the tree format cannot hold: refused by push (before anything is sent) and
    /// by pull alike.
    #[error("`{path}` cannot be in a tree: {rule}; rename it, or move it out of the tree, and push again")]
    BadName {
        /// The path (not UTF-8: printed lossily).
        path: String,
        /// The rule it breaks.
        rule: NameRule,
    },
    /// A directory with entries where the tree being written has something else: a pull
    /// removes only what it can make again.
    #[error("`{path}` is a directory with entries where the tree has no directory; move it away and pull again")]
    InTheWay {
        /// The path in the tree.
        path: String,
    },
    /// The root or manifest is not a tree.
    #[error("not a gridwork tree: {0}")]
    Malformed(String),
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Checks that `path` may be in a tree: relative, `/`-separated plain names, none of them
/// `..` and none with a backslash. Push checks every path it finds by this function and pull
/// every path it reads, so a tree that pushes always pulls.
fn check_path(path: &str) -> Result<(), TreeError> {
    let bad = || TreeError::UnsafePath {
        path: path.to_string(),
    };
    if path.contains('\\') {
        return Err(TreeError::BadName {
            path: path.to_string(),
            rule: NameRule::NoBackslash,
        });
    }
    let mut names = 0;
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            _ => return Err(bad()),
        }
    }
    if names == 0 || path.split('/').any(|n| n.is_empty() || n == ".") {
        return Err(bad());
    }
    Ok(())
}

/// Whether a link at `link` pointing to `target` stays inside the tree.
fn link_stays_inside(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = link.split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

#[cfg(unix)]
pub(crate) fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
pub(crate) fn mode_of(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

/// Where packing puts sealed chunks: a [`ChunkStore`], or a transport that streams them
/// out as they are made. Called from several packing threads at once.
pub trait ChunkSink: Sync {
    /// Takes a sealed chunk; returns whether it was new to the sink.
    fn put(&self, id: &Hash, sealed: Vec<u8>) -> Result<bool, TreeError>;
    /// Takes the tree's root object, which packing hands over last, after every chunk it
    /// names. A transport keeps it until the rest has arrived, so a tree its receiver names
    /// is always complete.
    fn put_root(&self, id: &Hash, root: Vec<u8>) -> Result<bool, TreeError> {
        self.put(id, root)
    }
    /// Packing reuses `ids` (an unchanged file's chunks, which the sink held when the
    /// [`PackIndex`] was checked against it) without sealing them again.
    fn reuse(&self, ids: &[Hash]) -> Result<(), TreeError> {
        let _ = ids;
        Ok(())
    }
    /// Packing found `total_bytes` of file data to pack (for progress).
    fn planned(&self, _total_bytes: u64) {}
    /// Packing has read `plain_bytes` more bytes of file data (for progress).
    fn packed(&self, _plain_bytes: u64) {}
}

impl ChunkSink for ChunkStore {
    fn put(&self, id: &Hash, sealed: Vec<u8>) -> Result<bool, TreeError> {
        if self.has(id) {
            return Ok(false);
        }
        ChunkStore::put(self, id, &sealed)?;
        Ok(true)
    }
}

pub(crate) fn put_sealed(
    sink: &dyn ChunkSink,
    key: &DataKey,
    plain: &[u8],
    stats: &mut PackStats,
) -> Result<Hash, TreeError> {
    let (id, sealed) = seal(key, plain);
    stats.chunks += 1;
    let len = sealed.len() as u64;
    if sink.put(&id, sealed)? {
        stats.new_chunks += 1;
        stats.new_bytes += len;
    }
    Ok(id)
}

/// A tree's files (path, relative name, metadata), its other entries (directories, links,
/// FIFOs, hard links) and what a pull will not give back, as found on disk. A single file is
/// a tree of one file.
type Scan = (Scanned, Vec<Entry>, Vec<NotKept>);

/// Walks the tree at `root`: directories are listed on every core (a stat per entry is most
/// of a re-push of many small files), each entry's metadata read relative to its directory.
/// Deterministic order: directories by path, each one's children by name. Every name is
/// checked as a pull checks it, so what pushes pulls.
fn scan(root: &Path) -> Result<Scan, TreeError> {
    let meta = std::fs::symlink_metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        let name = match root.file_name() {
            None => "file".to_string(),
            Some(n) => n
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| TreeError::BadName {
                    path: n.to_string_lossy().into_owned(),
                    rule: NameRule::Utf8,
                })?,
        };
        check_path(&name)?;
        let mut not_kept = Vec::new();
        set_id_bits(&name, &meta, &mut not_kept);
        let file = ScannedFile::new(name, &meta);
        let scanned = Scanned {
            root: FileRoot::File(root.to_path_buf()),
            files: vec![file],
        };
        return Ok((scanned, Vec::new(), not_kept));
    }
    let walk = Walk {
        state: Mutex::new(WalkState {
            dirs: vec![(root.to_path_buf(), String::new())],
            listing: 0,
            failed: None,
        }),
        wake: Condvar::new(),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let listed: Vec<Vec<Listed>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(|| walk.work())).collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let state = walk.state.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = state.failed {
        return Err(e);
    }
    // A thread that stopped without its directories would leave them out of the tree.
    if listed.len() != threads {
        return Err(TreeError::Malformed("a scanning thread panicked".into()));
    }
    let mut listed: Vec<Listed> = listed.into_iter().flatten().collect();
    listed.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix));
    let mut files = Vec::with_capacity(listed.iter().map(|l| l.files.len()).sum());
    let mut entries = Vec::with_capacity(listed.iter().map(|l| l.entries.len()).sum());
    let mut not_kept = Vec::new();
    for l in listed {
        files.extend(l.files);
        entries.extend(l.entries);
        not_kept.extend(l.not_kept);
    }
    not_kept.sort_by(|a, b| a.path.cmp(&b.path));
    hard_links(&mut files, &mut entries);
    let scanned = Scanned {
        root: FileRoot::Dir(root.to_path_buf()),
        files,
    };
    Ok((scanned, entries, not_kept))
}

/// Turns every file that is another name of a file found before it in path order into a
/// [`EntryKind::HardLink`] entry naming that first one: its data is packed once, and a pull
/// links the names again.
fn hard_links(files: &mut Vec<ScannedFile>, entries: &mut Vec<Entry>) {
    let mut first: std::collections::HashMap<(u64, u64), &str> = Default::default();
    for f in files.iter() {
        if let Some(inode) = f.inode() {
            let name = first.entry(inode).or_insert(f.rel.as_str());
            if f.rel.as_str() < *name {
                *name = &f.rel;
            }
        }
    }
    let first: std::collections::HashMap<(u64, u64), String> = first
        .into_iter()
        .map(|(inode, name)| (inode, name.to_string()))
        .collect();
    files.retain(|f| {
        let Some(target) = f.inode().and_then(|inode| first.get(&inode)) else {
            return true;
        };
        if *target == f.rel {
            return true;
        }
        entries.push(Entry {
            path: f.rel.clone(),
            kind: EntryKind::HardLink,
            mode: f.mode,
            size: 0,
            chunks: vec![],
            target: Some(target.clone()),
        });
        false
    });
}

/// Notes in `not_kept` that the entry at `path` has setuid or setgid bits a pull drops.
fn set_id_bits(path: &str, meta: &std::fs::Metadata, not_kept: &mut Vec<NotKept>) {
    let mode = mode_of(meta);
    if mode & 0o6000 != 0 {
        not_kept.push(NotKept {
            path: path.to_string(),
            loss: Loss::SetIdBits { mode },
        });
    }
}

/// Directories left to list, shared by the threads of a [`scan`].
struct Walk {
    state: Mutex<WalkState>,
    wake: Condvar,
}

struct WalkState {
    /// Directories found and not yet listed: path on disk, path in the tree.
    dirs: Vec<(PathBuf, String)>,
    /// Threads listing one now (each may find more).
    listing: usize,
    failed: Option<TreeError>,
}

/// One directory's files and other entries.
struct Listed {
    prefix: String,
    files: Vec<ScannedFile>,
    entries: Vec<Entry>,
    not_kept: Vec<NotKept>,
}

impl Walk {
    fn lock(&self) -> MutexGuard<'_, WalkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists directories until none is left or one failed.
    fn work(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        loop {
            let (dir, prefix) = {
                let mut st = self.lock();
                loop {
                    if st.failed.is_some() {
                        return out;
                    }
                    if let Some(next) = st.dirs.pop() {
                        st.listing += 1;
                        break next;
                    }
                    if st.listing == 0 {
                        return out;
                    }
                    st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let result = list_dir(&dir, prefix);
            let mut st = self.lock();
            st.listing -= 1;
            match result {
                Ok((listed, subdirs)) => {
                    st.dirs.extend(subdirs);
                    out.push(listed);
                }
                Err(e) => {
                    st.failed.get_or_insert(e);
                }
            }
            drop(st);
            self.wake.notify_all();
        }
    }
}

/// The entries of directory `dir` (`prefix` in the tree) and its subdirectories to list.
fn list_dir(dir: &Path, prefix: String) -> Result<(Listed, Vec<(PathBuf, String)>), TreeError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    children.sort_by_key(|e| e.file_name());
    let mut listed = Listed {
        prefix,
        files: Vec::new(),
        entries: Vec::new(),
        not_kept: Vec::new(),
    };
    let mut subdirs = Vec::new();
    for child in children {
        let path = child.path();
        let name = child.file_name();
        let in_tree = |name: &str| {
            if listed.prefix.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", listed.prefix)
            }
        };
        let rel = match name.to_str() {
            Some(name) => in_tree(name),
            None => {
                return Err(TreeError::BadName {
                    path: in_tree(&name.to_string_lossy()),
                    rule: NameRule::Utf8,
                })
            }
        };
        check_path(&rel)?;
        // Relative to the directory (`statx` at its descriptor): no walk of the whole path.
        let meta = child.metadata().map_err(io(&path))?;
        let kind = meta.file_type();
        if meta.is_dir() || meta.is_file() {
            set_id_bits(&rel, &meta, &mut listed.not_kept);
        }
        if meta.is_dir() {
            listed.entries.push(Entry {
                path: rel.clone(),
                kind: EntryKind::Dir,
                mode: mode_of(&meta),
                size: 0,
                chunks: vec![],
                target: None,
            });
            subdirs.push((path, rel));
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            let target = target
                .to_str()
                .ok_or_else(|| TreeError::BadName {
                    path: rel.clone(),
                    rule: NameRule::Utf8LinkTarget,
                })?
                .to_string();
            if !link_stays_inside(&rel, &target) {
                return Err(TreeError::UnsafePath {
                    path: format!("{rel} -> {target}"),
                });
            }
            listed.entries.push(Entry {
                path: rel,
                kind: EntryKind::Link,
                mode: 0o777,
                size: 0,
                chunks: vec![],
                target: Some(target),
            });
        } else if meta.is_file() {
            listed.files.push(ScannedFile::new(rel, &meta));
        } else {
            use std::os::unix::fs::FileTypeExt;
            if kind.is_fifo() {
                listed.entries.push(Entry {
                    path: rel,
                    kind: EntryKind::Fifo,
                    mode: mode_of(&meta),
                    size: 0,
                    chunks: vec![],
                    target: None,
                });
            } else {
                let loss = if kind.is_socket() {
                    Loss::Socket
                } else {
                    Loss::Device
                };
                listed.not_kept.push(NotKept { path: rel, loss });
            }
        }
    }
    Ok((listed, subdirs))
}

/// BLAKE3 of a tree's plaintext: every path in order with its kind, mode, size and content
/// hash (files) or target (links). Two trees with the same digest unpack to the same files;
/// it does not depend on any key, so independent runs that produce the same outputs agree.
pub fn tree_digest(root: &Path) -> Result<Hash, TreeError> {
    let (scanned, mut entries, _) = scan(root)?;
    for f in &scanned.files {
        let mut h = blake3::Hasher::new();
        let path = &scanned.root.path(f);
        let file = std::fs::File::open(path).map_err(io(path))?;
        h.update_reader(file).map_err(io(path))?;
        entries.push(Entry {
            path: f.rel.clone(),
            kind: EntryKind::File,
            mode: f.mode,
            size: f.size,
            chunks: vec![Hash(*h.finalize().as_bytes())],
            target: None,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes = serde_json::to_vec(&entries).map_err(|e| TreeError::Malformed(e.to_string()))?;
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork/tree-digest/v1\n");
    h.update(&bytes);
    Ok(Hash(*h.finalize().as_bytes()))
}

/// Packs the tree at `root` (a directory, or a single file) into `store`; returns its
/// content id and what was new.
pub fn pack(
    root: &Path,
    key: &DataKey,
    params: ChunkParams,
    store: &ChunkStore,
) -> Result<(Hash, PackStats), TreeError> {
    pack_into(root, key, params, store)
}

/// Chunk sizes for manifests: smaller than data chunks, so an edit to a few files changes
/// (and re-sends) only the manifest chunks that list them.
pub const MANIFEST_PARAMS: ChunkParams = ChunkParams {
    min: 256,
    avg: 1024,
    max: 8 * 1024,
};

/// Packs the tree at `root` into `sink`, file data on every core, the manifest after the
/// data and the root object last; returns the tree's content id and what was new.
pub fn pack_into(
    root: &Path,
    key: &DataKey,
    params: ChunkParams,
    sink: &dyn ChunkSink,
) -> Result<(Hash, PackStats), TreeError> {
    let (cid, stats, _) = pack_with_index(root, key, params, sink, PackIndex::new(key, params))?;
    Ok((cid, stats))
}

/// [`pack_into`], taking the chunk ids of files that look as `index` knows them instead of
/// reading them (the caller checked that `sink` still holds those chunks:
/// [`PackIndex::forget_files_with`]); returns the index of this pack beside the id and stats
/// (what `index` knew of unchanged files moves there).
pub fn pack_with_index(
    root: &Path,
    key: &DataKey,
    params: ChunkParams,
    sink: &dyn ChunkSink,
    index: PackIndex,
) -> Result<(Hash, PackStats, PackIndex), TreeError> {
    let started_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let mut stats = PackStats::default();
    let (scanned, mut entries, not_kept) = scan(root)?;
    stats.not_kept = not_kept;
    sink.planned(scanned.files.iter().map(|f| f.size).sum());
    let (file_entries, next) =
        pack_files(&scanned, key, params, sink, index, started_ns, &mut stats)?;
    drop(scanned);
    entries.extend(file_entries);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let bytes = crate::manifest::encode(&entries);
    drop(entries);
    let mut root_object = ROOT_TAG.to_vec();
    let mut list = Vec::new();
    let mut put_list = |list: &mut Vec<u8>, stats: &mut PackStats| {
        let (id, len) = (Hash::of(list), list.len() as u64);
        stats.chunks += 1;
        if sink.put(&id, std::mem::take(list))? {
            stats.new_chunks += 1;
            stats.new_bytes += len;
        }
        root_object.extend_from_slice(id.as_bytes());
        Ok::<_, TreeError>(())
    };
    for (offset, len) in chunk_ranges(&bytes, MANIFEST_PARAMS) {
        let id = put_sealed(sink, key, &bytes[offset..offset + len], &mut stats)?;
        list.extend_from_slice(id.as_bytes());
        if id.0[0] < ID_LIST_CUT || list.len() == ID_LIST_MAX * 32 {
            put_list(&mut list, &mut stats)?;
        }
    }
    if !list.is_empty() {
        put_list(&mut list, &mut stats)?;
    }
    let root_id = Hash::of(&root_object);
    stats.chunks += 1;
    let len = root_object.len() as u64;
    if sink.put_root(&root_id, root_object)? {
        stats.new_chunks += 1;
        stats.new_bytes += len;
    }
    Ok((root_id, stats, next))
}

/// BLAKE3 of a set of chunk ids, each once, in byte order: what a client and a node compare
/// to agree on the chunks a pin lists without sending them again. Ids already in strictly
/// increasing order (as [`sorted_ids`] leaves them) are not sorted again.
pub fn chunk_set_digest<'a>(ids: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut sorted: Vec<&Hash> = ids.into_iter().collect();
    if !sorted.is_sorted_by(|a, b| a < b) {
        sorted.sort_unstable();
        sorted.dedup();
    }
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork/chunk-set/v1\n");
    for id in sorted {
        h.update(id.as_bytes());
    }
    Hash(*h.finalize().as_bytes())
}

/// `ids` in increasing order, each once: the form the set operations below take (sorting a
/// million ids takes a tenth of the time of putting them in a hash set).
pub fn sorted_ids(mut ids: Vec<Hash>) -> Vec<Hash> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The ids of `a` that are not in `b`, both as [`sorted_ids`] leaves them; in order.
pub fn sorted_difference(a: &[Hash], b: &[Hash]) -> Vec<Hash> {
    let (mut out, mut i) = (Vec::new(), 0);
    for id in a {
        while b.get(i).is_some_and(|x| x < id) {
            i += 1;
        }
        if b.get(i) != Some(id) {
            out.push(*id);
        }
    }
    out
}

/// The chunks a root object names: the id lists of a v2 tree (see [`manifest_ids`]), or the
/// manifest chunks of a v1 tree.
pub fn root_children(root: &[u8]) -> Result<Vec<Hash>, TreeError> {
    let ids = root
        .strip_prefix(ROOT_TAG)
        .or_else(|| root.strip_prefix(ROOT_TAG_V1))
        .ok_or_else(|| TreeError::Malformed("missing the tree tag".into()))?;
    ids_of(ids, "root object")
}

fn ids_of(bytes: &[u8], what: &str) -> Result<Vec<Hash>, TreeError> {
    if bytes.len() % 32 != 0 {
        return Err(TreeError::Malformed(format!(
            "{what} length {}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| Hash(c.try_into().unwrap_or([0; 32])))
        .collect())
}

/// The manifest chunk ids of the tree whose root object is `root`, the id lists it names
/// (v2) read from `store`.
pub fn manifest_ids(root: &[u8], store: &ChunkStore) -> Result<Vec<Hash>, TreeError> {
    let children = root_children(root)?;
    if root.starts_with(ROOT_TAG_V1) {
        return Ok(children);
    }
    let mut ids = Vec::new();
    for list in children {
        let bytes = store.get(&list)?.ok_or(TreeError::Missing { id: list })?;
        ids.extend(ids_of(&bytes, "id list")?);
    }
    Ok(ids)
}

/// Reads and checks the manifest of tree `cid` (every path safe) from `store`.
pub fn read_manifest(
    cid: &Hash,
    key: &DataKey,
    params: ChunkParams,
    store: &ChunkStore,
) -> Result<TreeManifest, TreeError> {
    let root = store.get(cid)?.ok_or(TreeError::Missing { id: *cid })?;
    let mut bytes = Vec::new();
    for id in manifest_ids(&root, store)? {
        let sealed = store.get(&id)?.ok_or(TreeError::Missing { id })?;
        bytes.extend(open(
            key,
            &id,
            &sealed,
            params.max.max(MANIFEST_PARAMS.max),
        )?);
    }
    parse_manifest(&bytes, root.starts_with(ROOT_TAG_V1))
}

/// A manifest from its opened bytes (`v1`: the JSON of trees pushed by earlier versions),
/// every path and link target checked.
pub(crate) fn parse_manifest(bytes: &[u8], v1: bool) -> Result<TreeManifest, TreeError> {
    let manifest = if v1 {
        let mut manifest: TreeManifest =
            serde_json::from_slice(bytes).map_err(|e| TreeError::Malformed(e.to_string()))?;
        // The binary form cannot list a path twice or out of order; the JSON one could (found
        // by the `manifest` fuzz target): a path listed twice would be written twice, as two
        // kinds. Entries are put in path order (a directory before what it holds) and a
        // repeated path is refused.
        manifest.entries.sort_by(|a, b| a.path.cmp(&b.path));
        // Only files have a size and chunks (the binary form has no room for others').
        for e in manifest
            .entries
            .iter_mut()
            .filter(|e| e.kind != EntryKind::File)
        {
            e.size = 0;
            e.chunks.clear();
        }
        // Only links have a target.
        for e in manifest.entries.iter_mut() {
            if !matches!(e.kind, EntryKind::Link | EntryKind::HardLink) {
                e.target = None;
            }
        }
        if let Some(twice) = manifest.entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(TreeError::Malformed(format!(
                "the manifest lists `{}` twice",
                twice[0].path
            )));
        }
        if manifest.format != "gridwork-tree-v1" {
            return Err(TreeError::Malformed(format!(
                "format `{}`",
                manifest.format
            )));
        }
        manifest
    } else {
        TreeManifest {
            format: "gridwork-tree-v2".into(),
            entries: crate::manifest::decode(bytes)?,
        }
    };
    let files: HashSet<&str> = manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| e.path.as_str())
        .collect();
    for e in &manifest.entries {
        check_path(&e.path)?;
        let target = e.target.as_deref().unwrap_or_default();
        let bad_target = match e.kind {
            // An empty target names nothing (and the binary form reads it as none).
            EntryKind::Link => target.is_empty() || !link_stays_inside(&e.path, target),
            EntryKind::HardLink => !files.contains(target),
            _ => false,
        };
        if bad_target {
            return Err(TreeError::UnsafePath {
                path: format!("{} -> {target}", e.path),
            });
        }
    }
    Ok(manifest)
}

/// Unpacks tree `cid` from `store` into `dest` (which should be empty), after checking the
/// whole manifest.
pub fn unpack(
    cid: &Hash,
    key: &DataKey,
    params: ChunkParams,
    store: &ChunkStore,
    dest: &Path,
) -> Result<TreeManifest, TreeError> {
    let manifest = read_manifest(cid, key, params, store)?;
    let missing: HashSet<Hash> = store
        .missing(manifest.chunk_ids().iter())
        .into_iter()
        .collect();
    if let Some(id) = missing.into_iter().next() {
        return Err(TreeError::Missing { id });
    }
    let chunks = manifest.chunk_ids().into_iter().map(|id| {
        let sealed = store.get(&id)?.ok_or(TreeError::Missing { id })?;
        Ok(open(key, &id, &sealed, params.max)?)
    });
    write_tree(&manifest, dest, chunks)?;
    Ok(manifest)
}

/// Writes the tree `manifest` describes into `dest` from its files' plaintext chunks, given
/// in manifest order ([`TreeManifest::chunk_ids`]). No link in `dest` is ever followed
/// (`crate::dest`): what is in the way is replaced. Directories and files come first, then
/// FIFOs, links and hard links, and the directories' modes last (deepest first), so a
/// read-only directory is still filled. A file whose chunks do not add up to its size is
/// refused; aligned blocks of zeros are written as holes.
pub fn write_tree(
    manifest: &TreeManifest,
    dest: &Path,
    chunks: impl Iterator<Item = Result<Vec<u8>, TreeError>>,
) -> Result<(), TreeError> {
    write_tree_with(manifest, dest, chunks, &mut ())
}

/// What [`write_tree_with`] asks and tells its caller per file entry (by index in the
/// manifest): a resumed pull skips files it wrote before, and records the ones it writes.
pub trait WriteHooks {
    /// Whether file entry `index` is already in place; its chunks are then not in the stream.
    fn done(&self, index: usize) -> bool {
        let _ = index;
        false
    }

    /// How many chunks at the start of file entry `index` are already in place, and their
    /// bytes: the writer keeps them (cutting off whatever follows) and writes the rest after
    /// them; they are not in the stream.
    fn kept(&self, index: usize) -> (usize, u64) {
        let _ = index;
        (0, 0)
    }

    /// File entry `index` (`bytes` long) has been written whole, at `path`, and closed.
    fn written(&mut self, index: usize, path: &Path, bytes: u64) -> Result<(), TreeError> {
        let _ = (index, path, bytes);
        Ok(())
    }
}

/// No hooks: every file is written.
impl WriteHooks for () {}

/// [`write_tree`], skipping the files `hooks` says are done (the stream then holds the chunks
/// of the other files only, in manifest order) and telling it of each file written.
pub fn write_tree_with(
    manifest: &TreeManifest,
    dest: &Path,
    mut chunks: impl Iterator<Item = Result<Vec<u8>, TreeError>>,
    hooks: &mut dyn WriteHooks,
) -> Result<(), TreeError> {
    let mut out = Dest::open(dest)?;
    for (index, e) in manifest.entries.iter().enumerate() {
        check_path(&e.path)?;
        match e.kind {
            EntryKind::Dir => {
                out.dir(&e.path)?;
            }
            EntryKind::File if hooks.done(index) => {}
            EntryKind::File => {
                let path = dest.join(&e.path);
                let (skip, kept) = hooks.kept(index);
                let skip = skip.min(e.chunks.len());
                let (file, mut written) = if skip > 0 {
                    (out.reopen_file(&e.path, kept)?, kept)
                } else {
                    (out.create_file(&e.path)?, 0)
                };
                for id in &e.chunks[skip..] {
                    let plain = chunks.next().ok_or(TreeError::Missing { id: *id })??;
                    let at = written;
                    written += plain.len() as u64;
                    if written > e.size {
                        break;
                    }
                    write_sparse(&file, at, &plain).map_err(io(&path))?;
                    crate::chunk::recycle(plain);
                }
                if written != e.size {
                    return Err(TreeError::Malformed(format!(
                        "`{}` should hold {} bytes, its chunks hold {written}",
                        e.path, e.size
                    )));
                }
                // Holes at the end, if any, make up the length.
                file.set_len(e.size).map_err(io(&path))?;
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::Permissions::from_mode(e.mode & KEPT_MODE_BITS);
                    file.set_permissions(mode).map_err(io(&path))?;
                }
                drop(file);
                hooks.written(index, &path, e.size)?;
            }
            EntryKind::Link | EntryKind::HardLink | EntryKind::Fifo => {}
        }
    }
    for e in &manifest.entries {
        let target = e.target.as_deref().unwrap_or_default();
        match e.kind {
            EntryKind::Fifo => out.fifo(&e.path, e.mode & KEPT_MODE_BITS)?,
            EntryKind::Link => out.symlink(&e.path, target)?,
            EntryKind::HardLink => out.hard_link(&e.path, target)?,
            EntryKind::File | EntryKind::Dir => {}
        }
    }
    // Deepest first: a directory's contents are all in place before its mode may forbid
    // writing them.
    for e in manifest.entries.iter().rev() {
        if e.kind == EntryKind::Dir {
            out.set_dir_mode(&e.path, e.mode & KEPT_MODE_BITS)?;
        }
    }
    Ok(())
}

/// The regular file at `path` (a path in the tree) under `dest`, open for reading, reached
/// without following any link below `dest`; `None` if it is not there, is not a regular file,
/// or some directory on the way is not a directory. What a resumed pull reads to learn what
/// it wrote before.
pub fn open_inside(dest: &Path, path: &str) -> Result<Option<std::fs::File>, TreeError> {
    check_path(path)?;
    if !dest.is_dir() {
        return Ok(None);
    }
    Dest::open(dest)?.open_existing(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_on_sorted_ids_agree_with_hash_sets() {
        // Deterministic ids with repeats and overlaps: id n is BLAKE3 of n.
        let id = |n: u32| Hash::of(&n.to_le_bytes());
        let a: Vec<Hash> = (0..3000).map(|n| id(n % 2000)).collect();
        let b: Vec<Hash> = (1000..5000).step_by(3).map(id).collect();
        let (sa, sb) = (sorted_ids(a.clone()), sorted_ids(b.clone()));
        assert!(sa.is_sorted_by(|x, y| x < y) && sa.len() == 2000);
        let set_b: HashSet<Hash> = b.iter().copied().collect();
        let mut expected: Vec<Hash> = sa.iter().filter(|x| !set_b.contains(x)).copied().collect();
        expected.sort_unstable();
        assert_eq!(sorted_difference(&sa, &sb), expected);
        assert_eq!(sorted_difference(&sa, &sa), Vec::<Hash>::new());
        assert_eq!(sorted_difference(&sa, &[]), sa);
        // The digest of a set is the same whatever order or repeats it comes in.
        let mut shuffled = a.clone();
        shuffled.reverse();
        assert_eq!(chunk_set_digest(&shuffled), chunk_set_digest(&sa));
        assert_ne!(chunk_set_digest(&sa[1..]), chunk_set_digest(&sa));
    }

    #[test]
    fn links_that_escape_are_refused() {
        assert!(link_stays_inside("a/b", "../c"));
        assert!(!link_stays_inside("a/b", "../../c"));
        assert!(!link_stays_inside("b", "/etc/passwd"));
        assert!(check_path("../x").is_err() && check_path("/x").is_err());
        assert!(check_path("a/../../b").is_err() && check_path("a//b").is_err());
        assert!(check_path("a/b").is_ok() && check_path("ä b").is_ok());
    }

    /// Found by the `manifest` fuzz target: a v1 (JSON) manifest listed entries out of path
    /// order, which the binary form cannot express; and it could list a path twice.
    #[test]
    fn a_v1_manifest_is_read_in_path_order_and_a_path_listed_twice_is_refused() {
        let entry = |path: &str, kind: &str| serde_json::json!({"path": path, "kind": kind, "mode": 420, "size": 0, "chunks": []});
        let doc = |entries: Vec<serde_json::Value>| {
            serde_json::json!({"format": "gridwork-tree-v1", "entries": entries}).to_string()
        };
        let unordered = doc(vec![
            entry("a/c", "file"),
            entry("a", "dir"),
            entry("a/b", "file"),
        ]);
        let read = parse_manifest(unordered.as_bytes(), true).unwrap();
        let paths: Vec<&str> = read.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/b", "a/c"]);
        let again = parse_manifest(&crate::manifest::encode(&read.entries), false).unwrap();
        assert_eq!(again.entries, read.entries);

        let sized_dir = doc(vec![
            serde_json::json!({"path": "d", "kind": "dir", "mode": 493,
            "size": 4096, "chunks": [Hash([1; 32])]}),
        ]);
        let read = parse_manifest(sized_dir.as_bytes(), true).unwrap();
        assert_eq!((read.entries[0].size, read.entries[0].chunks.len()), (0, 0));

        let nowhere = doc(vec![entry("a", "link")]);
        let err = parse_manifest(nowhere.as_bytes(), true).unwrap_err();
        assert!(matches!(err, TreeError::UnsafePath { .. }), "{err}");

        let twice = doc(vec![entry("a", "dir"), entry("a", "file")]);
        let err = parse_manifest(twice.as_bytes(), true).unwrap_err();
        assert!(err.to_string().contains("`a` twice"), "{err}");
    }
}
