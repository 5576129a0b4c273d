//! Packing a file tree into chunks, and unpacking it.
//!
//! The manifest (binary: `crate::manifest`; sealed and chunked like file data) lists entries
//! in path order: files with mode, size and chunk ids, directories, and symbolic links whose
//! targets stay inside the tree. The root object, stored in clear as a chunk of its own, is
//! `"gridwork/tree/v2\n"` followed by the manifest's chunk ids; the tree's content id is the
//! root's hash. Unpacking reads and checks the whole manifest before writing anything: no
//! absolute paths, no `..`, no links that escape.

mod packing;
mod root;
mod scan;
#[cfg(test)]
mod tests;
mod unpack;

pub use packing::{
    chunk_set_digest, pack, pack_into, pack_with_index, sorted_difference, sorted_ids,
    MANIFEST_PARAMS,
};
pub use root::{manifest_ids, read_manifest, root_children};
pub use scan::{link_stays_inside, tree_digest};
pub use unpack::{open_inside, unpack, write_tree, write_tree_with, WriteHooks};

use std::path::Path;

use gridwork_types::Hash;
use serde::{Deserialize, Serialize};

use crate::chunk::{seal, SealError};
use crate::keys::DataKey;
use crate::store::{ChunkStore, StoreError};

#[cfg(fuzzing)]
pub(crate) use root::parse_manifest;
pub(crate) use scan::mode_of;

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
    /// Files not read again: they looked as when last packed
    /// ([`PackIndex`](crate::PackIndex)).
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

/// A rule a name in a tree must keep, which push and pull check alike
/// ([`check_path`](scan::check_path)).
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

/// Opens a file the scan found as a regular file, for reading its content: with
/// `O_NOFOLLOW` and `O_NONBLOCK`, and checked to be a regular file still, so a file replaced
/// since the scan by a link (to somewhere else of the reader's) or a FIFO (that would block
/// the read for ever) is an error, not read. What a task program leaves is read this way.
pub(crate) fn open_scanned(path: &Path) -> Result<std::fs::File, TreeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(io(path))?;
    if !file.metadata().map_err(io(path))?.is_file() {
        return Err(io(path)(std::io::Error::other(
            "no longer a regular file (it changed since the tree was scanned)",
        )));
    }
    Ok(file)
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.display().to_string(),
        source,
    }
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
    /// [`PackIndex`](crate::PackIndex) was checked against it) without sealing them again.
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
