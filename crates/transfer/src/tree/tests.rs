//! Unit tests of id sets, escaping links, v1 manifests and reading scanned files.

use std::collections::HashSet;

use gridwork_types::Hash;

use super::packing::{chunk_set_digest, sorted_difference, sorted_ids};
use super::root::parse_manifest;
use super::scan::{check_path, link_stays_inside};
use super::TreeError;

#[test]
fn set_operations_on_sorted_ids_agree_with_hash_sets() {
    // Deterministic ids with repeats and overlaps: id n is BLAKE3 of n.
    let id = |n: u32| Hash::of(&n.to_le_bytes());
    let a: Vec<Hash> = (0..3000).map(|n| id(n % 2000)).collect();
    let b: Vec<Hash> = (1000..5000).step_by(3).map(id).collect();
    let (sa, sb) = (sorted_ids(a.clone()), sorted_ids(b.clone()));
    assert!(sa.is_sorted_by(|x, y| x < y) && sa.len() == 2000);
    let set_b: HashSet<Hash> = b.iter().copied().collect();
    let mut expected: Vec<Hash> = sa.iter().filter(|x| !set_b.contains(x)).copied().collect();
    expected.sort_unstable();
    assert_eq!(sorted_difference(&sa, &sb), expected);
    assert_eq!(sorted_difference(&sa, &sa), Vec::<Hash>::new());
    assert_eq!(sorted_difference(&sa, &[]), sa);
    // The digest of a set is the same whatever order or repeats it comes in.
    let mut shuffled = a.clone();
    shuffled.reverse();
    assert_eq!(chunk_set_digest(&shuffled), chunk_set_digest(&sa));
    assert_ne!(chunk_set_digest(&sa[1..]), chunk_set_digest(&sa));
}

#[test]
fn links_that_escape_are_refused() {
    assert!(link_stays_inside("a/b", "../c"));
    assert!(!link_stays_inside("a/b", "../../c"));
    assert!(!link_stays_inside("b", "/etc/passwd"));
    assert!(check_path("../x").is_err() && check_path("/x").is_err());
    assert!(check_path("a/../../b").is_err() && check_path("a//b").is_err());
    assert!(check_path("a/b").is_ok() && check_path("ä b").is_ok());
}

/// Found by the `manifest` fuzz target: a v1 (JSON) manifest listed entries out of path
/// order, which the binary form cannot express; and it could list a path twice.
#[test]
fn a_v1_manifest_is_read_in_path_order_and_a_path_listed_twice_is_refused() {
    let entry = |path: &str, kind: &str| serde_json::json!({"path": path, "kind": kind, "mode": 420, "size": 0, "chunks": []});
    let doc = |entries: Vec<serde_json::Value>| {
        serde_json::json!({"format": "gridwork-tree-v1", "entries": entries}).to_string()
    };
    let unordered = doc(vec![
        entry("a/c", "file"),
        entry("a", "dir"),
        entry("a/b", "file"),
    ]);
    let read = parse_manifest(unordered.as_bytes(), true).unwrap();
    let paths: Vec<&str> = read.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["a", "a/b", "a/c"]);
    let again = parse_manifest(&crate::manifest::encode(&read.entries), false).unwrap();
    assert_eq!(again.entries, read.entries);

    let sized_dir = doc(vec![
        serde_json::json!({"path": "d", "kind": "dir", "mode": 493,
        "size": 4096, "chunks": [Hash([1; 32])]}),
    ]);
    let read = parse_manifest(sized_dir.as_bytes(), true).unwrap();
    assert_eq!((read.entries[0].size, read.entries[0].chunks.len()), (0, 0));

    let nowhere = doc(vec![entry("a", "link")]);
    let err = parse_manifest(nowhere.as_bytes(), true).unwrap_err();
    assert!(matches!(err, TreeError::UnsafePath { .. }), "{err}");

    let twice = doc(vec![entry("a", "dir"), entry("a", "file")]);
    let err = parse_manifest(twice.as_bytes(), true).unwrap_err();
    assert!(err.to_string().contains("`a` twice"), "{err}");
}

/// A file scanned as regular and replaced since by a link or a FIFO is an error when read,
/// not followed (to a file of the reader's) and not waited on (a FIFO's read would block).
#[test]
fn a_scanned_file_replaced_by_a_link_or_a_fifo_is_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"content").unwrap();
    assert!(super::open_scanned(&plain).is_ok());
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"the reader's").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    assert!(super::open_scanned(&link).is_err());
    let fifo = dir.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(super::open_scanned(&fifo).is_err());
}
