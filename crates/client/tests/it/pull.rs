//! Pulls from several sources: forged chunks, probes, silent sources, and pulls that resume after a
//! cut.

use std::time::Duration;

use gridwork_client::{pull_tree_from, ChunkSource, TransferOptions};

use super::support::{
    pushed_tree, same_files, BlackHoleSource, CutSource, ForgingSource, PoisonedSource, SlowSource,
    TestNode,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_chunk_is_fetched_from_another_source_and_the_forger_is_not_asked_again() {
    let t = TestNode::start().await;
    let empty = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 6).await;
    let forger = ForgingSource(&t.client);
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let sources: [&dyn ChunkSource; 3] = [&forger, &empty.client, &t.client];
    let report = pull_tree_from(&sources, &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    let (forged, lacking, honest) = (&report.sources[0], &report.sources[1], &report.sources[2]);
    assert!(forged.rejected >= 1, "{report:?}");
    assert_eq!(forged.chunks, 0, "nothing forged was accepted");
    assert!(
        forged.requests <= opts.streams as u64,
        "after its first forgery was caught, the forger was not asked again: {report:?}"
    );
    assert_eq!(lacking.chunks, 0);
    assert_eq!(
        honest.chunks, report.chunks_received,
        "every chunk came from the honest node"
    );

    // With only liars and sources that lack the chunk, the pull fails and names them.
    let err = pull_tree_from(
        &[&forger, &empty.client],
        &cid,
        &key,
        &gridwork_transfer::ChunkStore::open(dir.path().join("cache2"), None).unwrap(),
        &dir.path().join("out2"),
        &opts,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("forger: sent bytes that do not match the id")
            && err.contains("does not have 1 chunks"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_probe_a_pull_takes_most_chunks_from_the_faster_source() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 12).await;
    let slow = SlowSource {
        inner: &t.client,
        delay: Duration::from_millis(400),
    };
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let sources: [&dyn ChunkSource; 2] = [&slow, &t.client];
    let report = pull_tree_from(&sources, &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    let (slow, fast) = (&report.sources[0], &report.sources[1]);
    assert!(slow.chunks >= 1, "the slow source was probed: {report:?}");
    assert!(
        slow.chunks <= 3 && fast.chunks + slow.chunks == report.chunks_received,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_answers_its_probe_is_asked_once_and_the_pull_goes_on() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 6).await;
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    // First in the list, so it is probed with the very first chunk (the root).
    let sources: [&dyn ChunkSource; 2] = [&BlackHoleSource, &t.client];
    // Without a deadline on probes this pull never ends; the guard only turns a hang into
    // a failure.
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        pull_tree_from(&sources, &cid, &key, &store, &out, &opts),
    )
    .await
    .expect("the pull waited on the silent source")
    .unwrap();
    same_files(&src, &out);
    let hole = &report.sources[0];
    assert_eq!(
        (hole.requests, hole.failed, hole.chunks),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(report.sources[1].chunks, report.chunks_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_pull_resumes_without_fetching_finished_chunks_again() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 8).await;
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: std::sync::atomic::AtomicI64::new(12),
    };
    let err = pull_tree_from(&[&cut], &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let before = store.used();
    assert!(before > 0);
    let resumed = t
        .client
        .pull_tree(&cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    assert_eq!(
        before + resumed.bytes_received,
        store.used(),
        "the resumed pull fetched exactly what the cut one had not"
    );
    assert!(resumed.chunks_received > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_that_writes_chunks_only_to_files_resumes_from_what_they_hold() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 3 MB: requests of about 1 MB, the first of which gets through before the cut.
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 30).await;
    let opts = TransferOptions {
        resume_from_files: true,
        streams: 1,
        ..opts
    };
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: std::sync::atomic::AtomicI64::new(50),
    };
    let err = pull_tree_from(&[&cut], &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let manifest = t
        .client
        .tree_manifest(&cid, &key, opts.params, &store)
        .await
        .unwrap();
    let data = manifest.chunk_ids();
    assert_eq!(
        store.missing(data.iter()).len(),
        data.len(),
        "fetched chunks went to the files only"
    );
    // A finished file altered since: its chunks from the altered one on are fetched again.
    let altered = out.join("0.bin");
    let mut bytes = std::fs::read(&altered).unwrap();
    assert_eq!(
        bytes.len(),
        100_000,
        "the first file was finished before the cut"
    );
    bytes[60_000] ^= 1;
    std::fs::write(&altered, bytes).unwrap();

    let resumed = pull_tree_from(&[&t.client], &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    assert!(resumed.bytes_in_place > 100_000, "{resumed:?}");
    assert!(
        resumed.chunks_received + 10 <= data.len() as u64,
        "{} of {} chunks fetched again",
        resumed.chunks_received,
        data.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_fetched_ahead_of_a_failed_request_are_kept_for_the_next_pull() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, opts) = pushed_tree(&t, dir.path(), 40).await;
    let opts = TransferOptions {
        resume_from_files: true,
        streams: 4,
        ..opts
    };
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let manifest = t
        .client
        .tree_manifest(&cid, &key, opts.params, &store)
        .await
        .unwrap();
    let data = manifest.chunk_ids();
    // Four requests of about 1 MB go out at once. The one for a chunk 30% into the tree
    // fails, a second late: the first request's chunks are written by then, and the answers
    // to the two after it are in hand.
    let first = PoisonedSource {
        inner: &t.client,
        poison: Some(data[data.len() * 3 / 10]),
        asked: Default::default(),
    };
    let out = dir.path().join("out");
    pull_tree_from(&[&first], &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    let kept: Vec<_> = data.iter().filter(|id| store.has(id)).copied().collect();
    assert!(
        !kept.is_empty(),
        "chunks fetched past the failed request are in the cache"
    );

    let again = PoisonedSource {
        inner: &t.client,
        poison: None,
        asked: Default::default(),
    };
    pull_tree_from(&[&again], &cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    let asked = again.asked.lock().unwrap();
    assert!(
        kept.iter().all(|id| !asked.contains(id)),
        "a kept chunk was fetched again"
    );
    assert!(
        asked.len() < data.len() - kept.len(),
        "files held chunks too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cut_off_resumes_from_its_journal_without_writing_or_fetching_synced_files_again() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src, cid, key, mut opts) = pushed_tree(&t, dir.path(), 40).await;
    opts.streams = 1;

    // A whole pull, for comparison.
    let full_store = gridwork_transfer::ChunkStore::open(dir.path().join("full"), None).unwrap();
    let full = t
        .client
        .pull_tree(&cid, &key, &full_store, &dir.path().join("whole"), &opts)
        .await
        .unwrap();

    // Checkpoint after every file, and keep no cache behind the checkpoints.
    let journal = dir.path().join("journal");
    opts.journal = Some(journal.clone());
    opts.checkpoint_bytes = 1;
    opts.cache_max_bytes = Some(0);
    let store = gridwork_transfer::ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: (full.chunks_received as i64 * 2 / 3).into(),
    };
    let sources: [&dyn ChunkSource; 1] = [&cut];
    pull_tree_from(&sources, &cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(
        text.starts_with(&format!("gridwork pull journal v2 {cid}\n")),
        "{text}"
    );
    // Manifest entries are sorted by path; the journal names them by index.
    let mut names: Vec<String> = (0..40).map(|i| format!("{i}.bin")).collect();
    names.sort();
    let mut synced: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| names[line.split(' ').next().unwrap().parse::<usize>().unwrap()].clone())
        .collect();
    assert!(
        synced.len() >= 3,
        "files were checkpointed before the cut: {text}"
    );
    assert!(
        store.used() < full_store.used() / 2,
        "the cache was trimmed behind the checkpoints: {} of {}",
        store.used(),
        full_store.used()
    );
    let mtimes: Vec<_> = synced
        .iter()
        .map(|name| {
            std::fs::metadata(out.join(name))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();

    // Someone edits a synced file after the cut without changing its size: the resumed pull
    // must not trust it.
    let edited = synced.pop().unwrap();
    let mut bytes = std::fs::read(out.join(&edited)).unwrap();
    bytes[7] ^= 0xff;
    std::fs::write(out.join(&edited), bytes).unwrap();
    let mtimes = mtimes[..synced.len()].to_vec();

    // Resumed: the other synced files are neither fetched nor written again.
    let resumed = t
        .client
        .pull_tree(&cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    same_files(&src, &out);
    for (name, before) in synced.iter().zip(mtimes) {
        let after = std::fs::metadata(out.join(name))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "{name} was written again");
    }
    // Each 100 kB file spans at least two chunks (at most 64 KiB each).
    assert!(
        resumed.chunks_received + 2 * synced.len() as u64 <= full.chunks_received + 2,
        "resumed fetched {} chunks of {} with {} files synced",
        resumed.chunks_received,
        full.chunks_received,
        synced.len()
    );
}
