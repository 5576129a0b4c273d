//! Shared by the tests: chunk sizes, trees made on disk and damaged, packing into bytes, trees
//! compared, and a v1 tree put by hand.

use std::path::Path;

use gridwork_transfer::{seal, ChunkParams, ChunkStore, DataKey};
use gridwork_types::Hash;

pub(super) const P: ChunkParams = ChunkParams {
    min: 4 * 1024,
    avg: 16 * 1024,
    max: 64 * 1024,
};

/// A mixed tree: a few text files, a larger binary-ish file, a nested directory, a link.
pub(super) fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("frames/deep")).unwrap();
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("frames/f{i:02}.txt")),
            format!("frame {i}\n").repeat(200 + i),
        )
        .unwrap();
    }
    let mut big = vec![0u8; 600_000];
    blake3::Hasher::new()
        .update(b"weights")
        .finalize_xof()
        .fill(&mut big);
    std::fs::write(dir.join("frames/deep/weights.bin"), big).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("deep/weights.bin", dir.join("frames/latest")).unwrap();
}

/// Flips one byte of `bytes` where they lie in the store's pack files.
pub(super) fn damage_on_disk(store_dir: &Path, bytes: &[u8]) {
    for entry in std::fs::read_dir(store_dir.join("packs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pack") {
            let mut data = std::fs::read(&path).unwrap();
            if let Some(at) = data.windows(bytes.len()).position(|w| w == bytes) {
                data[at + bytes.len() / 2] ^= 0x20;
                std::fs::write(&path, data).unwrap();
                return;
            }
        }
    }
    panic!("the chunk's bytes are in no pack");
}

/// Sizes of the store's pack files, in bytes.
pub(super) fn pack_bytes(store_dir: &Path) -> u64 {
    std::fs::read_dir(store_dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| p.metadata().unwrap().len())
        .sum()
}

pub(super) fn chunk(i: u32, len: usize) -> (Hash, Vec<u8>) {
    let mut bytes = vec![0; len];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    (Hash::of(&bytes), bytes)
}

pub(super) fn same_tree(a: &Path, b: &Path) {
    for entry in std::fs::read_dir(a).unwrap() {
        let entry = entry.unwrap();
        let (pa, pb) = (entry.path(), b.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&pa).unwrap();
        if meta.is_dir() {
            same_tree(&pa, &pb);
        } else if meta.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&pa).unwrap(),
                std::fs::read_link(&pb).unwrap()
            );
        } else {
            assert_eq!(
                std::fs::read(&pa).unwrap(),
                std::fs::read(&pb).unwrap(),
                "{}",
                pa.display()
            );
        }
    }
}

/// Stores a tree made by hand: its manifest sealed as one chunk, named by a v1 root or, for
/// v2, by an id list the root names (docs/data-plane.md, "Trees"); returns its id.
pub(super) fn put_tree_by_hand(
    store: &ChunkStore,
    key: &DataKey,
    manifest: &[u8],
    v1: bool,
) -> Hash {
    let (mid, sealed) = seal(key, manifest);
    store.put(&mid, &sealed).unwrap();
    let root = if v1 {
        [&b"gridwork/tree/v1\n"[..], mid.as_bytes()].concat()
    } else {
        let list = mid.as_bytes().to_vec();
        store.put(&Hash::of(&list), &list).unwrap();
        [&b"gridwork/tree/v2\n"[..], Hash::of(&list).as_bytes()].concat()
    };
    let cid = Hash::of(&root);
    store.put(&cid, &root).unwrap();
    cid
}
