//! The ledger service: state, mempool, consensus and the store behind one lock; admission,
//! block production, and the chain's queries, answered in domain types (the API layer
//! builds its views from them, in `api::views`).
//!
//! # Lifecycle
//!
//! A ledger opens over a store (loading the state, or writing a genesis into an empty one)
//! and serves reads at once. [`Ledger::spawn_producer`] runs the Solo block producer on its
//! own thread; each block is applied in memory, committed durably to the store (one fsync per
//! block), and only then announced to subscribers ([`Committed`]) or visible through the
//! block and transaction queries. If a commit fails the ledger halts: it refuses new
//! transactions and says why ([`Ledger::halted`], `/health`); a restart resumes from the last
//! durable block.
//!
//! # Concurrency
//!
//! Signature checks, the expensive part of admission, run before taking the lock, in
//! batches, and so do the checks of jobs' inputs (the key service's, which the node passes
//! in: [`crate::Node::submit`] is the way in). The lock
//! guards the nonce and balance checks, block building and the in-memory apply; the durable
//! commit runs without it, so admission goes on meanwhile. Nothing else in the node takes
//! this lock: the data service, the key hand-off and the task records have their own state
//! and read the ledger through its queries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gridwork_consensus::Consensus;
use gridwork_protocol::{ArchivedJob, Event, Genesis, Receipt, State, TxError};
use gridwork_storage::{ChainMeta, StorageError, Store};
use gridwork_types::{
    verify_batch, Address, Block, DataInput, Decode, Hash, Header, SignedTx, TxKind,
};
use tokio::sync::broadcast;

use crate::mempool::Mempool;
use crate::metrics::Metrics;
use crate::{AdmitError, Clock, NodeError};

mod queries;

pub use queries::{AccountNow, ChainFacts, JobRecord, ProviderNow, TxLookup};

/// Blocks kept for subscribers that resume (`Last-Event-ID`): a client that reconnects
/// within this many blocks misses nothing.
pub const RECENT_EVENTS: usize = 256;

/// A check of a job's inputs at admission (the key service's): run without the lock.
pub(crate) type InputCheck<'a> = dyn Fn(&[DataInput], &Address) -> Result<(), AdmitError> + 'a;

/// A block as it was committed, announced to subscribers once it is durable.
#[derive(Debug)]
pub struct Committed {
    /// Its header.
    pub header: Header,
    /// Its transactions' hashes, in order.
    pub tx_hashes: Vec<Hash>,
    /// Transitions the block triggered before its transactions.
    pub events: Vec<Event>,
    /// One per transaction.
    pub receipts: Vec<Receipt>,
}

impl Committed {
    /// The block's height.
    pub fn height(&self) -> u64 {
        self.header.height
    }

    /// Every event of the block: its own, then each transaction's.
    pub fn all_events(&self) -> impl Iterator<Item = &Event> {
        self.events
            .iter()
            .chain(self.receipts.iter().flat_map(|r| &r.events))
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

/// An outside client's subscription to committed blocks; it counts against the cap it was
/// taken under until dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The blocks.
    pub rx: broadcast::Receiver<Arc<Committed>>,
    open: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
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
    archiving: Vec<(Hash, ArchivedJob)>,
    /// Services the block in flight archives (closed for good), likewise.
    archiving_services: Vec<(Hash, gridwork_protocol::Service)>,
}

struct Shared {
    chain_id: String,
    genesis_hash: Hash,
    inner: Mutex<Inner>,
    store: Box<dyn Store>,
    producing: Mutex<()>,
    commits: broadcast::Sender<Arc<Committed>>,
    /// The latest [`RECENT_EVENTS`] blocks, for subscribers that resume.
    recent: Mutex<VecDeque<Arc<Committed>>>,
    /// Outside subscriptions open now ([`Ledger::subscribe_limited`]).
    subscribers: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

/// The ledger service. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({})", self.shared.chain_id)
    }
}

/// What a ledger opens with.
pub(crate) struct LedgerParts {
    pub(crate) store: Box<dyn Store>,
    pub(crate) consensus: Box<dyn Consensus>,
    pub(crate) mempool: Mempool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Ledger {
    /// Opens the ledger over `parts.store`, initialising an empty store from `genesis`.
    pub(crate) fn open(parts: LedgerParts, genesis: Option<&Genesis>) -> Result<Ledger, NodeError> {
        let LedgerParts {
            store,
            consensus,
            mempool,
            clock,
            metrics,
        } = parts;
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
        metrics.set_head(state.head().height);
        // No larger than the ring of recent blocks: a subscriber that lags keeps no more
        // blocks in memory than a resume could ask for.
        let (commits, _) = broadcast::channel(RECENT_EVENTS);
        Ok(Ledger {
            shared: Arc::new(Shared {
                chain_id: meta.chain_id,
                genesis_hash: meta.genesis_hash,
                inner: Mutex::new(Inner {
                    state,
                    mempool,
                    consensus,
                    last_block_at: clock.monotonic_ms(),
                    halted: None,
                    in_flight: None,
                    archiving: Vec::new(),
                    archiving_services: Vec::new(),
                }),
                store,
                producing: Mutex::new(()),
                commits,
                recent: Mutex::new(VecDeque::new()),
                subscribers: Arc::default(),
                metrics,
                clock,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the ledger half-applied (blocks are
        // all-or-nothing), so a poisoned lock is still safe to use.
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state, and the jobs the block in flight archives (out of the state, not yet
    /// in the store), under the lock: for the node's other services.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&State, &[(Hash, ArchivedJob)]) -> R) -> R {
        let inner = self.lock();
        f(&inner.state, &inner.archiving)
    }

    /// The store, for reads of what is durable.
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.shared.store
    }

    /// The chain id transactions must be signed for.
    pub fn chain_id(&self) -> &str {
        &self.shared.chain_id
    }

    /// The hash of the chain's genesis block.
    pub fn genesis_hash(&self) -> Hash {
        self.shared.genesis_hash
    }

    /// The time as this ledger reads it ([`Clock`]).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Why the ledger halted, if it did.
    pub fn halted(&self) -> Option<String> {
        self.lock().halted.clone()
    }

    /// The height of the last block committed (and announced).
    pub fn height(&self) -> u64 {
        self.shared.metrics.head()
    }

    /// The height of the last durable block, read from the store.
    pub fn durable_head(&self) -> Result<u64, NodeError> {
        Ok(self
            .shared
            .store
            .head_height()?
            .ok_or(StorageError::Empty)?)
    }

    /// The state root of the head (for tests and operators).
    pub fn state_root(&self) -> Hash {
        self.lock().state.root()
    }

    /// Admits transactions: signatures checked in one batch without the lock, then each
    /// job's inputs by `check_inputs` (also without the lock), then nonce, fee and balance
    /// against the projected state. One result per transaction.
    pub(crate) fn submit_checked(
        &self,
        txs: Vec<SignedTx>,
        check_inputs: &InputCheck<'_>,
    ) -> Vec<Result<Hash, AdmitError>> {
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
                    check_inputs(&prescription.data, &t.tx.sender())
                }
                // A service's inputs (a model's weights) likewise.
                TxKind::CreateService { spec, .. }
                    if sig.is_ok() && spec.data.len() <= max_inputs =>
                {
                    check_inputs(&spec.data, &t.tx.sender())
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
    /// do. On a failed commit the ledger halts and returns the error.
    pub fn produce_block(&self, force: bool) -> Result<Option<Arc<Committed>>, NodeError> {
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
            if !built.rejected.is_empty() || !built.failed.is_empty() {
                // The projections of these senders assumed what the block did not do: a
                // refused transaction's nonce is free again; a market refusal spent only its
                // fee (today its kinds change nothing else, so this is insurance).
                let senders: std::collections::BTreeSet<_> = built
                    .rejected
                    .iter()
                    .map(|(tx, _)| tx.tx.sender())
                    .chain(
                        built
                            .failed
                            .iter()
                            .map(|(i, _)| built.block.txs[*i as usize].tx.sender()),
                    )
                    .collect();
                let dropped = mempool.revalidate(state, now, senders);
                if !built.rejected.is_empty() {
                    tracing::warn!(
                        rejected = built.rejected.len(),
                        dropped,
                        "block refused admitted transactions"
                    );
                }
            }
            inner.last_block_at = self.shared.clock.monotonic_ms();
            let block = Arc::new(built.block);
            let hashes = built.receipts.iter().map(|r| r.tx_hash).collect();
            inner.in_flight = Some((block.clone(), hashes));
            let archived = changes
                .entries
                .iter()
                .filter(|(k, _)| k.first() == Some(&gridwork_protocol::PREFIX_ARCHIVE));
            // A job's key is the prefix and its id; a service's has its tag between.
            inner.archiving = archived
                .clone()
                .filter(|(k, _)| k.len() == 33)
                .filter_map(|(k, v)| {
                    let id = Hash(k.get(1..33)?.try_into().ok()?);
                    let job = Decode::from_bytes(v.as_ref()?).ok()?;
                    Some((id, job))
                })
                .collect();
            inner.archiving_services = archived
                .filter(|(k, _)| {
                    k.len() == 34 && k.get(1) == Some(&gridwork_protocol::SERVICE_ARCHIVE_TAG)
                })
                .filter_map(|(k, v)| {
                    let id = Hash(k.get(2..34)?.try_into().ok()?);
                    let service = Decode::from_bytes(v.as_ref()?).ok()?;
                    Some((id, service))
                })
                .collect();
            (block, built.receipts, built.events, changes)
        };
        // The durable commit runs without the lock, so admission goes on meanwhile.
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
            inner.archiving_services.clear();
            inner.mempool.len()
        };
        let committed = Arc::new(Committed {
            header: block.header.clone(),
            tx_hashes: receipts.iter().map(|r| r.tx_hash).collect(),
            events,
            receipts,
        });
        let metrics = &self.shared.metrics;
        let header = &committed.header;
        metrics.block_committed(header.height, u64::from(header.tx_count), started.elapsed());
        metrics.block_events(committed.all_events());
        metrics.set_mempool(mempool_len);
        {
            let mut recent = self.shared.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(committed.clone());
        }
        // No subscribers is fine.
        let _ = self.shared.commits.send(committed.clone());
        Ok(Some(committed))
    }

    /// Stops the ledger from accepting or producing anything more.
    fn halt(&self, inner: &mut Inner, reason: String) -> NodeError {
        tracing::error!(%reason, "block commit failed; node halted");
        inner.halted = Some(reason.clone());
        NodeError::Halted { reason }
    }

    /// Starts the block producer on its own thread. It stops when `stop` is set or the
    /// ledger halts.
    pub fn spawn_producer(&self, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        let ledger = self.clone();
        std::thread::Builder::new()
            .name("gridwork-producer".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match ledger.produce_block(false) {
                        Ok(Some(_)) => {}
                        Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                        Err(_) => break,
                    }
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the block producer thread: {e}"))
    }

    /// Subscribes to committed blocks (for the node's own services).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.shared.commits.subscribe()
    }

    /// Subscribes to committed blocks for an outside client, if fewer than `max` such
    /// subscriptions are open; the subscription counts until dropped.
    pub fn subscribe_limited(&self, max: usize) -> Option<Subscription> {
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
            rx: self.shared.commits.subscribe(),
            open: Arc::clone(open),
        })
    }

    /// The blocks after `height` that the ledger still holds, for a subscriber that resumes
    /// from there; or, when the block after `height` is no longer held, the lowest height
    /// that is (the client catches up from `GET /v1/blocks`).
    pub fn committed_after(&self, height: u64) -> Result<Vec<Arc<Committed>>, u64> {
        let head = self.height();
        let recent = self.shared.recent.lock().unwrap_or_else(|p| p.into_inner());
        let head = recent.back().map_or(head, |c| c.height().max(head));
        if height >= head {
            return Ok(Vec::new());
        }
        match recent.front() {
            Some(first) if first.height() <= height + 1 => Ok(recent
                .iter()
                .filter(|c| c.height() > height)
                .cloned()
                .collect()),
            Some(first) => Err(first.height()),
            None => Err(head + 1),
        }
    }
}
