//! A tree comes back as it was pushed (modes, holes, hard links, FIFOs), or the push says
//! what will not; and a pull writes only inside its destination, whatever was planted there.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use gridwork_transfer::{pack, unpack, ChunkStore, DataKey, Loss, NameRule, TreeError};

use super::{put_tree_by_hand, P};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Packs `src` into a fresh store under `dir` and unpacks it into `dir/out`.
fn round_trip(dir: &Path, src: &Path) -> (gridwork_transfer::PackStats, std::path::PathBuf) {
    let store = ChunkStore::open(dir.join("store"), None).unwrap();
    let key = DataKey::generate();
    let (cid, stats) = pack(src, &key, P, &store).unwrap();
    let out = dir.join("out");
    unpack(&cid, &key, P, &store, &out).unwrap();
    (stats, out)
}

#[test]
fn a_name_with_a_backslash_is_refused_at_push_by_the_rule_a_pull_applies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a\\b.txt"), b"x").unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    let err = pack(&src, &key, P, &store).unwrap_err();
    assert!(
        matches!(&err, TreeError::BadName { path, rule: NameRule::NoBackslash } if path == "d/a\\b.txt"),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`d/a\\b.txt`") && text.contains("rename it"),
        "{text}"
    );
    assert_eq!(store.used(), 0, "nothing was stored before the refusal");

    // A tree that holds such a name anyway (pushed by hand) is refused by pull by the same
    // rule, with the same error.
    let mut manifest = b"gridwork-tree-v2\n".to_vec();
    let path = b"a\\b.txt";
    manifest.extend_from_slice(&[0, 0, path.len() as u8]);
    manifest.extend_from_slice(path);
    manifest.extend_from_slice(&[0xa4, 0x03, 0, 0]);
    let cid = put_tree_by_hand(&store, &key, &manifest, false);
    let pulled = unpack(&cid, &key, P, &store, &dir.path().join("out")).unwrap_err();
    assert!(
        matches!(
            pulled,
            TreeError::BadName {
                rule: NameRule::NoBackslash,
                ..
            }
        ),
        "{pulled}"
    );
}

#[test]
fn a_name_that_is_not_utf8_is_refused_at_push_with_its_path_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad\xffname");
    std::fs::write(src.join("d").join(name), b"x").unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let err = pack(&src, &DataKey::generate(), P, &store).unwrap_err();
    assert!(
        matches!(
            err,
            TreeError::BadName {
                rule: NameRule::Utf8,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`d/bad\u{fffd}name`") && text.contains("not UTF-8"),
        "{text}"
    );
    assert!(!text.contains("No such file"), "{text}");
}

#[test]
fn directory_modes_come_back_and_a_read_only_directory_is_still_filled() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("private")).unwrap();
    std::fs::create_dir_all(src.join("sealed/inner")).unwrap();
    std::fs::write(src.join("sealed/inner/f"), b"kept").unwrap();
    std::fs::write(src.join("private/f"), b"mine").unwrap();
    chmod(&src.join("private"), 0o700);
    chmod(&src.join("sealed/inner"), 0o500);
    chmod(&src.join("sealed"), 0o550);
    let (_, out) = round_trip(dir.path(), &src);
    assert_eq!(mode(&out.join("private")), 0o700);
    assert_eq!(mode(&out.join("sealed")), 0o550);
    assert_eq!(mode(&out.join("sealed/inner")), 0o500);
    assert_eq!(std::fs::read(out.join("sealed/inner/f")).unwrap(), b"kept");

    // Pulled again into the same place: the read-only directories are opened for the write
    // and closed again.
    std::fs::write(src.join("private/g"), b"new").unwrap();
    let (_, out) = round_trip(dir.path(), &src);
    assert_eq!(std::fs::read(out.join("private/g")).unwrap(), b"new");
    assert_eq!(mode(&out.join("sealed/inner")), 0o500);
    for d in ["sealed/inner", "sealed"] {
        chmod(&src.join(d), 0o755);
        chmod(&out.join(d), 0o755);
    }
}

#[test]
fn a_sparse_file_comes_back_with_its_holes() {
    use std::io::{Seek, Write};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let len = 64 << 20;
    let mut data = vec![0u8; 1 << 20];
    blake3::Hasher::new()
        .update(b"sparse")
        .finalize_xof()
        .fill(&mut data);
    let mut file = std::fs::File::create(src.join("disk.img")).unwrap();
    file.seek(std::io::SeekFrom::Start(8 << 20)).unwrap();
    file.write_all(&data).unwrap();
    file.set_len(len).unwrap();
    drop(file);
    let (_, out) = round_trip(dir.path(), &src);
    let meta = std::fs::metadata(out.join("disk.img")).unwrap();
    assert_eq!(meta.len(), len);
    assert!(
        meta.blocks() * 512 < 4 << 20,
        "{} bytes allocated for 1 MiB of data in {len}",
        meta.blocks() * 512
    );
    let back = std::fs::read(out.join("disk.img")).unwrap();
    assert_eq!(&back[8 << 20..9 << 20], &data[..]);
    assert!(back[..8 << 20]
        .iter()
        .chain(&back[9 << 20..])
        .all(|&b| b == 0));
}

#[test]
fn hard_links_come_back_as_one_file_with_several_names() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("a.bin"), vec![5u8; 50_000]).unwrap();
    std::fs::hard_link(src.join("a.bin"), src.join("b/c.bin")).unwrap();
    std::fs::hard_link(src.join("a.bin"), src.join("z.bin")).unwrap();
    let (stats, out) = round_trip(dir.path(), &src);
    assert_eq!(stats.files, 1, "its data was packed once");
    let ino = |p: &str| std::fs::metadata(out.join(p)).unwrap().ino();
    assert_eq!(ino("a.bin"), ino("b/c.bin"));
    assert_eq!(ino("a.bin"), ino("z.bin"));
    assert_eq!(std::fs::metadata(out.join("z.bin")).unwrap().nlink(), 3);
    assert_eq!(
        std::fs::read(out.join("b/c.bin")).unwrap(),
        vec![5u8; 50_000]
    );

    // Pulled again into the same place, the names are linked again, not copied.
    let (_, out) = round_trip(dir.path(), &src);
    assert_eq!(std::fs::metadata(out.join("a.bin")).unwrap().nlink(), 3);
}

#[test]
fn a_fifo_comes_back_as_a_fifo_with_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let fifo = src.join("pipe");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    chmod(&fifo, 0o640);
    std::fs::write(src.join("f"), b"x").unwrap();
    let (stats, out) = round_trip(dir.path(), &src);
    assert!(stats.not_kept.is_empty(), "{:?}", stats.not_kept);
    let meta = std::fs::symlink_metadata(out.join("pipe")).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(mode(&out.join("pipe")), 0o640);
}

#[test]
fn setuid_bits_and_sockets_are_named_at_push_and_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("shared")).unwrap();
    std::fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
    chmod(&src.join("tool"), 0o4755);
    chmod(&src.join("shared"), 0o3775);
    let _socket = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let (stats, out) = round_trip(dir.path(), &src);
    let seen: Vec<(String, Loss)> = stats
        .not_kept
        .iter()
        .map(|n| (n.path.clone(), n.loss))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("shared".to_string(), Loss::SetIdBits { mode: 0o3775 }),
            ("sock".to_string(), Loss::Socket),
            ("tool".to_string(), Loss::SetIdBits { mode: 0o4755 }),
        ]
    );
    let told = stats.not_kept[2].to_string();
    assert!(
        told.contains("`tool`") && told.contains("4755") && told.contains("0755"),
        "{told}"
    );
    assert_eq!(mode(&out.join("tool")), 0o755);
    assert_eq!(mode(&out.join("shared")), 0o1775, "the sticky bit is kept");
    assert!(!out.join("sock").exists());
}

/// A tree of `sub/` with files and a top-level file, unpacked into `dir/out` once; then
/// someone replaces `out/sub` and `out/top.bin` with links to `dir/outside`.
fn planted(
    dir: &Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    impl Fn() -> Vec<(String, Vec<u8>)>,
) {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("sub/a.bin"), vec![1u8; 30_000]).unwrap();
    std::fs::write(src.join("sub/deeper/b.bin"), vec![2u8; 30_000]).unwrap();
    std::fs::write(src.join("top.bin"), vec![3u8; 30_000]).unwrap();
    let outside = dir.join("outside");
    std::fs::create_dir_all(outside.join("deeper")).unwrap();
    std::fs::write(outside.join("a.bin"), b"precious").unwrap();
    std::fs::write(outside.join("deeper/b.bin"), b"precious too").unwrap();
    std::fs::write(outside.join("victim"), b"do not overwrite").unwrap();
    let listing = {
        let outside = outside.clone();
        move || {
            let mut all = Vec::new();
            for p in ["a.bin", "deeper/b.bin", "victim"] {
                all.push((p.to_string(), std::fs::read(outside.join(p)).unwrap()));
            }
            let mut names: Vec<_> = std::fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            all.push(("names".into(), names.join(",").into_bytes()));
            all
        }
    };
    (src, outside, listing)
}

#[test]
fn a_pull_into_a_destination_with_planted_links_writes_nothing_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, outside, listing) = planted(dir.path());
    let before = listing();
    let (_, out) = round_trip(dir.path(), &src);
    std::fs::remove_dir_all(out.join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("sub")).unwrap();
    std::fs::remove_file(out.join("top.bin")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), out.join("top.bin")).unwrap();

    let (_, out) = round_trip(dir.path(), &src);
    assert_eq!(listing(), before, "nothing outside the destination changed");
    // The links were replaced by what the tree has there.
    let sub = std::fs::symlink_metadata(out.join("sub")).unwrap();
    assert!(sub.is_dir(), "{sub:?}");
    assert_eq!(
        std::fs::read(out.join("sub/deeper/b.bin")).unwrap(),
        vec![2u8; 30_000]
    );
    let top = std::fs::symlink_metadata(out.join("top.bin")).unwrap();
    assert!(top.is_file(), "{top:?}");
    assert_eq!(
        std::fs::read(out.join("top.bin")).unwrap(),
        vec![3u8; 30_000]
    );
    assert_eq!(
        std::fs::read(outside.join("victim")).unwrap(),
        b"do not overwrite"
    );
}

#[test]
fn a_directory_with_entries_where_the_tree_has_a_file_is_refused_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"file").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("f")).unwrap();
    std::fs::write(out.join("f/keep"), b"someone's").unwrap();
    let store = ChunkStore::open(dir.path().join("store"), None).unwrap();
    let key = DataKey::generate();
    let (cid, _) = pack(&src, &key, P, &store).unwrap();
    let err = unpack(&cid, &key, P, &store, &out).unwrap_err();
    assert!(
        matches!(&err, TreeError::InTheWay { path } if path == "f"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("f/keep")).unwrap(), b"someone's");
}
