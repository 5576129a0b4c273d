//! The chunk store: full disks, garbage collection, torn records and lost indexes, cache trims,
//! many threads and two stores on one directory.

use std::collections::HashSet;

use gridwork_transfer::{
    manifest_ids, pack, read_manifest, root_children, seal, unpack, ChunkStore, DataKey,
    StoreError, TreeError,
};
use gridwork_types::Hash;

use super::support::{chunk, make_tree, pack_bytes, P};

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
