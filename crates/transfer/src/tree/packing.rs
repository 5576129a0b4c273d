//! Packing a tree: its files and manifest sealed into a sink, and the sorted chunk-id sets a push
//! compares.

use std::path::Path;

use gridwork_types::Hash;

use crate::chunk::{chunk_ranges, ChunkParams};
use crate::keys::DataKey;
use crate::pack::{pack_files, PackIndex};
use crate::store::ChunkStore;

use super::scan::scan;
use super::{put_sealed, ChunkSink, PackStats, TreeError, ID_LIST_CUT, ID_LIST_MAX, ROOT_TAG};

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
