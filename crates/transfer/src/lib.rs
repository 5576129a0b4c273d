//! The data plane's format: content-defined chunks, compressed, sealed, named by their hash.
//!
//! A file tree becomes sealed chunks ([`seal`]) and a manifest (itself sealed chunks) listing
//! paths, modes, sizes and chunk ids; a small clear root object lists the manifest's chunks,
//! and the tree's content id is the root's hash ([`pack`]). Chunk boundaries come from
//! FastCDC, so an edit moves only the chunks around it; sealing is deterministic under one
//! data key, so re-packing an unchanged chunk gives the same id and nothing new to send. The
//! data key is wrapped for each recipient's key ([`wrap_key`]); only holders can open chunks.
//! The format is specified in `docs/data-plane.md`.
//!
//! Transports (HTTP between nodes and workers, peer to peer) move chunks by id and verify
//! each against its name; they live beside this crate and never see plaintext.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod chunk;
mod dest;
mod keys;
mod manifest;
mod pack;
mod pool;
mod store;
mod tree;

pub use chunk::{chunk_ranges, open, seal, ChunkParams, SealError};
pub use keys::{proof_lock, unwrap_key, wrap_key, DataKey, WrappedKey};
pub use pack::{sealed_prefix, PackIndex};
pub use pool::BufferPool;
pub use store::{ChunkStore, StoreError, VerifiedChunk};
pub use tree::{
    chunk_set_digest, link_stays_inside, manifest_ids, open_inside, pack, pack_into,
    pack_with_index, read_manifest, root_children, sorted_difference, sorted_ids, tree_digest,
    unpack, write_tree, write_tree_with, ChunkSink, Entry, EntryKind, Loss, NameRule, NotKept,
    PackStats, TreeError, TreeManifest, WriteHooks, MANIFEST_PARAMS,
};

/// Entry points for the fuzz targets in `fuzz/` (compiled only with `--cfg fuzzing`): the
/// decoders of untrusted bytes that are private to this crate.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// A manifest from opened bytes, checked as a pull checks it.
    pub fn manifest(bytes: &[u8], v1: bool) -> Result<crate::TreeManifest, crate::TreeError> {
        crate::tree::parse_manifest(bytes, v1)
    }

    /// The binary manifest's encoding of `entries`.
    pub fn encode_manifest(entries: &[crate::Entry]) -> Vec<u8> {
        crate::manifest::encode(entries)
    }

    /// A push index from the body of its file (the checksum the file ends with is appended
    /// here, so the fuzzer explores the body rather than the checksum).
    pub fn pack_index(body: &[u8]) -> Option<crate::PackIndex> {
        let mut file = body.to_vec();
        file.extend_from_slice(blake3::hash(body).as_bytes());
        crate::pack::PackIndex::decode(&file)
    }

    /// The body of `index`'s file (without its checksum).
    pub fn pack_index_body(index: &crate::PackIndex) -> Vec<u8> {
        let mut file = index.encode();
        file.truncate(file.len().saturating_sub(32));
        file
    }
}
