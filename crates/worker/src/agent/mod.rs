//! The worker agent: registers, follows open jobs, bids or declines, runs tasks it wins,
//! re-runs tasks it must check, commits, reveals and votes.
//!
//! # Lifecycle
//!
//! [`Worker::run`] locks the stake it is configured with, registers the probed hardware, then
//! passes over the open jobs, every task, each time the node commits a block (its event
//! stream), a run finishes, or the poll interval passes without either. What it does depends on the task's phase and
//! its role. Everything it needs to resume after a restart is on the ledger or in its work
//! directory: a finished run leaves `result.json` (output id, salt, seconds) next to its
//! outputs, so a restarted worker commits and reveals it instead of running again, and a run
//! cut off by the restart simply runs again. On shutdown it stops bidding, finishes what it
//! runs and reveals what it committed, then exits.
//!
//! Market transactions are checked against committed state, so the agent sends each step
//! once the previous one is in a block; it remembers what it sent so as not to send it twice,
//! and sends it again when the node no longer knows it (a restart empties the mempool).
//!
//! Here: the worker, its loop and each task's next step. Running a task is in `execute.rs`,
//! judging the others' outputs in `judging.rs`, the peer endpoint and pulls in `peers.rs`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridwork_api::{JobView, Phase, TaskView};
use gridwork_client::{
    announced_peers, pull_tree_from, ChunkSource, Client, ClientError, DataError, SourceReport,
    TransferOptions,
};
use gridwork_p2p::{transport_secret, P2pError, Peer, PeerSource};
use gridwork_transfer::{tree_digest, ChunkStore, DataKey, TreeError};
use gridwork_types::{
    commitment, Address, Amount, Hardware, Hash, Keypair, OwnerApproval, RunEnd, TxKind,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::{RunOutcome, WorkerMetrics};
use crate::policy::{Decision, PricingPolicy};
use crate::sandbox::{self, TaskEnv};

mod execute;
mod judging;
mod peers;
mod segments;
mod serving;

use execute::{output_key, run_limit};

/// How the worker behaves. Everything but `Honest` is a named test double for the
/// Byzantine cases the market must survive, compiled only with the `doubles` feature (the
/// tests and the demo's liar turn it on; a provider's worker has no way to misbehave).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Runs tasks and reports what it got.
    Honest,
    /// As executor, replaces its outputs with a forged result.
    #[cfg(feature = "doubles")]
    LyingExecutor,
    /// As executor, never commits (it vanishes after winning).
    #[cfg(feature = "doubles")]
    VanishingExecutor,
    /// On a council, does not run the program: commits a made-up output and names every
    /// other party as equivalent when judging (`LazyCouncilMember`).
    #[cfg(feature = "doubles")]
    LazyCouncilMember,
    /// As executor, renders cheaper than the job asks (`CheapRenderer`): one sample per pixel
    /// where a Cycles render asks for more, then reports the frames as the job's.
    #[cfg(feature = "doubles")]
    CheapRenderer,
    /// As executor of a checkpointed task, trains its first segment only (`SkippingTrainer`):
    /// every later checkpoint is the one before it, bound as if trained.
    #[cfg(feature = "doubles")]
    SkippingTrainer,
    /// On a service's council, answers every request with something its server did not say
    /// (`LyingMember`): the server's answer with a word of its own appended.
    #[cfg(feature = "doubles")]
    LyingMember,
}

impl Behavior {
    /// Forges its outputs as executor.
    fn lies(self) -> bool {
        #[cfg(feature = "doubles")]
        return self == Behavior::LyingExecutor;
        #[cfg(not(feature = "doubles"))]
        false
    }

    /// Never commits as executor.
    fn vanishes(self) -> bool {
        #[cfg(feature = "doubles")]
        return self == Behavior::VanishingExecutor;
        #[cfg(not(feature = "doubles"))]
        false
    }

    /// Renders with fewer samples than asked as executor.
    fn renders_cheaply(self) -> bool {
        #[cfg(feature = "doubles")]
        return self == Behavior::CheapRenderer;
        #[cfg(not(feature = "doubles"))]
        false
    }

    /// Skips the training of every segment after the first as executor.
    fn skips_steps(self) -> bool {
        #[cfg(feature = "doubles")]
        return self == Behavior::SkippingTrainer;
        #[cfg(not(feature = "doubles"))]
        false
    }

    /// Makes its service answers up.
    fn lies_to_users(self) -> bool {
        #[cfg(feature = "doubles")]
        return self == Behavior::LyingMember;
        #[cfg(not(feature = "doubles"))]
        false
    }

    /// Makes results up on a council.
    fn is_lazy(self) -> bool {
        #[cfg(feature = "doubles")]
        return self == Behavior::LazyCouncilMember;
        #[cfg(not(feature = "doubles"))]
        false
    }
}

/// A step of a task sent to the node.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// Being sent now.
    Sending,
    /// Admitted as this transaction, at this time.
    Tx(Hash, Instant),
    /// Refused at admission, not worth sending again (a bid).
    Refused,
}

/// How long the engine's word that an image is loaded holds for bids (that it is not: a
/// second, since this worker or another on the same engine may load it any time).
const LOADED_FRESH: Duration = Duration::from_secs(10);
const NOT_LOADED_FRESH: Duration = Duration::from_secs(1);

/// How long a sent step waits before the worker asks the node whether it still has it.
const RESEND_AFTER: Duration = Duration::from_secs(10);

/// Failed steps in a row after which a stopping worker with no task running gives up on the
/// node: without it, a worker told to stop while its node was gone retried forever (seen:
/// nine minutes, 16 MB of log, until killed).
const DRAIN_FAILURES: u32 = 3;

/// A worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The provider's key.
    pub key: Keypair,
    /// Where task directories go.
    pub work_dir: PathBuf,
    /// How it prices work.
    pub policy: PricingPolicy,
    /// What it offers (usually [`crate::probe`]).
    pub hardware: Hardware,
    /// Stake to keep locked (at least the chain's minimum is locked anyway).
    pub stake: Amount,
    /// The owner's approval of this worker key (none: the worker is its own owner).
    pub owner: Option<OwnerApproval>,
    /// How often it looks for work when nothing wakes it (it also wakes for every committed
    /// block on the node's event stream, and when a run finishes).
    pub poll: Duration,
    /// How often it sends a heartbeat.
    pub heartbeat: Duration,
    /// Honest, or a test double.
    pub behavior: Behavior,
    /// Confine task programs through `gridwork sandbox-exec` (none: clean environment, work
    /// directory and deadline only).
    pub launcher: Option<sandbox::Launcher>,
    /// Serve chunks to other workers and fetch from them (none: the node only).
    pub p2p: Option<P2pConfig>,
    /// How large the chunk cache may grow (none: unbounded).
    pub cache: Option<CacheLimit>,
    /// Run jobs that name a container image in containers (none: decline them). Its
    /// `hardware` should then list the software `docker` ([`gridwork_types::CONTAINER_SOFTWARE`]).
    pub containers: Option<crate::container::Containers>,
    /// Subscribe to the services it can run, and serve those whose council it sits on
    /// (`serving.rs`).
    pub serve_services: bool,
}

/// The bound of a worker's chunk cache (`WORK_DIR/chunks`): inputs it pulled (a later task
/// of the same data finds them there) and outputs it serves to peers. Past `max_bytes`, the
/// least recently used chunks go, sparing those used within `spare`; what goes is fetched
/// again from the node, which keeps every tree a job uses.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimit {
    /// The most chunk bytes kept.
    pub max_bytes: u64,
    /// Chunks used this recently stay even past the limit (pulls and pushes in flight).
    pub spare: Duration,
}

/// Where a worker serves chunks peer to peer.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// The UDP address to listen on.
    pub listen: std::net::SocketAddr,
    /// The addresses other workers reach this one at (none: the listen address, if specific).
    pub announce: Vec<std::net::SocketAddr>,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The node refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Moving a tree through the data plane failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Reading a tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The local chunk cache failed.
    #[error(transparent)]
    Store(#[from] gridwork_transfer::StoreError),
    /// The peer endpoint did not start.
    #[error(transparent)]
    P2p(#[from] P2pError),
    /// The work directory failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The configured owner approval is not for this worker key on this chain.
    #[error("the owner approval from {owner} is not for worker {worker} on chain {chain_id}: ask the owner to run `gridwork provider authorize {worker}` against this chain")]
    BadOwnerApproval {
        /// The owner that signed it.
        owner: Address,
        /// This worker.
        worker: Address,
        /// The chain the node runs.
        chain_id: String,
    },
    /// Not enough balance to stake.
    #[error("cannot lock {needed} GRID of stake: only {spendable} GRID is spendable")]
    CannotStake {
        /// What is needed.
        needed: Amount,
        /// What there is.
        spendable: Amount,
    },
    /// The job has no image for this worker's hardware (the ledger draws only workers with
    /// one: the hardware declared differs from this worker's).
    #[error("job {job} {why}: this worker has no image of it to run; declare this machine's GPUs (`gridwork probe`) and restart")]
    NoImage {
        /// The job.
        job: Hash,
        /// Which images it has.
        why: String,
    },
}

/// What a finished run left behind, in `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    output: Hash,
    salt: Hash,
    seconds: u64,
    /// How the run ended.
    ended: RunEnd,
    /// The round of the attempt the run was for: part of the output key.
    #[serde(default)]
    round: u8,
    /// A checkpointed run's executor: the content id of each checkpoint it reached, in
    /// order (the last is `output`), bound on the ledger before it commits.
    #[serde(default)]
    checkpoints: Vec<Hash>,
    /// A checkpointed run's executor: the run stopped at its last checkpoint's segment,
    /// which failed.
    #[serde(default)]
    failed: bool,
}

impl RunResult {
    /// The result of a run of `round` that left `output` and ended as `ended` after
    /// `seconds`, with a fresh salt for its commitment (no checkpoints).
    fn new(output: Hash, seconds: u64, ended: RunEnd, round: u8) -> RunResult {
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        RunResult {
            output,
            salt: Hash(salt),
            seconds,
            ended,
            round,
            checkpoints: Vec::new(),
            failed: false,
        }
    }
}

type TaskRef = (Hash, u32, u32);

/// Parallel chunk requests per transfer (chunking: the data plane's defaults).
fn transfer() -> TransferOptions {
    TransferOptions::with_streams(4)
}

/// A worker agent for one provider key.
pub struct Worker {
    cfg: WorkerConfig,
    client: Client,
    me: Address,
    /// The fee each transaction pays: the chain's minimum (`params.min_fee`).
    fee: Mutex<Amount>,
    /// Steps of tasks sent (per round), so none is sent twice while it travels and one the
    /// node lost is sent again.
    sent: Mutex<HashMap<(&'static str, TaskRef, u8), Sent>>,
    /// Judging steps done, per round of an attempt.
    judging: Mutex<HashSet<(&'static str, TaskRef, u8)>>,
    /// Verdicts on other parties' outputs: (task, their output) -> equivalent to ours.
    verdicts: Mutex<HashMap<(TaskRef, Hash), bool>>,
    /// Checkpoint keys shared, as executor of a checkpointed task: (task, checkpoint, with).
    shared_checkpoints: Mutex<HashSet<(TaskRef, u32, Address)>>,
    declined: Mutex<HashSet<Hash>>,
    /// Whether a job image was loaded here, as the engine said a moment ago: asked once per
    /// image every [`LOADED_FRESH`], not once per task (a job of thousands of tasks would
    /// otherwise cost as many engine calls each pass).
    loaded: Mutex<HashMap<Hash, (Instant, bool)>>,
    /// The CPU score the ledger keeps for this provider (a score the councils' spot checks
    /// took is 0 there, whatever this worker declares), and when it was read.
    ledger_score: Mutex<Option<(Instant, u32)>>,
    running: Mutex<HashMap<TaskRef, tokio::task::JoinHandle<()>>>,
    nonce: tokio::sync::Mutex<()>,
    /// Rung when a block is committed or a run finishes: the next pass starts at once.
    wake: tokio::sync::Notify,
    /// Sealed chunks of inputs and outputs (`WORK_DIR/chunks`): what makes fetches resume,
    /// and what the worker serves to peers.
    chunks: ChunkStore,
    /// The peer endpoint, once [`Worker::register`] bound it.
    peer: tokio::sync::OnceCell<Peer>,
    /// Chunks fetched from peers rather than the node.
    peer_chunks: std::sync::atomic::AtomicU64,
    /// A trim of the chunk cache is running.
    trimming: std::sync::atomic::AtomicBool,
    /// The stake is below its level and the balance could not top it up (said once).
    stake_short: std::sync::atomic::AtomicBool,
    /// The last 64 pulls: tree and what each source delivered.
    pulls: Mutex<Vec<(Hash, Vec<SourceReport>)>>,
    /// Runs counted for `/metrics`.
    metrics: Arc<WorkerMetrics>,
    /// The services it serves now, each with its member loop.
    members: Mutex<HashMap<Hash, serving::Membership>>,
    /// The latest receipt of each service it served.
    receipts: Mutex<serving::Receipts>,
    /// The last request answered for each service: each answered once, in order.
    answered: serving::Answered,
    /// Services whose server could not start here, again and again, for its own reasons
    /// (its program exits, its image cannot run, its inputs collide): left, and not offered
    /// to again while this worker runs.
    given_up: Mutex<std::collections::HashSet<Hash>>,
    /// Services whose subscription the node refused, how many times in a row, and when the
    /// last: asked again after a wait that doubles with each refusal, up to
    /// [`serving::SUBSCRIBE_AGAIN_AFTER`] (a full list or too little stake does not change
    /// each second; a moment's refusal passes in one).
    subscribe_refused: Mutex<HashMap<Hash, (u32, std::time::Instant)>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Worker({})", self.me)
    }
}

/// Stops a worker's services when its `serve` ends or is dropped.
struct EndServices {
    worker: Arc<Worker>,
    services: tokio::task::AbortHandle,
}

impl Drop for EndServices {
    fn drop(&mut self) {
        self.services.abort();
        // Dropping each membership aborts its loop, whose server is killed with it.
        let members: Vec<serving::Membership> =
            lock(&self.worker.members).drain().map(|(_, m)| m).collect();
        drop(members);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worker {
    /// A worker talking to the node at `node`; fails if its chunk cache cannot be opened.
    pub fn new(node: &str, cfg: WorkerConfig) -> Result<Arc<Worker>, WorkerError> {
        let me = cfg.key.address();
        if cfg.launcher.is_some() && rustix::process::geteuid().is_root() {
            // It used to warn that its tasks ran as root too; they run as `nobody` (see
            // `confine.rs`, `drop_root`).
            tracing::info!("the worker runs as root: its process tasks run as nobody (65534)");
        }
        let chunks = ChunkStore::open(cfg.work_dir.join("chunks"), None)?;
        let answered = serving::Answered::open(&cfg.work_dir);
        Ok(Arc::new(Worker {
            client: Client::new(node).signed_by(cfg.key.clone()),
            me,
            cfg,
            fee: Mutex::new(Amount::ZERO),
            sent: Mutex::new(HashMap::new()),
            judging: Mutex::new(HashSet::new()),
            verdicts: Mutex::new(HashMap::new()),
            shared_checkpoints: Mutex::new(HashSet::new()),
            declined: Mutex::new(HashSet::new()),
            loaded: Mutex::new(HashMap::new()),
            ledger_score: Mutex::new(None),
            running: Mutex::new(HashMap::new()),
            nonce: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
            chunks,
            peer: tokio::sync::OnceCell::new(),
            peer_chunks: std::sync::atomic::AtomicU64::new(0),
            trimming: std::sync::atomic::AtomicBool::new(false),
            stake_short: std::sync::atomic::AtomicBool::new(false),
            pulls: Mutex::new(Vec::new()),
            metrics: Arc::default(),
            members: Mutex::new(HashMap::new()),
            receipts: Mutex::new(HashMap::new()),
            answered,
            given_up: Mutex::new(std::collections::HashSet::new()),
            subscribe_refused: Mutex::new(HashMap::new()),
        }))
    }

    /// This worker's run counts, for `/metrics` ([`crate::serve_metrics`]).
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Bytes of chunks in this worker's cache.
    pub fn cache_bytes(&self) -> u64 {
        self.chunks.used()
    }

    /// Chunks this worker fetched from other workers rather than the node.
    pub fn peer_chunks(&self) -> u64 {
        self.peer_chunks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What each source delivered in the last pulls (at most 64), oldest first: the node
    /// first, then peers.
    pub fn recent_pulls(&self) -> Vec<(Hash, Vec<SourceReport>)> {
        lock(&self.pulls).clone()
    }

    /// The provider's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// Signs and submits `kind` with the next nonce, at the chain's minimum fee. When the
    /// node's mempool is full of cheaper transactions (a spammer's, say, keeping the steps of
    /// honest workers out until their deadlines pass) it goes again at the fee the node names,
    /// up to the policy's `max_fee`.
    async fn send(&self, kind: TxKind) -> Result<Hash, ClientError> {
        let _guard = self.nonce.lock().await;
        let mut fee = *lock(&self.fee);
        // The fee named may rise again while the step travels: a few tries, each higher.
        for _ in 0..4 {
            let sent = self
                .client
                .sign_and_send(&self.cfg.key, fee, kind.clone())
                .await;
            match sent.as_ref().err().and_then(ClientError::needed_fee) {
                Some(needed) if needed > fee && needed <= self.cfg.policy.max_fee => {
                    tracing::info!(%needed, "the node's mempool is full; sending again at a higher fee");
                    fee = needed;
                }
                Some(needed) if needed > self.cfg.policy.max_fee => {
                    tracing::warn!(%needed, max_fee = %self.cfg.policy.max_fee, "the node's mempool is full of transactions paying more than this worker's --max-fee");
                    return sent;
                }
                _ => return sent,
            }
        }
        self.client.sign_and_send(&self.cfg.key, fee, kind).await
    }

    /// Locks stake and registers the hardware; returns once both are in a block.
    pub async fn register(&self) -> Result<(), WorkerError> {
        if let Some(containers) = &self.cfg.containers {
            // What a crash or a kill of an earlier run of this worker left behind.
            let removed = containers
                .remove_leftovers()
                .await
                .map_err(|e| WorkerError::Io {
                    path: containers.engine().socket().display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            if removed > 0 {
                tracing::info!(
                    removed,
                    "removed containers an earlier run of this worker left"
                );
            }
        }
        let chain = self.client.chain().await?;
        *lock(&self.fee) = chain.params.min_fee;
        let want = self.cfg.stake.max(chain.params.min_provider_stake);
        let account = self.client.account(&self.me).await?;
        if account.stake_locked < want {
            let needed = Amount(want.0 - account.stake_locked.0);
            if account.spendable < needed {
                return Err(WorkerError::CannotStake {
                    needed,
                    spendable: account.spendable,
                });
            }
            let h = self.send(TxKind::StakeLock { amount: needed }).await?;
            self.client
                .wait_committed(&h, Duration::from_secs(60))
                .await?;
        }
        if let Some(approval) = &self.cfg.owner {
            if approval.verify(&chain.chain_id, &self.me).is_err() {
                return Err(WorkerError::BadOwnerApproval {
                    owner: approval.owner_address(),
                    worker: self.me,
                    chain_id: chain.chain_id,
                });
            }
        }
        let h = self
            .send(TxKind::RegisterProvider {
                hardware: self.cfg.hardware.clone(),
                owner: self.cfg.owner,
            })
            .await?;
        self.client
            .wait_committed(&h, Duration::from_secs(60))
            .await?;
        tracing::info!(provider = %self.me, "registered");
        self.start_peer().await
    }

    /// Tops the locked stake back up to the level this worker was told (`--stake`) after a
    /// slash took some, from its spendable balance; says so once each time it cannot.
    async fn keep_stake(&self) -> Result<(), WorkerError> {
        let chain = self.client.chain().await?;
        let want = self.cfg.stake.max(chain.params.min_provider_stake);
        let account = self.client.account(&self.me).await?;
        if account.stake_locked >= want {
            self.stake_short
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let needed = Amount(want.0 - account.stake_locked.0);
        if account.spendable < needed {
            if !self
                .stake_short
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    locked = %account.stake_locked,
                    wanted = %want,
                    spendable = %account.spendable,
                    "stake is below the level this worker was told and the balance cannot top it up; below the chain's minimum it can no longer bid or sit on councils"
                );
            }
            return Ok(());
        }
        let h = self.send(TxKind::StakeLock { amount: needed }).await?;
        self.client
            .wait_committed(&h, Duration::from_secs(60))
            .await?;
        self.stake_short
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(topped_up = %needed, locked = %want, "stake topped up after a slash");
        Ok(())
    }

    /// Registers, then works until `shutdown` turns true and its running and committed tasks
    /// are done.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> Result<(), WorkerError> {
        self.register_when_reachable().await?;
        self.serve(shutdown).await
    }

    /// [`Worker::register`], waiting for a node that is down or restarting (its stake and
    /// registration wait for blocks), as the work loop waits for it: up to every ten seconds,
    /// saying so at the first try and every tenth. Any other error ends it.
    pub async fn register_when_reachable(&self) -> Result<(), WorkerError> {
        let mut waited = 0u32;
        loop {
            match self.register().await {
                Err(WorkerError::Client(
                    e @ (ClientError::Unreachable { .. } | ClientError::Timeout { .. }),
                )) => {
                    waited += 1;
                    if waited == 1 || waited % 10 == 0 {
                        tracing::warn!(error = %e, "registering failed; waiting for the node");
                    }
                    tokio::time::sleep(Duration::from_millis(500).saturating_mul(waited.min(20)))
                        .await;
                }
                done => return done,
            }
        }
    }

    /// Works (after [`Worker::register`]) until `shutdown` turns true and its running and
    /// committed tasks are done.
    pub async fn serve(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let follower = tokio::spawn(Self::follow_blocks(Arc::clone(&self)));
        let services = tokio::spawn(Self::serve_services(Arc::clone(&self), shutdown.clone()));
        // Ended without a shutdown (an error, or this future dropped: the worker killed),
        // its services stop at once, servers and all.
        let _gone = EndServices {
            worker: Arc::clone(&self),
            services: services.abort_handle(),
        };
        let result = self.work(&mut shutdown).await;
        follower.abort();
        // Its servers end with the worker (what they were acknowledged is settled).
        if *shutdown.borrow() {
            let _ = services.await;
        }
        result
    }

    /// Rings `wake` for every block the node commits, reconnecting when the stream drops.
    async fn follow_blocks(self: Arc<Self>) {
        loop {
            match self.client.events().await {
                Ok(mut blocks) => {
                    while let Ok(Some(_)) = blocks.next_block().await {
                        self.wake.notify_one();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "event stream unavailable; polling"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn work(
        self: &Arc<Self>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let mut last_heartbeat = Instant::now();
        // Steps failed in a row (the node down, say): they are logged at the first and every
        // tenth, and retried less often, up to every ten seconds.
        let mut failures = 0u32;
        loop {
            let draining = *shutdown.borrow();
            if last_heartbeat.elapsed() >= self.cfg.heartbeat && !draining {
                if let Err(e) = self.send(TxKind::Heartbeat).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                if let Err(e) = self.keep_stake().await {
                    tracing::warn!(error = %e, "checking the stake failed");
                }
                last_heartbeat = Instant::now();
            }
            let busy = match self.tick(draining).await {
                Ok(busy) => {
                    failures = 0;
                    busy
                }
                Err(e) => {
                    failures += 1;
                    if draining && failures >= DRAIN_FAILURES && lock(&self.running).is_empty() {
                        // Waiting on would wait for the node, with no task left to finish.
                        tracing::warn!(error = %e, "stopping: the node did not answer {failures} times in a row; tasks committed and not revealed are left");
                        return Ok(());
                    }
                    if failures % 10 == 1 {
                        tracing::warn!(error = %e, failures, "worker step failed; retrying");
                    }
                    true
                }
            };
            if draining && !busy {
                tracing::info!(provider = %self.me, "worker stopped");
                return Ok(());
            }
            if failures > 0 {
                let backoff = self.cfg.poll.min(Duration::from_secs(1)) * (1 << failures.min(4));
                tokio::select! {
                    _ = tokio::time::sleep(backoff.min(Duration::from_secs(10))) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// One pass over the open jobs. Returns whether this worker still has work in flight.
    async fn tick(self: &Arc<Self>, draining: bool) -> Result<bool, WorkerError> {
        lock(&self.running).retain(|_, h| !h.is_finished());
        let mut in_flight = !lock(&self.running).is_empty();
        let mut live = HashSet::new();
        for id in self.client.open_jobs().await? {
            let Some(view) = self.client.job(&id).await? else {
                continue;
            };
            if view.requester == self.me {
                continue;
            }
            for t in &view.tasks {
                let assigned = t.executor == Some(self.me) || t.council.contains(&self.me);
                let mine = assigned
                    && matches!(
                        t.phase,
                        Phase::Committing | Phase::Revealing | Phase::Judging
                    );
                in_flight |= mine;
                if mine {
                    live.insert(self.task_dir((view.id, t.index, t.attempt)));
                }
                self.step(&view, t, draining).await?;
            }
        }
        self.clean_up(&live);
        self.trim_cache();
        Ok(in_flight)
    }

    /// Trims the chunk cache to its limit on a blocking thread, one trim at a time.
    fn trim_cache(self: &Arc<Self>) {
        let Some(limit) = self.cfg.cache else { return };
        if self.chunks.used() <= limit.max_bytes
            || self
                .trimming
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            match me.chunks.trim(limit.max_bytes, limit.spare) {
                Ok(freed) => tracing::info!(
                    freed,
                    used = me.chunks.used(),
                    limit = limit.max_bytes,
                    "trimmed the chunk cache"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot trim the chunk cache"),
            }
            me.trimming
                .store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Removes the work directories of tasks this worker no longer has a part in (settled,
    /// failed, reopened without it): their results live on the node.
    fn clean_up(&self, live: &HashSet<PathBuf>) {
        let running: HashSet<PathBuf> = lock(&self.running)
            .keys()
            .map(|r| self.task_dir(*r))
            .collect();
        let Ok(entries) = std::fs::read_dir(self.cfg.work_dir.join("tasks")) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if !live.contains(&path) && !running.contains(&path) {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(error = %e, path = %path.display(), "cannot remove a finished task directory");
                }
            }
        }
    }

    /// Whether to send `action` for round `round` of task `r` now: not yet sent, or sent
    /// [`RESEND_AFTER`] ago and no longer known to the node (pending or in a block): a node
    /// that restarted lost its mempool, and an evicted transaction is gone too. A step sent
    /// once and never again left its task waiting for a bid, a commitment or a reveal that
    /// would never come (seen: a job that never finished after its node was killed).
    async fn mark(&self, action: &'static str, r: TaskRef, round: u8) -> bool {
        let key = (action, r, round);
        let previous = lock(&self.sent).get(&key).copied();
        match previous {
            None => {}
            Some(Sent::Tx(hash, at)) if at.elapsed() >= RESEND_AFTER => {
                if !matches!(self.client.tx(&hash).await, Ok(None)) {
                    lock(&self.sent).insert(key, Sent::Tx(hash, Instant::now()));
                    return false;
                }
                tracing::info!(job = %r.0, task = r.1, action, "the node lost a transaction; sending it again");
            }
            Some(_) => return false,
        }
        lock(&self.sent).insert(key, Sent::Sending);
        true
    }

    /// Records how sending a marked step went: the transaction to look for, or (for a step
    /// worth no second try) its refusal; a failed send is forgotten, to be tried again.
    fn sent_as(
        &self,
        action: &'static str,
        r: TaskRef,
        round: u8,
        outcome: &Result<Hash, ClientError>,
        retry_refused: bool,
    ) {
        let key = (action, r, round);
        let mut sent = lock(&self.sent);
        match outcome {
            Ok(hash) => {
                sent.insert(key, Sent::Tx(*hash, Instant::now()));
            }
            Err(_) if retry_refused => {
                sent.remove(&key);
            }
            Err(_) => {
                sent.insert(key, Sent::Refused);
            }
        }
    }

    /// Whether image `cid` is loaded in the engine, as it said within [`LOADED_FRESH`].
    async fn image_loaded(&self, containers: &crate::container::Containers, cid: &Hash) -> bool {
        if let Some((at, loaded)) = lock(&self.loaded).get(cid).copied() {
            let fresh = if loaded {
                LOADED_FRESH
            } else {
                NOT_LOADED_FRESH
            };
            if at.elapsed() < fresh {
                return loaded;
            }
        }
        let loaded = containers.has_image(cid).await.unwrap_or(false);
        let mut known = lock(&self.loaded);
        known.retain(|_, (at, _)| at.elapsed() < LOADED_FRESH);
        known.insert(*cid, (Instant::now(), loaded));
        loaded
    }

    /// The CPU score the ledger keeps for this provider, read at most once a minute; what
    /// this worker declares until the ledger answers.
    async fn ledger_score(&self) -> u32 {
        if let Some((at, score)) = *lock(&self.ledger_score) {
            if at.elapsed() < Duration::from_secs(60) {
                return score;
            }
        }
        match self.client.provider(&self.me).await {
            Ok(Some(p)) => {
                let score = p.hardware.cpu_score;
                *lock(&self.ledger_score) = Some((Instant::now(), score));
                score
            }
            _ => self.cfg.hardware.cpu_score,
        }
    }

    fn task_dir(&self, r: TaskRef) -> PathBuf {
        self.cfg
            .work_dir
            .join("tasks")
            .join(format!("{}-{}-{}", r.0, r.1, r.2))
    }

    fn result(&self, r: TaskRef) -> Option<RunResult> {
        let bytes = std::fs::read(self.task_dir(r).join("result.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    async fn step(
        self: &Arc<Self>,
        view: &JobView,
        t: &TaskView,
        draining: bool,
    ) -> Result<(), WorkerError> {
        let r = (view.id, t.index, t.attempt);
        let is_executor = t.executor == Some(self.me);
        let assigned = is_executor || t.council.contains(&self.me);
        let segments = view.prescription.segments;
        // A checkpointed task's executor lets the council (members drawn later too) read the
        // checkpoints the drawn segments start from.
        if is_executor && t.phase == Phase::Committing && !t.replay.is_empty() {
            self.share_checkpoints(view, t, r, false).await?;
        }
        // It binds its checkpoints once its commitment is in a block (the ledger then draws
        // what the council replays; the commitment first, so the draw changes nothing of it).
        if is_executor
            && t.phase == Phase::Committing
            && t.committed.contains(&self.me)
            && t.checkpoints.is_empty()
        {
            if let Some(res) = self.result(r) {
                if !res.checkpoints.is_empty() && self.mark("checkpoints", r, t.round).await {
                    let kind = TxKind::Checkpoints {
                        job: view.id,
                        task: t.index,
                        attempt: t.attempt,
                        checkpoints: res.checkpoints.clone(),
                        failed: res.failed,
                    };
                    let sent = self.send(kind).await;
                    self.sent_as("checkpoints", r, t.round, &sent, true);
                    sent?;
                }
            }
        }
        match t.phase {
            Phase::Bidding if !draining && !t.bids.iter().any(|b| b.provider == self.me) => {
                let active = lock(&self.running).len() as u32;
                let program = &view.prescription.program;
                let missing = match (program.brings_image(), &self.cfg.containers) {
                    (true, None) => Some(
                        "environment: the job runs in a container image; this worker runs no containers (start it with --executor docker)"
                            .to_string(),
                    ),
                    // The command is the image's to have.
                    (true, Some(_)) => None,
                    (false, _) => crate::software::missing_command(program),
                };
                // A job that needs a CPU score is judged by the score the ledger keeps for this
                // provider, not the one it declares (the two differ once a score is lost).
                let mut hardware = std::borrow::Cow::Borrowed(&self.cfg.hardware);
                if view.prescription.instructions.requirements.min_cpu_score > 0 {
                    hardware.to_mut().cpu_score = self.ledger_score().await;
                }
                let decide = |cached| match &missing {
                    Some(why) => Decision::Decline(why.clone()),
                    None => self
                        .cfg
                        .policy
                        .decide(&view.prescription, &hardware, active, cached),
                };
                // The job's image loaded here already: the run starts sooner, and the bid says so
                // (and is cheaper by the provider's discount, which may bring it under the job's
                // cap). The engine is asked once per image a while, not once per task.
                let mut decision = decide(false);
                let mut cached = false;
                let worth_asking = missing.is_none() && !matches!(decision, Decision::Busy);
                // The image this worker would run: its GPUs' maker's, or the common one.
                let image = program
                    .image_for(
                        &self.cfg.hardware,
                        &view.prescription.instructions.requirements,
                    )
                    .ok()
                    .flatten();
                if let (true, Some(cid), Some(containers)) =
                    (worth_asking, &image, &self.cfg.containers)
                {
                    cached = self.image_loaded(containers, cid).await;
                    if cached {
                        decision = decide(true);
                    }
                }
                match decision {
                    Decision::Bid(price) if self.mark("bid", r, 0).await => {
                        let sent = self
                            .send(TxKind::Bid {
                                job: view.id,
                                task: t.index,
                                price,
                                cached,
                            })
                            .await;
                        self.sent_as("bid", r, 0, &sent, false);
                        if let Err(e) = sent {
                            tracing::info!(error = %e, job = %view.id, task = t.index, "bid refused");
                        }
                    }
                    Decision::Decline(reason) if lock(&self.declined).insert(view.id) => {
                        if let Err(e) = self.client.decline(&view.id, &self.cfg.key, &reason).await
                        {
                            tracing::warn!(error = %e, "posting a decline failed");
                        }
                    }
                    _ => {}
                }
            }
            Phase::Committing if assigned && !t.committed.contains(&self.me) => {
                if let Some(res) = self.result(r) {
                    if self.mark("commit", r, t.round).await {
                        let c = commitment(&res.output, &res.ended, &res.salt, &self.me);
                        let kind = TxKind::Commit {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            commitment: c,
                        };
                        let sent = self.send(kind).await;
                        self.sent_as("commit", r, t.round, &sent, true);
                        sent?;
                    }
                } else if !lock(&self.running).contains_key(&r) {
                    if is_executor && self.cfg.behavior.vanishes() {
                        return Ok(());
                    }
                    // A member of a checkpointed task waits for the segments to replay.
                    if !is_executor && segments.is_some() && t.replay.is_empty() {
                        return Ok(());
                    }
                    if !is_executor && self.cfg.behavior.is_lazy() {
                        return self.make_up_result(r, t.round);
                    }
                    let worker = Arc::clone(self);
                    let view = view.clone();
                    let items = t.items;
                    let round = t.round;
                    let task = t.clone();
                    // The whole run (checkpointed: the executor's segments, or a member's
                    // replays), less a margin to push and commit.
                    let run = match (view.prescription.segments, is_executor) {
                        (Some(_), false) => {
                            view.prescription.run_deadline_ms(t.replay.len() as u32)
                        }
                        _ => view.prescription.whole_run_deadline_ms(),
                    };
                    let limit = run_limit(run, t.deadline_ms);
                    let handle = tokio::spawn(async move {
                        let running = worker.metrics.run_started();
                        let run = match (view.prescription.segments, is_executor) {
                            (Some(s), true) => {
                                worker
                                    .execute_segments(&view, r, items, limit, s.count)
                                    .await
                            }
                            (Some(s), false) => {
                                worker.execute_replay(&view, r, &task, limit, s.count).await
                            }
                            (None, _) => {
                                worker
                                    .execute(&view, r, items, round, limit, is_executor)
                                    .await
                            }
                        };
                        let outcome = match run {
                            Ok(outcome) => outcome,
                            Err(e) => {
                                tracing::warn!(error = %e, job = %view.id, task = r.1, "task run failed");
                                RunOutcome::Error
                            }
                        };
                        drop(running);
                        worker.metrics.run_finished(is_executor, outcome);
                        worker.wake.notify_one();
                    });
                    lock(&self.running).insert(r, handle);
                }
            }
            Phase::Revealing
                if t.committed.contains(&self.me)
                    && !t.revealed.iter().any(|(p, _)| *p == self.me) =>
            {
                let Some(res) = self.result(r) else {
                    return Ok(());
                };
                let executor_revealed = t.revealed.iter().any(|(p, _)| Some(*p) == t.executor);
                if !is_executor && !executor_revealed {
                    return Ok(());
                }
                if self.mark("reveal", r, t.round).await {
                    let kind = TxKind::Reveal {
                        job: view.id,
                        task: t.index,
                        attempt: t.attempt,
                        output: res.output,
                        salt: res.salt,
                        seconds: res.seconds,
                        ended: res.ended,
                    };
                    let sent = self.send(kind).await;
                    self.sent_as("reveal", r, t.round, &sent, true);
                    sent?;
                }
            }
            Phase::Judging
                if t.revealed.iter().any(|(p, _)| *p == self.me)
                    && !t.judged.contains(&self.me) =>
            {
                let Some(res) = self.result(r) else {
                    return Ok(());
                };
                self.judge_all(view, t, r, &res).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
