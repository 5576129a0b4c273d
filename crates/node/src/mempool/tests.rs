//! Unit tests of the mempool: admission, fee ordering, replacement, bounds, revalidation and
//! the consistency of its indexes.

use super::*;
use gridwork_protocol::{dev_keypair, Genesis, Params};
use gridwork_types::{Amount, Keypair, Transaction, TxKind};

fn setup() -> (State, Keypair) {
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 2, Params::default())).unwrap();
    (state, dev_keypair(0))
}

fn transfer(key: &Keypair, nonce: u64, amount: u128) -> SignedTx {
    transfer_paying(key, nonce, amount, 0)
}

fn transfer_paying(key: &Keypair, nonce: u64, amount: u128, fee: u128) -> SignedTx {
    Transaction {
        from: key.public(),
        nonce,
        fee: Amount(fee),
        kind: TxKind::Transfer {
            to: Address([1; 20]),
            amount: Amount(amount),
        },
    }
    .sign("m", key)
}

#[test]
fn queues_a_senders_transactions_in_nonce_order() {
    let (state, key) = setup();
    let mut pool = Mempool::new(10);
    for n in 0..3 {
        let tx = transfer(&key, n, 1);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    assert_eq!(pool.next_nonce(&state, &key.address()), 3);
    let gap = transfer(&key, 5, 1);
    assert!(matches!(
        pool.admit(&state, gap.clone(), gap.hash(), 0),
        Err(MempoolError::Invalid(TxError::NonceFuture {
            expected: 3,
            got: 5,
            ..
        }))
    ));
    let taken = pool.take(2);
    assert_eq!(
        taken.iter().map(|t| t.tx.nonce).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(pool.len(), 1);
}

/// One sender cannot fill the mempool (a flood of its own transactions is bounded), and
/// the pool is bounded by bytes, not only by count; taking a block frees both.
#[test]
fn one_sender_and_the_byte_budget_are_bounded() {
    // Three accounts: the last one's tokens vest, dev1 can spend.
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 3, Params::default())).unwrap();
    let key = dev_keypair(0);
    let mut pool = Mempool::new(1_000);
    pool.set_limits(1 << 20, 3);
    for n in 0..3 {
        let tx = transfer(&key, n, 1);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    let fourth = transfer(&key, 3, 1);
    assert!(matches!(
        pool.admit(&state, fourth.clone(), fourth.hash(), 0),
        Err(MempoolError::SenderFull { max: 3, .. })
    ));
    // Another sender still gets in.
    let other = dev_keypair(1);
    let tx = transfer(&other, 0, 1);
    pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    // A byte budget of three transactions' size holds four no longer.
    let size = gridwork_types::Encode::to_bytes(&tx).len();
    let mut pool = Mempool::new(1_000);
    pool.set_limits(3 * size, 100);
    for n in 0..3 {
        let tx = transfer(&key, n, 1);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    let over = transfer(&key, 3, 1);
    assert!(matches!(
        pool.admit(&state, over.clone(), over.hash(), 0),
        Err(MempoolError::FullBytes { .. })
    ));
    pool.take(1);
    pool.admit(&state, over.clone(), over.hash(), 0).unwrap();
}

#[test]
fn refuses_a_duplicate_and_a_full_pool() {
    let (state, key) = setup();
    let mut pool = Mempool::new(1);
    let tx = transfer(&key, 0, 1);
    pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    assert!(matches!(
        pool.admit(&state, tx.clone(), tx.hash(), 0),
        Err(MempoolError::AlreadyPending { .. })
    ));
    let next = transfer(&key, 1, 1);
    assert!(matches!(
        pool.admit(&state, next.clone(), next.hash(), 0),
        Err(MempoolError::Full { capacity: 1 })
    ));
}

#[test]
fn counts_pending_spending_against_the_balance() {
    let (state, key) = setup();
    let mut pool = Mempool::new(10);
    let balance = state.account(&key.address()).balance.0;
    let first = transfer(&key, 0, balance - 5);
    pool.admit(&state, first.clone(), first.hash(), 0).unwrap();
    let second = transfer(&key, 1, 6);
    assert!(matches!(
        pool.admit(&state, second.clone(), second.hash(), 0),
        Err(MempoolError::Invalid(TxError::InsufficientBalance { .. }))
    ));
}

#[test]
fn lookup_by_hash_survives_taking_from_the_front() {
    let (state, key) = setup();
    let mut pool = Mempool::new(10);
    let txs: Vec<_> = (0..4).map(|n| transfer(&key, n, 1)).collect();
    for tx in &txs {
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    pool.take(2);
    assert_eq!(pool.get(&txs[3].hash()), Some(&txs[3]));
    assert_eq!(pool.get(&txs[0].hash()), None);
}

fn paying(key: &Keypair, nonce: u64, fee: u128) -> SignedTx {
    transfer_paying(key, nonce, 1, fee)
}

/// Sybils: many free accounts fill the pool at fee zero. An honest sender is told the fee
/// that gets it in, pays it, and takes the place of the newest cheapest transaction; a
/// Sybil's earlier transactions keep their nonce chain and the Sybil its projection.
#[test]
fn a_better_paying_transaction_takes_the_place_of_the_cheapest_when_full() {
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 6, Params::default())).unwrap();
    let sybils = [dev_keypair(0), dev_keypair(1), dev_keypair(2)];
    let honest = dev_keypair(3);
    let mut pool = Mempool::new(6);
    for n in 0..2 {
        for sybil in &sybils {
            let tx = paying(sybil, n, 0);
            pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
        }
    }
    let free = paying(&honest, 0, 0);
    let Err(MempoolError::Underpriced { fee, needed }) =
        pool.admit(&state, free.clone(), free.hash(), 0)
    else {
        panic!("a free transaction is not admitted into a pool full of free ones");
    };
    assert_eq!(fee, Amount::ZERO);
    assert_eq!(needed, Amount(1));
    let paid = paying(&honest, 0, needed.0);
    pool.admit(&state, paid.clone(), paid.hash(), 0).unwrap();
    assert_eq!(pool.len(), 6);
    assert!(pool.get(&paid.hash()).is_some());
    // The newest of the cheapest went: the last Sybil's nonce 1.
    let gone = paying(&sybils[2], 1, 0);
    assert!(pool.get(&gone.hash()).is_none());
    assert_eq!(pool.next_nonce(&state, &sybils[2].address()), 1);
    // The same fee does not outbid what now pays as much (the honest one is its own
    // sender's tail, and the others pay less): another newcomer replaces a free one.
    let second = paying(&dev_keypair(4), 0, 1);
    pool.admit(&state, second.clone(), second.hash(), 0)
        .unwrap();
    assert_eq!(pool.len(), 6);
    // Blocks take the best-paying first, then arrival order, each sender's in nonce order.
    let taken = pool.take(10);
    assert_eq!(taken[0], paid);
    assert_eq!(taken[1], second);
    let rest: Vec<_> = taken[2..]
        .iter()
        .map(|t| (t.tx.sender(), t.tx.nonce))
        .collect();
    assert_eq!(
        rest,
        vec![
            (sybils[0].address(), 0),
            (sybils[1].address(), 0),
            (sybils[2].address(), 0),
            (sybils[0].address(), 1),
        ]
    );
    assert!(pool.is_empty());
}

/// Room is made only from other senders' transactions: a sender cannot evict its own
/// (that would break its nonce chain), and when the others pay as much, the pool says
/// it is full rather than evicting a transaction for nothing.
#[test]
fn a_full_pool_evicts_nothing_it_cannot_use() {
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 3, Params::default())).unwrap();
    let (a, b) = (dev_keypair(0), dev_keypair(1));
    let mut pool = Mempool::new(2);
    for n in 0..2 {
        let tx = paying(&a, n, 0);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    let own = paying(&a, 2, 1_000);
    assert!(matches!(
        pool.admit(&state, own.clone(), own.hash(), 0),
        Err(MempoolError::Full { capacity: 2 })
    ));
    // The only other sender pays as much per byte as `a`'s queue would with a1: told the
    // fee that outbids it (a1 pays for a0 too), nothing evicted.
    let mut pool = Mempool::new(2);
    let a0 = paying(&a, 0, 0);
    let b0 = paying(&b, 0, 3);
    pool.admit(&state, a0.clone(), a0.hash(), 0).unwrap();
    pool.admit(&state, b0.clone(), b0.hash(), 0).unwrap();
    let a1 = paying(&a, 1, 6);
    assert_eq!(
        pool.admit(&state, a1.clone(), a1.hash(), 0),
        Err(MempoolError::Underpriced {
            fee: Amount(6),
            needed: Amount(7)
        })
    );
    assert!(pool.get(&b0.hash()).is_some() && pool.get(&a0.hash()).is_some());
    let a1 = paying(&a, 1, 7);
    pool.admit(&state, a1.clone(), a1.hash(), 0).unwrap();
    assert!(pool.get(&b0.hash()).is_none());
}

/// A block that refused a transaction breaks its sender's projection only: that
/// sender's later transactions are re-checked and dropped, everyone else's stay.
/// `StuckTail`: a Sybil queues free transactions while there is room, then appends one
/// paying just over honest senders. Judged by its own fee it would evict them, be filed
/// under its queue's low rate, be evicted in turn for a fifth of its fee and never be
/// mined: honest transactions bounced for free, again and again. Judged as its queue will
/// be, it evicts nobody.
#[test]
fn a_paying_transaction_behind_free_ones_is_judged_with_its_queue() {
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 5, Params::default())).unwrap();
    let attacker = dev_keypair(0);
    let (h1, h2) = (dev_keypair(1), dev_keypair(2));
    let mut pool = Mempool::new(6);
    for n in 0..4 {
        let tx = paying(&attacker, n, 0);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    let a = paying(&h1, 0, 1000);
    pool.admit(&state, a.clone(), a.hash(), 0).unwrap();
    let b = paying(&h2, 0, 1000);
    pool.admit(&state, b.clone(), b.hash(), 0).unwrap();
    let shield = paying(&attacker, 4, 1001);
    let err = pool
        .admit(&state, shield.clone(), shield.hash(), 0)
        .unwrap_err();
    // Five transactions paying 1001 together are worth a fifth of one paying 1000.
    assert!(
        matches!(err, MempoolError::Underpriced { needed, .. } if needed.0 > 4_000),
        "{err}"
    );
    assert!(pool.get(&b.hash()).is_some() && pool.get(&a.hash()).is_some());
    // Paying for the whole queue does it, and blocks then take the queue first.
    let whole = paying(&attacker, 4, 6_000);
    pool.admit(&state, whole.clone(), whole.hash(), 0).unwrap();
    let taken = pool.take(5);
    assert!(
        taken.iter().all(|t| t.tx.sender() == attacker.address()),
        "the queue that pays is mined, its tail with it"
    );
}

fn assert_indexes_consistent(pool: &Mempool) {
    let (mut n, mut bytes) = (0, 0);
    assert_eq!(pool.tails.len(), pool.senders.len());
    assert_eq!(pool.ready.len(), pool.senders.len());
    for view in pool.senders.values() {
        assert!(!view.queue.is_empty());
        let fees: u128 = view.queue.iter().map(|h| pool.entries[h].tx.tx.fee.0).sum();
        let b: usize = view.queue.iter().map(|h| pool.entries[h].size).sum();
        assert_eq!((view.fees, view.bytes), (fees, b));
        let (first, last) = (view.queue.front().unwrap(), view.queue.back().unwrap());
        let tail = (
            rate(Amount(fees), b),
            Reverse(pool.entries[last].seq),
            *last,
        );
        let head = (
            Reverse(rate(Amount(fees), b)),
            pool.entries[first].seq,
            *first,
        );
        assert_eq!((view.tail, view.head), (Some(tail), Some(head)));
        assert!(pool.tails.contains(&tail) && pool.ready.contains(&head));
        n += view.queue.len();
        bytes += b;
    }
    assert_eq!((n, bytes), (pool.entries.len(), pool.bytes));
}

/// Admissions, evictions, blocks and re-checks in a seeded random order keep every index
/// (queues, their rates, heads and tails, counts and bytes) in step after every step.
#[test]
fn random_operations_keep_the_indexes_consistent() {
    let (mut state, _) = State::genesis(&Genesis::dev("m", 0, 6, Params::default())).unwrap();
    let keys: Vec<_> = (0..5).map(dev_keypair).collect();
    let mut pool = Mempool::new(12);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut now, mut admitted, mut evicted_any) = (1, 0, false);
    for _ in 0..20_000 {
        match next() % 10 {
            0 => {
                let taken = pool.take((next() % 4) as usize);
                now += 1;
                let built = state.build_block(now, Address([0; 20]), taken);
                let senders: std::collections::BTreeSet<_> =
                    built.rejected.iter().map(|(t, _)| t.tx.sender()).collect();
                pool.revalidate(&state, now, senders);
            }
            1 => {
                // A re-check for no reason drops nothing.
                let k = &keys[(next() % 5) as usize];
                assert_eq!(pool.revalidate(&state, now, [k.address()]), 0);
            }
            _ => {
                let k = &keys[(next() % 5) as usize];
                let nonce = pool.next_nonce(&state, &k.address());
                let before = pool.len();
                let tx = paying(k, nonce, u128::from(next() % 40));
                if pool.admit(&state, tx.clone(), tx.hash(), now).is_ok() {
                    admitted += 1;
                    evicted_any |= pool.len() <= before;
                }
            }
        }
        assert_indexes_consistent(&pool);
    }
    assert!(admitted > 1000 && evicted_any, "{admitted}");
}

/// `TailShield`: a Sybil queues free transactions and ends the queue with one well-paid
/// one. Ranked by that last fee alone, the free ones ahead of it could never be evicted
/// and honest senders would be told to outbid a fee paid once per queue. Ranked by the
/// queue's fees over its bytes, a newcomer paying more per byte than the queue as a whole
/// takes its place.
#[test]
fn a_well_paid_last_transaction_does_not_shield_a_free_queue() {
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 3, Params::default())).unwrap();
    let (sybil, honest) = (dev_keypair(0), dev_keypair(1));
    let mut pool = Mempool::new(4);
    for n in 0..3 {
        let tx = paying(&sybil, n, 0);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    let shield = paying(&sybil, 3, 1_000_000);
    pool.admit(&state, shield.clone(), shield.hash(), 0)
        .unwrap();
    // A quarter of the shield's fee, and a little more: above what the queue pays per byte.
    let offer = paying(&honest, 0, 250_001);
    pool.admit(&state, offer.clone(), offer.hash(), 0)
        .expect("outbids the queue as a whole");
    assert!(pool.get(&shield.hash()).is_none(), "the shield went");
    // Now the queue is three free transactions: any fee outbids it.
    let next = paying(&honest, 1, 1);
    pool.admit(&state, next.clone(), next.hash(), 0).unwrap();
    assert_eq!(pool.len(), 4);
    assert_eq!(pool.next_nonce(&state, &sybil.address()), 2);
    // Below the queue's rate, the refusal names the fee that would do.
    let (state, _) = State::genesis(&Genesis::dev("m", 0, 3, Params::default())).unwrap();
    let mut pool = Mempool::new(4);
    for n in 0..3 {
        let tx = paying(&sybil, n, 0);
        pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
    }
    pool.admit(&state, shield.clone(), shield.hash(), 0)
        .unwrap();
    let low = paying(&honest, 0, 249_000);
    let err = pool.admit(&state, low.clone(), low.hash(), 0).unwrap_err();
    assert!(
        matches!(err, MempoolError::Underpriced { needed, .. } if needed.0 <= 250_001),
        "{err}"
    );
}

#[test]
fn revalidation_drops_only_the_refused_senders_later_transactions() {
    let (mut state, _) = State::genesis(&Genesis::dev("m", 0, 3, Params::default())).unwrap();
    let (a, b) = (dev_keypair(0), dev_keypair(1));
    let mut pool = Mempool::new(100);
    for n in 0..3 {
        for key in [&a, &b] {
            let tx = paying(key, n, 0);
            pool.admit(&state, tx.clone(), tx.hash(), 0).unwrap();
        }
    }
    // The block commits only b's first (a's was "refused").
    let taken = pool.take(2);
    assert_eq!(taken[0].tx.sender(), a.address());
    let built = state.build_block(1, Address([0; 20]), vec![taken[1].clone()]);
    assert!(built.rejected.is_empty());
    assert_eq!(pool.revalidate(&state, 1, [a.address()]), 2);
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.next_nonce(&state, &a.address()), 0);
    assert_eq!(pool.next_nonce(&state, &b.address()), 3);
    let rest = pool.take(10);
    assert!(rest.iter().all(|t| t.tx.sender() == b.address()));
}
