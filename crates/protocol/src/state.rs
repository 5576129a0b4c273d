//! The ledger state and the block transition.
//!
//! # State root
//!
//! Each map of the state (accounts today; providers, jobs and tasks as the market lands) is a
//! [`HashedMap`]: 256 buckets, only the touched ones rehashed per block, so a block's cost
//! grows with what it changes, not with the size of the state. The root is BLAKE3 over a
//! domain tag, the globals (chain id, parameters, supply, rewards pool) and each map's root.
//! The layout is specified in `docs/encoding.md`.
//!
//! # Atomicity
//!
//! Every write during a block goes through a [`HashedMap`], which remembers the previous value
//! the first time a key is touched. A block that fails part-way restores those values, so a
//! refused block leaves no trace.
//!
//! # Persistence
//!
//! [`State::take_changes`] hands storage the entries touched since the last call as
//! `(key, value)` byte pairs, the key prefixed by the map it belongs to
//! ([`StateChanges`]); [`State::from_parts`] rebuilds the state from all stored entries.

use gridwork_types::{
    tx_root, verify_batch, Address, Amount, Block, Decode, DecodeError, Encode, Hash, Header,
    SignedTx, Transaction, TxKind,
};

use crate::account::{Account, Unbonding, Vesting};
use crate::error::{BlockError, GenesisError, TxError};
use crate::genesis::{Genesis, Params};
use crate::hashed_map::{HashedMap, MapKey};
use crate::market::{ArchivedJob, Job, Provider, Task, TaskKey};
use crate::receipt::{Event, Receipt};

const STATE_DOMAIN: &[u8] = b"gridwork/state/v1";

/// What a transaction does beyond the sender's own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// Balance to add to another account (a transfer's recipient).
    pub to: Option<(Address, Amount)>,
    /// Fee for the rewards pool.
    pub fee: Amount,
    /// What happened to the sender's account (market transactions report theirs when
    /// they run against the whole state).
    pub event: Option<Event>,
}

/// Applies the sender's side of `tx` to `account` (nonce, fee, debit, vault), as of block time
/// `now_ms`. On error `account` is unchanged. The mempool uses this to check a transaction
/// against the sender's committed account plus its pending transactions.
pub fn apply_to_sender(
    account: &mut Account,
    tx: &Transaction,
    params: &Params,
    now_ms: u64,
) -> Result<Credit, TxError> {
    let sender = tx.sender();
    if tx.nonce < account.nonce {
        return Err(TxError::NonceReplayed {
            sender,
            expected: account.nonce,
            got: tx.nonce,
        });
    }
    if tx.nonce > account.nonce {
        return Err(TxError::NonceFuture {
            sender,
            expected: account.nonce,
            got: tx.nonce,
        });
    }
    if tx.fee < params.min_fee {
        return Err(TxError::FeeTooLow {
            min: params.min_fee,
            got: tx.fee,
        });
    }
    let spendable = account.spendable(now_ms);
    let debit = |amount: Amount| -> Result<Amount, TxError> {
        let needed = amount.checked_add(tx.fee).ok_or(TxError::Overflow)?;
        if needed > spendable {
            return Err(TxError::InsufficientBalance {
                sender,
                needed,
                spendable,
            });
        }
        Ok(needed)
    };
    let mut next = account.clone();
    let mut state_fee = Amount::ZERO;
    let (to, event) = match &tx.kind {
        TxKind::Transfer { to, amount } => {
            if amount.0 == 0 {
                return Err(TxError::ZeroAmount);
            }
            next.balance = Amount(next.balance.0 - debit(*amount)?.0);
            (
                Some((*to, *amount)),
                Some(Event::Transfer {
                    from: sender,
                    to: *to,
                    amount: *amount,
                }),
            )
        }
        TxKind::StakeLock { amount } => {
            if amount.0 == 0 {
                return Err(TxError::ZeroAmount);
            }
            next.balance = Amount(next.balance.0 - debit(*amount)?.0);
            next.stake_locked = next
                .stake_locked
                .checked_add(*amount)
                .ok_or(TxError::Overflow)?;
            (
                None,
                Some(Event::StakeLocked {
                    account: sender,
                    amount: *amount,
                }),
            )
        }
        TxKind::StakeUnbond { amount } => {
            if amount.0 == 0 {
                return Err(TxError::ZeroAmount);
            }
            if *amount > next.stake_locked {
                return Err(TxError::UnbondExceedsLocked {
                    requested: *amount,
                    locked: next.stake_locked,
                });
            }
            if next.unbonding.len() >= params.max_unbondings as usize {
                return Err(TxError::TooManyUnbondings {
                    max: params.max_unbondings,
                });
            }
            next.balance = Amount(next.balance.0 - debit(Amount::ZERO)?.0);
            next.stake_locked = Amount(next.stake_locked.0 - amount.0);
            let matures_at_ms = now_ms.saturating_add(params.unbonding_period_ms);
            next.unbonding.push(Unbonding {
                amount: *amount,
                matures_at_ms,
            });
            (
                None,
                Some(Event::StakeUnbonding {
                    account: sender,
                    amount: *amount,
                    matures_at_ms,
                }),
            )
        }
        TxKind::StakeWithdraw => {
            let (matured, waiting): (Vec<Unbonding>, Vec<Unbonding>) = next
                .unbonding
                .iter()
                .cloned()
                .partition(|u| u.matures_at_ms <= now_ms);
            if matured.is_empty() {
                return Err(TxError::NothingToWithdraw {
                    now_ms,
                    next_maturity_ms: waiting.iter().map(|u| u.matures_at_ms).min(),
                });
            }
            let amount = Amount(matured.iter().map(|u| u.amount.0).sum());
            next.balance = Amount(next.balance.0 - debit(Amount::ZERO)?.0);
            next.balance = next.balance.checked_add(amount).ok_or(TxError::Overflow)?;
            next.unbonding = waiting;
            (
                None,
                Some(Event::StakeWithdrawn {
                    account: sender,
                    amount,
                }),
            )
        }
        TxKind::SubmitJob {
            deposit,
            prescription,
        } => {
            // The state fee (for every task and input the job adds to the ledger) goes to the
            // rewards pool with the fee; the deposit goes to escrow.
            state_fee = params.state_fee(prescription).ok_or(TxError::Overflow)?;
            let total = deposit.checked_add(state_fee).ok_or(TxError::Overflow)?;
            next.balance = Amount(next.balance.0 - debit(total)?.0);
            (None, None)
        }
        TxKind::RegisterProvider { .. }
        | TxKind::AnnouncePeer { .. }
        | TxKind::Heartbeat
        | TxKind::CancelJob { .. }
        | TxKind::Bid { .. }
        | TxKind::Commit { .. }
        | TxKind::Reveal { .. }
        | TxKind::Judge { .. } => {
            next.balance = Amount(next.balance.0 - debit(Amount::ZERO)?.0);
            (None, None)
        }
    };
    next.nonce += 1;
    if next.public_key.is_none() {
        next.public_key = Some(tx.from);
    }
    *account = next;
    Ok(Credit {
        to,
        fee: Amount(tx.fee.0 + state_fee.0),
        event,
    })
}

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

/// Storage key prefixes of the state maps.
const PREFIX_ACCOUNT: u8 = 1;
const PREFIX_PROVIDER: u8 = 2;
const PREFIX_JOB: u8 = 3;
const PREFIX_TASK: u8 = 4;
const PREFIX_OPEN_TASK: u8 = 5;
/// Finished jobs with their tasks ([`ArchivedJob`]), keyed by job id: written once, when the
/// job leaves the hot state; outside the state root and never loaded into memory.
pub const PREFIX_ARCHIVE: u8 = 6;

/// What changed since the last [`State::take_changes`]: what storage must write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateChanges {
    /// Touched entries in key order: `prefix || canonical(key)` and the canonical value, or
    /// `None` when the entry was removed.
    pub entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// The rewards pool now.
    pub rewards_pool: Amount,
}

/// The contents of the state maps, for building a [`State`].
#[derive(Default)]
struct Maps {
    accounts: Vec<(Address, Account)>,
    providers: Vec<(Address, Provider)>,
    jobs: Vec<(Hash, Job)>,
    tasks: Vec<(TaskKey, Task)>,
    open_tasks: Vec<(TaskKey, u64)>,
}

fn entry_key(prefix: u8, key: &impl Encode) -> Vec<u8> {
    let mut out = vec![prefix];
    key.encode(&mut out);
    out
}

/// The whole ledger state at one block.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) chain_id: String,
    pub(crate) params: Params,
    total_supply: Amount,
    pub(crate) rewards_pool: Amount,
    pub(crate) accounts: HashedMap<Address, Account>,
    pub(crate) providers: HashedMap<Address, Provider>,
    pub(crate) jobs: HashedMap<Hash, Job>,
    pub(crate) tasks: HashedMap<TaskKey, Task>,
    /// Tasks not yet settled, failed or cancelled, with the block time their phase times out.
    pub(crate) open_tasks: HashedMap<TaskKey, u64>,
    head: Header,
    pub(crate) head_hash: Hash,
    /// The rewards pool before the block being applied, if the block changed it.
    undo_pool: Option<Amount>,
    /// Jobs that finished in the block being applied: archived at its end.
    pub(crate) finishing: Vec<Hash>,
    /// Archived jobs not yet handed to storage ([`State::take_changes`]).
    archived: Vec<(Hash, Vec<u8>)>,
    /// How many of `archived` were there before the block being applied.
    archived_before: usize,
}

impl State {
    /// The state and block at height 0 of `genesis`.
    pub fn genesis(genesis: &Genesis) -> Result<(State, Block), GenesisError> {
        genesis.validate()?;
        let accounts = genesis.allocations.iter().map(|a| {
            let vesting = a.vesting.as_ref().map(|v| Vesting {
                total: a.amount,
                start_ms: v.start_ms,
                cliff_ms: v.cliff_ms,
                end_ms: v.end_ms,
            });
            (
                a.address,
                Account {
                    balance: a.amount,
                    vesting,
                    ..Account::default()
                },
            )
        });
        let mut header = Header {
            height: 0,
            parent: Hash::ZERO,
            timestamp_ms: genesis.timestamp_ms,
            proposer: Address([0; 20]),
            tx_count: 0,
            tx_root: tx_root(&[]),
            state_root: Hash::ZERO,
        };
        let mut state = State::with_maps(
            genesis.chain_id.clone(),
            genesis.params.clone(),
            genesis.total_supply,
            genesis.rewards_pool,
            Maps {
                accounts: accounts.collect(),
                ..Maps::default()
            },
            header.clone(),
        );
        header.state_root = state.root();
        state.head_hash = header.hash();
        state.head = header.clone();
        state.accounts.touch_all();
        Ok((
            state,
            Block {
                header,
                txs: Vec::new(),
            },
        ))
    }

    /// Rebuilds a state from stored parts: every entry storage holds (as written from
    /// [`StateChanges`]) and `head`, the last applied header. The caller should compare
    /// [`State::root`] with `head.state_root` to detect a damaged store.
    pub fn from_parts(
        chain_id: String,
        params: Params,
        total_supply: Amount,
        rewards_pool: Amount,
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
        head: Header,
    ) -> Result<State, DecodeError> {
        let mut maps = Maps::default();
        for (key, value) in entries {
            match key.split_first() {
                Some((&PREFIX_ACCOUNT, k)) => maps
                    .accounts
                    .push((Address::from_bytes(k)?, Account::from_bytes(&value)?)),
                Some((&PREFIX_PROVIDER, k)) => maps
                    .providers
                    .push((Address::from_bytes(k)?, Provider::from_bytes(&value)?)),
                Some((&PREFIX_JOB, k)) => maps
                    .jobs
                    .push((Hash::from_bytes(k)?, Job::from_bytes(&value)?)),
                Some((&PREFIX_TASK, k)) => maps
                    .tasks
                    .push((TaskKey::from_bytes(k)?, Task::from_bytes(&value)?)),
                Some((&PREFIX_OPEN_TASK, k)) => maps
                    .open_tasks
                    .push((TaskKey::from_bytes(k)?, u64::from_bytes(&value)?)),
                // History, not state: read by id from storage when asked for.
                Some((&PREFIX_ARCHIVE, _)) => {}
                Some((&tag, _)) => {
                    return Err(DecodeError::UnknownTag {
                        what: "state entry",
                        tag,
                    })
                }
                None => {
                    return Err(DecodeError::Invalid {
                        what: "empty state key",
                    })
                }
            }
        }
        Ok(State::with_maps(
            chain_id,
            params,
            total_supply,
            rewards_pool,
            maps,
            head,
        ))
    }

    fn with_maps(
        chain_id: String,
        params: Params,
        total_supply: Amount,
        rewards_pool: Amount,
        maps: Maps,
        head: Header,
    ) -> State {
        State {
            chain_id,
            params,
            total_supply,
            rewards_pool,
            accounts: HashedMap::new(maps.accounts),
            providers: HashedMap::new(maps.providers),
            jobs: HashedMap::new(maps.jobs),
            tasks: HashedMap::new(maps.tasks),
            open_tasks: HashedMap::new(maps.open_tasks),
            head_hash: head.hash(),
            head,
            undo_pool: None,
            finishing: Vec::new(),
            archived: Vec::new(),
            archived_before: 0,
        }
    }

    /// The chain id signatures cover.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Protocol parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The fixed total supply.
    pub fn total_supply(&self) -> Amount {
        self.total_supply
    }

    /// The undistributed node-rewards pool.
    pub fn rewards_pool(&self) -> Amount {
        self.rewards_pool
    }

    /// The header of the last applied block.
    pub fn head(&self) -> &Header {
        &self.head
    }

    /// The hash of the last applied block.
    pub fn head_hash(&self) -> Hash {
        self.head_hash
    }

    /// An account (the default, empty account if it was never touched).
    pub fn account(&self, address: &Address) -> Account {
        self.accounts.get(address).cloned().unwrap_or_default()
    }

    /// Every account, in address order.
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &Account)> {
        self.accounts.iter()
    }

    /// The state root.
    pub fn root(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(STATE_DOMAIN);
        let mut globals = Vec::new();
        self.chain_id.encode(&mut globals);
        self.params.encode(&mut globals);
        self.total_supply.encode(&mut globals);
        self.rewards_pool.encode(&mut globals);
        h.update(&globals);
        for root in [
            self.accounts.root(),
            self.providers.root(),
            self.jobs.root(),
            self.tasks.root(),
            self.open_tasks.root(),
        ] {
            h.update(root.as_bytes());
        }
        Hash(*h.finalize().as_bytes())
    }

    /// Checks the conservation invariant; on failure returns (supply, what is accounted for).
    pub fn check_conservation(&self) -> Result<(), (u128, u128)> {
        let held: u128 = self.accounts.iter().map(|(_, a)| a.total()).sum::<u128>()
            + self.jobs.iter().map(|(_, j)| j.escrow.0).sum::<u128>()
            + self.rewards_pool.0;
        if held == self.total_supply.0 {
            Ok(())
        } else {
            Err((self.total_supply.0, held))
        }
    }

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

    /// Hands over what changed since the last call, for storage to persist.
    pub fn take_changes(&mut self) -> StateChanges {
        let mut entries = Vec::new();
        fn drain<K: MapKey, V: Encode + Clone>(
            prefix: u8,
            map: &mut HashedMap<K, V>,
            entries: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
        ) {
            for (key, value) in map.take_touched() {
                entries.push((entry_key(prefix, &key), value.map(|v| v.to_bytes())));
            }
        }
        drain(PREFIX_ACCOUNT, &mut self.accounts, &mut entries);
        drain(PREFIX_PROVIDER, &mut self.providers, &mut entries);
        drain(PREFIX_JOB, &mut self.jobs, &mut entries);
        drain(PREFIX_TASK, &mut self.tasks, &mut entries);
        drain(PREFIX_OPEN_TASK, &mut self.open_tasks, &mut entries);
        for (id, bytes) in self.archived.drain(..) {
            entries.push((entry_key(PREFIX_ARCHIVE, &id), Some(bytes)));
        }
        self.archived_before = 0;
        StateChanges {
            entries,
            rewards_pool: self.rewards_pool,
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
            self.archived.push((id, archived.to_bytes()));
        }
    }

    fn rehash_dirty(&mut self) {
        self.accounts.rehash();
        self.providers.rehash();
        self.jobs.rehash();
        self.tasks.rehash();
        self.open_tasks.rehash();
    }

    /// Sets the rewards pool, remembering the value before the block for a rollback.
    pub(crate) fn set_pool(&mut self, pool: Amount) {
        self.undo_pool.get_or_insert(self.rewards_pool);
        self.rewards_pool = pool;
    }
}
