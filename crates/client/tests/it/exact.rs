//! Pushes say up front what a pull cannot give back; a resumed pull writes only inside its
//! destination, whatever was planted there after it was cut off.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gridwork_client::{pull_tree_from, ChunkSource, DataError, TransferOptions};
use gridwork_transfer::{ChunkParams, ChunkStore, DataKey, Loss, NameRule, TreeError};

use super::{CutSource, TestNode};

fn opts() -> TransferOptions {
    TransferOptions {
        params: ChunkParams {
            min: 8 * 1024,
            avg: 32 * 1024,
            max: 64 * 1024,
        },
        streams: 1,
        ..TransferOptions::default()
    }
}

fn random(seed: u32, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_refuses_a_name_pull_would_refuse_and_lists_what_it_cannot_keep() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o6755)).unwrap();
    let key = DataKey::generate();
    let pushed = t.client.push_tree(&src, &key, &opts()).await.unwrap();
    assert_eq!(pushed.not_kept.len(), 1, "{:?}", pushed.not_kept);
    assert_eq!(pushed.not_kept[0].loss, Loss::SetIdBits { mode: 0o6755 });
    assert!(pushed.not_kept[0].to_string().contains("`run.sh`"));

    std::fs::write(src.join("C:\\evil"), b"x").unwrap();
    let err = t.client.push_tree(&src, &key, &opts()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::Tree(TreeError::BadName { path, rule: NameRule::NoBackslash })
                if path == "C:\\evil"
        ),
        "{err}"
    );
}

/// The names under `dir` with their bytes (links as their targets), recursively.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(path);
                out.push((name, b"dir".to_vec()));
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((name, target.display().to_string().into_bytes()));
            } else {
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_pull_replaces_links_planted_in_its_destination_and_writes_nothing_outside() {
    let t = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("0.bin"), random(0, 100_000)).unwrap();
    for i in 1..30 {
        std::fs::write(src.join(format!("sub/{i:02}.bin")), random(i, 100_000)).unwrap();
    }
    std::fs::write(src.join("top.bin"), random(99, 100_000)).unwrap();
    let key = DataKey::generate();
    let mut opts = opts();
    let pushed = t.client.push_tree(&src, &key, &opts).await.unwrap();

    // Cut off two thirds of the way, with a journal and chunks kept only in the files.
    opts.journal = Some(dir.path().join("journal"));
    opts.checkpoint_bytes = 1;
    opts.resume_from_files = true;
    let store = ChunkStore::open(dir.path().join("cache"), None).unwrap();
    let out = dir.path().join("out");
    let cut = CutSource {
        inner: &t.client,
        left: (pushed.chunks as i64 * 2 / 3).into(),
    };
    let sources: [&dyn ChunkSource; 1] = [&cut];
    pull_tree_from(&sources, &pushed.cid, &key, &store, &out, &opts)
        .await
        .unwrap_err();
    assert!(out.join("0.bin").is_file() && out.join("sub/01.bin").is_file());

    // Meanwhile someone moves the written subdirectory out and links it back, and puts a
    // link to a file outside in place of a written file and of one not written yet.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"do not overwrite").unwrap();
    std::fs::rename(out.join("sub"), outside.join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), out.join("sub")).unwrap();
    std::fs::remove_file(out.join("0.bin")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), out.join("0.bin")).unwrap();
    let _ = std::fs::remove_file(out.join("top.bin"));
    std::os::unix::fs::symlink(outside.join("victim"), out.join("top.bin")).unwrap();
    let before = contents(&outside);

    t.client
        .pull_tree(&pushed.cid, &key, &store, &out, &opts)
        .await
        .unwrap();
    assert_eq!(contents(&outside), before, "nothing outside was written");
    assert!(!std::fs::symlink_metadata(out.join("sub"))
        .unwrap()
        .file_type()
        .is_symlink());
    let wanted: Vec<_> = contents(&src);
    assert_eq!(
        contents(&out),
        wanted,
        "the tree came back whole, links replaced"
    );
}
