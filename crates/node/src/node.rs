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

/// Why the node could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The genesis is invalid.
    #[error("invalid genesis: {0}")]
    Genesis(#[from] GenesisError),
    /// A new data directory and no genesis to start it from.
    #[error("{data_dir} holds no chain yet; start with `--dev` or give a genesis file (`--genesis FILE`)")]
    NoGenesis {
        /// The data directory.
        data_dir: String,
    },
    /// The given genesis is not the stored chain's.
    #[error("the genesis file describes chain {given}, but {data_dir} holds chain {stored}; use another --data-dir")]
    GenesisMismatch {
        /// Data directory.
        data_dir: String,
        /// Stored genesis hash.
        stored: Hash,
        /// Given genesis hash.
        given: Hash,
    },
    /// A genesis or data directory file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The stored state does not add up to the total supply.
    #[error("the stored ledger holds {held} base units but the supply is {supply}: the data directory is damaged")]
    Damaged {
        /// The fixed total supply.
        supply: u128,
        /// What the accounts and the pool hold.
        held: u128,
    },
    /// The data plane's chunk store failed or refused.
    #[error(transparent)]
    Chunks(#[from] ChunkStoreError),
    /// The node keeps no chunk store.
    #[error("this node keeps no chunk store")]
    NoChunkStore,
    /// The chunk store is full even after garbage collection.
    #[error("the node's chunk store is full: {used} of {quota} bytes hold trees pinned within the last {retention_days} days, chunks of open jobs and uploads in progress; the operator can raise chunk_quota_bytes or shorten chunk_retention_secs")]
    StoreFull {
        /// Bytes used.
        used: u64,
        /// The quota.
        quota: u64,
        /// Retention of pinned trees, in days.
        retention_days: u64,
    },
    /// A pin would take an account past its quota of pinned bytes.
    #[error("{account} keeps {used} bytes on this node (pinned trees and uploads not yet pinned) and needs {needed} more, past its quota of {quota}; let older trees expire (a tree is kept {retention_days} days from its last push) or ask the operator to raise chunk_account_quota_bytes")]
    AccountQuota {
        /// The account.
        account: Address,
        /// Bytes it keeps pinned now (not counting this tree).
        used: u64,
        /// Bytes this tree needs.
        needed: u64,
        /// The quota.
        quota: u64,
        /// Retention of pinned trees, in days.
        retention_days: u64,
    },
    /// A read of something only certain parties may read.
    #[error(
        "{reader} may not read {what}: only the job's requester, the task's executor and its \
         council may (sign with the right --key)"
    )]
    NotPermitted {
        /// Who asked.
        reader: Address,
        /// What.
        what: String,
    },
    /// A pin named chunks the node lacks.
    #[error("cannot pin tree {cid}: the node lacks {missing} of its {total} chunks (first {first}); push the tree again")]
    TreeIncomplete {
        /// The tree.
        cid: Hash,
        /// Chunks missing.
        missing: usize,
        /// Chunks named.
        total: usize,
        /// The first missing.
        first: Hash,
    },
    /// Too many key grants on one tree, or for one recipient of it.
    #[error("a tree holds at most 256 key grants, and at most 4 different ones for one recipient (sharing the same key again is always fine)")]
    TooManyGrants,
    /// A request to pin a tree or share its key that does not prove it holds the key.
    #[error("only a holder of tree {cid}'s data key may {what}: the request's key proof does not match the one its first pin set (a client sends it in the gridwork-key-proof header)")]
    NotKeyHolder {
        /// The tree.
        cid: Hash,
        /// What was asked.
        what: &'static str,
    },
    /// Key grants for a tree no push pinned.
    #[error(
        "tree {cid} is not pinned on this node: push it (a push pins it) before sharing its key"
    )]
    TreeNotPinned {
        /// The tree.
        cid: Hash,
    },
    /// A pin from a base tree that this node does not keep.
    #[error("tree {base} is not pinned on this node (never pushed here, or collected): pin tree {cid} with the full list of its chunks")]
    PinBaseGone {
        /// The tree pinned.
        cid: Hash,
        /// The base named.
        base: Hash,
    },
    /// A pin from a base tree whose result is not the set of chunks the pinner expected.
    #[error("the chunks of tree {base}'s pin with the changes sent are not the set the pinner expects for tree {cid} (a pin of {base} changed since): pin tree {cid} with the full list of its chunks")]
    PinSetMismatch {
        /// The tree pinned.
        cid: Hash,
        /// The base named.
        base: Hash,
    },
    /// A provider-only request from an account that is not a registered provider.
    #[error("{address} is not a registered provider: only providers post reasons for not bidding (run `gridwork worker`, which registers)")]
    NotAProvider {
        /// The sender.
        address: Address,
    },
    /// Something asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: String,
    },
    /// A signed request whose signature does not verify.
    #[error("the {what} is not signed by the provider's key")]
    BadSignature {
        /// What was signed.
        what: &'static str,
    },
    /// A provider posted for a task run it has no part in.
    #[error(
        "{provider} is not the executor or a council member of attempt {attempt} of task {task}"
    )]
    NotAssigned {
        /// The provider.
        provider: Address,
        /// The task.
        task: u32,
        /// The attempt named.
        attempt: u32,
    },
    /// A task log refused an append or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The node halted after a failed commit.
    #[error("the node halted: {reason}; restart it to resume from the last durable block")]
    Halted {
        /// Why.
        reason: String,
    },
}

/// Why a submitted transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// Not hex of a canonical transaction.
    #[error("transaction bytes do not decode: {0}")]
    Malformed(String),
    /// Too big.
    #[error("transaction is {size} bytes; the limit is {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The ledger or mempool refused it.
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    /// The node is halted.
    #[error("the node halted ({reason}) and accepts no transactions until restarted")]
    Halted {
        /// Why.
        reason: String,
    },
    /// A job names an input whose key the requester did not prove to hold, or that was never
    /// shared with this node (so no executor could read it).
    #[error("the job's input {cid} cannot be handed to its workers: {why}; submit with `gridwork job submit`, which shares each input's key with the node and proves the requester holds it")]
    InputNotHeld {
        /// The input tree.
        cid: Hash,
        /// What is missing.
        why: &'static str,
    },
}

impl From<DecodeError> for AdmitError {
    fn from(e: DecodeError) -> Self {
        AdmitError::Malformed(e.to_string())
    }
}

impl From<TxError> for AdmitError {
    fn from(e: TxError) -> Self {
        AdmitError::Mempool(MempoolError::Invalid(e))
    }
}

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

/// Where pins live and how long things are kept.
struct Pins {
    dir: std::path::PathBuf,
    retention: Duration,
    grace: Duration,
    every: Duration,
    /// Serialises pin writes with collections (a pin written mid-collection must count).
    lock: Mutex<()>,
    /// When a full store last made a put collect: a store that stays full must not make
    /// every upload run a collection.
    collected_when_full: Mutex<Option<Instant>>,
    /// Most bytes of pinned trees per account.
    account_quota: Option<u64>,
    /// What an account must hold for its writes to be taken.
    min_funds: Amount,
    /// Bytes of pinned trees charged to each account (from the pin files at open).
    usage: Mutex<HashMap<Address, u64>>,
    /// Chunks stored by a signed upload that no pin names yet, with their uploader: charged
    /// to it until a pin takes them or a collection drops them (logged in
    /// `DATA_DIR/pending-uploads`, so a restart keeps them).
    pending: Mutex<Pending>,
}

/// Uploads not yet pinned, per chunk and per account. Each new charge is appended to a log
/// (`id [32] || uploader [20] || bytes u64 LE` per record) that the node reads back at open,
/// leaving out chunks gone or pinned by then, and that each collection rewrites: a restart
/// does not forgive an account its uploads. The log is synced before the chunk store is
/// (`Node::sync_chunks`), so a chunk that survives a crash has its record.
#[derive(Debug, Default)]
struct Pending {
    chunks: HashMap<Hash, (Address, u64)>,
    by_account: HashMap<Address, u64>,
    log: Option<(std::path::PathBuf, std::fs::File)>,
}

/// Bytes of one record of the pending log.
const PENDING_RECORD: usize = 32 + 20 + 8;

impl Pending {
    /// The charges the log at `path` records for chunks `store` still holds (pins not yet
    /// taken into account: see [`Pending::open`]).
    fn logged(path: &std::path::Path, store: &ChunkStore) -> HashMap<Hash, (Address, u64)> {
        let bytes = std::fs::read(path).unwrap_or_default();
        let mut chunks = HashMap::new();
        for record in bytes.chunks_exact(PENDING_RECORD) {
            let (id, rest) = record.split_at(32);
            let (who, len) = rest.split_at(20);
            let (Ok(id), Ok(who), Ok(len)) = (
                <[u8; 32]>::try_from(id),
                <[u8; 20]>::try_from(who),
                <[u8; 8]>::try_from(len),
            ) else {
                continue;
            };
            if store.has(&Hash(id)) {
                chunks
                    .entry(Hash(id))
                    .or_insert((Address(who), u64::from_le_bytes(len)));
            }
        }
        chunks
    }

    /// The charges in `logged` (what [`Pending::logged`] read, less the chunks pins name),
    /// appending to the log at `path` from then on.
    fn open(path: std::path::PathBuf, logged: HashMap<Hash, (Address, u64)>) -> Pending {
        let mut pending = Pending::default();
        for (id, (who, len)) in logged {
            pending.add(id, who, len);
        }
        pending.rewrite(path);
        pending
    }

    /// Writes the log afresh with the charges held now, and appends to it from then on.
    fn rewrite(&mut self, path: std::path::PathBuf) {
        let mut body = Vec::with_capacity(self.chunks.len() * PENDING_RECORD);
        for (id, (who, len)) in &self.chunks {
            body.extend_from_slice(&record(id, who, *len));
        }
        // Synced before it replaces the log: a crash must not leave an empty one.
        let tmp = path.with_extension("tmp");
        let written = write_durably(&tmp, &body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::OpenOptions::new().append(true).open(&path));
        self.log = match written {
            Ok(file) => Some((path, file)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the log of uploads not yet pinned; a restart forgets their charges");
                None
            }
        };
    }

    /// Charges `who` for chunk `id`, unless another upload of it was charged first.
    fn add(&mut self, id: Hash, who: Address, bytes: u64) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.chunks.entry(id) {
            e.insert((who, bytes));
            *self.by_account.entry(who).or_insert(0) += bytes;
            if let Some((_, file)) = &mut self.log {
                use std::io::Write;
                let _ = file.write_all(&record(&id, &who, bytes));
            }
        }
    }

    /// Makes the records appended so far durable.
    fn sync(&self) -> Result<(), NodeError> {
        match &self.log {
            Some((path, file)) => file.sync_data().map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn take(&mut self, id: &Hash) {
        if let Some((who, bytes)) = self.chunks.remove(id) {
            uncharge(&mut self.by_account, &who, bytes);
        }
    }
}

/// One record of the pending log.
fn record(id: &Hash, who: &Address, bytes: u64) -> [u8; PENDING_RECORD] {
    let mut r = [0u8; PENDING_RECORD];
    r[..32].copy_from_slice(id.as_bytes());
    r[32..52].copy_from_slice(&who.0);
    r[52..].copy_from_slice(&bytes.to_le_bytes());
    r
}

/// Takes `bytes` off what `who` is charged.
fn uncharge(usage: &mut HashMap<Address, u64>, who: &Address, bytes: u64) {
    if let Some(n) = usage.get_mut(who) {
        *n = n.saturating_sub(bytes);
        if *n == 0 {
            usage.remove(who);
        }
    }
}

/// The tree a pin file at `path` keeps (its name is `<cid>.pin`).
fn pin_cid(path: &std::path::Path) -> Option<Hash> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pin"))
        .and_then(|n| n.parse::<Hash>().ok())
}

/// One pass over the pins in `dir` at open: what each account is charged for them, and
/// `pending` without the chunks they name (a pin's root is in its file name).
fn read_pins(
    dir: &std::path::Path,
    pending: &mut HashMap<Hash, (Address, u64)>,
) -> HashMap<Address, u64> {
    let mut usage = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let pin = std::fs::read(&path).ok().and_then(|b| PinFile::decode(&b));
        for (who, bytes) in pin.iter().flat_map(|p| &p.charges) {
            *usage.entry(*who).or_insert(0) += bytes;
        }
        if !pending.is_empty() {
            for id in pin_cid(&path)
                .iter()
                .chain(pin.iter().flat_map(|p| &p.chunks))
            {
                pending.remove(id);
            }
        }
    }
    usage
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Pins still in force (or kept by open jobs).
    pub pins_kept: u64,
    /// Pins that ran out and were dropped.
    pub pins_expired: u64,
    /// Chunk bytes freed.
    pub freed_bytes: u64,
    /// Chunk bytes still held.
    pub used_bytes: u64,
    /// Trees open jobs use that no push pinned: only their root is kept (a pushed tree is
    /// pinned before its id can reach the ledger, so only a Byzantine requester or worker
    /// names such a tree; its chunks below the root are unknown to the node, and uploads
    /// younger than the grace period stay anyway).
    pub unpinned_in_use: u64,
    /// Jobs whose task logs went (closed, and unwritten for the log retention).
    pub job_logs_pruned: u64,
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

/// The node's key from `path` (hex of its secret seed), created (readable by the owner only)
/// if missing.
fn load_or_create_key(path: &Path) -> Result<Keypair, NodeError> {
    let err = |message: String| NodeError::File {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            // The key unwraps every input key granted to this node: it is for its owner only.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "the node key is readable by others (mode {:o}); `chmod 600` it (and consider it exposed)",
                    mode & 0o777
                )));
            }
            let seed: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    err("not a node key (64 hex digits); move it away to make a new one".into())
                })?;
            Ok(Keypair::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = Keypair::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            file.write_all(hex::encode(key.seed()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
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

    /// Decodes and admits one transaction from its canonical bytes.
    pub fn submit_bytes(&self, bytes: &[u8]) -> Result<Hash, AdmitError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(AdmitError::TooLarge {
                size: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        let tx = SignedTx::from_bytes(bytes)?;
        self.submit(vec![tx])
            .pop()
            .unwrap_or(Err(AdmitError::Malformed("empty".into())))
    }

    /// Admits transactions: signatures checked in one batch without the lock, then nonce,
    /// fee and balance checked against the projected state. One result per transaction.
    pub fn submit(&self, txs: Vec<SignedTx>) -> Vec<Result<Hash, AdmitError>> {
        let chain_id = self.chain_id();
        let messages: Vec<Vec<u8>> = txs.iter().map(|t| t.tx.signing_message(chain_id)).collect();
        let items: Vec<_> = txs
            .iter()
            .zip(&messages)
            .map(|(t, m)| (t.tx.from, m.as_slice(), t.signature))
            .collect();
        let sigs = verify_batch(&items);
        // Jobs' input claims are checked against the keys on disk, outside the lock too.
        // Only for signed jobs of valid shape: a stranger's unsigned or oversized job costs
        // no key unwrapping.
        let max_inputs = self.lock().state.params().max_inputs_per_job as usize;
        let inputs: Vec<Result<(), AdmitError>> = txs
            .iter()
            .zip(&sigs)
            .map(|(t, sig)| match &t.tx.kind {
                TxKind::SubmitJob { prescription, .. }
                    if sig.is_ok() && prescription.data.len() <= max_inputs =>
                {
                    self.check_inputs(&prescription.data, &t.tx.sender())
                }
                _ => Ok(()),
            })
            .collect();
        let hashes: Vec<Hash> = txs.iter().map(SignedTx::hash).collect();
        let now = self.now_ms();
        let mut inner = self.lock();
        let results: Vec<_> = txs
            .into_iter()
            .zip(sigs)
            .zip(inputs)
            .zip(hashes)
            .map(|(((tx, sig), inputs), hash)| {
                if let Some(reason) = &inner.halted {
                    return Err(AdmitError::Halted {
                        reason: reason.clone(),
                    });
                }
                if let Err(source) = sig {
                    return Err(TxError::BadSignature {
                        sender: tx.tx.sender(),
                        source,
                    }
                    .into());
                }
                inputs?;
                let Inner { state, mempool, .. } = &mut *inner;
                mempool.admit(state, tx, hash, now)?;
                Ok(hash)
            })
            .collect();
        let admitted = results.iter().filter(|r| r.is_ok()).count();
        self.shared
            .metrics
            .admitted(admitted as u64, (results.len() - admitted) as u64);
        self.shared.metrics.set_mempool(inner.mempool.len());
        results
    }

    /// Produces one block now if consensus says so (`force` skips the interval, not the
    /// no-empty-blocks rule). Returns the committed block, or `None` if there was nothing to
    /// do. On a failed commit the node halts and returns the error.
    pub fn produce_block(&self, force: bool) -> Result<Option<Arc<BlockEvent>>, NodeError> {
        // One producer at a time: blocks are committed in height order.
        let _producing = self
            .shared
            .producing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let built = {
            let mut inner = self.lock();
            if let Some(reason) = &inner.halted {
                return Err(NodeError::Halted {
                    reason: reason.clone(),
                });
            }
            let pending = inner.mempool.len();
            let since = self
                .shared
                .clock
                .monotonic_ms()
                .saturating_sub(inner.last_block_at);
            let now = self.now_ms().max(inner.state.head().timestamp_ms);
            // With transactions waiting a block comes anyway; only an idle node looks for
            // due deadlines (a scan of the open tasks).
            let deadline_due =
                pending == 0 && inner.state.next_deadline().is_some_and(|d| d <= now);
            let propose = if force {
                pending > 0 || deadline_due
            } else {
                inner.consensus.should_propose(pending, since, deadline_due)
            };
            if !propose {
                return Ok(None);
            }
            let Inner {
                state,
                mempool,
                consensus,
                ..
            } = &mut *inner;
            let candidates = mempool.take(consensus.max_block_txs());
            let built = state.build_block(now, consensus.proposer(), candidates);
            let changes = state.take_changes();
            if let Err(e) = consensus.finalize(&built.block.header) {
                return Err(self.halt(&mut inner, e.to_string()));
            }
            if !built.rejected.is_empty() {
                let senders: std::collections::BTreeSet<_> = built
                    .rejected
                    .iter()
                    .map(|(tx, _)| tx.tx.sender())
                    .collect();
                let dropped = mempool.revalidate(state, now, senders);
                tracing::warn!(
                    rejected = built.rejected.len(),
                    dropped,
                    "block refused admitted transactions"
                );
            }
            inner.last_block_at = self.shared.clock.monotonic_ms();
            let block = Arc::new(built.block);
            let hashes = built.receipts.iter().map(|r| r.tx_hash).collect();
            inner.in_flight = Some((block.clone(), hashes));
            inner.archiving = changes
                .entries
                .iter()
                .filter(|(k, _)| k.first() == Some(&gridwork_protocol::PREFIX_ARCHIVE))
                .filter_map(|(k, v)| {
                    let id = Hash(k.get(1..33)?.try_into().ok()?);
                    let job = gridwork_types::Decode::from_bytes(v.as_ref()?).ok()?;
                    Some((id, job))
                })
                .collect();
            (block, built.receipts, built.events, changes)
        };
        // The durable commit runs without the node lock, so admission goes on meanwhile.
        let (block, receipts, events, changes) = built;
        if let Err(e) = self
            .shared
            .store
            .commit(&block, &receipts, &events, &changes)
        {
            return Err(self.halt(&mut self.lock(), e.to_string()));
        }
        let mempool_len = {
            let mut inner = self.lock();
            inner.in_flight = None;
            inner.archiving.clear();
            inner.mempool.len()
        };
        let header = &block.header;
        let hashes = receipts.iter().map(|r| r.tx_hash).collect();
        let event = Arc::new(BlockEvent {
            block: BlockView::new(header, Some(hashes)),
            events,
            receipts,
        });
        self.grant_inputs(&event);
        let metrics = &self.shared.metrics;
        metrics.block_committed(header.height, u64::from(header.tx_count), started.elapsed());
        metrics.block_events(
            event
                .events
                .iter()
                .chain(event.receipts.iter().flat_map(|r| &r.events)),
        );
        metrics.set_mempool(mempool_len);
        {
            let mut recent = self.shared.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No subscribers is fine.
        let _ = self.shared.events.send(event.clone());
        Ok(Some(event))
    }

    /// Stops the node from accepting or producing anything more.
    fn halt(&self, inner: &mut Inner, reason: String) -> NodeError {
        tracing::error!(%reason, "block commit failed; node halted");
        inner.halted = Some(reason.clone());
        NodeError::Halted { reason }
    }

    /// Starts the block producer on its own thread. It stops when [`Node::shutdown`] is called
    /// or the node halts.
    pub fn spawn_producer(&self) -> JoinHandle<()> {
        let node = self.clone();
        std::thread::Builder::new()
            .name("gridwork-producer".into())
            .spawn(move || {
                while !node.shared.stop.load(Ordering::Relaxed) {
                    match node.produce_block(false) {
                        Ok(Some(_)) => {}
                        Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                        Err(_) => break,
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the block producer thread: {e}"))
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

    /// An account as the ledger holds it now, with the nonce to sign the next transaction
    /// with. While a block's commit is in flight (milliseconds) this already includes it;
    /// transaction and block queries show only durable blocks.
    pub fn account(&self, address: &Address) -> AccountView {
        let inner = self.lock();
        let account = inner.state.account(address);
        let next = inner.mempool.next_nonce(&inner.state, address);
        let now = self.now_ms().max(inner.state.head().timestamp_ms);
        AccountView::new(*address, &account, now, next)
    }

    /// A transaction: committed (with receipt) or pending.
    pub fn tx(&self, hash: &Hash) -> Result<Option<TxStatus>, NodeError> {
        if let Some(record) = self.shared.store.tx(hash)? {
            return Ok(Some(TxStatus {
                hash: *hash,
                status: committed_state(&record.receipt),
                tx: TxView::from(&record.tx),
                receipt: Some(record.receipt),
            }));
        }
        let inner = self.lock();
        let in_flight = inner.in_flight.as_ref().and_then(|(block, hashes)| {
            hashes.iter().position(|h| h == hash).map(|i| &block.txs[i])
        });
        if let Some(tx) = inner.mempool.get(hash).or(in_flight) {
            return Ok(Some(TxStatus {
                hash: *hash,
                status: TxState::Pending,
                tx: TxView::from(tx),
                receipt: None,
            }));
        }
        drop(inner);
        // It may have left the mempool for a block whose commit just finished.
        Ok(self.shared.store.tx(hash)?.map(|record| TxStatus {
            hash: *hash,
            status: committed_state(&record.receipt),
            tx: TxView::from(&record.tx),
            receipt: Some(record.receipt),
        }))
    }

    /// A durable block with its transaction hashes.
    pub fn block(&self, id: BlockId) -> Result<Option<BlockView>, NodeError> {
        match self.block_header(id)? {
            Some((height, header)) => self.block_at(height, &header).map(Some),
            None => Ok(None),
        }
    }

    /// A durable block's height and header, without its transactions.
    pub fn block_header(&self, id: BlockId) -> Result<Option<(u64, Header)>, NodeError> {
        let store = &self.shared.store;
        let height = match id {
            BlockId::Latest => Some(self.durable_head()?),
            BlockId::Height(h) => Some(h),
            BlockId::Hash(hash) => store.height_of(&hash)?,
        };
        let Some(height) = height else {
            return Ok(None);
        };
        Ok(store.header(height)?.map(|header| (height, header)))
    }

    /// The block at `height` (whose header is `header`) with its transactions' hashes.
    pub fn block_at(&self, height: u64, header: &Header) -> Result<BlockView, NodeError> {
        let txs = self.shared.store.block_tx_hashes(height)?;
        Ok(BlockView::new(header, txs))
    }

    /// Up to `limit` durable blocks, newest first, below `before` (exclusive) if given.
    pub fn blocks(&self, limit: usize, before: Option<u64>) -> Result<Vec<BlockView>, NodeError> {
        let head = self.durable_head()?;
        let mut out = Vec::new();
        if before == Some(0) {
            return Ok(out);
        }
        let top = before.map_or(head, |b| (b - 1).min(head));
        for height in (0..=top).rev().take(limit) {
            if let Some(header) = self.shared.store.header(height)? {
                out.push(BlockView::new(&header, None));
            }
        }
        Ok(out)
    }

    /// A job with its tasks and the decline reasons workers reported: from the hot state
    /// while it is open, from the archive once it finished (read from disk by id).
    pub fn job(&self, id: &Hash) -> Option<JobView> {
        let (job, tasks) = {
            let inner = self.lock();
            let archiving = inner.archiving.iter().find(|(a, _)| a == id);
            match (inner.state.job(id), archiving) {
                (Some(job), _) => (
                    job.clone(),
                    inner.state.tasks_of(id).map(|(_, t)| t.clone()).collect(),
                ),
                (None, Some((_, archived))) => (archived.job.clone(), archived.tasks.clone()),
                (None, None) => {
                    drop(inner);
                    match self.shared.store.archived_job(id) {
                        Ok(Some(archived)) => (archived.job, archived.tasks),
                        Ok(None) => return None,
                        Err(e) => {
                            tracing::error!(error = %e, job = %id, "cannot read an archived job");
                            return None;
                        }
                    }
                }
            }
        };
        let tasks: Vec<gridwork_protocol::Task> = tasks;
        let instructions = &job.prescription.instructions;
        let tasks = tasks
            .iter()
            .enumerate()
            .map(|(index, t)| TaskView {
                index: index as u32,
                phase: t.phase,
                attempt: t.attempt,
                items: instructions.task_items(index as u32),
                bids: t.bids.iter().map(|b| (b.provider, b.price)).collect(),
                executor: t.executor,
                price: t.price,
                council: t.council.clone(),
                committed: t.commits.iter().map(|c| c.provider).collect(),
                revealed: t.reveals.iter().map(|r| (r.provider, r.output)).collect(),
                judged: t
                    .judgements
                    .iter()
                    .filter(|j| j.round == t.round)
                    .map(|j| j.provider)
                    .collect(),
                round: t.round,
                result: t.result,
                deadline_ms: t.deadline_ms,
                note: t.note.to_string(),
            })
            .collect();
        let status = if job.cancelled {
            JobStatus::Cancelled
        } else if job.finished {
            JobStatus::Finished
        } else {
            JobStatus::Open
        };
        let declines = self
            .shared
            .declines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default();
        Some(JobView {
            id: *id,
            requester: job.requester,
            status,
            prescription: job.prescription.clone(),
            escrow: job.escrow,
            spent: job.spent,
            max_task_cost: job.max_task_cost,
            settled: job.settled,
            closed: job.closed,
            tasks,
            declines,
        })
    }

    /// How many jobs and tasks the hot state holds (what memory follows): open work, and
    /// jobs that finished in the last block until its end.
    pub fn hot_jobs_and_tasks(&self) -> (usize, usize) {
        let inner = self.lock();
        let jobs: Vec<Hash> = inner.state.jobs().map(|(id, _)| *id).collect();
        let tasks = jobs.iter().map(|id| inner.state.tasks_of(id).count()).sum();
        (jobs.len(), tasks)
    }

    /// Ids of jobs neither finished nor cancelled (what workers scan for work).
    pub fn open_jobs(&self) -> Vec<Hash> {
        self.open_jobs_page(None, usize::MAX).0
    }

    /// Up to `limit` open jobs after `after`, in id order, and where the next page starts.
    pub fn open_jobs_page(&self, after: Option<Hash>, limit: usize) -> (Vec<Hash>, Option<Hash>) {
        let inner = self.lock();
        let ids = inner
            .state
            .jobs()
            .filter(|(id, j)| !j.finished && !j.cancelled && after.is_none_or(|a| **id > a))
            .map(|(id, _)| *id);
        page(ids, limit)
    }

    /// Records a provider's reason for not bidding on a job (checked: signed by the
    /// provider's key, the job exists). Keeps the newest reason per provider, 100 per job.
    pub fn decline(
        &self,
        job: &Hash,
        public_key: &PublicKey,
        reason: &str,
        time_ms: u64,
        signature: &Signature,
    ) -> Result<(), NodeError> {
        let message = gridwork_api::decline_message(&self.public_key(), job, reason, time_ms);
        public_key
            .verify(&message, signature)
            .map_err(|_| NodeError::BadSignature { what: "decline" })?;
        let provider = public_key.address();
        let inner = self.lock();
        if inner.state.job(job).is_none() {
            return Err(NodeError::NotFound {
                what: format!("job {job}"),
            });
        }
        // Strangers cannot crowd out real reasons: a provider is registered and staked.
        if inner.state.provider(&provider).is_none() {
            return Err(NodeError::NotAProvider { address: provider });
        }
        let reason: String = reason.chars().take(500).collect();
        let mut declines = self
            .shared
            .declines
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Reasons for jobs that left the hot state go with them (a look-up per job that has
        // reasons, not a pass over every open job).
        declines.retain(|id, _| inner.state.job(id).is_some());
        drop(inner);
        let list = declines.entry(*job).or_default();
        // A replayed older decline does not overwrite the provider's newer reason.
        if list
            .iter()
            .any(|d| d.provider == provider && d.time_ms >= time_ms)
        {
            return Ok(());
        }
        list.retain(|d| d.provider != provider);
        list.push(Decline {
            provider,
            reason,
            time_ms,
        });
        if list.len() > 100 {
            list.remove(0);
        }
        Ok(())
    }

    /// Appends to the log of a task run: `public_key` must be the executor's or a council
    /// member's of `post.attempt`, the current attempt, and `signature` its signature over
    /// [`gridwork_api::log_message`]. Returns the log's size.
    pub fn append_log(
        &self,
        job: &Hash,
        task: u32,
        post: &PostLog,
        public_key: &PublicKey,
        signature: &Signature,
    ) -> Result<u64, NodeError> {
        let message = gridwork_api::log_message(
            job,
            task,
            post.attempt,
            post.stream,
            post.offset,
            &post.data,
        );
        public_key
            .verify(&message, signature)
            .map_err(|_| NodeError::BadSignature { what: "log" })?;
        let provider = public_key.address();
        let (attempt, executor, council) = self.task_assignment(job, task)?;
        let assigned = executor == Some(provider) || council.contains(&provider);
        if attempt != post.attempt || !assigned {
            return Err(NodeError::NotAssigned {
                provider,
                task,
                attempt: post.attempt,
            });
        }
        let key = LogKey {
            job: *job,
            task,
            attempt: post.attempt,
            provider,
            stream: post.stream,
        };
        Ok(self
            .shared
            .logs
            .append(&key, post.offset, post.data.as_bytes())?)
    }

    /// A task's current attempt, executor and council.
    fn task_assignment(
        &self,
        job: &Hash,
        task: u32,
    ) -> Result<(u32, Option<Address>, Vec<Address>), NodeError> {
        self.task_parties(job, task)
            .map(|(attempt, executor, council, _)| (attempt, executor, council))
    }

    /// A task's current attempt, executor, council and its job's requester.
    fn task_parties(
        &self,
        job: &Hash,
        task: u32,
    ) -> Result<(u32, Option<Address>, Vec<Address>, Address), NodeError> {
        let key = gridwork_protocol::TaskKey {
            job: *job,
            index: task,
        };
        let not_found = || NodeError::NotFound {
            what: format!("task {task} of job {job}"),
        };
        {
            let inner = self.lock();
            let archiving = inner
                .archiving
                .iter()
                .find(|(id, _)| id == job)
                .and_then(|(_, a)| Some((a.tasks.get(task as usize)?, a.job.requester)));
            let hot = inner
                .state
                .task(&key)
                .zip(inner.state.job(job).map(|j| j.requester));
            if let Some((t, requester)) = hot.or(archiving) {
                return Ok((t.attempt, t.executor, t.council.clone(), requester));
            }
        }
        // A finished job's tasks are in the archive.
        let archived = self.shared.store.archived_job(job)?.ok_or_else(not_found)?;
        let t = archived.tasks.get(task as usize).ok_or_else(not_found)?;
        Ok((
            t.attempt,
            t.executor,
            t.council.clone(),
            archived.job.requester,
        ))
    }

    /// Part of a task run's log from `offset`, read by `reader`. `provider` defaults to the
    /// task's executor and `attempt` to its current attempt.
    ///
    /// A log is what a program printed of its (decrypted) inputs, so only the job's requester,
    /// the provider who wrote it, and the task's current executor and council may read it.
    #[allow(clippy::too_many_arguments)]
    pub fn task_log(
        &self,
        job: &Hash,
        task: u32,
        provider: Option<Address>,
        attempt: Option<u32>,
        stream: LogStream,
        offset: u64,
        reader: &Address,
    ) -> Result<TaskLog, NodeError> {
        let (current, executor, council, requester) = self.task_parties(job, task)?;
        let provider = provider.or(executor).ok_or_else(|| NodeError::NotFound {
            what: format!(
                "an executor of task {task} (the auction is still open); name --provider"
            ),
        })?;
        let allowed = *reader == requester
            || *reader == provider
            || executor == Some(*reader)
            || council.contains(reader);
        if !allowed {
            return Err(NodeError::NotPermitted {
                reader: *reader,
                what: format!("the logs of task {task} of job {job}"),
            });
        }
        let attempt = attempt.unwrap_or(current);
        let key = LogKey {
            job: *job,
            task,
            attempt,
            provider,
            stream,
        };
        let (bytes, size) = self.shared.logs.read(&key, offset)?;
        // Cut at a character boundary; the rest comes with the next read.
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let mut bytes = e.into_bytes();
                bytes.truncate(valid);
                String::from_utf8(bytes).unwrap_or_default()
            }
        };
        Ok(TaskLog {
            job: *job,
            task,
            attempt,
            provider,
            stream,
            offset,
            data: text,
            size,
        })
    }

    /// A provider's record with its pool status and stake.
    pub fn provider(&self, address: &Address) -> Option<ProviderView> {
        let inner = self.lock();
        Self::provider_view(&inner.state, address, self.now_ms())
    }

    /// Every provider.
    pub fn providers(&self) -> Vec<ProviderView> {
        self.providers_page(None, usize::MAX).0
    }

    /// Up to `limit` providers after `after`, in address order, and where the next page
    /// starts.
    pub fn providers_page(
        &self,
        after: Option<Address>,
        limit: usize,
    ) -> (Vec<ProviderView>, Option<Address>) {
        let inner = self.lock();
        let addresses = inner
            .state
            .providers()
            .map(|(a, _)| *a)
            .filter(|a| after.is_none_or(|after| *a > after));
        let (addresses, next) = page(addresses, limit);
        let views = addresses
            .iter()
            .filter_map(|a| Self::provider_view(&inner.state, a, self.now_ms()))
            .collect();
        (views, next)
    }

    fn provider_view(state: &State, address: &Address, now: u64) -> Option<ProviderView> {
        let p = state.provider(address)?;
        let now = now.max(state.head().timestamp_ms);
        let status = p.status(now, state.params().heartbeat_timeout_ms);
        Some(ProviderView {
            address: *address,
            owner: p.owner,
            status,
            hardware: p.hardware.clone(),
            stake_locked: state.account(address).stake_locked,
            streak: p.streak,
            validated: p.validated,
            failed: p.failed,
            earned: p.earned,
            slashed: p.slashed,
            active: p.active,
            last_heartbeat_ms: p.last_heartbeat_ms,
            peer: p.peer.clone(),
        })
    }

    fn chunk_store(&self) -> Result<&ChunkStore, NodeError> {
        self.shared.chunks.as_ref().ok_or(NodeError::NoChunkStore)
    }

    /// The answer to a batched fetch of `ids` (frames; see `gridwork_api::frames`): each
    /// chunk read from the store straight into the body, which is allocated once.
    pub fn fetch_answer(&self, ids: &[Hash], max_bytes: usize) -> Result<Vec<u8>, NodeError> {
        let store = self.chunk_store()?;
        // Repeats are answered once (`answer_fetch`), so they size nothing.
        let mut distinct = ids.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let capacity = store.stored_bytes(&distinct) as usize + 37 * ids.len();
        Ok(gridwork_api::frames::answer_fetch(
            ids,
            capacity,
            max_bytes,
            |id, out| store.read_into(id, out),
        )?)
    }

    /// Which of `ids` the node lacks.
    pub fn missing_chunks(&self, ids: &[Hash]) -> Result<Vec<Hash>, NodeError> {
        Ok(self.chunk_store()?.missing(ids.iter()))
    }

    /// Syncs the chunk store once `bytes` were stored since its last sync (see
    /// `ChunkStore::sync_every`).
    pub fn sync_chunks_every(&self, bytes: u64) -> Result<(), NodeError> {
        let store = self.chunk_store()?;
        if store.unsynced_past(bytes) {
            self.sync_chunks(store)?;
        }
        Ok(())
    }

    /// Makes the chunks stored so far durable, the charges of those not yet pinned first: a
    /// chunk that survives a crash keeps its uploader charged (the log may also keep a charge
    /// of a chunk lost in the crash; it is left out when the log is read back).
    fn sync_chunks(&self, store: &ChunkStore) -> Result<(), NodeError> {
        if let Some(pins) = self.shared.pins.as_ref() {
            pins.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sync()?;
        }
        Ok(store.sync()?)
    }

    /// Stores a sealed chunk uploaded by `uploader`, charged to it (against its quota)
    /// until a pin names the chunk or a collection drops it.
    pub fn put_chunk_by(
        &self,
        id: &Hash,
        bytes: &[u8],
        uploader: &Address,
    ) -> Result<(), NodeError> {
        let Some(pins) = self.shared.pins.as_ref() else {
            return self.put_chunk(id, bytes);
        };
        if self.chunk_store()?.has(id) {
            return Ok(());
        }
        let len = bytes.len() as u64;
        if let Some(quota) = pins.account_quota {
            let pinned = self.pinned_bytes(uploader).0;
            let pending = pins
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .by_account
                .get(uploader)
                .copied()
                .unwrap_or(0);
            if pinned + pending + len > quota {
                return Err(NodeError::AccountQuota {
                    account: *uploader,
                    used: pinned + pending,
                    needed: len,
                    quota,
                    retention_days: pins.retention.as_secs() / 86_400,
                });
            }
        }
        self.put_chunk(id, bytes)?;
        pins.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(*id, *uploader, len);
        Ok(())
    }

    /// Stores a sealed chunk (checked against its id).
    pub fn put_chunk(&self, id: &Hash, bytes: &[u8]) -> Result<(), NodeError> {
        let store = self.chunk_store()?;
        match store.put(id, bytes) {
            Err(ChunkStoreError::Full { .. }) if self.shared.pins.is_some() => {
                // Full: drop what nothing keeps any more (at most every 30 s: a store that
                // stays full must not make every upload collect), then try once more.
                let due = self.shared.pins.as_ref().is_some_and(|pins| {
                    let mut last = pins
                        .collected_when_full
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
                    if due {
                        *last = Some(Instant::now());
                    }
                    due
                });
                if due {
                    let report = self.collect_garbage()?;
                    tracing::info!(
                        freed = report.freed_bytes,
                        "chunk store full; collected garbage"
                    );
                }
                match store.put(id, bytes) {
                    Err(ChunkStoreError::Full { used, quota, .. }) => Err(NodeError::StoreFull {
                        used,
                        quota,
                        retention_days: self
                            .shared
                            .pins
                            .as_ref()
                            .map_or(0, |p| p.retention.as_secs() / 86_400),
                    }),
                    other => Ok(other?),
                }
            }
            other => Ok(other?),
        }
    }

    /// Pins tree `cid` with its chunk ids (root, manifest and data chunks, as the pusher
    /// lists them): the node keeps them for the retention period from now. Every named chunk
    /// must be stored. `proof` is the pusher's [`DataKey::holder_proof`](gridwork_transfer::DataKey::holder_proof):
    /// the first pin sets the tree's lock, later ones must open it. Returns when the pin runs
    /// out (ms since the epoch).
    pub fn pin_tree(
        &self,
        cid: &Hash,
        chunks: &[Hash],
        proof: &Hash,
        pinner: &Address,
    ) -> Result<u64, NodeError> {
        let store = self.chunk_store()?;
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
        // Each chunk once, in order: the pin lists them so, and its set digest is then one
        // pass over them (`pin_view`); what the tree keeps stored is the root besides.
        let named = sorted_ids(chunks.to_vec());
        let mut distinct = named.clone();
        if let Err(at) = distinct.binary_search(cid) {
            distinct.insert(at, *cid);
        }
        let (missing, bytes) = store.tally(&distinct);
        if let Some(first) = missing.first() {
            return Err(NodeError::TreeIncomplete {
                cid: *cid,
                missing: missing.len(),
                total: distinct.len(),
                first: *first,
            });
        }
        // The pin promises the tree: its chunks are made durable before it is written.
        self.sync_chunks(store)?;
        let until = self.now_ms() + pins.retention.as_millis() as u64;
        let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
        let lock = proof_lock(proof);
        let earlier = self.read_pin(cid)?;
        if earlier
            .as_ref()
            .and_then(|p| p.lock)
            .is_some_and(|l| l != lock)
        {
            return Err(NodeError::NotKeyHolder {
                cid: *cid,
                what: "pin it",
            });
        }
        // Every account that pins the tree is charged for it (a pin again replaces its own
        // charge): each account's pins stay within its quota whoever else keeps the tree.
        let mut charges = earlier.map(|p| p.charges).unwrap_or_default();
        let own = charges
            .iter()
            .position(|(who, _)| who == pinner)
            .map(|i| charges.remove(i));
        let mut usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(quota) = pins.account_quota {
            let used = usage
                .get(pinner)
                .copied()
                .unwrap_or(0)
                .saturating_sub(own.map_or(0, |(_, b)| b));
            if used + bytes > quota {
                return Err(NodeError::AccountQuota {
                    account: *pinner,
                    used,
                    needed: bytes,
                    quota,
                    retention_days: pins.retention.as_secs() / 86_400,
                });
            }
        }
        charges.push((*pinner, bytes));
        // A pin records the latest MAX_PINNERS accounts; the earliest beyond them is no
        // longer charged.
        let dropped: Vec<(Address, u64)> = charges
            .drain(..charges.len().saturating_sub(MAX_PINNERS))
            .collect();
        let path = pins.dir.join(format!("{cid}.pin"));
        let file_err = |e: std::io::Error| NodeError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&pins.dir).map_err(file_err)?;
        let body = PinFile {
            until_ms: until,
            lock: Some(lock),
            charges,
            chunks: named,
        }
        .encode(&lock);
        let tmp = path.with_extension("tmp");
        write_durably(&tmp, &body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| std::fs::File::open(&pins.dir)?.sync_all())
            .map_err(file_err)?;
        // Its chunks are no longer uploads in progress.
        for (who, b) in own.into_iter().chain(dropped) {
            uncharge(&mut usage, &who, b);
        }
        *usage.entry(*pinner).or_insert(0) += bytes;
        let mut pending = pins.pending.lock().unwrap_or_else(|p| p.into_inner());
        for id in distinct.iter() {
            pending.take(id);
        }
        Ok(until)
    }

    /// Bytes of tree `cid`'s pin file (0 if it has none): what reading its view holds in
    /// memory.
    pub fn pin_file_bytes(&self, cid: &Hash) -> u64 {
        self.shared.pins.as_ref().map_or(0, |pins| {
            std::fs::metadata(pins.dir.join(format!("{cid}.pin"))).map_or(0, |m| m.len())
        })
    }

    /// What this node keeps of tree `cid` (until when, and the set of chunks its pin lists);
    /// `None` if no pin of it is stored.
    pub fn pin_view(&self, cid: &Hash) -> Result<Option<PinView>, NodeError> {
        Ok(self.read_pin(cid)?.map(|pin| {
            // Pins list each chunk once, in order (sorting them again is a pass over them).
            let distinct = sorted_ids(pin.chunks);
            PinView {
                until_ms: pin.until_ms,
                chunks: distinct.len() as u64,
                chunk_set: chunk_set_digest(&distinct),
                lock: pin.lock,
            }
        }))
    }

    /// [`pin_tree`](Self::pin_tree) with the chunks of tree `base`'s pin, less `removed`,
    /// plus `added`: a re-push names only what changed since the tree it pushed before.
    /// `chunk_set` is the [`chunk_set_digest`] the pinner expects of the result; a base this
    /// node does not keep, or a result that differs, is refused (the pinner then names every
    /// chunk), so a pin never lists less than its tree needs.
    #[allow(clippy::too_many_arguments)]
    pub fn pin_tree_from(
        &self,
        cid: &Hash,
        base: &Hash,
        added: &[Hash],
        removed: &[Hash],
        chunk_set: &Hash,
        proof: &Hash,
        pinner: &Address,
    ) -> Result<u64, NodeError> {
        let gone = NodeError::PinBaseGone {
            cid: *cid,
            base: *base,
        };
        let base_pin = self.read_pin(base)?.ok_or(gone)?;
        let removed = sorted_ids(removed.to_vec());
        let mut chunks = sorted_difference(&sorted_ids(base_pin.chunks), &removed);
        chunks.extend_from_slice(added);
        let chunks = sorted_ids(chunks);
        if chunk_set_digest(&chunks) != *chunk_set {
            return Err(NodeError::PinSetMismatch {
                cid: *cid,
                base: *base,
            });
        }
        self.pin_tree(cid, &chunks, proof, pinner)
    }

    /// What an account must hold, balance and stake together, for the node to take its
    /// data-plane writes (at least one base unit).
    pub fn data_min_funds(&self) -> Amount {
        let min = self
            .shared
            .pins
            .as_ref()
            .map_or(Amount::ZERO, |p| p.min_funds);
        min.max(Amount(1))
    }

    /// What the node stores for `account`: pinned and pending bytes, and its quota.
    pub fn storage(&self, account: &Address) -> StorageView {
        let (pinned_bytes, quota_bytes) = self.pinned_bytes(account);
        let pending_bytes = self.shared.pins.as_ref().map_or(0, |pins| {
            let pending = pins.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.by_account.get(account).copied().unwrap_or(0)
        });
        StorageView {
            pinned_bytes,
            pending_bytes,
            quota_bytes,
            min_funds: self.data_min_funds(),
        }
    }

    /// Bytes of pinned trees charged to `account`, and its quota (none: no limit).
    pub fn pinned_bytes(&self, account: &Address) -> (u64, Option<u64>) {
        let Some(pins) = self.shared.pins.as_ref() else {
            return (0, None);
        };
        let usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
        (usage.get(account).copied().unwrap_or(0), pins.account_quota)
    }

    /// The pin of tree `cid`, if one is stored (a damaged file counts as none).
    fn read_pin(&self, cid: &Hash) -> Result<Option<PinFile>, NodeError> {
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
        let path = pins.dir.join(format!("{cid}.pin"));
        match std::fs::read(&path) {
            Ok(bytes) => Ok(PinFile::decode(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Drops every chunk that no live pin, open job or upload in progress keeps: pins run
    /// out after the retention period unless an open job reads or produced their tree.
    pub fn collect_garbage(&self) -> Result<GcReport, NodeError> {
        let grace = self
            .shared
            .pins
            .as_ref()
            .ok_or(NodeError::NoChunkStore)?
            .grace;
        self.collect_garbage_at(self.now_ms(), grace)
    }

    /// [`collect_garbage`](Self::collect_garbage) as of `now_ms`, keeping unpinned chunks
    /// younger than `grace`.
    pub fn collect_garbage_at(&self, now_ms: u64, grace: Duration) -> Result<GcReport, NodeError> {
        let store = self.chunk_store()?;
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
        let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.referenced_trees();
        let mut report = GcReport::default();
        let mut keep = HashSet::new();
        let mut pinned = HashSet::new();
        let entries = match std::fs::read_dir(&pins.dir) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(NodeError::File {
                    path: pins.dir.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        for path in entries {
            let Some(cid) = pin_cid(&path) else { continue };
            let body = std::fs::read(&path).map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            // A damaged pin keeps nothing but its root: the pusher's next push pins again.
            let pin = PinFile::decode(&body);
            let until = pin.as_ref().map_or(0, |p| p.until_ms);
            if until < now_ms && !used.contains(&cid) {
                let _ = std::fs::remove_file(&path);
                let mut usage = pins.usage.lock().unwrap_or_else(|p| p.into_inner());
                for (who, b) in pin.iter().flat_map(|p| &p.charges) {
                    uncharge(&mut usage, who, *b);
                }
                if let Some(dir) = &self.shared.grants_dir {
                    let _ = std::fs::remove_file(dir.join(format!("{cid}.json")));
                }
                report.pins_expired += 1;
                continue;
            }
            report.pins_kept += 1;
            pinned.insert(cid);
            keep.insert(cid);
            keep.extend(pin.into_iter().flat_map(|p| p.chunks));
        }
        // A tree an open job uses but nobody pinned: its chunk list is sealed in its
        // manifest, so the node keeps its root only. (Collection used to stop altogether
        // here, so one job naming an uploaded, unpinned chunk stopped it for every tree.)
        for cid in used.iter().filter(|c| !pinned.contains(c) && store.has(c)) {
            tracing::warn!(%cid, "an open job uses a tree no push pinned; keeping its root only");
            report.unpinned_in_use += 1;
            keep.insert(*cid);
        }
        report.freed_bytes = store.gc_unless(&keep, grace)?;
        let mut pending = pins.pending.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<Hash> = pending
            .chunks
            .keys()
            .filter(|id| !store.has(id))
            .copied()
            .collect();
        for id in &gone {
            pending.take(id);
        }
        // Pinned and collected chunks leave the log too.
        if let Some((path, _)) = pending.log.take() {
            pending.rewrite(path);
        }
        report.used_bytes = store.used();
        drop(pending);
        let open = self.open_job_ids();
        report.job_logs_pruned = self.shared.logs.prune(
            |job| open.contains(job),
            now_ms.saturating_sub(self.shared.log_retention_ms),
        );
        self.shared.metrics.gc_ran(&report);
        Ok(report)
    }

    /// Jobs still open (not finished, not cancelled).
    fn open_job_ids(&self) -> HashSet<Hash> {
        let inner = self.lock();
        inner
            .state
            .jobs()
            .filter(|(_, j)| !j.finished && !j.cancelled)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Trees open jobs read (inputs) or produced (revealed outputs).
    fn referenced_trees(&self) -> HashSet<Hash> {
        let inner = self.lock();
        let state = &inner.state;
        let mut used = HashSet::new();
        for (id, job) in state.jobs().filter(|(_, j)| !j.finished && !j.cancelled) {
            used.extend(job.prescription.data.iter().map(|d| d.cid));
            for (_, task) in state.tasks_of(id) {
                used.extend(task.reveals.iter().map(|r| r.output));
                used.extend(task.result);
            }
        }
        used
    }

    /// Runs [`collect_garbage`](Self::collect_garbage) on its own thread every configured
    /// interval until [`Node::shutdown`]; `None` for a node without a chunk store.
    pub fn spawn_gc(&self) -> Option<JoinHandle<()>> {
        let every = self.shared.pins.as_ref()?.every;
        let node = self.clone();
        std::thread::Builder::new()
            .name("gridwork-gc".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !node.shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    match node.collect_garbage() {
                        Ok(r) => tracing::info!(
                            freed = r.freed_bytes,
                            expired = r.pins_expired,
                            kept = r.pins_kept,
                            "garbage collection"
                        ),
                        Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
                    }
                }
            })
            .ok()
    }

    /// A sealed chunk.
    pub fn chunk(&self, id: &Hash) -> Result<Option<Vec<u8>>, NodeError> {
        Ok(self.chunk_store()?.get(id)?)
    }

    /// The key grants of a tree.
    pub fn grants(&self, cid: &Hash) -> Result<Vec<KeyGrant>, NodeError> {
        let dir = self
            .shared
            .grants_dir
            .as_ref()
            .ok_or(NodeError::NoChunkStore)?;
        let path = dir.join(format!("{cid}.json"));
        match std::fs::read(&path) {
            // A damaged file is an error, never an empty list: the next write would erase
            // every grant.
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| NodeError::File {
                path: path.display().to_string(),
                message: format!("the key grants do not parse: {e}"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(NodeError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// Adds grants to a tree on behalf of a holder of its data key: `proof` is the sender's
    /// [`DataKey::holder_proof`](gridwork_transfer::DataKey::holder_proof) and must open the
    /// lock the tree's first pin set, so nobody without the key can fill the tree's grants
    /// (or slip a wrong one in for a recipient the node will grant to).
    pub fn add_grants_as_holder(
        &self,
        cid: &Hash,
        new: Vec<KeyGrant>,
        proof: &Hash,
    ) -> Result<(), NodeError> {
        let pins = self.shared.pins.as_ref().ok_or(NodeError::NoChunkStore)?;
        let lock = {
            let _guard = pins.lock.lock().unwrap_or_else(|p| p.into_inner());
            let pin = self
                .read_pin(cid)?
                .ok_or(NodeError::TreeNotPinned { cid: *cid })?;
            match pin.lock {
                Some(lock) => lock,
                // A pin of an older format: the first holder to share claims it.
                None => {
                    let lock = proof_lock(proof);
                    let path = pins.dir.join(format!("{cid}.pin"));
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, pin.encode(&lock))
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .map_err(|e| NodeError::File {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        })?;
                    lock
                }
            }
        };
        if proof_lock(proof) != lock {
            return Err(NodeError::NotKeyHolder {
                cid: *cid,
                what: "share its key",
            });
        }
        self.add_grants(cid, new)
    }

    /// Adds grants to a tree (kept beside earlier grants for the same recipient; an
    /// identical one is a no-op), in one write. At most 256 per tree.
    fn add_grants(&self, cid: &Hash, new: Vec<KeyGrant>) -> Result<(), NodeError> {
        let _guard = self
            .shared
            .grants_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dir = self
            .shared
            .grants_dir
            .as_ref()
            .ok_or(NodeError::NoChunkStore)?;
        if !self.chunk_store()?.has(cid) {
            return Err(NodeError::NotFound {
                what: format!("tree {cid}"),
            });
        }
        let mut grants = self.grants(cid)?;
        // Grants are never replaced: a holder may post a wrong one by mistake, and it must
        // not push out a right one. A recipient tries each of its grants (and checks it
        // against the pin lock). Wraps are deterministic, so a right grant posted again is
        // identical and kept once; each recipient holds at most a few distinct ones, so junk
        // cannot crowd a recipient's grants or cost the node much unwrapping.
        let before = grants.len();
        for grant in new {
            if grants.contains(&grant) {
                continue;
            }
            let held = grants
                .iter()
                .filter(|g| g.recipient == grant.recipient)
                .count();
            if held >= MAX_GRANTS_PER_RECIPIENT {
                return Err(NodeError::TooManyGrants);
            }
            grants.push(grant);
        }
        if grants.len() == before {
            return Ok(());
        }
        if grants.len() > 256 {
            return Err(NodeError::TooManyGrants);
        }
        let file_err = |e: std::io::Error| NodeError::File {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(file_err)?;
        let path = dir.join(format!("{cid}.json"));
        let tmp = path.with_extension("tmp");
        write_durably(&tmp, &serde_json::to_vec(&grants).unwrap_or_default()).map_err(file_err)?;
        std::fs::rename(&tmp, &path).map_err(file_err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err)?;
        Ok(())
    }

    /// For every auction the block closed, wraps the data keys of the job's inputs that were
    /// granted to this node for the executor and the council, so they can fetch and decrypt
    /// them (and nobody else can). Inputs not granted to the node are the requester's to
    /// share. Failures are logged: the worker retries and the requester can share by hand.
    fn grant_inputs(&self, block: &BlockEvent) {
        let closed = block
            .events
            .iter()
            .chain(block.receipts.iter().flat_map(|r| r.events.iter()))
            .filter_map(|e| match e {
                Event::AuctionClosed {
                    job,
                    executor,
                    council,
                    ..
                } => Some((
                    *job,
                    std::iter::once(*executor).chain(council.clone()).collect(),
                )),
                // The council is drawn a block after the auction (and again for silent
                // members' seats).
                Event::CouncilDrawn { job, council, .. } => Some((*job, council.clone())),
                _ => None,
            })
            .collect();
        self.grant_to_assigned(closed);
    }

    /// Grants the inputs of every task that is running now (committing or revealing) to its
    /// executor and council. A node killed between a block's commit and its hand-off would
    /// otherwise leave those workers without keys; at start-up this catches up (recipients
    /// that already hold a grant are skipped, so it is idempotent).
    fn grant_running_tasks(&self) {
        let running = {
            let inner = self.lock();
            inner
                .state
                .jobs()
                .filter(|(_, j)| !j.finished && !j.prescription.data.is_empty())
                .flat_map(|(id, _)| inner.state.tasks_of(id))
                .filter(|(_, t)| {
                    matches!(
                        t.phase,
                        Phase::Committing | Phase::Revealing | Phase::Judging
                    )
                })
                .map(|(k, t)| {
                    (
                        k.job,
                        t.executor.iter().chain(&t.council).copied().collect(),
                    )
                })
                .collect()
        };
        self.grant_to_assigned(running);
    }

    /// The data key of input `cid` shared with this node whose claim for `requester` is
    /// `claim`, if there is one.
    fn input_key(&self, cid: &Hash, claim: &Hash, requester: &Address) -> Option<DataKey> {
        let me = self.shared.key.address();
        let grants = match self.grants(cid) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, %cid, "cannot read the grants of an input");
                return None;
            }
        };
        grants
            .iter()
            .filter(|g| g.recipient == me)
            .filter_map(|g| unwrap_key(g, &self.shared.key))
            .find(|key| key.input_claim(cid, requester) == *claim)
    }

    /// Admission of a job on a node with a data plane: every input's key must have been
    /// shared with the node, and the job's claim must prove that the requester holds it.
    /// (The hand-off at auction close checks again; this refuses a thief's job, or an honest
    /// mistake, before any provider is assigned work it could not do.)
    fn check_inputs(&self, inputs: &[DataInput], requester: &Address) -> Result<(), AdmitError> {
        if self.shared.grants_dir.is_none() {
            return Ok(());
        }
        for DataInput { cid, claim } in inputs {
            if self.input_key(cid, claim, requester).is_none() {
                let shared = self
                    .grants(cid)
                    .is_ok_and(|g| g.iter().any(|g| g.recipient == self.shared.key.address()));
                return Err(AdmitError::InputNotHeld {
                    cid: *cid,
                    why: if shared {
                        "the job's claim that its requester holds the tree's key does not check out"
                    } else {
                        "its key was never shared with this node"
                    },
                });
            }
        }
        Ok(())
    }

    /// Wraps the inputs of each `(job, workers)` for those workers.
    fn grant_to_assigned(&self, assigned: Vec<(Hash, Vec<Address>)>) {
        if self.shared.grants_dir.is_none() {
            return;
        }
        // One unwrap per input of a job, however many of its tasks closed at once.
        let mut keys: HashMap<(Hash, Hash), Option<DataKey>> = HashMap::new();
        for (job, workers) in assigned {
            let (inputs, requester, recipients) = {
                let inner = self.lock();
                let Some(j) = inner.state.job(&job) else {
                    continue;
                };
                let recipients: Vec<PublicKey> = workers
                    .iter()
                    .filter_map(|a| inner.state.account(a).public_key)
                    .collect();
                (j.prescription.data.clone(), j.requester, recipients)
            };
            for DataInput { cid, claim } in inputs {
                // Only a key the requester proved, in the job, that it holds: a job naming
                // somebody else's tree gets nothing of it.
                let key = keys
                    .entry((job, cid))
                    .or_insert_with(|| self.input_key(&cid, &claim, &requester));
                let Some(key) = key.clone() else {
                    tracing::warn!(%cid, %job, %requester, "not handing out an input's key: the job's claim to hold it does not check out (or the key was not shared with this node)");
                    continue;
                };
                // Wraps are deterministic, so a recipient that already has this node's grant
                // gets the identical grant (a no-op). A recipient holding only somebody else's
                // grant (possibly a wrong key planted by a holder) still gets the right one.
                let new: Vec<KeyGrant> = recipients.iter().map(|r| wrap_key(&key, r)).collect();
                if let Err(e) = self.add_grants(&cid, new) {
                    tracing::warn!(error = %e, %cid, "cannot grant an input's key");
                }
            }
        }
    }

    /// Publishes where the node serves its chunks peer to peer (in `GET /v1/chain`).
    pub fn set_peer(&self, peer: Option<PeerAddr>) {
        *self.shared.peer.lock().unwrap_or_else(|p| p.into_inner()) = peer;
    }

    /// The node's chunk store, to serve peer to peer; `None` for a node without one.
    pub fn chunks(&self) -> Option<ChunkStore> {
        self.chunk_store().ok().cloned()
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

/// The most distinct key grants one recipient may hold for one tree.
const MAX_GRANTS_PER_RECIPIENT: usize = 4;

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
