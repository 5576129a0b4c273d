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

mod block;
mod sender;

pub use block::{BlockOutcome, BuiltBlock};
pub use sender::{apply_to_sender, Credit};

use gridwork_types::{tx_root, Address, Amount, Block, Decode, DecodeError, Encode, Hash, Header};

use crate::account::{Account, Vesting};
use crate::error::GenesisError;
use crate::genesis::{Genesis, Params};
use crate::hashed_map::{HashedMap, MapKey};
use crate::market::{Job, Provider, Service, Task, TaskKey};

const STATE_DOMAIN: &[u8] = b"gridwork/state/v1";

/// Storage key prefixes of the state maps.
const PREFIX_ACCOUNT: u8 = 1;
const PREFIX_PROVIDER: u8 = 2;
const PREFIX_JOB: u8 = 3;
const PREFIX_TASK: u8 = 4;
const PREFIX_OPEN_TASK: u8 = 5;
/// The archive: finished jobs with their tasks ([`ArchivedJob`](crate::ArchivedJob)), keyed
/// by job id, and closed services ([`Service`]), keyed by [`SERVICE_ARCHIVE_TAG`] and the
/// service id ([`service_archive_key`]): each written once, when it leaves the hot state;
/// outside the state root and never loaded into memory.
pub const PREFIX_ARCHIVE: u8 = 6;
/// The byte after [`PREFIX_ARCHIVE`] in a closed service's archive key (a job's key is the
/// prefix and its 32-byte id alone).
pub const SERVICE_ARCHIVE_TAG: u8 = b's';

/// Where a closed service lies in the archive: `PREFIX_ARCHIVE || 's' || id`.
pub fn service_archive_key(id: &Hash) -> Vec<u8> {
    let mut key = vec![PREFIX_ARCHIVE, SERVICE_ARCHIVE_TAG];
    key.extend_from_slice(id.as_bytes());
    key
}
const PREFIX_SERVICE: u8 = 7;
const PREFIX_DUE_SERVICE: u8 = 8;

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
    services: Vec<(Hash, Service)>,
    due_services: Vec<(Hash, u64)>,
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
    /// Services (stream tasks), by id.
    pub(crate) services: HashedMap<Hash, Service>,
    /// Services with something to do at block time (a seat to draw, a stretch down that
    /// ends them, the end of a settle window), with the block time it is due.
    pub(crate) due_services: HashedMap<Hash, u64>,
    head: Header,
    pub(crate) head_hash: Hash,
    /// The rewards pool before the block being applied, if the block changed it.
    undo_pool: Option<Amount>,
    /// Jobs that finished in the block being applied: archived at its end.
    pub(crate) finishing: Vec<Hash>,
    /// Archived jobs and services not yet handed to storage ([`State::take_changes`]): each
    /// storage key with its value.
    archived: Vec<(Vec<u8>, Vec<u8>)>,
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
                Some((&PREFIX_SERVICE, k)) => maps
                    .services
                    .push((Hash::from_bytes(k)?, Service::from_bytes(&value)?)),
                Some((&PREFIX_DUE_SERVICE, k)) => maps
                    .due_services
                    .push((Hash::from_bytes(k)?, u64::from_bytes(&value)?)),
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
            services: HashedMap::new(maps.services),
            due_services: HashedMap::new(maps.due_services),
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
            self.services.root(),
            self.due_services.root(),
        ] {
            h.update(root.as_bytes());
        }
        Hash(*h.finalize().as_bytes())
    }

    /// Checks the conservation invariant; on failure returns (supply, what is accounted for).
    pub fn check_conservation(&self) -> Result<(), (u128, u128)> {
        let held: u128 = self.accounts.iter().map(|(_, a)| a.total()).sum::<u128>()
            + self.jobs.iter().map(|(_, j)| j.escrow.0).sum::<u128>()
            + self.services.iter().map(|(_, s)| s.escrow.0).sum::<u128>()
            + self.rewards_pool.0;
        if held == self.total_supply.0 {
            Ok(())
        } else {
            Err((self.total_supply.0, held))
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
        drain(PREFIX_SERVICE, &mut self.services, &mut entries);
        drain(PREFIX_DUE_SERVICE, &mut self.due_services, &mut entries);
        for (key, bytes) in self.archived.drain(..) {
            entries.push((key, Some(bytes)));
        }
        self.archived_before = 0;
        StateChanges {
            entries,
            rewards_pool: self.rewards_pool,
        }
    }
}
