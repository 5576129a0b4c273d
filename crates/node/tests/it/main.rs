//! The node core: durable blocks, restart, halting on a failed commit, data-dir locking.

mod edges;

use gridwork_consensus::Solo;
use gridwork_node::{AdmitError, GenesisSource, Node, NodeConfig, NodeError};
use gridwork_protocol::{dev_keypair, Genesis, Params};
use gridwork_storage::{FailingStore, RedbStore, StorageError, Store};
use gridwork_types::{Address, Amount, SignedTx, Transaction, TxKind};

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.join("data"),
        ..NodeConfig::default()
    }
}

fn transfer(chain: &str, from: u32, nonce: u64, grid: u64) -> SignedTx {
    let key = dev_keypair(from);
    Transaction {
        from: key.public(),
        nonce,
        fee: Amount::ZERO,
        kind: TxKind::Transfer {
            to: Address([9; 20]),
            amount: Amount::grid(grid),
        },
    }
    .sign(chain, &key)
}

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

/// Who pins in tests that do not count pinned bytes.
const PINNER: Address = Address([1; 20]);

/// A tree in the node's chunk store: a root and one data chunk, as a push leaves it.
fn stored_tree(node: &Node, name: &str) -> (gridwork_types::Hash, Vec<gridwork_types::Hash>) {
    use gridwork_types::Hash;
    let data = format!("sealed bytes of {name}").into_bytes();
    let data_id = Hash::of(&data);
    node.data().put_chunk(&data_id, &data).unwrap();
    let mut root = b"gridwork/tree/v1\n".to_vec();
    root.extend_from_slice(data_id.as_bytes());
    let cid = Hash::of(&root);
    node.data().put_chunk(&cid, &root).unwrap();
    (cid, vec![data_id])
}

#[test]
fn garbage_collection_keeps_pinned_trees_and_open_jobs_inputs_and_drops_the_rest() {
    use gridwork_types::{
        Equivalence, Halting, Instructions, Payment, Prescription, Program, Requirements,
    };
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let (pinned, pinned_chunks) = stored_tree(&node, "pinned");
    let (input, input_chunks) = stored_tree(&node, "a job's input");
    let (loose, loose_chunks) = stored_tree(&node, "never pinned");
    // What a Byzantine requester names as an input: uploaded, never pinned.
    let (squatted, squatted_chunks) = stored_tree(&node, "named by a job, never pinned");
    let proof = gridwork_types::Hash([0xaa; 32]);
    let until = node
        .data()
        .pin_tree(&pinned, &pinned_chunks, &proof, &PINNER)
        .unwrap();
    node.data()
        .pin_tree(&input, &input_chunks, &proof, &PINNER)
        .unwrap();
    // A pin naming a chunk the node lacks is refused with what to do.
    let err = node
        .data()
        .pin_tree(&loose, &[gridwork_types::Hash([7; 32])], &proof, &PINNER)
        .unwrap_err();
    assert!(
        matches!(err, NodeError::TreeIncomplete { missing: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("push the tree again"));

    // A job that reads `input` is open; the requester holds its key and shared it with the
    // node. A job that names `squatted` (whose key nobody shared) is refused.
    let requester = dev_keypair(0);
    let key = gridwork_transfer::DataKey::generate();
    node.data()
        .add_grants_as_holder(
            &input,
            vec![gridwork_transfer::wrap_key(&key, &node.keys().public_key())],
            &proof,
        )
        .unwrap();
    let job = |data: gridwork_types::Hash| {
        Transaction {
            from: requester.public(),
            nonce: 0,
            fee: Amount::ZERO,
            kind: TxKind::SubmitJob {
                prescription: Prescription {
                    data: vec![gridwork_types::DataInput {
                        cid: data,
                        claim: key.input_claim(&data, &requester.address()),
                    }],
                    program: Program {
                        command: "render".into(),
                        args: vec![],
                    },
                    instructions: Instructions {
                        items: 1,
                        chunk: 1,
                        requirements: Requirements::default(),
                        task_deadline_ms: 60_000,
                        council_size: 1,
                    },
                    payment: Payment::FixedPerTask {
                        max_price: Amount::grid(2),
                    },
                    equivalence: Equivalence::ExactHash {},
                    halting: Halting {
                        first_bids: 1,
                        deadline_ms: 10_000,
                        reserve_price: None,
                        give_up_ms: 0,
                    },
                },
                deposit: Amount::grid(3),
            },
        }
        .sign(node.ledger().chain_id(), &requester)
    };
    assert!(matches!(
        node.submit(vec![job(squatted)])[0],
        Err(AdmitError::InputNotHeld { .. })
    ));
    assert!(node.submit(vec![job(input)])[0].is_ok());
    node.ledger().produce_block(true).unwrap().unwrap();

    let has = |id: &gridwork_types::Hash| node.data().chunk(id).unwrap().is_some();
    // Within the grace period nothing goes, pinned or not.
    let now = until - 1000;
    let report = node
        .collect_garbage_at(now, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(report.freed_bytes, 0);
    assert!(has(&loose) && has(&loose_chunks[0]));
    // Past it, the unpinned uploads go (the one a refused job named too) and the pinned
    // trees stay.
    let report = node.collect_garbage_at(now, Duration::ZERO).unwrap();
    assert!(report.freed_bytes > 0);
    assert_eq!(report.unpinned_in_use, 0);
    assert!(!has(&loose) && !has(&loose_chunks[0]));
    assert!(!has(&squatted) && !has(&squatted_chunks[0]));
    assert!(has(&pinned) && has(&pinned_chunks[0]));
    // Once the pins run out, the open job's input stays and the other tree goes.
    let report = node.collect_garbage_at(until + 1, Duration::ZERO).unwrap();
    assert_eq!((report.pins_expired, report.pins_kept), (1, 1));
    assert!(!has(&pinned) && !has(&pinned_chunks[0]));
    assert!(has(&input) && has(&input_chunks[0]));
}

/// A Byzantine actor who saw a tree's id (a job's input on the ledger) but holds no key: it
/// tries to claim the tree, to fill its 256 key grants so the node cannot grant the
/// executor, and to slip in a wrong grant for the executor (the node grants only recipients
/// without one).
struct GrantSquatter {
    key: gridwork_transfer::DataKey,
}

impl GrantSquatter {
    fn attack(&self, node: &Node, cid: &gridwork_types::Hash, victim: &gridwork_types::PublicKey) {
        let proof = self.key.holder_proof(cid, &node.keys().public_key());
        let wrong = gridwork_transfer::wrap_key(&self.key, victim);
        let err = node
            .data()
            .add_grants_as_holder(cid, vec![wrong], &proof)
            .unwrap_err();
        assert!(matches!(err, NodeError::NotKeyHolder { .. }), "{err}");
        assert!(err.to_string().contains("gridwork-key-proof"), "{err}");
        for n in 0..300u32 {
            let junk = gridwork_transfer::wrap_key(&self.key, &dev_keypair(n).public());
            assert!(node
                .data()
                .add_grants_as_holder(cid, vec![junk], &proof)
                .is_err());
        }
        let err = node.data().pin_tree(cid, &[], &proof, &PINNER).unwrap_err();
        assert!(matches!(err, NodeError::NotKeyHolder { .. }), "{err}");
    }
}

#[test]
fn only_holders_of_a_trees_key_may_pin_it_or_share_it() {
    use gridwork_transfer::{unwrap_key, wrap_key, DataKey};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let (cid, chunks) = stored_tree(&node, "the requester's dataset");
    let key = DataKey::generate();
    let executor = dev_keypair(1);
    let at = node.keys().public_key();

    // Before any pin, nobody can share: the node would not know whose lock to trust.
    let err = node
        .data()
        .add_grants_as_holder(
            &cid,
            vec![wrap_key(&key, &executor.public())],
            &key.holder_proof(&cid, &at),
        )
        .unwrap_err();
    assert!(matches!(err, NodeError::TreeNotPinned { .. }), "{err}");

    node.data()
        .pin_tree(&cid, &chunks, &key.holder_proof(&cid, &at), &PINNER)
        .unwrap();
    GrantSquatter {
        key: DataKey::generate(),
    }
    .attack(&node, &cid, &executor.public());
    assert!(
        node.data().grants(&cid).unwrap().is_empty(),
        "nothing of the squatter's landed"
    );
    // A node that saw the holder's proof for itself cannot replay it here: a proof is made
    // for one node.
    let elsewhere = key.holder_proof(&cid, &dev_keypair(7).public());
    let err = node
        .data()
        .add_grants_as_holder(&cid, vec![wrap_key(&key, &executor.public())], &elsewhere)
        .unwrap_err();
    assert!(matches!(err, NodeError::NotKeyHolder { .. }), "{err}");

    // The holder shares with the executor, pins again, and the executor decrypts.
    node.data()
        .add_grants_as_holder(
            &cid,
            vec![wrap_key(&key, &executor.public())],
            &key.holder_proof(&cid, &at),
        )
        .unwrap();
    node.data()
        .pin_tree(&cid, &chunks, &key.holder_proof(&cid, &at), &PINNER)
        .unwrap();
    let grants = node.data().grants(&cid).unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(unwrap_key(&grants[0], &executor), Some(key.clone()));
    // A recipient holds the key too, so it may share on (as the node does for inputs).
    let council = dev_keypair(0);
    node.data()
        .add_grants_as_holder(
            &cid,
            vec![wrap_key(&key, &council.public())],
            &key.holder_proof(&cid, &at),
        )
        .unwrap();
    assert_eq!(node.data().grants(&cid).unwrap().len(), 2);
}

#[test]
fn pins_of_older_formats_are_claimed_by_the_first_holder_to_share_and_keep_their_charge() {
    use gridwork_transfer::{wrap_key, DataKey};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let (first, first_chunks) = stored_tree(&node, "pinned before pins carried a lock");
    let (second, second_chunks) = stored_tree(&node, "pinned with a lock of the first proof");
    let pins = dir.path().join("data/pins");
    std::fs::create_dir_all(&pins).unwrap();
    // The first format: until_ms || ids.
    let mut old = u64::MAX.to_le_bytes().to_vec();
    old.extend_from_slice(first_chunks[0].as_bytes());
    std::fs::write(pins.join(format!("{first}.pin")), old).unwrap();
    // The second: magic || until || lock (of a proof not bound to a node) || pinner || bytes
    // || ids.
    let mut old = b"GWPIN\0\0\x02".to_vec();
    old.extend_from_slice(&u64::MAX.to_le_bytes());
    old.extend_from_slice(&[0x5a; 32]);
    old.extend_from_slice(&PINNER.0);
    old.extend_from_slice(&4321u64.to_le_bytes());
    old.extend_from_slice(second_chunks[0].as_bytes());
    std::fs::write(pins.join(format!("{second}.pin")), old).unwrap();
    drop(node);
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    assert_eq!(
        node.data().pinned_bytes(&PINNER).0,
        4321,
        "the charge is read back"
    );

    let at = node.keys().public_key();
    let (key, other) = (DataKey::generate(), DataKey::generate());
    let to = dev_keypair(1).public();
    for cid in [first, second] {
        node.data()
            .add_grants_as_holder(
                &cid,
                vec![wrap_key(&key, &to)],
                &key.holder_proof(&cid, &at),
            )
            .unwrap();
        let err = node
            .data()
            .add_grants_as_holder(
                &cid,
                vec![wrap_key(&other, &to)],
                &other.holder_proof(&cid, &at),
            )
            .unwrap_err();
        assert!(matches!(err, NodeError::NotKeyHolder { .. }), "{err}");
    }
    // The old pins' chunks are still kept, and the claimed one still charged.
    node.collect_garbage_at(0, std::time::Duration::ZERO)
        .unwrap();
    assert!(node.data().chunk(&first_chunks[0]).unwrap().is_some());
    assert!(node.data().chunk(&second_chunks[0]).unwrap().is_some());
    drop(node);
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    assert_eq!(node.data().pinned_bytes(&PINNER).0, 4321);
}

#[test]
fn each_account_keeps_at_most_its_quota_of_pinned_bytes_and_expiry_gives_it_back() {
    use gridwork_types::Hash;
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        chunk_account_quota_bytes: Some(10_000),
        ..config(dir.path())
    };
    let proof = Hash([0xaa; 32]);
    // Trees of one 6,000-byte chunk (the root itself).
    let tree = |node: &Node, b: u8| {
        let bytes = vec![b; 6000];
        let id = Hash::of(&bytes);
        node.data().put_chunk(&id, &bytes).unwrap();
        id
    };
    let (alice, bob) = (Address([0xa1; 20]), Address([0xb0; 20]));
    {
        let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
        let (first, second) = (tree(&node, 1), tree(&node, 2));
        let until = node.data().pin_tree(&first, &[], &proof, &alice).unwrap();
        // Pinning the same tree again costs nothing more.
        node.data().pin_tree(&first, &[], &proof, &alice).unwrap();
        let err = node
            .data()
            .pin_tree(&second, &[], &proof, &alice)
            .unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::AccountQuota {
                    used: 6000,
                    needed: 6000,
                    quota: 10_000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("chunk_account_quota_bytes"),
            "{err}"
        );
        // Another account has its own quota.
        node.data().pin_tree(&second, &[], &proof, &bob).unwrap();
        assert!(until > 0);
    }
    // The charges survive a restart (they are read from the pins).
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    let third = tree(&node, 3);
    assert!(matches!(
        node.data()
            .pin_tree(&third, &[], &proof, &alice)
            .unwrap_err(),
        NodeError::AccountQuota { used: 6000, .. }
    ));
    // Once Alice's pin runs out and is collected, her bytes are hers again.
    node.collect_garbage_at(u64::MAX, std::time::Duration::ZERO)
        .unwrap();
    let third = tree(&node, 3);
    node.data().pin_tree(&third, &[], &proof, &alice).unwrap();
    // Bob pinning Alice's tree is charged for it too, and she still is: each account's pins
    // stay within its own quota, whoever else keeps the tree.
    node.data().pin_tree(&third, &[], &proof, &bob).unwrap();
    node.data().pin_tree(&third, &[], &proof, &bob).unwrap();
    assert_eq!(
        (
            node.data().pinned_bytes(&alice).0,
            node.data().pinned_bytes(&bob).0
        ),
        (6000, 6000),
        "charged once each, however often pinned"
    );
    let first = tree(&node, 1);
    assert!(matches!(
        node.data()
            .pin_tree(&first, &[], &proof, &alice)
            .unwrap_err(),
        NodeError::AccountQuota { used: 6000, .. }
    ));
    drop(node);
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    assert_eq!(
        (
            node.data().pinned_bytes(&alice).0,
            node.data().pinned_bytes(&bob).0
        ),
        (6000, 6000),
        "both charges survive a restart"
    );
    node.collect_garbage_at(u64::MAX, std::time::Duration::ZERO)
        .unwrap();
    assert_eq!(
        (
            node.data().pinned_bytes(&alice).0,
            node.data().pinned_bytes(&bob).0
        ),
        (0, 0),
        "a collected tree gives both their bytes back"
    );
}

#[test]
fn uploads_not_yet_pinned_count_against_the_uploaders_quota_until_pinned_or_collected() {
    use gridwork_types::Hash;
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        chunk_account_quota_bytes: Some(10_000),
        chunk_upload_grace_secs: 0,
        ..config(dir.path())
    };
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    let chunk = |b: u8| (Hash::of(&[b; 6000]), vec![b; 6000]);
    let (alice, bob) = (Address([0xa1; 20]), Address([0xb0; 20]));
    let ((one, one_bytes), (two, two_bytes)) = (chunk(1), chunk(2));
    node.data().put_chunk_by(&one, &one_bytes, &alice).unwrap();
    // A chunk already stored costs nobody anything.
    node.data().put_chunk_by(&one, &one_bytes, &bob).unwrap();
    let err = node
        .data()
        .put_chunk_by(&two, &two_bytes, &alice)
        .unwrap_err();
    assert!(
        matches!(
            err,
            NodeError::AccountQuota {
                used: 6000,
                needed: 6000,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        node.data().chunk(&two).unwrap().is_none(),
        "nothing was stored"
    );
    // Pinned, the chunk is charged as a pin (still 6,000 bytes), not twice.
    node.data()
        .pin_tree(&one, &[], &Hash([0xaa; 32]), &alice)
        .unwrap();
    assert_eq!(node.data().pinned_bytes(&alice), (6000, Some(10_000)));
    assert!(node.data().put_chunk_by(&two, &two_bytes, &alice).is_err());
    // Bob's upload that never gets pinned is collected after the grace period, and his
    // room comes back.
    node.data().put_chunk_by(&two, &two_bytes, &bob).unwrap();
    let (three, three_bytes) = chunk(3);
    assert!(node
        .data()
        .put_chunk_by(&three, &three_bytes, &bob)
        .is_err());
    // A restart forgives nobody: Bob's upload is still charged, Alice's pinned one only as
    // a pin.
    drop(node);
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    assert!(node
        .data()
        .put_chunk_by(&three, &three_bytes, &bob)
        .is_err());
    let (b, a) = (node.data().storage(&bob), node.data().storage(&alice));
    assert_eq!((b.pinned_bytes, b.pending_bytes), (0, 6000));
    assert_eq!((a.pinned_bytes, a.pending_bytes), (6000, 0));
    node.collect_garbage_at(0, std::time::Duration::ZERO)
        .unwrap();
    assert!(node.data().chunk(&two).unwrap().is_none());
    node.data()
        .put_chunk_by(&three, &three_bytes, &bob)
        .unwrap();
    // The collection rewrote the log: after another restart only the new upload counts.
    drop(node);
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    assert_eq!(node.data().storage(&bob).pending_bytes, 6000);
    assert!(node.data().chunk(&three).unwrap().is_some());
}

#[test]
fn a_full_store_collects_garbage_before_it_refuses_an_upload() {
    use gridwork_types::Hash;
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        chunk_quota_bytes: Some(10_000),
        chunk_upload_grace_secs: 0,
        ..config(dir.path())
    };
    let node = Node::open(&config, GenesisSource::dev(2)).unwrap();
    let chunk = |b: u8| (Hash::of(&[b; 6000]), vec![b; 6000]);
    let ((kept, kept_bytes), (loose, loose_bytes), (new, new_bytes)) =
        (chunk(1), chunk(2), chunk(3));
    let (stale, stale_bytes) = chunk(4);
    node.data().put_chunk(&stale, &stale_bytes).unwrap();
    // The store is full; the put collects the unpinned chunk first and then fits.
    node.data().put_chunk(&kept, &kept_bytes).unwrap();
    assert!(node.data().chunk(&stale).unwrap().is_none());
    node.data()
        .pin_tree(&kept, &[], &Hash([0xaa; 32]), &PINNER)
        .unwrap();
    // Full: nothing unreferenced to drop, so the put is refused, naming what to change.
    let err = node.data().put_chunk(&loose, &loose_bytes).unwrap_err();
    assert!(
        matches!(err, NodeError::StoreFull { quota: 10_000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chunk_quota_bytes"));
    assert!(
        node.data().chunk(&kept).unwrap().is_some(),
        "the pinned tree stays"
    );
    // Once the pinned tree is gone (its pin ran out), the next upload fits.
    node.collect_garbage_at(u64::MAX, std::time::Duration::ZERO)
        .unwrap();
    node.data().put_chunk(&new, &new_bytes).unwrap();
    assert!(node.data().chunk(&new).unwrap().is_some());
}

#[test]
fn a_pin_from_a_base_tree_lists_the_bases_chunks_with_the_changes_and_refuses_a_mismatch() {
    use gridwork_transfer::chunk_set_digest;
    use gridwork_types::Hash;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let proof = Hash([0xaa; 32]);
    let put = |name: &str| {
        let data = format!("sealed bytes of {name}").into_bytes();
        let id = Hash::of(&data);
        node.data().put_chunk(&id, &data).unwrap();
        id
    };
    let (kept, edited, edit) = (put("kept"), put("edited"), put("the edit"));
    let (base, base_chunks) = stored_tree(&node, "version one");
    let base_chunks = [base_chunks, vec![kept, edited]].concat();
    node.data()
        .pin_tree(&base, &base_chunks, &proof, &PINNER)
        .unwrap();
    let (next, next_manifest) = stored_tree(&node, "version two");
    let expected = [next_manifest.clone(), vec![kept, edit]].concat();

    // The base's pin less what went, plus what came, is the set the pinner expects.
    let added = [next_manifest, vec![edit]].concat();
    let removed = [base_chunks[..1].to_vec(), vec![edited]].concat();
    node.data()
        .pin_tree_from(
            &next,
            &base,
            &added,
            &removed,
            &chunk_set_digest(&expected),
            &proof,
            &PINNER,
        )
        .unwrap();
    let view = node.data().pin_view(&next).unwrap().unwrap();
    assert_eq!(
        (view.chunks, view.chunk_set),
        (3, chunk_set_digest(&expected))
    );
    assert_eq!(
        node.data().pin_view(&base).unwrap().map(|v| v.chunk_set),
        Some(chunk_set_digest(&base_chunks)),
        "the base's pin is untouched"
    );
    // A pinner whose record of the base differs from the node's pin would leave chunks out:
    // refused, nothing written.
    let (third, third_chunks) = stored_tree(&node, "version three");
    let err = node
        .data()
        .pin_tree_from(
            &third,
            &next,
            &third_chunks,
            &[],
            &chunk_set_digest(&third_chunks),
            &proof,
            &PINNER,
        )
        .unwrap_err();
    assert!(matches!(err, NodeError::PinSetMismatch { .. }), "{err}");
    assert_eq!(node.data().pin_view(&third).unwrap(), None);
    // A base this node never pinned.
    let err = node
        .data()
        .pin_tree_from(
            &third,
            &Hash([3; 32]),
            &third_chunks,
            &[],
            &chunk_set_digest(&third_chunks),
            &proof,
            &PINNER,
        )
        .unwrap_err();
    assert!(matches!(err, NodeError::PinBaseGone { .. }), "{err}");
}

/// Clients that open connections and send half a request (seen: 200 of them all still held
/// after 45 s) are cut off at the header-read timeout; one address cannot hold more than its
/// share of connections; a well-behaved client is served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_cut_off_and_one_address_gets_only_its_share() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(2)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = gridwork_node::ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        max_connections: 100,
        max_connections_per_ip: 8,
        ..gridwork_node::ServeLimits::default()
    };
    tokio::spawn(gridwork_node::serve_with(
        node,
        listener,
        limits,
        std::future::pending(),
    ));
    let client = tokio::task::spawn_blocking(move || {
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /v1/chain HTTP/1.1\r\nHost: node\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            slow.push(s);
        }
        // Each connection ends (closed, or a 408) well within the read timeout: the first 8
        // at the header timeout, the other 12 at once. A read that times out is an error.
        for s in &mut slow {
            let mut buf = Vec::new();
            match s.read_to_end(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("a half-sent request was held open: {e}"),
            }
        }
        // The slots are free again: a whole request is answered.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /v1/chain HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    });
    let answer = client.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // With a long header timeout, the per-address limit alone: the ninth and later
    // connections are closed at once while the first eight are still held.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir2.path()), GenesisSource::dev(2)).unwrap();
    tokio::spawn(gridwork_node::serve_with(
        node,
        listener,
        gridwork_node::ServeLimits {
            header_read_timeout: Duration::from_secs(600),
            ..limits
        },
        std::future::pending(),
    ));
    let held = tokio::task::spawn_blocking(move || {
        let mut conns = Vec::new();
        for _ in 0..12 {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /v1/chain HTTP/1.1\r\n").unwrap();
            conns.push(s);
        }
        conns
            .iter_mut()
            .map(|s| {
                s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mut buf = [0u8; 1];
                // Closed: Ok(0) or reset. Held: the read times out.
                matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
            })
            .collect::<Vec<bool>>()
    });
    let held = held.await.unwrap();
    assert_eq!(held.iter().filter(|h| **h).count(), 8, "{held:?}");
    assert!(held[..8].iter().all(|h| *h), "{held:?}");
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

/// Upload quotas are on by default: a node started without configuring them still bounds
/// what one account keeps.
#[test]
fn uploads_have_a_per_account_quota_by_default() {
    assert_eq!(
        NodeConfig::default().chunk_account_quota_bytes,
        Some(10 << 30)
    );
}
