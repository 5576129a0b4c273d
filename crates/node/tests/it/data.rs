//! The data service: garbage collection, pins and who may set them, key grants, quotas.

use super::*;

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
                        name: String::new(),
                    }],
                    program: Program {
                        command: "inputs/render".into(),
                        args: vec![],
                        outputs: Vec::new(),
                        image: None,
                        network: false,
                        vendor_images: Vec::new(),
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
                    segments: None,
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

/// Upload quotas are on by default: a node started without configuring them still bounds
/// what one account keeps.
#[test]
fn uploads_have_a_per_account_quota_by_default() {
    assert_eq!(
        NodeConfig::default().chunk_account_quota_bytes,
        Some(10 << 30)
    );
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

/// A service's inputs (a model's weights) reach its council and nobody else, as a job's reach
/// its executor and council: the node wraps their keys for each member as its seat is drawn.
/// A subscriber not drawn gets nothing; a service naming a tree whose key the node was never
/// given is refused; and collection keeps a service's inputs while it is not closed.
#[test]
fn a_services_inputs_reach_its_council_only_and_outlive_collection() {
    use gridwork_transfer::{unwrap_key, wrap_key, DataKey};
    use gridwork_types::{
        DataInput, Equivalence, Hardware, Program, Requirements, ResponseMethod, ServiceSpec,
        StreamPrice,
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(&config(dir.path()), GenesisSource::dev(4)).unwrap();
    let chain = node.ledger().chain_id().to_string();
    let (weights, weights_chunks) = stored_tree(&node, "a model's weights");
    let (stranger_tree, _) = stored_tree(&node, "somebody else's tree");
    let proof = gridwork_types::Hash([0xaa; 32]);
    node.data()
        .pin_tree(&weights, &weights_chunks, &proof, &PINNER)
        .unwrap();
    let requester = dev_keypair(0);
    let key = DataKey::generate();
    node.data()
        .add_grants_as_holder(
            &weights,
            vec![wrap_key(&key, &node.keys().public_key())],
            &proof,
        )
        .unwrap();
    let mut nonces = std::collections::HashMap::new();
    let mut send = |who: &gridwork_types::Keypair, kind: TxKind| {
        let nonce = nonces.entry(who.address()).or_insert(0u64);
        let tx = Transaction {
            from: who.public(),
            nonce: *nonce,
            fee: Amount::ZERO,
            kind,
        }
        .sign(&chain, who);
        *nonce += 1;
        tx
    };
    let service = |data: gridwork_types::Hash| ServiceSpec {
        program: Program {
            command: "inputs/serve".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        data: vec![DataInput {
            cid: data,
            claim: key.input_claim(&data, &requester.address()),
            name: "model".into(),
        }],
        requirements: Requirements::default(),
        method: ResponseMethod::Optimistic {},
        council_size: 1,
        max_price: StreamPrice {
            per_response: Amount(1_000),
            per_unit: Amount::ZERO,
        },
        equivalence: Equivalence::ExactHash {},
        max_response_ms: 10_000,
        response_ms_per_kib: 0,
        max_downtime_ms: 0,
        max_unsettled: Amount::grid(1),
        gateway: requester.public(),
    };
    let squatter = Transaction {
        from: requester.public(),
        nonce: 0,
        fee: Amount::ZERO,
        kind: TxKind::CreateService {
            spec: service(stranger_tree),
            deposit: Amount::grid(2),
        },
    }
    .sign(&chain, &requester);
    assert!(matches!(
        node.submit(vec![squatter])[0],
        Err(AdmitError::InputNotHeld { .. })
    ));
    let create = send(
        &requester,
        TxKind::CreateService {
            spec: service(weights),
            deposit: Amount::grid(2),
        },
    );
    let id = create.hash();
    let providers = [dev_keypair(1), dev_keypair(2)];
    let mut txs = vec![create];
    for p in &providers {
        txs.push(send(
            p,
            TxKind::StakeLock {
                amount: Amount::grid(500),
            },
        ));
        txs.push(send(
            p,
            TxKind::RegisterProvider {
                hardware: Hardware::default(),
                owner: None,
            },
        ));
    }
    assert!(node.submit(txs).iter().all(Result::is_ok));
    let block = node.ledger().produce_block(true).unwrap().unwrap();
    assert!(
        block.receipts.iter().all(|r| r.failure().is_none()),
        "{:?}",
        block.receipts
    );
    let subs: Vec<SignedTx> = providers
        .iter()
        .map(|p| {
            send(
                p,
                TxKind::Subscribe {
                    service: id,
                    price: StreamPrice {
                        per_response: Amount(500),
                        per_unit: Amount::ZERO,
                    },
                },
            )
        })
        .collect();
    assert!(node.submit(subs).iter().all(Result::is_ok));
    node.ledger().produce_block(true).unwrap().unwrap();
    // The seat is drawn at the next block (due at once), and the hand-off (on its own thread
    // in a running node) wraps the inputs for it.
    let drawn = node.ledger().produce_block(true).unwrap().unwrap();
    node.keys().grant_inputs(node.ledger(), &drawn);
    let council = node.ledger().service(&id).unwrap().0.council;
    assert_eq!(council.len(), 1);
    let member = providers
        .iter()
        .find(|p| p.address() == council[0])
        .unwrap();
    let other = providers
        .iter()
        .find(|p| p.address() != council[0])
        .unwrap();
    let grants = node.data().grants(&weights).unwrap();
    assert!(grants
        .iter()
        .any(|g| unwrap_key(g, member) == Some(key.clone())));
    // The catch-up at start-up grants the same, and nothing more.
    node.keys().grant_running_tasks(node.ledger());
    assert_eq!(node.data().grants(&weights).unwrap(), grants);
    assert!(
        grants.iter().all(|g| unwrap_key(g, other).is_none()),
        "a subscriber not drawn got the key"
    );
    let report = node
        .collect_garbage_at(u64::MAX / 2, std::time::Duration::ZERO)
        .unwrap();
    assert!(report.unpinned_in_use <= 1);
    assert!(node.data().chunk(&weights).unwrap().is_some());
    assert!(node.data().chunk(&weights_chunks[0]).unwrap().is_some());
}
