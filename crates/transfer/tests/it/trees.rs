//! Trees: round trips, minimal re-packs and the push index, large and partly written files, keys,
//! forgeries, bad paths, v1 manifests, id lists.

use std::collections::HashSet;

use gridwork_transfer::{
    manifest_ids, pack, pack_with_index, read_manifest, root_children, seal, sealed_prefix,
    tree_digest, unpack, ChunkSink, ChunkStore, DataKey, PackIndex, SealError, StoreError,
    TreeError,
};
use gridwork_types::Hash;

use super::support::{damage_on_disk, make_tree, put_tree_by_hand, same_tree, P};

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
