//! The ledger service: durable blocks, restart, halting on a failed commit, announcements
//! and resuming subscribers, data-directory locking, genesis checks.

use super::*;

#[test]
fn restart_resumes_exactly_where_the_node_was() {
    let dir = tempfile::tempdir().unwrap();
    let (root, height) = {
        let node = Node::open(&config(dir.path()), GenesisSource::dev(3)).unwrap();
        for n in 0..3 {
            let results = node.submit(vec![
                transfer(node.ledger().chain_id(), 0, n, 1),
                transfer(node.ledger().chain_id(), 1, n, 2),
            ]);
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            node.ledger().produce_block(true).unwrap().unwrap();
        }
        (node.ledger().state_root(), node.ledger().height())
    };
    let node = Node::open(&config(dir.path()), GenesisSource::Stored).unwrap();
    assert_eq!(
        (node.ledger().state_root(), node.ledger().height()),
        (root, height)
    );
    assert_eq!(
        node.ledger().account(&Address([9; 20])).account.balance,
        Amount::grid(9)
    );
    // The next nonces continue from the committed ones.
    assert!(node.submit(vec![transfer(node.ledger().chain_id(), 0, 3, 1)])[0].is_ok());
}

#[test]
fn no_empty_blocks_are_produced() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    assert!(node.ledger().produce_block(true).unwrap().is_none());
    assert_eq!(node.ledger().height(), 0);
}

#[test]
fn a_failed_commit_halts_the_node_and_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let genesis = Genesis::dev("halt-test", 1_700_000_000_000, 2, Params::default());
    let committed_root = {
        let store = FailingStore::new(RedbStore::open(&path).unwrap(), 2);
        let node = Node::with_store(
            Box::new(store),
            Some(&genesis),
            Box::new(Solo::new(0, 100, Address([0; 20]))),
            100,
        )
        .unwrap();
        let mut root = None;
        for n in 0..3 {
            assert!(node.submit(vec![transfer("halt-test", 0, n, 1)])[0].is_ok());
            match node.ledger().produce_block(true) {
                Ok(Some(_)) => root = Some(node.ledger().state_root()),
                Ok(None) => panic!("nothing produced"),
                Err(NodeError::Halted { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let health = gridwork_node::api::views::health(&node);
        assert_eq!(health.status, gridwork_api::HealthStatus::Halted);
        assert!(health.reason.unwrap().contains("injected"));
        let refused = node
            .submit(vec![transfer("halt-test", 0, 3, 1)])
            .pop()
            .unwrap();
        assert!(
            matches!(refused, Err(AdmitError::Halted { .. })),
            "{refused:?}"
        );
        root.unwrap()
    };
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.head_height().unwrap(), Some(2));
    let node = Node::with_store(
        Box::new(store),
        None,
        Box::new(Solo::new(0, 100, Address([0; 20]))),
        100,
    )
    .unwrap();
    assert_eq!(node.ledger().state_root(), committed_root);
    // The transaction of the lost block was never acknowledged; it can be sent again.
    assert!(node.submit(vec![transfer("halt-test", 0, 2, 1)])[0].is_ok());
}

/// The ledger announces a block to its subscribers only once it is durable; a subscriber
/// that resumes gets the blocks it missed from the ring, or, past the ring, the height to
/// catch up from.
#[test]
fn blocks_are_announced_once_durable_and_a_resuming_subscriber_gets_what_it_missed() {
    let genesis = Genesis::dev("ring-test", 1_700_000_000_000, 2, Params::default());
    // The fourth commit fails: three blocks after genesis are durable, the fourth never is.
    let store = FailingStore::new(gridwork_storage::MemoryStore::default(), 3);
    let node = Node::with_store(
        Box::new(store),
        Some(&genesis),
        Box::new(Solo::new(0, 100, Address([0; 20]))),
        100,
    )
    .unwrap();
    let ledger = node.ledger();
    let mut blocks = ledger.subscribe();
    for n in 0..4 {
        assert!(node.submit(vec![transfer("ring-test", 0, n, 1)])[0].is_ok());
        let produced = ledger.produce_block(true);
        if n < 3 {
            let committed = produced.unwrap().unwrap();
            let announced = blocks.try_recv().unwrap();
            assert_eq!(announced.header, committed.header);
            assert_eq!(announced.height(), n + 1);
            assert_eq!(announced.tx_hashes, vec![announced.receipts[0].tx_hash]);
        } else {
            assert!(matches!(produced, Err(NodeError::Halted { .. })));
        }
    }
    // The block whose commit failed was never announced, nor counted as the head.
    assert!(blocks.try_recv().is_err());
    assert_eq!(ledger.height(), 3);
    let heights = |after| -> Vec<u64> {
        let found = ledger.committed_after(after).unwrap();
        found.iter().map(|c| c.height()).collect()
    };
    assert_eq!(heights(0), vec![1, 2, 3]);
    assert_eq!(heights(2), vec![3]);
    assert!(heights(3).is_empty());
}

/// Past the ring of recent blocks, a resuming subscriber is told the lowest height still
/// held (it catches up from `GET /v1/blocks`), never handed a partial list.
#[test]
fn a_subscriber_resuming_past_the_ring_is_told_where_to_catch_up() {
    let genesis = Genesis::dev("ring-test", 1_700_000_000_000, 2, Params::default());
    let node = Node::with_store(
        Box::new(gridwork_storage::MemoryStore::default()),
        Some(&genesis),
        Box::new(Solo::new(0, 100, Address([0; 20]))),
        100,
    )
    .unwrap();
    let blocks = gridwork_node::RECENT_EVENTS as u64 + 10;
    for n in 0..blocks {
        assert!(node.submit(vec![transfer("ring-test", 0, n, 1)])[0].is_ok());
        node.ledger().produce_block(true).unwrap().unwrap();
    }
    let oldest = blocks - gridwork_node::RECENT_EVENTS as u64 + 1;
    assert_eq!(node.ledger().committed_after(5).err(), Some(oldest));
    let resumed = node.ledger().committed_after(oldest - 1).unwrap();
    assert_eq!(resumed.len(), gridwork_node::RECENT_EVENTS);
    assert_eq!(resumed.last().unwrap().height(), blocks);
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let err = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap_err();
    assert!(
        matches!(err, NodeError::Storage(StorageError::Locked { .. })),
        "{err}"
    );
}

/// The node key unwraps the input keys granted to the node: a key file others can read is
/// refused with what to do, not used.
#[test]
fn a_node_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    drop(Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap());
    let key = config(dir.path()).data_dir.join("node.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn a_genesis_file_for_another_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap());
    let file = dir.path().join("other.json");
    let other = Genesis::dev("other", 5, 2, Params::default());
    std::fs::write(&file, serde_json::to_string(&other).unwrap()).unwrap();
    let err = Node::open(&config(dir.path()), GenesisSource::File(file)).unwrap_err();
    assert!(matches!(err, NodeError::GenesisMismatch { .. }), "{err}");
}

#[test]
fn a_genesis_that_does_not_sum_to_supply_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let mut g = Genesis::dev("bad", 5, 2, Params::default());
    g.rewards_pool = Amount(g.rewards_pool.0 + 1);
    g.params.emission_total = g.rewards_pool;
    std::fs::write(&file, toml::to_string(&g).unwrap()).unwrap();
    let err = Node::open(&config(dir.path()), GenesisSource::File(file)).unwrap_err();
    assert!(
        err.to_string().contains("must equal the total supply"),
        "{err}"
    );
}

#[test]
fn a_new_data_directory_needs_a_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let err = Node::open(&config(dir.path()), GenesisSource::Stored).unwrap_err();
    assert!(err.to_string().contains("--dev"), "{err}");
}

#[test]
fn the_documented_example_files_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let genesis = gridwork_node::read_genesis(&root.join("docs/genesis.example.toml")).unwrap();
    assert_eq!(genesis.allocations.len(), 2);
    assert!(genesis.allocations[1].vesting.is_some());
    let example = NodeConfig::load(Some(&root.join("docs/node.example.toml")), |_| None).unwrap();
    assert_eq!(example.block_interval_ms, 200);
    // A node starts from the example genesis.
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(
        &config(dir.path()),
        GenesisSource::File(root.join("docs/genesis.example.toml")),
    )
    .unwrap();
    assert_eq!(node.ledger().chain_id(), "gridwork-example");
}

/// Event-stream subscribers are capped (each holds a place in the node's ring); a dropped
/// subscription frees its place.
#[test]
fn event_subscriptions_are_capped_and_freed_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let a = node.ledger().subscribe_limited(2).unwrap();
    let _b = node.ledger().subscribe_limited(2).unwrap();
    assert!(node.ledger().subscribe_limited(2).is_none());
    drop(a);
    assert!(node.ledger().subscribe_limited(2).is_some());
}
