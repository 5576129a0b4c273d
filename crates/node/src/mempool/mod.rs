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
//! **A fee market when full.** Accounts cost nothing to make, so the per-sender share alone
//! does not stop a party with many funded accounts from filling the pool. A sender's queue is
//! worth all its fees over all its bytes (what the pool earns by keeping it and mining it
//! whole). When the pool is full (by count or bytes), a transaction whose queue, with it, pays
//! more per byte takes the place of the cheapest queues' last transactions (so no sender's
//! nonce chain breaks); one that does not is refused with the fee that would
//! ([`MempoolError::Underpriced`]). Blocks take the next transaction of the best-paying queue
//! first, so each sender's transactions stay in nonce order, a well-paid transaction behind
//! free ones pulls them in (and is paid), and among equal rates the oldest goes first: with
//! the default fee of zero that is arrival order. One well-paid transaction at the end of a
//! queue of free ones therefore neither shields them (`TailShield`) nor evicts better queues
//! without being mined (`StuckTail`).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};

use gridwork_protocol::{Account, State, TxError};
use gridwork_types::{Address, Amount, Hash, SignedTx};

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
    /// At capacity, and nothing pending that another sender could lose its place for.
    #[error("the mempool is full ({capacity} transactions); retry after the next block")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// Its pending transactions fill the byte budget, and nothing pending that another
    /// sender could lose its place for.
    #[error("the mempool holds {max_bytes} bytes of transactions, its limit; retry after the next block")]
    FullBytes {
        /// The byte limit.
        max_bytes: usize,
    },
    /// Full, and the transaction pays no more per byte than those it would replace.
    #[error(
        "the mempool is full and this transaction pays {fee} GRID; one paying at least {needed} GRID takes the place of cheaper ones (or retry after the next block)"
    )]
    Underpriced {
        /// What it pays.
        fee: Amount,
        /// The fee that would have it admitted now.
        needed: Amount,
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

/// A fee per byte, scaled so that small fees on large transactions still compare.
type Rate = u128;

const RATE_SCALE: u32 = 16;

fn rate(fee: Amount, size: usize) -> Rate {
    fee.0.saturating_mul(1 << RATE_SCALE) / size.max(1) as u128
}

/// The least fee for `size` bytes whose rate is above `rate`.
fn fee_above(rate: Rate, size: usize) -> Amount {
    let scaled = rate.saturating_add(1).saturating_mul(size as u128);
    Amount(scaled.div_ceil(1 << RATE_SCALE))
}

#[derive(Debug)]
struct Entry {
    sender: Address,
    tx: SignedTx,
    size: usize,
    /// Arrival order.
    seq: u64,
    /// The sender's projected account before this transaction: what it goes back to if
    /// this one, its sender's last, is evicted (re-checking the sender's queue instead would
    /// cost up to `max_per_sender` checks under the node lock per cheap eviction).
    before: Account,
}

#[derive(Debug, Default)]
struct SenderView {
    projected: Account,
    /// Pending transactions in nonce order.
    queue: VecDeque<Hash>,
    /// Their fees and encoded bytes, all together.
    fees: u128,
    bytes: usize,
    /// Where its last transaction is in [`Mempool::tails`], and its first in
    /// [`Mempool::ready`].
    tail: Option<TailKey>,
    head: Option<ReadyKey>,
}

/// A sender's last transaction, ranked for eviction by what its whole queue pays per byte,
/// then newest first.
type TailKey = (Rate, Reverse<u64>, Hash);

/// A sender's first transaction, ranked for blocks by what its whole queue pays per byte,
/// then oldest first.
type ReadyKey = (Reverse<Rate>, u64, Hash);

impl SenderView {
    /// What the queue pays per byte, all its transactions together.
    fn rate(&self) -> Rate {
        rate(Amount(self.fees), self.bytes)
    }

    /// Files the queue's first transaction in `ready` and its last in `tails`, both under
    /// the queue's rate (after any change to the queue): what protects a queue from
    /// eviction is also what gets it into blocks.
    fn refile(
        &mut self,
        ready: &mut BTreeSet<ReadyKey>,
        tails: &mut BTreeSet<TailKey>,
        entries: &HashMap<Hash, Entry>,
    ) {
        if let Some(old) = self.tail.take() {
            tails.remove(&old);
        }
        if let Some(old) = self.head.take() {
            ready.remove(&old);
        }
        let rate = self.rate();
        if let Some(last) = self.queue.back() {
            let key = (rate, Reverse(entries[last].seq), *last);
            tails.insert(key);
            self.tail = Some(key);
        }
        if let Some(first) = self.queue.front() {
            let key = (Reverse(rate), entries[first].seq, *first);
            ready.insert(key);
            self.head = Some(key);
        }
    }

    fn add(&mut self, entry: &Entry) {
        self.fees = self.fees.saturating_add(entry.tx.tx.fee.0);
        self.bytes += entry.size;
    }

    fn subtract(&mut self, entry: &Entry) {
        self.fees = self.fees.saturating_sub(entry.tx.tx.fee.0);
        self.bytes -= entry.size;
    }
}

/// The pending transactions of a node.
#[derive(Debug)]
pub struct Mempool {
    entries: HashMap<Hash, Entry>,
    senders: HashMap<Address, SenderView>,
    /// Each sender's next transaction, best-paying queue first, then oldest.
    ready: BTreeSet<ReadyKey>,
    /// Each sender's last transaction, cheapest queue first, then newest: what a
    /// better-paying newcomer replaces when the pool is full.
    tails: BTreeSet<TailKey>,
    next_seq: u64,
    capacity: usize,
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
            entries: HashMap::new(),
            senders: HashMap::new(),
            ready: BTreeSet::new(),
            tails: BTreeSet::new(),
            next_seq: 0,
            capacity,
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
        self.entries.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A pending transaction by hash.
    pub fn get(&self, hash: &Hash) -> Option<&SignedTx> {
        self.entries.get(hash).map(|e| &e.tx)
    }

    /// The nonce the sender's next transaction should carry, counting pending ones.
    pub fn next_nonce(&self, state: &State, sender: &Address) -> u64 {
        self.senders
            .get(sender)
            .map_or_else(|| state.account(sender).nonce, |v| v.projected.nonce)
    }

    /// Admits a transaction whose signature was checked, as of time `now_ms`. A full pool
    /// admits it in place of cheaper ones (see the module docs).
    pub fn admit(
        &mut self,
        state: &State,
        tx: SignedTx,
        hash: Hash,
        now_ms: u64,
    ) -> Result<(), MempoolError> {
        if self.entries.contains_key(&hash) {
            return Err(MempoolError::AlreadyPending { hash });
        }
        let size = gridwork_types::Encode::to_bytes(&tx).len();
        let sender = tx.tx.sender();
        let pending = self.senders.get(&sender).map_or(0, |v| v.queue.len());
        if pending >= self.max_per_sender {
            return Err(MempoolError::SenderFull {
                sender,
                max: self.max_per_sender,
            });
        }
        let (before, projected) = self.check(state, &tx, now_ms)?;
        let evict = self.room_for(&tx, size)?;
        for hash in evict {
            self.evict_tail(hash);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert(tx, hash, size, seq, before, projected);
        Ok(())
    }

    /// The sender's projected account before and after `tx`, or why the ledger would
    /// refuse it.
    fn check(
        &self,
        state: &State,
        tx: &SignedTx,
        now_ms: u64,
    ) -> Result<(Account, Account), TxError> {
        let sender = tx.tx.sender();
        let before = match self.senders.get(&sender) {
            Some(view) => view.projected.clone(),
            None => state.account(&sender),
        };
        let mut projected = before.clone();
        state.check_tx(
            &tx.tx,
            &mut projected,
            now_ms.max(state.head().timestamp_ms),
        )?;
        Ok((before, projected))
    }

    /// The pending transactions `tx` (of `size` bytes) takes the place of, or why it cannot
    /// have one: only other senders' last transactions paying less per byte make room.
    fn room_for(&self, tx: &SignedTx, size: usize) -> Result<Vec<Hash>, MempoolError> {
        let over_count = (self.entries.len() + 1).saturating_sub(self.capacity);
        let over_bytes = (self.bytes + size).saturating_sub(self.max_bytes);
        if over_count == 0 && over_bytes == 0 {
            return Ok(Vec::new());
        }
        let sender = tx.tx.sender();
        // Judged as it will be filed: with the rest of its sender's queue.
        let (queued_fees, queued_bytes) = self
            .senders
            .get(&sender)
            .map_or((0, 0), |v| (v.fees, v.bytes));
        let offered = rate(
            Amount(queued_fees.saturating_add(tx.tx.fee.0)),
            queued_bytes + size,
        );
        let (mut count, mut bytes) = (0, 0);
        let mut evict = Vec::new();
        for &(cheapest, _, hash) in &self.tails {
            let entry = &self.entries[&hash];
            if entry.sender == sender {
                continue;
            }
            if cheapest >= offered {
                // Room is there at a higher fee: say which.
                return Err(MempoolError::Underpriced {
                    fee: tx.tx.fee,
                    needed: fee_above(cheapest, queued_bytes + size)
                        .saturating_sub(Amount(queued_fees)),
                });
            }
            evict.push(hash);
            count += 1;
            bytes += entry.size;
            if count >= over_count && bytes >= over_bytes {
                return Ok(evict);
            }
        }
        // Even every other sender's last transaction would not make room.
        Err(if over_count > 0 {
            MempoolError::Full {
                capacity: self.capacity,
            }
        } else {
            MempoolError::FullBytes {
                max_bytes: self.max_bytes,
            }
        })
    }

    fn insert(
        &mut self,
        tx: SignedTx,
        hash: Hash,
        size: usize,
        seq: u64,
        before: Account,
        projected: Account,
    ) {
        let sender = tx.tx.sender();
        let entry = Entry {
            sender,
            tx,
            size,
            seq,
            before,
        };
        let view = self.senders.entry(sender).or_default();
        view.projected = projected;
        view.queue.push_back(hash);
        view.add(&entry);
        self.bytes += size;
        self.entries.insert(hash, entry);
        view.refile(&mut self.ready, &mut self.tails, &self.entries);
    }

    /// Drops `hash`, the last pending transaction of its sender, whose projected account goes
    /// back to what it was before that transaction.
    fn evict_tail(&mut self, hash: Hash) {
        let Some(entry) = self.entries.remove(&hash) else {
            return;
        };
        self.bytes -= entry.size;
        let view = self
            .senders
            .get_mut(&entry.sender)
            .expect("a pending transaction's sender has a view");
        view.queue.pop_back();
        view.subtract(&entry);
        view.refile(&mut self.ready, &mut self.tails, &self.entries);
        if view.queue.is_empty() {
            self.senders.remove(&entry.sender);
            return;
        }
        view.projected = entry.before;
    }

    /// Removes and returns up to `max` transactions for the next block: the best-paying
    /// sender's next one first, then the oldest.
    pub fn take(&mut self, max: usize) -> Vec<SignedTx> {
        let mut out = Vec::with_capacity(max.min(self.entries.len()));
        while out.len() < max {
            let Some((_, _, hash)) = self.ready.pop_first() else {
                break;
            };
            let entry = self
                .entries
                .remove(&hash)
                .expect("a ready transaction is pending");
            self.bytes -= entry.size;
            let view = self
                .senders
                .get_mut(&entry.sender)
                .expect("a pending transaction's sender has a view");
            // Popped from `ready` already: forget that key before refiling.
            view.head = None;
            view.queue.pop_front();
            view.subtract(&entry);
            view.refile(&mut self.ready, &mut self.tails, &self.entries);
            if view.queue.is_empty() {
                self.senders.remove(&entry.sender);
            }
            out.push(entry.tx);
        }
        out
    }

    /// Re-checks the pending transactions of `senders` against `state`, dropping what no
    /// longer applies. Needed when a block refused some of what the mempool had admitted,
    /// which breaks the projection of those senders (and of nobody else: a sender's
    /// projection counts only its own transactions). Returns how many were dropped.
    pub fn revalidate(
        &mut self,
        state: &State,
        now_ms: u64,
        senders: impl IntoIterator<Item = Address>,
    ) -> usize {
        let mut dropped = 0;
        for sender in senders {
            let Some(view) = self.senders.remove(&sender) else {
                continue;
            };
            if let Some(tail) = view.tail {
                self.tails.remove(&tail);
            }
            if let Some(head) = view.head {
                self.ready.remove(&head);
            }
            let mut entries = Vec::with_capacity(view.queue.len());
            for hash in view.queue {
                let entry = self.entries.remove(&hash).expect("queued is pending");
                self.bytes -= entry.size;
                entries.push((hash, entry));
            }
            for (hash, entry) in entries {
                // A dropped transaction's error is not reported: its sender sees it stay
                // pending until it disappears, then resubmits with the nonce `next_nonce`
                // gives. Its place is kept (same arrival order); the room was its own.
                match self.check(state, &entry.tx, now_ms) {
                    Ok((before, projected)) => {
                        self.insert(entry.tx, hash, entry.size, entry.seq, before, projected)
                    }
                    Err(_) => dropped += 1,
                }
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests;
