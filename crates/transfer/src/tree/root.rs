//! The root object and the manifest it names: their chunk ids, and the manifest read and checked.

use std::collections::HashSet;

use gridwork_types::Hash;

use crate::chunk::{open, ChunkParams};
use crate::keys::DataKey;
use crate::store::ChunkStore;

use super::packing::MANIFEST_PARAMS;
use super::scan::{check_path, link_stays_inside};
use super::{EntryKind, TreeError, TreeManifest, ROOT_TAG, ROOT_TAG_V1};

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
