//! Honest work and what it pays: payments that add up, state fees, fees of duplicate actions, clear
//! errors for bad jobs and bids.

use gridwork_protocol::{Event, Phase, TxError};
use gridwork_types::{Address, Amount, Equivalence, Hash, Keypair, SignedTx, TxKind, GRID};

use super::support::{
    deposit_for, params, prescription, provider, requester, state_fee, Market, CHAIN,
};

#[test]
fn honest_executor_and_council_complete_the_job_and_payments_add_up() {
    let mut m = Market::new();
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let deposit = deposit_for(&p);
    let before = m.balance(&requester());
    let state = state_fee(&p);
    let job = m.submit(p, deposit);
    assert_eq!(m.balance(&requester()), before - deposit.0 - state);

    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
            cached: false,
        },
    );
    let events = m.block(vec![bid]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::AuctionClosed { .. })),
        "{events:?}"
    );
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Committing);
    assert_eq!(t.executor, Some(provider(1).address()));
    assert_eq!(t.council.len(), 3);
    assert!(!t.council.contains(&provider(1).address()));

    let out = Hash([42; 32]);
    let mut all = vec![(provider(1), out)];
    all.extend(t.council.iter().map(|a| (Market::key_of(*a), out)));
    let earned_before: Vec<u128> = all.iter().map(|(k, _)| m.balance(k)).collect();
    m.commit_all(job, 0, &all);
    assert_eq!(m.task(job, 0).phase, Phase::Revealing);
    m.reveal(job, 0, &provider(1), out);
    let mut events = Vec::new();
    for (k, o) in &all[1..] {
        events.extend(m.reveal(job, 0, k, *o));
    }
    assert_eq!(m.task(job, 0).phase, Phase::Settled);
    assert_eq!(m.task(job, 0).result, Some(out));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ProofOfCompute { seconds: 10, .. })));

    // Executor: 10 s at GRID/200 plus the proof-of-compute reward (2.5% of that);
    // council: 10% each; the requester pays 5% of all that as the market fee.
    let paid = 10 * (GRID / 200);
    let reward = paid * u128::from(params().reward_bps) / 10_000;
    let fee = (paid + 3 * (paid / 10)) * u128::from(params().market_fee_bps) / 10_000;
    let gained: Vec<u128> = all
        .iter()
        .zip(&earned_before)
        .map(|((k, _), b)| m.balance(k) - b)
        .collect();
    assert_eq!(gained[0], paid + reward);
    for g in &gained[1..] {
        assert_eq!(*g, paid / 10);
    }
    // Requester got back everything not paid out.
    let job_rec = m.job(job);
    assert!(job_rec.finished);
    assert_eq!(
        m.balance(&requester()),
        before - paid - 3 * (paid / 10) - fee - state
    );
    assert_eq!(m.state.provider(&provider(1).address()).unwrap().streak, 1);
    // Finished, the job and its tasks left the hot state (and the state root) for the
    // archive, where they are read by id.
    assert!(m.state.job(&job).is_none());
    assert_eq!(m.state.tasks_of(&job).count(), 0);
    assert_eq!(m.state.jobs().count(), 0);
    let archived = m.disk.archived(&job).unwrap();
    assert_eq!(archived.tasks.len(), 1);
    assert!(archived.tasks.iter().all(|t| t.result.is_some()));
}

/// State has a price: a job pays `state_fee_per_entry` for each task and input it adds to
/// the ledger, into the rewards pool and not refunded, so a 10,000-task job is no longer free
/// to park in every node's state.
#[test]
fn a_jobs_state_fee_grows_with_the_tasks_it_creates() {
    let mut m = Market::new();
    let mut paid = Vec::new();
    for tasks in [1u64, 100] {
        let p = prescription(tasks, 0, Equivalence::ExactHash {});
        let (pool, balance) = (m.state.rewards_pool().0, m.balance(&requester()));
        let job = m.submit(p.clone(), deposit_for(&p));
        let cancel = m.tx(&requester(), TxKind::CancelJob { job });
        m.block(vec![cancel]);
        assert_eq!(m.state.rewards_pool().0 - pool, state_fee(&p));
        assert_eq!(balance - m.balance(&requester()), state_fee(&p));
        paid.push(state_fee(&p));
    }
    // One input besides the task each: 2 and 101 entries.
    assert_eq!(paid[1], paid[0] / 2 * 101);
    assert!(paid[1] > 50 * paid[0]);
}

#[test]
fn bad_jobs_and_bids_get_clear_errors() {
    let mut m = Market::new();
    let p = prescription(2, 1, Equivalence::ExactHash {});
    let short = Amount(deposit_for(&p).0 - 1);
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: p.clone(),
            deposit: short,
        },
    );
    assert!(matches!(err, TxError::DepositTooLow { .. }), "{err}");

    let mut even = p.clone();
    even.instructions.council_size = 2;
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: even,
            deposit: Amount::grid(1_000),
        },
    );
    assert!(
        err.to_string().contains("instructions.council_size"),
        "{err}"
    );

    let mut empty = p.clone();
    empty.instructions.chunk = 0;
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: empty,
            deposit: Amount::grid(1_000),
        },
    );
    assert!(err.to_string().contains("instructions.chunk"), "{err}");

    // Hardware nobody has: bids are refused with the reason, and the task says why it waits.
    let mut huge = p.clone();
    huge.instructions.requirements.min_vram_mib = 80_000;
    let job = m.submit(huge.clone(), deposit_for(&huge));
    let err = m.refused(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(1),
            cached: false,
        },
    );
    assert!(
        matches!(&err, TxError::HardwareUnfit { reason } if reason.contains("80000 MiB")),
        "{err}"
    );
    m.at(m.now + 5_000, vec![]);
    assert!(m.task(job, 0).note.to_string().contains("no bids yet"));

    let job = m.submit(p.clone(), deposit_for(&p));
    let err = m.refused(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID),
            cached: false,
        },
    );
    assert!(matches!(err, TxError::BadPrice { .. }), "{err}");
    let err = m.refused(
        &requester(),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(1),
            cached: false,
        },
    );
    assert!(matches!(err, TxError::NotAProvider { .. }), "{err}");
    let err = m.refused(
        &provider(1),
        TxKind::Commit {
            job,
            task: 0,
            attempt: 0,
            commitment: Hash::ZERO,
        },
    );
    assert!(matches!(err, TxError::WrongPhase { .. }), "{err}");
}

/// `DuplicateActionSpammer`: one sender queues the same market action many times (a job's
/// cancellation, a bid on one task), each copy valid against the committed state when it is
/// admitted, at a fee that outbids honest traffic. Only the first can take effect; every other
/// copy is still in the block and pays its fee, so priority and mempool places cost what they
/// say, per copy. (Before: refused copies were left out and paid nothing.)
#[test]
fn duplicate_market_actions_each_pay_their_fee_though_only_the_first_acts() {
    let mut m = Market::new();
    let p = prescription(2, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let fee = Amount(GRID / 1_000);
    let paying = |m: &mut Market, key: &Keypair, kind: TxKind| {
        let mut signed = m.tx(key, kind);
        signed.tx.fee = fee;
        signed.tx.clone().sign(CHAIN, key)
    };
    let bidder = provider(1);
    let mut txs: Vec<SignedTx> = (0..3)
        .map(|_| {
            let kind = TxKind::Bid {
                job,
                task: 0,
                price: Amount(GRID / 1_000),
                cached: false,
            };
            paying(&mut m, &bidder, kind)
        })
        .collect();
    txs.extend((0..4).map(|_| paying(&mut m, &requester(), TxKind::CancelJob { job })));
    let pool = m.state.rewards_pool();
    let balances = [bidder.address(), requester().address()].map(|a| m.state.account(&a).balance);

    m.now += 1;
    let built = m.state.build_block(m.now, Address([0; 20]), txs);
    m.replica.apply_block(&built.block).unwrap();
    assert_eq!(m.replica.root(), m.state.root());
    assert_eq!(m.state.check_conservation(), Ok(()));

    assert!(built.rejected.is_empty(), "{:?}", built.rejected);
    assert_eq!(built.block.txs.len(), 7, "every copy is in the block");
    let refused: Vec<&str> = built.failed.iter().map(|(_, e)| e.code()).collect();
    // Two more bids on a task whose auction the first closed (one bid is enough here), then
    // three more cancellations of a cancelled job.
    assert_eq!(
        refused,
        [
            "wrong_phase",
            "wrong_phase",
            "job_closed",
            "job_closed",
            "job_closed"
        ]
    );
    assert!(built.receipts.iter().all(|r| r.fee == fee));
    assert_eq!(
        m.state.rewards_pool(),
        Amount(pool.0 + 7 * fee.0),
        "seven fees, not two"
    );
    assert_eq!(
        m.state.account(&bidder.address()).balance,
        Amount(balances[0].0 - 3 * fee.0)
    );
    assert_eq!(m.state.account(&bidder.address()).nonce, 3 + 2);
    // The refused copies did nothing else: one bid, one cancellation.
    let events: Vec<&Event> = built.receipts.iter().flat_map(|r| &r.events).collect();
    let bids = events
        .iter()
        .filter(|e| matches!(e, Event::BidPlaced { .. }))
        .count();
    let cancels = events
        .iter()
        .filter(|e| matches!(e, Event::JobCancelled { .. }))
        .count();
    assert_eq!((bids, cancels), (1, 1));
}
