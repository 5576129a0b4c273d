//! The data plane through the CLI: pushes that send only changes, granted keys, pulls from a node's
//! peer endpoint.

use gridwork_protocol::dev_keypair;

use super::support::{pull, Cli, NodeProcess};

#[test]
fn data_push_moves_only_changes_and_pull_needs_a_granted_key() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(&home, &dir.path().join("data"), &[]);
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let src = dir.path().join("dataset");
    std::fs::create_dir_all(src.join("a")).unwrap();
    for i in 0..4u8 {
        let mut bytes = vec![0u8; 300_000];
        for (j, b) in bytes.iter_mut().enumerate() {
            *b = (j as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(i) * 7_919)
                .rotate_left(7) as u8;
        }
        std::fs::write(src.join(format!("a/{i}.bin")), bytes).unwrap();
    }
    std::fs::write(src.join("readme.txt"), "hello").unwrap();
    let src_s = src.to_str().unwrap();
    // Older than a second, so the push index remembers them.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let first = cli.json(&["--key", "dev0", "data", "push", src_s], &[]);
    let cid = first["cid"].as_str().unwrap().to_string();
    assert!(first["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(first["unchanged_files"], 0);
    let again = cli.json(&["--key", "dev0", "data", "push", src_s], &[]);
    assert_eq!(
        (
            again["cid"].as_str().unwrap(),
            again["bytes_sent"].as_u64().unwrap(),
            again["unchanged_files"].as_u64().unwrap()
        ),
        (cid.as_str(), 0, 5),
        "nothing sent, no file read again"
    );
    assert_eq!(
        again["pinned_from"].as_str(),
        Some(cid.as_str()),
        "the pin named only the changes since the first push (none)"
    );

    let listing = cli.json(&["--key", "dev0", "data", "ls", &cid], &[]);
    assert!(listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == "a/2.bin"));

    // dev1 cannot read it until shared.
    let out = dir.path().join("copy");
    let (_, msg) = cli.fails(&pull(&cid, &out, &[]), &[]);
    assert!(msg.contains("has no key for"), "{msg}");
    cli.json(&["--key", "dev0", "data", "share", &cid, "dev1"], &[]);
    // A peer must be a URL or a provider that announced an endpoint; each says what to do.
    let stranger = dev_keypair(9).address().to_string();
    for (peer, says) in [
        (
            "nonsense",
            "not a URL (http://host:port) nor a provider address",
        ),
        (stranger.as_str(), "no such provider on the ledger"),
    ] {
        let bad = dir.path().join("bad");
        let (_, msg) = cli.fails(&pull(&cid, &bad, &["--peer", peer]), &[]);
        assert!(msg.contains(says), "{peer}: {msg}");
    }
    let pulled = cli.json(&pull(&cid, &out, &[]), &[]);
    assert_eq!(pulled["files"], 5);
    assert_eq!(
        std::fs::read(src.join("a/3.bin")).unwrap(),
        std::fs::read(out.join("a/3.bin")).unwrap()
    );
    let (_, msg) = cli.fails(&pull(&cid, &out, &[]), &[]);
    assert!(msg.contains("not empty"), "{msg}");

    // The node keeps the pushed tree for its retention period (a week by default).
    let week_ms = 7 * 24 * 3600 * 1000;
    let kept = first["pinned_until_ms"].as_u64().unwrap();
    // The node charges the pushing account for what its pinned trees store, against its
    // quota (on by default: 10 GiB).
    let charged = first["account_pinned_bytes"].as_u64().unwrap();
    assert!(
        charged >= first["bytes_sent"].as_u64().unwrap()
            && first["account_quota_bytes"].as_u64() == Some(10 << 30),
        "{first}"
    );
    let usage = cli.json(&["--key", "dev0", "data", "usage"], &[]);
    assert_eq!(
        (&usage["pinned_bytes"], &usage["pending_bytes"]),
        (&first["account_pinned_bytes"], &serde_json::json!(0)),
        "{usage}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        kept > now + week_ms - 3_600_000 && kept <= now + week_ms,
        "{first}"
    );
    // The local cache empties; a pull afterwards fetches everything again from the node.
    let gc = cli.json(&["--key", "dev1", "data", "gc"], &[]);
    assert!(gc["freed_bytes"].as_u64().unwrap() > 0, "{gc}");
    let again = dir.path().join("again");
    let pulled = cli.json(&pull(&cid, &again, &[]), &[]);
    assert!(pulled["chunks_received"].as_u64().unwrap() >= 7, "{pulled}");
    assert_eq!(
        std::fs::read(src.join("a/1.bin")).unwrap(),
        std::fs::read(again.join("a/1.bin")).unwrap()
    );

    // Asked to keep a cache, two pulls at once share it (each process appends to packs it
    // locks); a third pull afterwards finds every chunk in the cache and fetches nothing.
    cli.json(&["data", "gc"], &[]);
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::thread::scope(|s| {
        for out in [&one, &two] {
            let cli = &cli;
            let cid = cid.as_str();
            s.spawn(move || cli.json(&pull(cid, out, &["--keep-cache"]), &[]));
        }
    });
    for out in [&one, &two] {
        assert_eq!(
            std::fs::read(src.join("a/2.bin")).unwrap(),
            std::fs::read(out.join("a/2.bin")).unwrap()
        );
    }
    let third = dir.path().join("three");
    let cached = cli.json(&pull(&cid, &third, &[]), &[]);
    assert_eq!(cached["chunks_received"], 0, "{cached}");

    // With no room for a cache, a pull keeps nothing once it finished: the next one fetches
    // everything again.
    let none = [("GRIDWORK_CACHE_MAX_GIB", "0")];
    let four = dir.path().join("four");
    cli.json(&pull(&cid, &four, &["--keep-cache"]), &none);
    let gc = cli.json(&["data", "gc"], &[]);
    assert_eq!(gc["freed_bytes"], 0, "the pull left nothing to free: {gc}");
    let five = dir.path().join("five");
    let refetched = cli.json(&pull(&cid, &five, &[]), &none);
    assert!(
        refetched["chunks_received"].as_u64().unwrap() >= 7,
        "{refetched}"
    );
}

#[test]
fn a_node_serving_peer_to_peer_announces_its_endpoint_and_pulls_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = NodeProcess::start(
        &home,
        &dir.path().join("data"),
        &["--p2p-listen", "127.0.0.1:0"],
    );
    let cli = Cli {
        home,
        api: node.api.clone(),
    };
    let src = dir.path().join("dataset");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3u8 {
        std::fs::write(
            src.join(format!("{i}.txt")),
            format!("file {i}\n").repeat(50_000),
        )
        .unwrap();
    }
    let pushed = cli.json(
        &["--key", "dev0", "data", "push", src.to_str().unwrap()],
        &[],
    );
    let cid = pushed["cid"].as_str().unwrap().to_string();
    cli.json(&["--key", "dev0", "data", "share", &cid, "dev1"], &[]);
    let out = dir.path().join("copy");
    let pulled = cli.json(&pull(&cid, &out, &[]), &[]);
    let sources = pulled["sources"].as_array().unwrap();
    let by_peer = sources
        .iter()
        .find(|s| s["source"] == "node peer to peer")
        .unwrap_or_else(|| panic!("the node's endpoint was a source: {pulled}"));
    assert!(by_peer["chunks"].as_u64().unwrap() >= 1, "{pulled}");
    assert_eq!(
        std::fs::read(src.join("2.txt")).unwrap(),
        std::fs::read(out.join("2.txt")).unwrap()
    );
}
