//! Transactions admitted but not yet in a block.
//!
//! Admission checks each transaction against the sender's *projected* account: the committed
//! account with the sender's pending transactions already applied. So a sender can queue
//! several transactions in nonce order, and each is checked for nonce, fee, balance and vault
//! rules exactly as the block will check it. Market transactions (bids, commits, reveals) are
//! checked against the committed market state: a worker waits for its registration to be
//! committed before it bids. Credits a sender is about to receive from others
//! are not counted until they are committed (a conservative choice: admission never accepts
//! what the block would refuse).
//!
//! Signatures are checked by the caller before admission (in batches, outside the node lock).
//!
//! Blocks take transactions in arrival order, which keeps each sender's transactions in nonce
//! order.

use std::collections::{HashMap, VecDeque};

use gridwork_protocol::{Account, State, TxError};
use gridwork_types::{Address, Hash, SignedTx};

/// Why the mempool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// Already waiting.
    #[error("transaction {hash} is already pending")]
    AlreadyPending {
        /// Its hash.
        hash: Hash,
    },
    /// At capacity.
    #[error("the mempool is full ({capacity} transactions); retry after the next block")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// Its pending transactions fill the byte budget.
    #[error("the mempool holds {max_bytes} bytes of transactions, its limit; retry after the next block")]
    FullBytes {
        /// The byte limit.
        max_bytes: usize,
    },
    /// The sender has as many transactions waiting as one sender may.
    #[error(
        "{sender} has {max} transactions waiting, the most one sender may; wait for the next block"
    )]
    SenderFull {
        /// The sender.
        sender: Address,
        /// The limit.
        max: usize,
    },
    /// The ledger would refuse it.
    #[error(transparent)]
    Invalid(#[from] TxError),
}

#[derive(Debug)]
struct Entry {
    hash: Hash,
    sender: Address,
    tx: SignedTx,
    size: usize,
}

#[derive(Debug)]
struct SenderView {
    projected: Account,
    pending: usize,
}

/// The pending transactions of a node.
#[derive(Debug)]
pub struct Mempool {
    queue: VecDeque<Entry>,
    by_hash: HashMap<Hash, usize>,
    senders: HashMap<Address, SenderView>,
    capacity: usize,
    /// Index in `queue` of its first element, so `by_hash` positions stay valid as the
    /// front is taken.
    taken: usize,
    /// Encoded bytes of what is pending, and the most there may be.
    bytes: usize,
    max_bytes: usize,
    /// The most transactions one sender may have pending.
    max_per_sender: usize,
}

/// Default byte budget of the mempool (what pending transactions may occupy).
pub(crate) const DEFAULT_MEMPOOL_MAX_BYTES: usize = 256 << 20;
/// Default for how many transactions one sender may have pending.
pub(crate) const DEFAULT_MEMPOOL_MAX_PER_SENDER: usize = 4096;

impl Mempool {
    /// An empty mempool holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Self {
        Mempool {
            queue: VecDeque::new(),
            by_hash: HashMap::new(),
            senders: HashMap::new(),
            capacity,
            taken: 0,
            bytes: 0,
            max_bytes: DEFAULT_MEMPOOL_MAX_BYTES,
            max_per_sender: DEFAULT_MEMPOOL_MAX_PER_SENDER,
        }
    }

    /// Bounds what pending transactions may occupy, in all and per sender.
    pub fn set_limits(&mut self, max_bytes: usize, max_per_sender: usize) {
        self.max_bytes = max_bytes.max(1);
        self.max_per_sender = max_per_sender.max(1);
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A pending transaction by hash.
    pub fn get(&self, hash: &Hash) -> Option<&SignedTx> {
        let pos = self.by_hash.get(hash)?;
        self.queue.get(pos - self.taken).map(|e| &e.tx)
    }

    /// The nonce the sender's next transaction should carry, counting pending ones.
    pub fn next_nonce(&self, state: &State, sender: &Address) -> u64 {
        self.senders
            .get(sender)
            .map_or_else(|| state.account(sender).nonce, |v| v.projected.nonce)
    }

    /// Admits a transaction whose signature was checked, as of time `now_ms`.
    pub fn admit(
        &mut self,
        state: &State,
        tx: SignedTx,
        hash: Hash,
        now_ms: u64,
    ) -> Result<(), MempoolError> {
        if self.by_hash.contains_key(&hash) {
            return Err(MempoolError::AlreadyPending { hash });
        }
        if self.queue.len() >= self.capacity {
            return Err(MempoolError::Full {
                capacity: self.capacity,
            });
        }
        let size = gridwork_types::Encode::to_bytes(&tx).len();
        if self.bytes + size > self.max_bytes {
            return Err(MempoolError::FullBytes {
                max_bytes: self.max_bytes,
            });
        }
        let sender = tx.tx.sender();
        if self
            .senders
            .get(&sender)
            .is_some_and(|v| v.pending >= self.max_per_sender)
        {
            return Err(MempoolError::SenderFull {
                sender,
                max: self.max_per_sender,
            });
        }
        let mut projected = match self.senders.get(&sender) {
            Some(view) => view.projected.clone(),
            None => state.account(&sender),
        };
        state.check_tx(
            &tx.tx,
            &mut projected,
            now_ms.max(state.head().timestamp_ms),
        )?;
        let view = self.senders.entry(sender).or_insert(SenderView {
            projected: Account::default(),
            pending: 0,
        });
        view.projected = projected;
        view.pending += 1;
        self.by_hash.insert(hash, self.taken + self.queue.len());
        self.queue.push_back(Entry {
            hash,
            sender,
            tx,
            size,
        });
        self.bytes += size;
        Ok(())
    }

    /// Removes and returns up to `max` transactions, oldest first, for the next block.
    pub fn take(&mut self, max: usize) -> Vec<SignedTx> {
        let n = max.min(self.queue.len());
        let mut out = Vec::with_capacity(n);
        for entry in self.queue.drain(..n) {
            self.bytes -= entry.size;
            self.by_hash.remove(&entry.hash);
            if let Some(view) = self.senders.get_mut(&entry.sender) {
                view.pending -= 1;
                if view.pending == 0 {
                    self.senders.remove(&entry.sender);
                }
            }
            out.push(entry.tx);
        }
        self.taken += n;
        out
    }

    /// Re-checks everything pending against `state`, dropping what no longer applies. Needed
    /// only when a block refused some of what the mempool had admitted, which breaks the
    /// projection of those senders. Returns how many were dropped.
    pub fn revalidate(&mut self, state: &State, now_ms: u64) -> usize {
        let entries: Vec<Entry> = self.queue.drain(..).collect();
        self.taken = 0;
        self.bytes = 0;
        self.by_hash.clear();
        self.senders.clear();
        let before = entries.len();
        for entry in entries {
            // A dropped transaction's error is not reported: its sender sees it stay pending
            // until it disappears, then resubmits with the nonce `next_nonce` gives.
            let _ = self.admit(state, entry.tx, entry.hash, now_ms);
        }
        before - self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_protocol::{dev_keypair, Genesis, Params};
    use gridwork_types::{Amount, Keypair, Transaction, TxKind};

    fn setup() -> (State, Keypair) {
        let (state, _) = State::genesis(&Genesis::dev("m", 0, 2, Params::default())).unwrap();
        (state, dev_keypair(0))
    }

    fn transfer(key: &Keypair, nonce: u64, amount: u128) -> SignedTx {
        Transaction {
            from: key.public(),
            nonce,
            fee: Amount::ZERO,
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
}
