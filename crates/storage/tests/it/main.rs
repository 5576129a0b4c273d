//! The stores keep what was committed, refuse what does not fit, and reload the same state.

use gridwork_protocol::{dev_keypair, Genesis, Params, State};
use gridwork_storage::{ChainMeta, FailingStore, MemoryStore, RedbStore, StorageError, Store};
use gridwork_types::{
    Address, Amount, Block, Equivalence, Keypair, Program, Requirements, ResponseMethod,
    ServiceSpec, StreamPrice, Transaction, TxKind, GRID,
};

const T0: u64 = 1_700_000_000_000;

/// A service published in the first block: state beyond the archive's prefix, which a store
/// once did not read back.
fn service() -> Transaction {
    let spec = ServiceSpec {
        program: Program {
            command: "inputs/serve".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        data: Vec::new(),
        requirements: Requirements::default(),
        method: ResponseMethod::Unanimous {},
        council_size: 3,
        max_price: StreamPrice {
            per_response: Amount(GRID / 1_000),
            per_unit: Amount(0),
        },
        equivalence: Equivalence::ExactHash {},
        max_response_ms: 30_000,
        response_ms_per_kib: 100,
        max_downtime_ms: 60_000,
        max_unsettled: Amount::grid(1),
        gateway: Keypair::from_seed([42; 32]).public(),
    };
    Transaction {
        from: dev_keypair(2).public(),
        nonce: 0,
        fee: Amount(1),
        kind: TxKind::CreateService {
            spec,
            deposit: Amount::grid(10),
        },
    }
}

/// Creates a chain in `store` and commits `blocks` blocks of a few transfers each, the first
/// also publishing a service.
fn grow_chain(store: &dyn Store, blocks: u64) -> (State, Vec<Block>) {
    let genesis = Genesis::dev("store-test", T0, 4, Params::default());
    let (mut state, block0) = State::genesis(&genesis).unwrap();
    let meta = ChainMeta {
        chain_id: genesis.chain_id.clone(),
        params: genesis.params.clone(),
        total_supply: genesis.total_supply,
        genesis_hash: block0.header.hash(),
    };
    store.init(&meta, &block0, &state.take_changes()).unwrap();
    let mut chain = vec![block0];
    let keys = [dev_keypair(0), dev_keypair(1)];
    for n in 0..blocks {
        let mut txs: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Transaction {
                    from: k.public(),
                    nonce: n,
                    fee: Amount(1),
                    kind: TxKind::Transfer {
                        to: keys[1 - i].address(),
                        amount: Amount(10 + n as u128),
                    },
                }
                .sign("store-test", k)
            })
            .collect();
        if n == 0 {
            txs.push(service().sign("store-test", &dev_keypair(2)));
        }
        let built = state.build_block(T0 + n + 1, Address([0; 20]), txs);
        assert!(built.rejected.is_empty(), "{:?}", built.rejected);
        match store.commit(
            &built.block,
            &built.receipts,
            &built.events,
            &state.take_changes(),
        ) {
            Ok(()) => chain.push(built.block),
            Err(_) => break,
        }
    }
    (state, chain)
}

fn assert_holds_chain(store: &dyn Store, chain: &[Block]) {
    assert_eq!(store.head_height().unwrap(), Some(chain.len() as u64 - 1));
    for block in chain {
        let h = block.header.height;
        assert_eq!(store.block(h).unwrap().as_ref(), Some(block));
        assert_eq!(store.height_of(&block.header.hash()).unwrap(), Some(h));
        for (i, tx) in block.txs.iter().enumerate() {
            let record = store.tx(&tx.hash()).unwrap().unwrap();
            assert_eq!(
                (&record.tx, record.receipt.height, record.receipt.index),
                (tx, h, i as u32)
            );
        }
    }
    let state = store.load_state().unwrap().unwrap();
    let head = &chain[chain.len() - 1].header;
    assert_eq!(state.root(), head.state_root);
    assert_eq!(state.head_hash(), head.hash());
    assert_eq!(state.check_conservation(), Ok(()));
    assert_eq!(state.services().count(), 1, "the service was read back");
}

#[test]
fn memory_store_reloads_the_committed_state() {
    let store = MemoryStore::new();
    let (state, chain) = grow_chain(&store, 5);
    assert_holds_chain(&store, &chain);
    assert_eq!(store.load_state().unwrap().unwrap().root(), state.root());
}

#[test]
fn redb_store_reloads_the_committed_state_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let chain = {
        let store = RedbStore::open(&path).unwrap();
        grow_chain(&store, 5).1
    };
    let store = RedbStore::open(&path).unwrap();
    assert_holds_chain(&store, &chain);
}

#[test]
fn redb_store_refuses_a_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let _first = RedbStore::open(&path).unwrap();
    let err = RedbStore::open(&path).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another node"), "{err}");
}

#[test]
fn refuses_a_block_that_does_not_follow_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("chain.redb")).unwrap();
    for store in [&MemoryStore::new() as &dyn Store, &redb] {
        let (_, chain) = grow_chain(store, 2);
        let err = store
            .commit(&chain[1], &[], &[], &Default::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::NotNext {
                    head: Some(2),
                    got: 1
                }
            ),
            "{err}"
        );
        assert_holds_chain(store, &chain);
    }
}

#[test]
fn a_crash_after_n_commits_keeps_exactly_those_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let chain = {
        let store = FailingStore::new(RedbStore::open(&path).unwrap(), 3);
        let (_, chain) = grow_chain(&store, 10);
        assert_eq!(chain.len(), 4, "genesis and three committed blocks");
        chain
    };
    let store = RedbStore::open(&path).unwrap();
    assert_holds_chain(&store, &chain);
}

#[test]
fn a_damaged_account_is_detected_at_load() {
    let store = MemoryStore::new();
    let (mut state, _) = grow_chain(&store, 2);
    // Commit a block whose state changes lie about an account.
    let built = state.build_block(T0 + 100, Address([0; 20]), vec![]);
    let mut changes = state.take_changes();
    let mut key = vec![1u8];
    key.extend_from_slice(&dev_keypair(0).address().0);
    let damaged = gridwork_types::Encode::to_bytes(&gridwork_protocol::Account::default());
    changes.entries.push((key, Some(damaged)));
    store
        .commit(&built.block, &built.receipts, &built.events, &changes)
        .unwrap();
    assert!(matches!(
        store.load_state(),
        Err(StorageError::StateRootMismatch { .. })
    ));
}
