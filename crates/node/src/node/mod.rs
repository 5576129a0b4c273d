//! The node core: ledger state, mempool, store and consensus behind one lock, with the
//! operations the API and the block producer need.
//!
//! # Lifecycle
//!
//! [`Node::open`] loads the chain from the data directory (or creates it from a genesis),
//! checks the stored state against the head's state root, and returns a node that serves
//! reads at once. [`Node::spawn_producer`] starts the Solo block producer on its own thread;
//! each block is applied in memory, committed durably to the store (one fsync per block), and
//! only then announced on the event stream or visible through the block and transaction
//! queries. If a commit fails the node halts: it refuses new transactions and reports why on
//! `/health`; a restart resumes from the last durable block.
//!
//! # Concurrency
//!
//! Signature checks, the expensive part of admission, run before taking the lock, in batches.
//! The lock guards the nonce and balance checks, block building and the commit.
//!
//! # Where each part lives
//!
//! One `Node`, its parts in files: admission, block production and the ledger's views
//! (`ledger.rs`), chunks, pins, quotas and garbage collection (`data.rs`), the node's key,
//! key grants and the hand-off of input keys (`keys.rs`), declines and task logs
//! (`offledger.rs`), errors (`error.rs`); here, opening, the shared state, events and the
//! chain's facts. They still share one lock: separate services, each with its own state and
//! lock, are the next step (issue 18).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::{HashMap, HashSet};

use gridwork_api::{
    AccountView, BlockEvent, BlockView, ChainInfo, Decline, Health, HealthStatus, JobStatus,
    JobView, KeyGrant, LogStream, PinView, PostLog, ProviderView, StorageView, TaskLog, TaskView,
    TxState, TxStatus, TxView,
};
use gridwork_consensus::{Consensus, Solo};
use gridwork_protocol::{Genesis, GenesisError, Params, Phase, State, TxError};
use gridwork_storage::{ChainMeta, RedbStore, StorageError, Store};
use gridwork_types::{
    verify_batch, Address, Amount, Block, DataInput, Decode, DecodeError, Hash, Header, Keypair,
    PeerAddr, PublicKey, Signature, SignedTx, TxKind, MAX_TX_BYTES,
};
use tokio::sync::broadcast;

use crate::config::NodeConfig;
use crate::logs::{LogError, LogKey, TaskLogs};
use crate::mempool::{Mempool, MempoolError};
use crate::metrics::{Gauges, Metrics};
use crate::pinfile::{PinFile, MAX_PINNERS};
use gridwork_protocol::Event;
use gridwork_transfer::{
    chunk_set_digest, proof_lock, sorted_difference, sorted_ids, unwrap_key, wrap_key, ChunkStore,
    DataKey, StoreError as ChunkStoreError,
};

mod data;
mod error;
mod keys;
mod ledger;
mod offledger;

pub use data::GcReport;
use data::{read_pins, Pending, Pins};
pub use error::{AdmitError, NodeError};
use keys::load_or_create_key;

/// A block to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockId {
    /// The head.
    Latest,
    /// By height.
    Height(u64),
    /// By hash.
    Hash(Hash),
}

impl std::str::FromStr for BlockId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "latest" {
            return Ok(BlockId::Latest);
        }
        if let Ok(h) = s.parse::<u64>() {
            return Ok(BlockId::Height(h));
        }
        s.parse::<Hash>().map(BlockId::Hash).map_err(|_| {
            format!("`{s}` is not a block id: use `latest`, a height, or a 64-character block hash")
        })
    }
}

struct Inner {
    state: State,
    mempool: Mempool,
    consensus: Box<dyn Consensus>,
    /// When the last block was made ([`Clock::monotonic_ms`]).
    last_block_at: u64,
    halted: Option<String>,
    /// The block being committed: its transactions left the mempool but are not durable yet.
    in_flight: Option<(Arc<Block>, Vec<Hash>)>,
    /// Jobs the block in flight archives: out of the state already, not yet in the store.
    archiving: Vec<(Hash, gridwork_protocol::ArchivedJob)>,
}

struct Shared {
    chain_id: String,
    genesis_hash: Hash,
    inner: Mutex<Inner>,
    store: Box<dyn Store>,
    producing: Mutex<()>,
    /// Sealed chunks of the data plane and the key grants of trees (none for nodes built
    /// without a data directory).
    chunks: Option<ChunkStore>,
    grants_dir: Option<std::path::PathBuf>,
    /// Pins of trees (`<cid>.pin`: kept-until ms, then the tree's chunk ids) and how long
    /// they and unpinned uploads are kept.
    pins: Option<Pins>,
    /// Serialises writes of grant files.
    grants_lock: Mutex<()>,
    /// Where the node serves chunks peer to peer, if it does.
    peer: Mutex<Option<PeerAddr>>,
    /// The node's own key: requesters grant it their inputs' data keys, and it grants them on
    /// to each task's executor and council when the auction closes.
    key: Keypair,
    /// Why providers declined jobs (off the ledger; newest per provider, bounded per job).
    declines: Mutex<HashMap<Hash, Vec<Decline>>>,
    /// What task programs printed (off the ledger).
    logs: TaskLogs,
    /// How long a closed job's logs are kept after their last write.
    log_retention_ms: u64,
    events: broadcast::Sender<Arc<BlockEvent>>,
    /// The latest [`RECENT_EVENTS`] block events, for streams that resume (`Last-Event-ID`).
    recent: Mutex<std::collections::VecDeque<Arc<BlockEvent>>>,
    /// Outside subscriptions to `events` open now (`Node::subscribe_limited`).
    subscribers: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Metrics,
    stop: AtomicBool,
    clock: Arc<dyn crate::Clock>,
}

/// A running ledger node. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.shared.chain_id)
    }
}

/// Block events kept for streams that resume (`Last-Event-ID`): a client that reconnects
/// within this many blocks misses nothing.
pub const RECENT_EVENTS: usize = 256;

/// An outside client's subscription to committed blocks; it counts against the node's cap
/// until dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The blocks.
    pub rx: broadcast::Receiver<Arc<BlockEvent>>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Where a new chain's genesis comes from.
#[derive(Debug, Clone)]
pub enum GenesisSource {
    /// A development chain with `accounts` funded dev accounts (see
    /// [`gridwork_protocol::dev_keypair`]), created at the current time.
    Dev {
        /// How many dev accounts.
        accounts: u32,
        /// The unbonding period of the dev chain.
        unbonding_period_ms: u64,
    },
    /// A genesis file (TOML or JSON, by extension).
    File(std::path::PathBuf),
    /// The data directory must already hold a chain.
    Stored,
}

impl GenesisSource {
    /// A dev chain with `accounts` funded accounts and [`DEV_UNBONDING_PERIOD_MS`].
    pub fn dev(accounts: u32) -> Self {
        GenesisSource::Dev {
            accounts,
            unbonding_period_ms: DEV_UNBONDING_PERIOD_MS,
        }
    }
}

/// The unbonding period of dev chains: a minute, so `stake withdraw` can be tried.
pub const DEV_UNBONDING_PERIOD_MS: u64 = 60_000;

/// Where a transaction in a durable block stands: applied, or refused by the market.
fn committed_state(receipt: &gridwork_protocol::Receipt) -> TxState {
    if receipt.failure().is_some() {
        TxState::Failed
    } else {
        TxState::Committed
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads a genesis file (TOML, or JSON for `.json`).
pub fn read_genesis(path: &Path) -> Result<Genesis, NodeError> {
    let file_err = |message: String| NodeError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let genesis: Genesis = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| file_err(format!("invalid genesis JSON: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| file_err(format!("invalid genesis TOML: {e}")))?
    };
    genesis.validate()?;
    Ok(genesis)
}

impl Node {
    /// Opens the chain in `config.data_dir`, creating it from `genesis` if it is new.
    pub fn open(config: &NodeConfig, genesis: GenesisSource) -> Result<Node, NodeError> {
        let dir = &config.data_dir;
        let dir_err = |message: String| NodeError::File {
            path: dir.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir)
            .map_err(|e| dir_err(format!("cannot create data directory: {e}")))?;
        let store = RedbStore::open(&dir.join("chain.redb"))?;
        let genesis = match (genesis, store.meta()?) {
            (GenesisSource::Stored, None) => {
                return Err(NodeError::NoGenesis {
                    data_dir: dir.display().to_string(),
                })
            }
            (GenesisSource::Dev { .. } | GenesisSource::Stored, Some(_)) => None,
            (GenesisSource::File(path), stored) => {
                let g = read_genesis(&path)?;
                if let Some(meta) = stored {
                    let (_, block) = State::genesis(&g)?;
                    if block.header.hash() != meta.genesis_hash {
                        return Err(NodeError::GenesisMismatch {
                            data_dir: dir.display().to_string(),
                            stored: meta.genesis_hash,
                            given: block.header.hash(),
                        });
                    }
                }
                Some(g)
            }
            (
                GenesisSource::Dev {
                    accounts,
                    unbonding_period_ms,
                },
                None,
            ) => {
                let params = Params {
                    unbonding_period_ms,
                    ..Params::default()
                };
                Some(Genesis::dev("gridwork-dev", now_ms(), accounts, params))
            }
        };
        if let Some(g) = &genesis {
            if store.meta()?.is_none() {
                let path = dir.join("genesis.json");
                let json = serde_json::to_string_pretty(g).map_err(|e| dir_err(e.to_string()))?;
                std::fs::write(&path, json)
                    .map_err(|e| dir_err(format!("cannot write genesis.json: {e}")))?;
            }
        }
        let consensus = Solo::new(
            config.block_interval_ms,
            config.max_block_txs,
            Address([0; 20]),
        );
        let node_key = load_or_create_key(&dir.join("node.key"))?;
        let chunks = ChunkStore::open(dir.join("chunks"), config.chunk_quota_bytes)
            .map_err(|e| dir_err(format!("cannot open the chunk store: {e}")))?;
        let mut node = Node::with_store(
            Box::new(store),
            genesis.as_ref(),
            Box::new(consensus),
            config.mempool_capacity,
        )?;
        node.lock()
            .mempool
            .set_limits(config.mempool_max_bytes, config.mempool_max_per_sender);
        let mut logged = Pending::logged(&dir.join("pending-uploads"), &chunks);
        let usage = read_pins(&dir.join("pins"), &mut logged);
        let pending = Pending::open(dir.join("pending-uploads"), logged);
        if let Some(shared) = Arc::get_mut(&mut node.shared) {
            shared.chunks = Some(chunks);
            shared.grants_dir = Some(dir.join("grants"));
            shared.pins = Some(Pins {
                dir: dir.join("pins"),
                retention: Duration::from_secs(config.chunk_retention_secs),
                grace: Duration::from_secs(config.chunk_upload_grace_secs),
                every: Duration::from_secs(config.chunk_gc_interval_secs.max(1)),
                lock: Mutex::new(()),
                collected_when_full: Mutex::new(None),
                account_quota: config.chunk_account_quota_bytes,
                min_funds: config.chunk_min_funds,
                usage: Mutex::new(usage),
                pending: Mutex::new(pending),
            });
            shared.key = node_key;
            shared.logs = TaskLogs::new(Some(dir.join("logs")), config.log_limit_bytes);
            shared.log_retention_ms = config.log_retention_secs.saturating_mul(1000);
        }
        node.grant_running_tasks();
        Ok(node)
    }

    /// A node over any store (tests use [`gridwork_storage::MemoryStore`] and
    /// [`gridwork_storage::FailingStore`]). `genesis` initialises an empty store.
    pub fn with_store(
        store: Box<dyn Store>,
        genesis: Option<&Genesis>,
        consensus: Box<dyn Consensus>,
        mempool_capacity: usize,
    ) -> Result<Node, NodeError> {
        let clock = Arc::new(crate::SystemClock::default());
        Node::with_store_and_clock(store, genesis, consensus, mempool_capacity, clock)
    }

    /// A node over any store that reads the time from `clock` (a simulation's
    /// [`crate::ManualClock`]: block times, deadlines and the interval between blocks move
    /// only when it does).
    pub fn with_store_and_clock(
        store: Box<dyn Store>,
        genesis: Option<&Genesis>,
        consensus: Box<dyn Consensus>,
        mempool_capacity: usize,
        clock: Arc<dyn crate::Clock>,
    ) -> Result<Node, NodeError> {
        let state = match (store.load_state()?, genesis) {
            (Some(state), _) => state,
            (None, Some(genesis)) => {
                let (mut state, block) = State::genesis(genesis)?;
                let meta = ChainMeta {
                    chain_id: genesis.chain_id.clone(),
                    params: genesis.params.clone(),
                    total_supply: genesis.total_supply,
                    genesis_hash: block.header.hash(),
                };
                store.init(&meta, &block, &state.take_changes())?;
                state
            }
            (None, None) => {
                return Err(NodeError::NoGenesis {
                    data_dir: "the store".into(),
                })
            }
        };
        if let Err((supply, held)) = state.check_conservation() {
            return Err(NodeError::Damaged { supply, held });
        }
        let meta = store.meta()?.ok_or(StorageError::Empty)?;
        let metrics = Metrics::default();
        metrics.set_head(state.head().height);
        // No larger than the ring of recent events: a subscriber that lags keeps no more
        // events in memory than a resume could ask for.
        let (events, _) = broadcast::channel(RECENT_EVENTS);
        Ok(Node {
            shared: Arc::new(Shared {
                chain_id: meta.chain_id,
                genesis_hash: meta.genesis_hash,
                inner: Mutex::new(Inner {
                    state,
                    mempool: Mempool::new(mempool_capacity),
                    consensus,
                    last_block_at: clock.monotonic_ms(),
                    halted: None,
                    in_flight: None,
                    archiving: Vec::new(),
                }),
                store,
                producing: Mutex::new(()),
                chunks: None,
                grants_dir: None,
                pins: None,
                grants_lock: Mutex::new(()),
                peer: Mutex::new(None),
                key: Keypair::generate(),
                declines: Mutex::new(HashMap::new()),
                logs: TaskLogs::new(None, crate::DEFAULT_LOG_LIMIT_BYTES),
                log_retention_ms: crate::DEFAULT_LOG_RETENTION_SECS * 1000,
                events,
                recent: Mutex::new(std::collections::VecDeque::new()),
                subscribers: Arc::default(),
                metrics,
                stop: AtomicBool::new(false),
                clock,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the ledger half-applied (blocks are
        // all-or-nothing), so a poisoned lock is still safe to use.
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The chain id transactions must be signed for.
    pub fn chain_id(&self) -> &str {
        &self.shared.chain_id
    }

    /// The node's metric counts.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// `/metrics`: the node's metrics in the Prometheus text exposition format, gauges read
    /// now (see `docs/operations.md` for the families).
    pub fn render_metrics(&self) -> String {
        let mut gauges = Gauges::default();
        {
            let inner = self.lock();
            let state = &inner.state;
            for (_, task) in state.open_tasks() {
                let slot = match task.phase {
                    Phase::Bidding => 0,
                    Phase::Committing => 1,
                    Phase::Revealing => 2,
                    Phase::Judging => 3,
                    Phase::Settled | Phase::Failed | Phase::Cancelled => continue,
                };
                gauges.tasks_open[slot] += 1;
            }
            gauges.jobs_open = state
                .jobs()
                .filter(|(_, j)| !j.finished && !j.cancelled)
                .count() as u64;
            gauges.providers = state.providers().count() as u64;
        }
        if let Some(store) = &self.shared.chunks {
            gauges.store = Some((store.used(), store.len() as u64));
        }
        if let Some(pins) = &self.shared.pins {
            let pinned: u64 = (pins.usage.lock().unwrap_or_else(|p| p.into_inner()))
                .values()
                .sum();
            let pending: u64 = (pins.pending.lock().unwrap_or_else(|p| p.into_inner()))
                .by_account
                .values()
                .sum();
            gauges.quota = Some((pinned + pending, pins.account_quota));
        }
        self.shared.metrics.render(&gauges)
    }

    /// Subscribes to committed blocks.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BlockEvent>> {
        self.shared.events.subscribe()
    }

    /// Subscribes to committed blocks for an outside client, if fewer than `max` such
    /// subscriptions are open; the subscription counts until dropped.
    pub fn subscribe_limited(&self, max: usize) -> Option<Subscription> {
        use std::sync::atomic::Ordering;
        let open = &self.shared.subscribers;
        let mut n = open.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match open.compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        Some(Subscription {
            rx: self.shared.events.subscribe(),
            open: Arc::clone(open),
        })
    }

    /// The block events after `height` that the node still holds, for a stream that resumes
    /// from there; or, when the block after `height` is no longer held, the lowest height that
    /// is (the client catches up from `GET /v1/blocks`).
    pub fn events_after(&self, height: u64) -> Result<Vec<Arc<BlockEvent>>, u64> {
        let head = self.shared.metrics.head();
        let recent = self.shared.recent.lock().unwrap_or_else(|p| p.into_inner());
        let head = recent.back().map_or(head, |e| e.block.height.max(head));
        if height >= head {
            return Ok(Vec::new());
        }
        match recent.front() {
            Some(first) if first.block.height <= height + 1 => Ok(recent
                .iter()
                .filter(|e| e.block.height > height)
                .cloned()
                .collect()),
            Some(first) => Err(first.block.height),
            None => Err(head + 1),
        }
    }

    /// Asks the producer to stop after the block it is working on.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// The height of the last durable block.
    fn durable_head(&self) -> Result<u64, NodeError> {
        Ok(self
            .shared
            .store
            .head_height()?
            .ok_or(StorageError::Empty)?)
    }

    /// The time as this node reads it ([`crate::Clock`]).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// `/health`.
    pub fn health(&self) -> Health {
        let halted = self.lock().halted.clone();
        Health {
            status: if halted.is_some() {
                HealthStatus::Halted
            } else {
                HealthStatus::Ok
            },
            height: self.shared.metrics.head(),
            reason: halted,
        }
    }

    /// `/v1/chain`: the last durable block, the supply, the parameters.
    pub fn chain_info(&self) -> Result<ChainInfo, NodeError> {
        let height = self.durable_head()?;
        let head = self
            .shared
            .store
            .header(height)?
            .ok_or(StorageError::Empty)?;
        let inner = self.lock();
        Ok(ChainInfo {
            chain_id: self.shared.chain_id.clone(),
            genesis_hash: self.shared.genesis_hash,
            height,
            head_hash: head.hash(),
            head_time_ms: head.timestamp_ms,
            total_supply: inner.state.total_supply(),
            rewards_pool: inner.state.rewards_pool(),
            params: inner.state.params().clone(),
            mempool: inner.mempool.len(),
            node_key: self.public_key(),
            node_peer: self
                .shared
                .peer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }

    /// Publishes where the node serves its chunks peer to peer (in `GET /v1/chain`).
    pub fn set_peer(&self, peer: Option<PeerAddr>) {
        *self.shared.peer.lock().unwrap_or_else(|p| p.into_inner()) = peer;
    }

    /// The node's public key (`node_key` in `GET /v1/chain`): data-plane requests are signed
    /// for it and holder proofs made for it.
    pub fn public_key(&self) -> PublicKey {
        self.shared.key.public()
    }

    /// A secret derived from the node's key for `context` (a BLAKE3 `derive_key` context),
    /// such as its peer transport key: the node needs no second secret, and the key itself
    /// never leaves it.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.shared.key.seed())
    }

    /// The state root of the head (for tests and operators).
    pub fn state_root(&self) -> Hash {
        self.lock().state.root()
    }
}

/// Writes `bytes` to a new file at `path` and syncs it.
fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// The first `limit` of `items` in order, and the last of them when more follow (where the
/// next page starts). Keeps only `limit + 1` at a time, whatever the list's length.
fn page<T: Ord + Copy>(items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, Option<T>) {
    let limit = limit.max(1);
    let mut kept: std::collections::BinaryHeap<T> = std::collections::BinaryHeap::new();
    for item in items {
        kept.push(item);
        if kept.len() > limit.saturating_add(1) {
            kept.pop();
        }
    }
    let mut kept = kept.into_sorted_vec();
    let more = kept.len() > limit;
    kept.truncate(limit);
    let next = if more { kept.last().copied() } else { None };
    (kept, next)
}

#[cfg(test)]
mod tests {
    use super::page;

    /// A page is the first `limit` in order, and names its last when more follow.
    #[test]
    fn a_page_is_the_first_entries_in_order_and_names_where_the_next_starts() {
        let items = [9u32, 3, 7, 1, 5];
        assert_eq!(page(items.into_iter(), 2), (vec![1, 3], Some(3)));
        assert_eq!(
            page(items.into_iter().filter(|i| *i > 3), 2),
            (vec![5, 7], Some(7))
        );
        assert_eq!(
            page(items.into_iter().filter(|i| *i > 7), 2),
            (vec![9], None)
        );
        assert_eq!(page(items.into_iter(), 5), (vec![1, 3, 5, 7, 9], None));
        assert_eq!(page(std::iter::empty::<u32>(), 5), (vec![], None));
    }
}
