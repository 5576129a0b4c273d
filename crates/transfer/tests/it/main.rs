//! Packing and unpacking trees: round trips, minimal re-pushes, keys, forgeries, bad paths,
//! full stores.

use std::collections::HashSet;
use std::path::Path;

use gridwork_transfer::{
    manifest_ids, pack, pack_with_index, read_manifest, root_children, seal, sealed_prefix,
    tree_digest, unpack, ChunkParams, ChunkSink, ChunkStore, DataKey, PackIndex, SealError,
    StoreError, TreeError,
};
use gridwork_types::Hash;

mod exact;

const P: ChunkParams = ChunkParams {
    min: 4 * 1024,
    avg: 16 * 1024,
    max: 64 * 1024,
};

/// A mixed tree: a few text files, a larger binary-ish file, a nested directory, a link.
fn make_tree(dir: &Path) {
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
fn damage_on_disk(store_dir: &Path, bytes: &[u8]) {
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
fn pack_bytes(store_dir: &Path) -> u64 {
    std::fs::read_dir(store_dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .map(|p| p.metadata().unwrap().len())
        .sum()
}

fn chunk(i: u32, len: usize) -> (Hash, Vec<u8>) {
    let mut bytes = vec![0; len];
    blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof()
        .fill(&mut bytes);
    (Hash::of(&bytes), bytes)
}

fn same_tree(a: &Path, b: &Path) {
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

#[test]
fn a_tree_round_trips_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(&dir.path().join("src"));
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    let (cid, stats) = pack(&dir.path().join("src"), &key, P, &store).unwrap();
    assert_eq!(stats.files, 21);
    assert_eq!(stats.new_chunks, stats.chunks);
    unpack(&cid, &key, P, &store, &dir.path().join("out")).unwrap();
    same_tree(&dir.path().join("src"), &dir.path().join("out"));
}

#[test]
fn repacking_after_a_small_edit_stores_only_the_changed_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    // A fixed key: chunk ids, and so where the manifest is cut, are the same every run.
    let key = DataKey([5; 32]);
    let (first, _) = pack(&src, &key, P, &store).unwrap();
    let (again, unchanged) = pack(&src, &key, P, &store).unwrap();
    assert_eq!(first, again);
    assert_eq!(unchanged.new_chunks, 0, "nothing changed, nothing new");

    // Change a few bytes in the middle of the big file.
    let big = src.join("frames/deep/weights.bin");
    let mut data = std::fs::read(&big).unwrap();
    data[300_000..300_010].copy_from_slice(b"0123456789");
    std::fs::write(&big, &data).unwrap();
    let (edited, stats) = pack(&src, &key, P, &store).unwrap();
    assert_ne!(edited, first);
    // The edited data chunk, the manifest chunks around its id (a changed id can move a cut
    // of the manifest's 2 KiB chunks: one run in a hundred of random keys changed three), and
    // the root.
    assert!(stats.new_chunks <= 5, "{stats:?}");
    assert!(stats.new_bytes < 3 * 64 * 1024 + 16 * 1024, "{stats:?}");
}

/// A store that counts the chunks packing seals into it (the root aside).
struct Counting<'a> {
    store: &'a ChunkStore,
    sealed: std::sync::atomic::AtomicUsize,
}

impl Counting<'_> {
    fn take(&self) -> usize {
        self.sealed.swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

impl ChunkSink for Counting<'_> {
    fn put(&self, id: &Hash, sealed: Vec<u8>) -> Result<bool, TreeError> {
        self.sealed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        <ChunkStore as ChunkSink>::put(self.store, id, sealed)
    }

    fn put_root(&self, id: &Hash, root: Vec<u8>) -> Result<bool, TreeError> {
        <ChunkStore as ChunkSink>::put(self.store, id, root)
    }
}

#[test]
fn repacking_with_an_index_reads_only_the_files_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    // Files changed within a second of packing are not remembered (their time could stay
    // the same through another edit in the same clock tick).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let sink = Counting {
        store: &store,
        sealed: 0.into(),
    };
    let key = DataKey::generate();
    // The manifest's chunks and the id lists that name them (docs/data-plane.md, "Trees").
    let manifest_len = |cid: &Hash| {
        let root = store.get(cid).unwrap().unwrap();
        manifest_ids(&root, &store).unwrap().len() + root_children(&root).unwrap().len()
    };

    let (first, stats, index) =
        pack_with_index(&src, &key, P, &sink, PackIndex::new(&key, P)).unwrap();
    assert_eq!(
        (stats.files, stats.unchanged_files, index.len()),
        (21, 0, 21)
    );
    assert!(sink.take() > 21);

    let (again, stats, index) = pack_with_index(&src, &key, P, &sink, index).unwrap();
    assert_eq!(again, first);
    assert_eq!((stats.files, stats.unchanged_files), (21, 21));
    assert_eq!(
        sink.take(),
        manifest_len(&again),
        "only the manifest is sealed again"
    );

    // Same size, new content: its change time moves, so it is read again.
    let edited = src.join("frames/f03.txt");
    let size = std::fs::metadata(&edited).unwrap().len() as usize;
    std::fs::write(&edited, "x".repeat(size)).unwrap();
    let (third, stats, index) = pack_with_index(&src, &key, P, &sink, index).unwrap();
    assert_eq!(stats.unchanged_files, 20);
    assert_eq!(
        sink.take(),
        1 + manifest_len(&third),
        "the edited file's one chunk"
    );
    let (plain, _) = pack(&src, &key, P, &store).unwrap();
    assert_eq!(
        third, plain,
        "the index changes what is read, never the tree"
    );
    unpack(&third, &key, P, &store, &dir.path().join("out")).unwrap();
    same_tree(&src, &dir.path().join("out"));

    // The edit was too recent to remember; a file whose chunks left the store is read again.
    assert_eq!(index.len(), 20);
    let weights = read_manifest(&third, &key, P, &store)
        .unwrap()
        .entries
        .into_iter()
        .find(|e| e.path == "frames/deep/weights.bin")
        .unwrap();
    let mut index = index;
    index.forget_files_with(&HashSet::from([weights.chunks[3]]));
    let (fourth, stats, _) = pack_with_index(&src, &key, P, &sink, index).unwrap();
    assert_eq!(fourth, third);
    assert_eq!(stats.unchanged_files, 19);
    assert_eq!(
        sink.take(),
        1 + weights.chunks.len() + manifest_len(&fourth)
    );
}

#[test]
fn a_file_larger_than_a_packing_window_packs_on_every_core_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 40 MiB: several windows (the largest chunk plus 8 MiB), some of it compressible.
    let mut big = vec![0u8; 40 << 20];
    blake3::Hasher::new()
        .update(b"large file")
        .finalize_xof()
        .fill(&mut big);
    big[10 << 20..12 << 20].fill(7);
    std::fs::write(src.join("large.bin"), &big).unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    let (cid, stats) = pack(&src, &key, P, &store).unwrap();
    assert_eq!((stats.files, stats.bytes), (1, big.len() as u64));
    let manifest = read_manifest(&cid, &key, P, &store).unwrap();
    let expected: Vec<Hash> = gridwork_transfer::chunk_ranges(&big, P)
        .into_iter()
        .map(|(at, len)| seal(&key, &big[at..at + len]).0)
        .collect();
    assert_eq!(
        manifest.entries[0].chunks, expected,
        "the whole file's chunks, in order"
    );
    unpack(&cid, &key, P, &store, &dir.path().join("out")).unwrap();
    assert!(std::fs::read(dir.path().join("out/large.bin")).unwrap() == big);
}

#[test]
fn a_partly_written_file_counts_only_its_leading_chunks_that_seal_to_the_manifests_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 1_000_000];
    blake3::Hasher::new()
        .update(b"prefix")
        .finalize_xof()
        .fill(&mut data);
    let key = DataKey::generate();
    let ranges = gridwork_transfer::chunk_ranges(&data, P);
    let ids: Vec<Hash> = ranges
        .iter()
        .map(|&(at, len)| seal(&key, &data[at..at + len]).0)
        .collect();
    let path = dir.path().join("f");
    assert_eq!(
        sealed_prefix(dir.path(), "f", &ids, &key, P).unwrap(),
        (0, 0),
        "no file"
    );

    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        sealed_prefix(dir.path(), "f", &ids, &key, P).unwrap(),
        (ids.len(), data.len() as u64),
        "a whole file"
    );
    // Cut inside chunk 10: the ten before it count, the torn one does not.
    let (at, len) = ranges[10];
    std::fs::write(&path, &data[..at + len / 2]).unwrap();
    assert_eq!(
        sealed_prefix(dir.path(), "f", &ids, &key, P).unwrap(),
        (10, at as u64)
    );
    // One byte altered in chunk 4: the four before it count.
    let mut altered = data.clone();
    altered[ranges[4].0 + 7] ^= 1;
    std::fs::write(&path, &altered).unwrap();
    assert_eq!(
        sealed_prefix(dir.path(), "f", &ids, &key, P).unwrap(),
        (4, ranges[4].0 as u64)
    );
    // Another key seals other ids: nothing counts.
    std::fs::write(&path, &data).unwrap();
    assert_eq!(
        sealed_prefix(dir.path(), "f", &ids, &DataKey::generate(), P).unwrap(),
        (0, 0)
    );
    // A link to the whole file is not read through.
    std::os::unix::fs::symlink("f", dir.path().join("g")).unwrap();
    assert_eq!(
        sealed_prefix(dir.path(), "g", &ids, &key, P).unwrap(),
        (0, 0)
    );
}

#[test]
fn a_wrong_key_cannot_decrypt_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(&dir.path().join("src"));
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let (cid, _) = pack(&dir.path().join("src"), &DataKey::generate(), P, &store).unwrap();
    let err = unpack(
        &cid,
        &DataKey::generate(),
        P,
        &store,
        &dir.path().join("out"),
    )
    .unwrap_err();
    assert!(
        matches!(err, TreeError::Seal(SealError::WrongKey { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("data key does not open it"));
    assert!(!dir.path().join("out").exists(), "nothing written");
}

#[test]
fn a_forged_chunk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(&dir.path().join("src"));
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, None).unwrap();
    let key = DataKey::generate();
    let (cid, _) = pack(&dir.path().join("src"), &key, P, &store).unwrap();
    let manifest = read_manifest(&cid, &key, P, &store).unwrap();
    let victim = manifest.chunk_ids()[0];
    let bytes = store.get(&victim).unwrap().unwrap();
    damage_on_disk(&store_dir, &bytes);
    assert!(matches!(
        store.get(&victim),
        Err(StoreError::Mismatch { .. })
    ));
    assert!(unpack(&cid, &key, P, &store, &dir.path().join("out")).is_err());
    // A put with bytes that are not what the id names is refused.
    assert!(matches!(
        store.put(&Hash([9; 32]), b"x"),
        Err(StoreError::Mismatch { .. })
    ));
}

/// Stores a tree made by hand: its manifest sealed as one chunk, named by a v1 root or, for
/// v2, by an id list the root names (docs/data-plane.md, "Trees"); returns its id.
fn put_tree_by_hand(store: &ChunkStore, key: &DataKey, manifest: &[u8], v1: bool) -> Hash {
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

#[test]
fn a_tree_pushed_with_the_json_manifest_of_v1_still_unpacks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    let (fid, sealed) = seal(&key, b"hello, v1");
    store.put(&fid, &sealed).unwrap();
    let manifest = format!(
        r#"{{"format":"gridwork-tree-v1","entries":[{{"path":"d","kind":"dir","mode":493,"size":0,"chunks":[]}},{{"path":"d/a.txt","kind":"file","mode":420,"size":9,"chunks":["{fid}"]}}]}}"#
    );
    let cid = put_tree_by_hand(&store, &key, manifest.as_bytes(), true);
    let out = dir.path().join("out");
    unpack(&cid, &key, P, &store, &out).unwrap();
    assert_eq!(std::fs::read(out.join("d/a.txt")).unwrap(), b"hello, v1");
}

#[test]
fn a_manifest_that_climbs_out_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    for bad in ["../escape.txt", "/etc/evil", "a/../../b"] {
        let manifest = format!(
            r#"{{"format":"gridwork-tree-v1","entries":[{{"path":"ok.txt","kind":"file","mode":420,"size":0,"chunks":[]}},{{"path":"{bad}","kind":"file","mode":420,"size":0,"chunks":[]}}]}}"#
        );
        let cid = put_tree_by_hand(&store, &key, manifest.as_bytes(), true);
        let out = dir.path().join("out");
        let err = unpack(&cid, &key, P, &store, &out).unwrap_err();
        assert!(matches!(err, TreeError::UnsafePath { .. }), "{bad}: {err}");
        assert!(!out.join("ok.txt").exists(), "nothing written for {bad}");

        // The same in the binary manifest of v2 trees (docs/data-plane.md): `bad` sorts
        // before `ok.txt`; each entry is kind, shared prefix, suffix, mode 420, size, count.
        let mut manifest = b"gridwork-tree-v2\n".to_vec();
        for path in [bad, "ok.txt"] {
            manifest.extend_from_slice(&[0, 0, path.len() as u8]);
            manifest.extend_from_slice(path.as_bytes());
            manifest.extend_from_slice(&[0xa4, 0x03, 0, 0]);
        }
        let cid = put_tree_by_hand(&store, &key, &manifest, false);
        let err = unpack(&cid, &key, P, &store, &out).unwrap_err();
        assert!(
            matches!(err, TreeError::UnsafePath { .. }),
            "v2 {bad}: {err}"
        );
        assert!(!out.join("ok.txt").exists(), "nothing written for v2 {bad}");
    }
}

#[test]
fn a_full_store_refuses_cleanly_and_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("a.txt"), "hello").unwrap();
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, Some(200_000)).unwrap();
    let key = DataKey::generate();
    let (kept, _) = pack(&small, &key, P, &store).unwrap();
    make_tree(&dir.path().join("big"));
    let err = pack(&dir.path().join("big"), &key, P, &store).unwrap_err();
    assert!(
        matches!(err, TreeError::Store(StoreError::Full { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("garbage collection"));
    // Reopening counts the same bytes; the earlier tree still unpacks.
    let used = store.used();
    let store = ChunkStore::open(&store_dir, Some(200_000)).unwrap();
    assert_eq!(store.used(), used);
    unpack(&kept, &key, P, &store, &dir.path().join("out")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/a.txt")).unwrap(),
        "hello"
    );
}

#[test]
fn garbage_collection_keeps_only_referenced_chunks() {
    let dir = tempfile::tempdir().unwrap();
    make_tree(&dir.path().join("src"));
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    let (cid, _) = pack(&dir.path().join("src"), &key, P, &store).unwrap();
    let (mid, sealed) = seal(&key, b"an orphan chunk");
    store.put(&mid, &sealed).unwrap();
    let manifest = read_manifest(&cid, &key, P, &store).unwrap();
    let mut keep: HashSet<Hash> = manifest.chunk_ids().into_iter().collect();
    keep.insert(cid);
    let root = store.get(&cid).unwrap().unwrap();
    keep.extend(root_children(&root).unwrap());
    keep.extend(manifest_ids(&root, &store).unwrap());
    let freed = store.gc(&keep).unwrap();
    assert_eq!(freed, sealed.len() as u64);
    assert!(!store.has(&mid));
    unpack(&cid, &key, P, &store, &dir.path().join("out")).unwrap();
}

#[test]
fn equal_trees_under_a_convergent_key_get_equal_ids_and_any_change_another() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    make_tree(&a);
    make_tree(&b);
    let digest = tree_digest(&a).unwrap();
    assert_eq!(
        digest,
        tree_digest(&b).unwrap(),
        "the digest ignores where a tree lives"
    );
    let key = |d: &Hash| DataKey::convergent(b"job 7 task 0", d);
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let (cid_a, _) = pack(&a, &key(&digest), P, &store).unwrap();
    let (cid_b, stats_b) = pack(&b, &key(&digest), P, &store).unwrap();
    assert_eq!(cid_a, cid_b);
    assert_eq!(
        stats_b.new_chunks, 0,
        "the second run's upload is already there"
    );

    // Another context, one changed byte, or another mode: another key or another tree.
    let other_context = DataKey::convergent(b"job 7 task 1", &digest);
    assert_ne!(pack(&a, &other_context, P, &store).unwrap().0, cid_a);
    std::fs::write(b.join("frames/f00.txt"), "frame 0 changed\n").unwrap();
    let changed = tree_digest(&b).unwrap();
    assert_ne!(changed, digest);
    assert_ne!(pack(&b, &key(&changed), P, &store).unwrap().0, cid_a);
    std::fs::write(b.join("frames/f00.txt"), "frame 0\n".repeat(200)).unwrap();
    assert_eq!(tree_digest(&b).unwrap(), digest, "restored");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        b.join("frames/f01.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    assert_ne!(tree_digest(&b).unwrap(), digest);
}

#[test]
fn a_reopened_store_keeps_every_chunk_and_cuts_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, None).unwrap();
    let chunks: Vec<_> = (0..50).map(|i| chunk(i, 1000 + i as usize * 37)).collect();
    for (id, bytes) in &chunks {
        store.put(id, bytes).unwrap();
    }
    let used = store.used();
    drop(store);
    // A crash mid-write: half a record at the end of the pack.
    let pack = store_dir.join("packs/00000000.pack");
    let whole = pack.metadata().unwrap().len();
    let (torn_id, torn) = chunk(99, 5000);
    let mut tail = torn_id.as_bytes().to_vec();
    tail.extend_from_slice(&5000u32.to_le_bytes());
    tail.extend_from_slice(&torn[..2000]);
    let mut data = std::fs::read(&pack).unwrap();
    data.extend_from_slice(&tail);
    std::fs::write(&pack, data).unwrap();

    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.used(), used);
    assert_eq!(store.len(), chunks.len());
    assert!(!store.has(&torn_id), "a torn record is not a chunk");
    assert_eq!(
        pack.metadata().unwrap().len(),
        whole,
        "the torn tail is cut"
    );
    for (id, bytes) in &chunks {
        assert_eq!(store.get(id).unwrap().as_deref(), Some(&bytes[..]));
    }
    // A later put survives another reopen.
    store.put(&torn_id, &torn).unwrap();
    drop(store);
    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.get(&torn_id).unwrap(), Some(torn));
}

#[test]
fn a_lost_index_is_rebuilt_from_the_pack() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, None).unwrap();
    let chunks: Vec<_> = (0..20).map(|i| chunk(i, 3000)).collect();
    for (id, bytes) in &chunks {
        store.put(id, bytes).unwrap();
    }
    drop(store);
    // Written but never indexed (a crash between the two), and half an index entry.
    let indexes: Vec<_> = std::fs::read_dir(store_dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "idx"))
        .collect();
    for index in &indexes {
        let entries = std::fs::read(index).unwrap();
        std::fs::write(index, &entries[..(entries.len() / 88) * 44 + 20]).unwrap();
    }
    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.len(), chunks.len());
    for (id, bytes) in &chunks {
        assert_eq!(store.get(id).unwrap().as_deref(), Some(&bytes[..]));
    }
    let indexed: usize = indexes
        .iter()
        .map(|i| std::fs::read(i).unwrap().len())
        .sum();
    assert_eq!(indexed, 44 * chunks.len());
}

#[test]
fn trimming_a_cache_drops_the_least_recently_used_chunks_first() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, None).unwrap();
    let chunks: Vec<_> = (0..8).map(|i| chunk(i, 10_000)).collect();
    for (id, bytes) in &chunks {
        store.put(id, bytes).unwrap();
    }
    // Reading chunk 0 and putting chunk 1 again make them the most recently used.
    assert!(store.get(&chunks[0].0).unwrap().is_some());
    store.put(&chunks[1].0, &chunks[1].1).unwrap();
    // Nothing goes while everything is younger than the spared age.
    assert_eq!(store.trim(0, Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(
        store.trim(80_000, Duration::ZERO).unwrap(),
        0,
        "within the limit"
    );

    assert_eq!(store.trim(35_000, Duration::ZERO).unwrap(), 50_000);
    let kept: Vec<usize> = (0..8).filter(|&i| store.has(&chunks[i].0)).collect();
    assert_eq!(kept, vec![0, 1, 7], "the three most recently used stay");
    assert_eq!(store.used(), 30_000);
    assert_eq!(
        pack_bytes(&store_dir),
        3 * (36 + 10_000),
        "their space is freed"
    );
    drop(store);
    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.len(), 3);
    assert_eq!(
        store.get(&chunks[7].0).unwrap().as_ref(),
        Some(&chunks[7].1)
    );
    // A trim spares what the caller still needs, however old.
    let needed = chunks[0].0;
    store
        .trim_unless(0, Duration::ZERO, |id| *id == needed)
        .unwrap();
    assert_eq!((store.len(), store.has(&needed)), (1, true));
}

#[test]
fn garbage_collection_returns_the_space_of_dropped_chunks_to_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, None).unwrap();
    let chunks: Vec<_> = (0..40).map(|i| chunk(i, 10_000)).collect();
    for (id, bytes) in &chunks {
        store.put(id, bytes).unwrap();
    }
    assert_eq!(pack_bytes(&store_dir), 40 * (36 + 10_000));
    let keep: HashSet<Hash> = chunks.iter().step_by(4).map(|(id, _)| *id).collect();
    assert_eq!(store.gc(&keep).unwrap(), 30 * 10_000);
    assert_eq!(store.used(), 10 * 10_000);
    assert_eq!(
        pack_bytes(&store_dir),
        10 * (36 + 10_000),
        "dead records are gone"
    );
    for (i, (id, bytes)) in chunks.iter().enumerate() {
        let got = store.get(id).unwrap();
        assert_eq!(got.is_some(), i % 4 == 0, "chunk {i}");
        if let Some(got) = got {
            assert_eq!(&got, bytes);
        }
    }
    // Puts after a collection and a reopen see the same store.
    store.put(&chunks[1].0, &chunks[1].1).unwrap();
    drop(store);
    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.len(), 11);
    assert_eq!(store.used(), 11 * 10_000);
    assert_eq!(
        store.get(&chunks[1].0).unwrap().as_ref(),
        Some(&chunks[1].1)
    );
    // Dropping everything leaves no pack bytes.
    store.gc(&HashSet::new()).unwrap();
    assert_eq!(pack_bytes(&store_dir), 0);
    assert!(store.is_empty());
}

#[test]
fn puts_from_many_threads_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = ChunkStore::open(&store_dir, None).unwrap();
    let chunks: Vec<_> = (0..400).map(|i| chunk(i % 300, 2000)).collect();
    std::thread::scope(|s| {
        for part in chunks.chunks(50) {
            let store = store.clone();
            s.spawn(move || {
                for (id, bytes) in part {
                    store.put(id, bytes).unwrap();
                }
            });
        }
    });
    assert_eq!(store.len(), 300, "each chunk stored once");
    drop(store);
    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.len(), 300);
    assert_eq!(pack_bytes(&store_dir), 300 * (36 + 2000));
    for (id, bytes) in &chunks {
        assert_eq!(store.get(id).unwrap().as_deref(), Some(&bytes[..]));
    }
}

#[test]
fn a_store_of_one_file_per_chunk_is_moved_into_packs() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let (id, bytes) = chunk(1, 4000);
    let (bad_id, _) = chunk(2, 4000);
    let hex = id.to_string();
    std::fs::create_dir_all(store_dir.join(&hex[..2])).unwrap();
    std::fs::write(store_dir.join(&hex[..2]).join(&hex), &bytes).unwrap();
    let bad_hex = bad_id.to_string();
    std::fs::create_dir_all(store_dir.join(&bad_hex[..2])).unwrap();
    std::fs::write(store_dir.join(&bad_hex[..2]).join(&bad_hex), b"damaged").unwrap();
    let store = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(store.get(&id).unwrap(), Some(bytes));
    assert!(!store.has(&bad_id), "a damaged chunk is not carried over");
    assert!(!store_dir.join(&hex[..2]).exists());
    assert!(!store_dir.join(&bad_hex[..2]).exists());
}

#[test]
fn collection_spares_chunks_of_uploads_still_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let (id, bytes) = chunk(1, 5000);
    store.put(&id, &bytes).unwrap();
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(store.gc_unless(&HashSet::new(), hour).unwrap(), 0);
    assert!(store.has(&id), "written a moment ago");
    assert_eq!(
        store
            .gc_unless(&HashSet::new(), std::time::Duration::ZERO)
            .unwrap(),
        5000
    );
    assert!(!store.has(&id));
}

#[test]
fn two_stores_open_on_one_directory_write_side_by_side() {
    // As two `gridwork data pull`s at once: each appends to packs it holds the lock on.
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let a = ChunkStore::open(&store_dir, None).unwrap();
    let early: Vec<_> = (0..10).map(|i| chunk(i, 3000)).collect();
    for (id, bytes) in &early {
        a.put(id, bytes).unwrap();
    }
    let b = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(b.len(), 10, "b sees what a wrote before b opened");
    let late: Vec<_> = (10..30).map(|i| chunk(i, 3000)).collect();
    std::thread::scope(|s| {
        let (a, b, late) = (&a, &b, &late);
        s.spawn(move || late[..10].iter().for_each(|(id, x)| a.put(id, x).unwrap()));
        s.spawn(move || late[10..].iter().for_each(|(id, x)| b.put(id, x).unwrap()));
    });
    // b's collection may forget chunks but never rewrites a pack a holds.
    let keep: HashSet<Hash> = early.iter().map(|(id, _)| *id).collect();
    b.gc(&keep).unwrap();
    for (id, bytes) in &early {
        assert_eq!(a.get(id).unwrap().as_deref(), Some(&bytes[..]));
        assert_eq!(b.get(id).unwrap().as_deref(), Some(&bytes[..]));
    }
    for (id, bytes) in &late[..10] {
        assert_eq!(a.get(id).unwrap().as_deref(), Some(&bytes[..]));
    }
    drop((a, b));
    let again = ChunkStore::open(&store_dir, None).unwrap();
    assert_eq!(
        again.len(),
        20,
        "the early chunks and a's late ones; b's collection dropped its own"
    );
    for (id, bytes) in early.iter().chain(&late[..10]) {
        assert_eq!(again.get(id).unwrap().as_deref(), Some(&bytes[..]));
    }
}

#[test]
fn an_edit_in_a_tree_of_many_files_changes_one_id_list_and_the_manifest_chunks_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..50 {
        let sub = src.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..200 {
            std::fs::write(sub.join(format!("f{f:03}.txt")), format!("{d} {f}")).unwrap();
        }
    }
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    // A fixed key: where the manifest is cut depends on its sealed ids.
    let key = DataKey([3; 32]);
    let (first, _) = pack(&src, &key, P, &store).unwrap();
    let root = store.get(&first).unwrap().unwrap();
    let (lists, manifest) = (
        root_children(&root).unwrap(),
        manifest_ids(&root, &store).unwrap(),
    );
    assert!(
        lists.len() > 2 && lists.len() * 16 < manifest.len(),
        "{} id lists for {} manifest chunks",
        lists.len(),
        manifest.len()
    );

    std::fs::write(src.join("d25/f100.txt"), "edited").unwrap();
    let (second, stats) = pack(&src, &key, P, &store).unwrap();
    assert_ne!(second, first);
    let root = store.get(&second).unwrap().unwrap();
    let changed_lists = root_children(&root)
        .unwrap()
        .iter()
        .filter(|id| !lists.contains(id))
        .count();
    assert_eq!(
        changed_lists, 1,
        "one id list names the changed manifest chunk"
    );
    // The file's chunk, the manifest chunks around the entry (a cut may move), one list, the
    // root.
    assert!(
        (4..=6).contains(&stats.new_chunks),
        "{} new chunks",
        stats.new_chunks
    );
    unpack(&second, &key, P, &store, &dir.path().join("out")).unwrap();
    same_tree(&src, &dir.path().join("out"));
}
