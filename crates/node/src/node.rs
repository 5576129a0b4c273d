//! The node: its services, assembled in one place.
//!
//! A node is four services, each with its own state and locks: the [`Ledger`] (state,
//! mempool, consensus, store, block production and the chain's queries), the
//! [`DataService`] (chunks, pins, quotas, key grants, garbage collection), the [`Keys`]
//! (the node's key and the hand-off of input keys to each task's workers) and the
//! [`TaskRecords`] (declines and task logs). [`Node`] opens them over one data directory,
//! wires them (the ledger knows none of the others; the data service and the records read
//! the ledger; the key hand-off subscribes to committed blocks), runs their threads, and
//! does the few things that span them: admission with the key service's check of jobs'
//! inputs, garbage collection with log pruning, and the metrics page.
//!
//! # Lifecycle
//!
//! [`Node::open`] loads the chain from the data directory (or creates it from a genesis),
//! checks the stored state against the head's state root, and returns a node that serves
//! reads at once. [`Node::spawn_producer`] starts the block producer and the key hand-off;
//! [`Node::spawn_gc`] the collector; [`Node::shutdown`] stops them all.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gridwork_consensus::{Consensus, Solo};
use gridwork_protocol::{Genesis, Params, Phase, State};
use gridwork_storage::{RedbStore, Store};
use gridwork_types::{Address, Hash, Keypair, PeerAddr, SignedTx};

use crate::data::{DataService, GcReport};
use crate::keys::{load_or_create_key, Keys};
use crate::ledger::{Ledger, LedgerParts};
use crate::logs::TaskLogs;
use crate::mempool::Mempool;
use crate::metrics::{Gauges, Metrics};
use crate::records::TaskRecords;
use crate::{AdmitError, Clock, NodeConfig, NodeError, SystemClock};

struct Shared {
    ledger: Ledger,
    data: DataService,
    keys: Keys,
    records: TaskRecords,
    /// Where the node serves chunks peer to peer, if it does.
    peer: Mutex<Option<PeerAddr>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

/// A running node. Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.shared.ledger.chain_id())
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
        let metrics = Arc::new(Metrics::default());
        let mut mempool = Mempool::new(config.mempool_capacity);
        mempool.set_limits(config.mempool_max_bytes, config.mempool_max_per_sender);
        let ledger = Ledger::open(
            LedgerParts {
                store: Box::new(store),
                consensus: Box::new(consensus),
                mempool,
                clock: Arc::new(SystemClock::default()),
                metrics: metrics.clone(),
            },
            genesis.as_ref(),
        )?;
        let data = DataService::open(dir, config, ledger.clone(), metrics.clone())?;
        let keys = Keys::new(node_key, data.clone());
        let logs = TaskLogs::new(Some(dir.join("logs")), config.log_limit_bytes);
        let retention_ms = config.log_retention_secs.saturating_mul(1000);
        let records = TaskRecords::new(ledger.clone(), keys.public_key(), logs, retention_ms);
        // Tasks running when the node stopped get their inputs' keys now.
        keys.grant_running_tasks(&ledger);
        Ok(Node::assemble(ledger, data, keys, records, metrics))
    }

    /// A node over any store (tests use [`gridwork_storage::MemoryStore`] and
    /// [`gridwork_storage::FailingStore`]), without a data plane. `genesis` initialises an
    /// empty store.
    pub fn with_store(
        store: Box<dyn Store>,
        genesis: Option<&Genesis>,
        consensus: Box<dyn Consensus>,
        mempool_capacity: usize,
    ) -> Result<Node, NodeError> {
        let clock = Arc::new(SystemClock::default());
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
        clock: Arc<dyn Clock>,
    ) -> Result<Node, NodeError> {
        let metrics = Arc::new(Metrics::default());
        let ledger = Ledger::open(
            LedgerParts {
                store,
                consensus,
                mempool: Mempool::new(mempool_capacity),
                clock,
                metrics: metrics.clone(),
            },
            genesis,
        )?;
        let data = DataService::default();
        let keys = Keys::new(Keypair::generate(), data.clone());
        let logs = TaskLogs::new(None, crate::DEFAULT_LOG_LIMIT_BYTES);
        let retention_ms = crate::DEFAULT_LOG_RETENTION_SECS * 1000;
        let records = TaskRecords::new(ledger.clone(), keys.public_key(), logs, retention_ms);
        Ok(Node::assemble(ledger, data, keys, records, metrics))
    }

    fn assemble(
        ledger: Ledger,
        data: DataService,
        keys: Keys,
        records: TaskRecords,
        metrics: Arc<Metrics>,
    ) -> Node {
        Node {
            shared: Arc::new(Shared {
                ledger,
                data,
                keys,
                records,
                peer: Mutex::new(None),
                metrics,
                stop: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// The ledger service.
    pub fn ledger(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// The data service.
    pub fn data(&self) -> &DataService {
        &self.shared.data
    }

    /// The key service.
    pub fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// The task records.
    pub fn records(&self) -> &TaskRecords {
        &self.shared.records
    }

    /// The node's metric counts.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Admits transactions (see [`Ledger`]): each job's inputs checked by the key service
    /// first, outside the ledger's lock. One result per transaction.
    pub fn submit(&self, txs: Vec<SignedTx>) -> Vec<Result<Hash, AdmitError>> {
        let keys = &self.shared.keys;
        self.shared
            .ledger
            .submit_checked(txs, &|inputs, requester| {
                keys.check_inputs(inputs, requester)
            })
    }

    /// Decodes and admits one transaction from its canonical bytes.
    pub fn submit_bytes(&self, bytes: &[u8]) -> Result<Hash, AdmitError> {
        use gridwork_types::Decode;
        if bytes.len() > gridwork_types::MAX_TX_BYTES {
            return Err(AdmitError::TooLarge {
                size: bytes.len(),
                max: gridwork_types::MAX_TX_BYTES,
            });
        }
        let tx = SignedTx::from_bytes(bytes)?;
        self.submit(vec![tx])
            .pop()
            .unwrap_or(Err(AdmitError::Malformed("empty".into())))
    }

    /// Drops what the data plane no longer keeps ([`DataService::collect_garbage`]) and the
    /// logs of jobs closed longer than the log retention.
    pub fn collect_garbage(&self) -> Result<GcReport, NodeError> {
        let mut report = self.shared.data.collect_garbage()?;
        report.job_logs_pruned = self.shared.records.prune_logs(self.shared.ledger.now_ms());
        Ok(report)
    }

    /// [`collect_garbage`](Self::collect_garbage) as of `now_ms`, keeping unpinned chunks
    /// younger than `grace`.
    pub fn collect_garbage_at(&self, now_ms: u64, grace: Duration) -> Result<GcReport, NodeError> {
        let mut report = self.shared.data.collect_garbage_at(now_ms, grace)?;
        report.job_logs_pruned = self.shared.records.prune_logs(now_ms);
        Ok(report)
    }

    /// `/metrics`: the node's metrics in the Prometheus text exposition format, gauges read
    /// now (see `docs/operations.md` for the families).
    pub fn render_metrics(&self) -> String {
        let mut gauges = self.shared.ledger.with_state(|state, _| {
            let mut gauges = Gauges::default();
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
            gauges
        });
        let data = &self.shared.data;
        if let Some(store) = data.chunks() {
            gauges.store = Some((store.used(), store.len() as u64));
        }
        if let Some((used, quota)) = data.quota_use() {
            gauges.quota = Some((used, quota));
        }
        self.shared.metrics.render(&gauges)
    }

    /// Publishes where the node serves its chunks peer to peer (in `GET /v1/chain`).
    pub fn set_peer(&self, peer: Option<PeerAddr>) {
        *self.shared.peer.lock().unwrap_or_else(|p| p.into_inner()) = peer;
    }

    /// Where the node serves its chunks peer to peer, if it does.
    pub fn peer(&self) -> Option<PeerAddr> {
        self.shared
            .peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts the block producer on its own thread, and beside it the hand-off of input keys
    /// ([`Keys::spawn_handoff`]). They stop when [`Node::shutdown`] is called (the producer
    /// also when the ledger halts).
    pub fn spawn_producer(&self) -> JoinHandle<()> {
        let ledger = &self.shared.ledger;
        let stop = &self.shared.stop;
        self.shared.keys.spawn_handoff(ledger.clone(), stop.clone());
        ledger.spawn_producer(stop.clone())
    }

    /// Runs [`collect_garbage`](Self::collect_garbage) on its own thread every configured
    /// interval until [`Node::shutdown`]; `None` for a node without a chunk store.
    pub fn spawn_gc(&self) -> Option<JoinHandle<()>> {
        let every = self.shared.data.gc_every()?;
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

    /// Asks the node's threads to stop (the producer after the block it is working on).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `node` until `shutdown` resolves: its block producer and key hand-off, its
/// collector, and its API on `listener` under `limits` (with `beside`, routes served beside
/// the API: a gateway's); then stops them all and waits for
/// them. What the binary's `gridwork node` runs once it has opened the node (and, if asked,
/// bound its peer endpoint).
pub async fn run(
    node: Node,
    listener: tokio::net::TcpListener,
    limits: crate::ServeLimits,
    beside: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let producer = node.spawn_producer();
    let gc = node.spawn_gc();
    let served = crate::serve_beside(node.clone(), listener, limits, beside, shutdown).await;
    tracing::info!("shutting down");
    node.shutdown();
    // The threads stop within one of their naps; joining them off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = producer.join();
        if let Some(gc) = gc {
            let _ = gc.join();
        }
    })
    .await;
    served
}
