//! The block transition: applying, building and checking blocks, each transaction applied or
//! refused (and charged), rolled back or committed as a whole, finished jobs archived.

use gridwork_types::{
    tx_root, verify_batch, Address, Amount, Block, Encode, Hash, Header, SignedTx, Transaction,
};

use crate::account::Account;
use crate::error::{BlockError, TxError};
use crate::market::{ArchivedJob, TaskKey};
use crate::receipt::{Event, Receipt};

use super::sender::apply_to_sender;
use super::State;

/// What applying a block did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOutcome {
    /// One receipt per transaction.
    pub receipts: Vec<Receipt>,
    /// What the block itself triggered before its transactions (deadlines).
    pub events: Vec<Event>,
}

/// A block made by [`State::build_block`], already applied.
#[derive(Debug, Clone)]
pub struct BuiltBlock {
    /// The block.
    pub block: Block,
    /// One receipt per transaction in the block.
    pub receipts: Vec<Receipt>,
    /// What the block itself triggered before its transactions (deadlines).
    pub events: Vec<Event>,
    /// Candidates left out, with the reason: their sender's side did not apply (nonce,
    /// fee, balance), so they are not in the block and their nonces are free.
    pub rejected: Vec<(SignedTx, TxError)>,
    /// Transactions in the block that the market refused (position in the block, why): they
    /// paid their fee and spent their nonce, and their receipt holds [`Event::TxFailed`].
    pub failed: Vec<(u32, TxError)>,
}

impl State {
    /// Applies a block made elsewhere (or replayed from storage), checking everything:
    /// height, parent, time, transaction root, signatures, each transaction and the state root.
    /// All or nothing.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockOutcome, BlockError> {
        let header = &block.header;
        self.check_header_links(header)?;
        let hashes: Vec<Hash> = block.txs.iter().map(SignedTx::hash).collect();
        if header.tx_count as usize != block.txs.len() || tx_root(&hashes) != header.tx_root {
            return Err(BlockError::TxRootMismatch);
        }
        self.verify_signatures(&block.txs)?;
        let events = self.run_deadlines(header.timestamp_ms);
        let mut receipts = Vec::with_capacity(block.txs.len());
        for (index, (signed, hash)) in block.txs.iter().zip(&hashes).enumerate() {
            match self.apply_tx(&signed.tx, header, index as u32, *hash) {
                Ok((receipt, _)) => receipts.push(receipt),
                Err(error) => {
                    self.rollback();
                    return Err(BlockError::InvalidTx { index, error });
                }
            }
        }
        self.archive_finished();
        self.rehash_dirty();
        let computed = self.root();
        if computed != header.state_root {
            self.rollback();
            return Err(BlockError::StateRootMismatch {
                header: header.state_root,
                computed,
            });
        }
        self.commit(header.clone());
        Ok(BlockOutcome { receipts, events })
    }

    /// Checks signatures of `txs` for this chain (batched); the first bad one is an error.
    pub fn verify_signatures(&self, txs: &[SignedTx]) -> Result<(), BlockError> {
        let messages: Vec<Vec<u8>> = txs
            .iter()
            .map(|s| s.tx.signing_message(&self.chain_id))
            .collect();
        let items: Vec<_> = txs
            .iter()
            .zip(&messages)
            .map(|(s, m)| (s.tx.from, m.as_slice(), s.signature))
            .collect();
        let results = verify_batch(&items);
        match results
            .into_iter()
            .enumerate()
            .find_map(|(i, r)| r.err().map(|e| (i, e)))
        {
            None => Ok(()),
            Some((index, source)) => Err(BlockError::InvalidTx {
                index,
                error: TxError::BadSignature {
                    sender: txs[index].tx.sender(),
                    source,
                },
            }),
        }
    }

    /// Builds and applies the next block from `candidates`, whose signatures the caller has
    /// already checked (the mempool does). Candidates that do not apply are left out and
    /// returned with the reason. The block time is `timestamp_ms`, raised to the parent's if
    /// it is earlier.
    pub fn build_block(
        &mut self,
        timestamp_ms: u64,
        proposer: Address,
        candidates: Vec<SignedTx>,
    ) -> BuiltBlock {
        let mut header = Header {
            height: self.head.height + 1,
            parent: self.head_hash,
            timestamp_ms: timestamp_ms.max(self.head.timestamp_ms),
            proposer,
            tx_count: 0,
            tx_root: Hash::ZERO,
            state_root: Hash::ZERO,
        };
        let events = self.run_deadlines(header.timestamp_ms);
        let mut txs = Vec::with_capacity(candidates.len());
        let mut hashes = Vec::with_capacity(candidates.len());
        let mut receipts = Vec::with_capacity(candidates.len());
        let mut rejected = Vec::new();
        let mut failed = Vec::new();
        for signed in candidates {
            let hash = signed.hash();
            match self.apply_tx(&signed.tx, &header, txs.len() as u32, hash) {
                Ok((receipt, refusal)) => {
                    if let Some(error) = refusal {
                        failed.push((txs.len() as u32, error));
                    }
                    receipts.push(receipt);
                    hashes.push(hash);
                    txs.push(signed);
                }
                Err(error) => rejected.push((signed, error)),
            }
        }
        self.archive_finished();
        self.rehash_dirty();
        header.tx_count = txs.len() as u32;
        header.tx_root = tx_root(&hashes);
        header.state_root = self.root();
        self.commit(header.clone());
        BuiltBlock {
            block: Block { header, txs },
            receipts,
            events,
            rejected,
            failed,
        }
    }

    fn check_header_links(&self, header: &Header) -> Result<(), BlockError> {
        if header.height != self.head.height + 1 {
            return Err(BlockError::WrongHeight {
                head: self.head.height,
                got: header.height,
            });
        }
        if header.parent != self.head_hash {
            return Err(BlockError::WrongParent {
                head: self.head_hash,
                got: header.parent,
            });
        }
        if header.timestamp_ms < self.head.timestamp_ms {
            return Err(BlockError::TimeWentBackwards {
                parent: self.head.timestamp_ms,
                got: header.timestamp_ms,
            });
        }
        Ok(())
    }

    /// Applies one transaction; on error nothing changed. A transaction whose own side
    /// applies but whose market action is refused is charged its fee and nonce and does
    /// nothing else: the receipt says why ([`Event::TxFailed`]), and so does the second value.
    fn apply_tx(
        &mut self,
        tx: &Transaction,
        header: &Header,
        index: u32,
        tx_hash: Hash,
    ) -> Result<(Receipt, Option<TxError>), TxError> {
        let sender = tx.sender();
        let now = header.timestamp_ms;
        let before = self.account(&sender);
        let mut account = before.clone();
        let credit = apply_to_sender(&mut account, tx, &self.params, now)?;
        if let Err(refusal) = self.check_market(&tx.kind, sender, &account, now) {
            return self.charge_refused(tx, before, header, index, tx_hash, refusal);
        }
        let pool = self
            .rewards_pool
            .checked_add(credit.fee)
            .ok_or(TxError::Overflow)?;
        let recipient = match credit.to {
            Some((to, amount)) if to == sender => {
                account.balance = account
                    .balance
                    .checked_add(amount)
                    .ok_or(TxError::Overflow)?;
                None
            }
            Some((to, amount)) => {
                let mut r = self.account(&to);
                r.balance = r.balance.checked_add(amount).ok_or(TxError::Overflow)?;
                Some((to, r))
            }
            None => None,
        };
        // Everything is checked; from here on nothing fails.
        self.write_account(sender, account);
        if let Some((to, r)) = recipient {
            self.write_account(to, r);
        }
        if pool != self.rewards_pool {
            self.set_pool(pool);
        }
        let mut events: Vec<Event> = credit.event.into_iter().collect();
        events.extend(self.execute_market(&tx.kind, sender, tx_hash, now));
        let receipt = Receipt {
            tx_hash,
            height: header.height,
            index,
            fee: credit.fee,
            events,
        };
        Ok((receipt, None))
    }

    /// A transaction the market refused after its sender's side applied: only its nonce and
    /// fee are spent (the sender's side already checked that the fee is spendable).
    fn charge_refused(
        &mut self,
        tx: &Transaction,
        mut account: Account,
        header: &Header,
        index: u32,
        tx_hash: Hash,
        refusal: TxError,
    ) -> Result<(Receipt, Option<TxError>), TxError> {
        let sender = tx.sender();
        account.nonce += 1;
        if account.public_key.is_none() {
            account.public_key = Some(tx.from);
        }
        account.balance = account
            .balance
            .checked_sub(tx.fee)
            .ok_or(TxError::Overflow)?;
        let pool = self
            .rewards_pool
            .checked_add(tx.fee)
            .ok_or(TxError::Overflow)?;
        self.write_account(sender, account);
        if pool != self.rewards_pool {
            self.set_pool(pool);
        }
        let receipt = Receipt {
            tx_hash,
            height: header.height,
            index,
            fee: tx.fee,
            events: vec![Event::TxFailed {
                sender,
                code: refusal.code().into(),
                reason: refusal.to_string(),
            }],
        };
        Ok((receipt, Some(refusal)))
    }

    /// Checks a transaction the way the block will, against the sender's `projected` account
    /// (committed account plus pending transactions) for its own side, and the committed
    /// state for the market. The mempool admits what this accepts.
    pub fn check_tx(
        &self,
        tx: &Transaction,
        projected: &mut Account,
        now_ms: u64,
    ) -> Result<(), TxError> {
        let mut next = projected.clone();
        apply_to_sender(&mut next, tx, &self.params, now_ms)?;
        self.check_market(&tx.kind, tx.sender(), &next, now_ms)?;
        *projected = next;
        Ok(())
    }

    fn write_account(&mut self, address: Address, account: Account) {
        self.accounts.insert(address, account);
    }

    fn rollback(&mut self) {
        self.finishing.clear();
        self.archived.truncate(self.archived_before);
        self.accounts.rollback();
        self.providers.rollback();
        self.jobs.rollback();
        self.tasks.rollback();
        self.open_tasks.rollback();
        self.services.rollback();
        self.due_services.rollback();
        if let Some(pool) = self.undo_pool.take() {
            self.rewards_pool = pool;
        }
    }

    fn commit(&mut self, header: Header) {
        self.archived_before = self.archived.len();
        self.accounts.commit();
        self.providers.commit();
        self.jobs.commit();
        self.tasks.commit();
        self.open_tasks.commit();
        self.services.commit();
        self.due_services.commit();
        self.undo_pool = None;
        self.head_hash = header.hash();
        self.head = header;
    }

    /// Moves the jobs that finished in this block, with their tasks, out of the hot state
    /// into the archive (stored with the block, outside the state root): memory and the state
    /// root follow open work, not history. Runs at the end of every block, so every replica
    /// drops the same jobs at the same height.
    fn archive_finished(&mut self) {
        for id in std::mem::take(&mut self.finishing) {
            let Some(job) = self.jobs.get(&id).cloned() else {
                continue;
            };
            let keys: Vec<TaskKey> = self.tasks_of(&id).map(|(k, _)| *k).collect();
            let mut tasks = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(t) = self.tasks.get(&key).cloned() {
                    tasks.push(t);
                }
                self.tasks.remove(&key);
                self.open_tasks.remove(&key);
            }
            self.jobs.remove(&id);
            let archived = ArchivedJob { job, tasks };
            self.archived.push((
                super::entry_key(super::PREFIX_ARCHIVE, &id),
                archived.to_bytes(),
            ));
        }
    }

    /// Moves a service that closed for good (its settle window over, its escrow returned)
    /// out of the hot state into the archive, as [`State::archive_finished`] does for jobs:
    /// a requester that opens and closes services leaves no state behind it.
    pub(crate) fn archive_service(&mut self, id: Hash, service: crate::Service) {
        self.services.remove(&id);
        self.due_services.remove(&id);
        self.archived
            .push((super::service_archive_key(&id), service.to_bytes()));
    }

    fn rehash_dirty(&mut self) {
        self.accounts.rehash();
        self.providers.rehash();
        self.jobs.rehash();
        self.tasks.rehash();
        self.open_tasks.rehash();
        self.services.rehash();
        self.due_services.rehash();
    }

    /// Sets the rewards pool, remembering the value before the block for a rollback.
    pub(crate) fn set_pool(&mut self, pool: Amount) {
        self.undo_pool.get_or_insert(self.rewards_pool);
        self.rewards_pool = pool;
    }
}
