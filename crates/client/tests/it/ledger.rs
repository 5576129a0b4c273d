//! Transactions through the API: receipts and events, staking, stable error codes, market refusals.

use gridwork_api::TxState;
use gridwork_protocol::dev_keypair;
use gridwork_types::{Address, Amount, Keypair, SignedTx, Transaction, TxKind, GRID};

use super::support::{TestNode, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_is_committed_with_a_receipt_and_announced_on_the_event_stream() {
    let t = TestNode::start().await;
    let mut events = t.client.events().await.unwrap();
    let (alice, bob) = (dev_keypair(0), Keypair::from_seed([9; 32]));
    let hash = t
        .client
        .submit(&t.sign(
            &alice,
            0,
            TxKind::Transfer {
                to: bob.address(),
                amount: Amount::grid(12),
            },
        ))
        .await
        .unwrap();
    let status = t.client.wait_committed(&hash, WAIT).await.unwrap();
    assert_eq!(status.status, TxState::Committed);
    let receipt = status.receipt.unwrap();
    assert_eq!(
        t.client.account(&bob.address()).await.unwrap().balance,
        Amount::grid(12)
    );
    let alice_view = t.client.account(&alice.address()).await.unwrap();
    assert_eq!((alice_view.nonce, alice_view.next_nonce), (1, 1));

    let event = tokio::time::timeout(WAIT, events.next_block())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.block.height, receipt.height);
    assert_eq!(event.receipts[0].tx_hash, hash);

    let block = t
        .client
        .block(&receipt.height.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(block.txs, Some(vec![hash]));
    let by_hash = t
        .client
        .block(&block.hash.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash, block);
    let latest = t.client.block("latest").await.unwrap().unwrap();
    assert!(latest.height >= block.height);
    let list = t.client.blocks(10).await.unwrap();
    assert_eq!(list.first().map(|b| b.height), Some(latest.height));
    assert_eq!(list.last().map(|b| b.height), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stake_lock_unbond_and_early_withdraw_through_the_api() {
    let t = TestNode::start().await;
    let key = dev_keypair(1);
    let lock = t
        .client
        .submit(&t.sign(
            &key,
            0,
            TxKind::StakeLock {
                amount: Amount::grid(5),
            },
        ))
        .await
        .unwrap();
    let unbond = t
        .client
        .submit(&t.sign(
            &key,
            1,
            TxKind::StakeUnbond {
                amount: Amount::grid(2),
            },
        ))
        .await
        .unwrap();
    t.client.wait_committed(&lock, WAIT).await.unwrap();
    t.client.wait_committed(&unbond, WAIT).await.unwrap();
    let view = t.client.account(&key.address()).await.unwrap();
    assert_eq!(
        (view.stake_locked, view.unbonding_total),
        (Amount::grid(3), Amount::grid(2))
    );

    let err = t
        .client
        .submit(&t.sign(&key, 2, TxKind::StakeWithdraw))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("nothing_to_withdraw"), "{err}");
    assert!(err.to_string().contains("matures at"), "{err}");
    let err = t
        .client
        .submit(&t.sign(
            &key,
            2,
            TxKind::StakeUnbond {
                amount: Amount::grid(4),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unbond_exceeds_locked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_transactions_get_stable_error_codes_and_change_nothing() {
    let t = TestNode::start().await;
    let alice = dev_keypair(0);
    let to = Address([7; 20]);
    let transfer = |amount| TxKind::Transfer { to, amount };

    let mut forged = t.sign(&alice, 0, transfer(Amount(1)));
    forged.signature = dev_keypair(2).sign(b"not this");
    let err = t.client.submit(&forged).await.unwrap_err();
    assert_eq!(err.code(), Some("bad_signature"), "{err}");

    let other_chain = Transaction {
        from: alice.public(),
        nonce: 0,
        fee: Amount::ZERO,
        kind: transfer(Amount(1)),
    }
    .sign("another-chain", &alice);
    assert_eq!(
        t.client.submit(&other_chain).await.unwrap_err().code(),
        Some("bad_signature")
    );

    let err = t
        .client
        .submit(&t.sign(&alice, 3, transfer(Amount(1))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("nonce_future"), "{err}");

    let first = t.sign(&alice, 0, transfer(Amount(1)));
    let hash = t.client.submit(&first).await.unwrap();
    // A duplicate is already pending, unless a block took the first in between (a loaded
    // machine): then it is a replay of a committed transaction.
    let dup = t.client.submit(&first).await.unwrap_err();
    match dup.code() {
        Some("already_pending") => {}
        Some("nonce_replayed") => {
            t.client.wait_committed(&hash, WAIT).await.unwrap();
        }
        _ => panic!("a duplicate got {dup}"),
    }
    t.client.wait_committed(&hash, WAIT).await.unwrap();
    let err = t.client.submit(&first).await.unwrap_err();
    assert_eq!(err.code(), Some("nonce_replayed"), "{err}");

    let poor = Keypair::from_seed([11; 32]);
    let err = t
        .client
        .submit(&t.sign(&poor, 0, transfer(Amount(GRID))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("insufficient_balance"), "{err}");
    assert!(err.to_string().contains("can spend 0 GRID"), "{err}");

    let err = t
        .client
        .submit(&t.sign(&alice, 1, transfer(Amount::ZERO)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("zero_amount"));

    // Nothing above changed alice's account beyond the one good transfer.
    assert_eq!(t.client.account(&alice.address()).await.unwrap().nonce, 1);
    assert_eq!(t.client.account(&to).await.unwrap().balance, Amount(1));
}

/// Two cancellations of one job admitted together land in one block: the second is refused
/// by the market there. It is in the block, spent its fee and nonce, reads `failed` with the
/// refusal in its receipt, and waiting for it is an error with the refusal's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_market_refuses_in_its_block_reads_failed_and_says_why() {
    use gridwork_types::{
        Equivalence, Halting, Instructions, Payment, Prescription, Program, Requirements,
    };
    let t = TestNode::start().await;
    let requester = dev_keypair(0);
    let p = Prescription {
        data: vec![],
        program: Program {
            command: "inputs/true".into(),
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
            council_size: 0,
        },
        payment: Payment::FixedPerTask {
            max_price: Amount::grid(1),
        },
        equivalence: Equivalence::ExactHash {},
        halting: Halting {
            first_bids: 1,
            deadline_ms: 10_000,
            reserve_price: None,
            give_up_ms: 0,
        },
        segments: None,
    };
    let job = t.sign(
        &requester,
        0,
        TxKind::SubmitJob {
            prescription: p,
            deposit: Amount::grid(2),
        },
    );
    let id = t.client.submit(&job).await.unwrap();
    t.client.wait_committed(&id, WAIT).await.unwrap();
    let cancels: Vec<SignedTx> = [1, 2]
        .map(|n| t.sign(&requester, n, TxKind::CancelJob { job: id }))
        .into();
    let hashes: Vec<_> = t
        .node
        .submit(cancels)
        .into_iter()
        .map(|r| r.expect("both admitted: the job is open"))
        .collect();
    let first = t.client.wait_committed(&hashes[0], WAIT).await.unwrap();
    assert_eq!(first.status, TxState::Committed);
    let err = t.client.wait_committed(&hashes[1], WAIT).await.unwrap_err();
    assert_eq!(err.code(), Some("job_closed"), "{err}");
    assert!(err.to_string().contains("its fee"), "{err}");
    let second = t.client.tx(&hashes[1]).await.unwrap().unwrap();
    assert_eq!(second.status, TxState::Failed);
    let receipt = second.receipt.unwrap();
    assert_eq!(receipt.failure().map(|(code, _)| code), Some("job_closed"));
    assert_eq!(receipt.height, first.receipt.unwrap().height, "one block");
    assert_eq!(
        t.client.account(&requester.address()).await.unwrap().nonce,
        3
    );
}
