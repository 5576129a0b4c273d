//! Unpacking a tree into a directory, with hooks for what a pull journals, and opening a file
//! inside it.

use std::collections::HashSet;
use std::path::Path;

use gridwork_types::Hash;

use crate::chunk::{open, ChunkParams};
use crate::dest::{write_sparse, Dest};
use crate::keys::DataKey;
use crate::store::ChunkStore;

use super::root::read_manifest;
use super::scan::check_path;
use super::{io, EntryKind, TreeError, TreeManifest, KEPT_MODE_BITS};

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
