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
//! once the previous one is in a block; it remembers what it sent so as not to send it twice.

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
    commitment, Address, Amount, Equivalence, Hardware, Hash, Keypair, OwnerApproval, TxKind,
};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::{RunOutcome, WorkerMetrics};
use crate::policy::{Decision, PricingPolicy};
use crate::sandbox::{self, TaskEnv};

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
}

/// What a finished run left behind, in `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunResult {
    output: Hash,
    salt: Hash,
    seconds: u64,
    /// The round of the attempt the run was for: part of the output key.
    #[serde(default)]
    round: u8,
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
    declined: Mutex<HashSet<Hash>>,
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
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Worker({})", self.me)
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
            // Landlock confines files, not privileges: a root task could still change the
            // system (and, on a GPU worker, write under /proc, see `confine.rs`).
            tracing::warn!(
                "the worker runs as root, so its tasks do too; run it as an unprivileged user"
            );
        }
        let chunks = ChunkStore::open(cfg.work_dir.join("chunks"), None)?;
        Ok(Arc::new(Worker {
            client: Client::new(node).signed_by(cfg.key.clone()),
            me,
            cfg,
            fee: Mutex::new(Amount::ZERO),
            sent: Mutex::new(HashMap::new()),
            judging: Mutex::new(HashSet::new()),
            verdicts: Mutex::new(HashMap::new()),
            declined: Mutex::new(HashSet::new()),
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

    /// Binds the peer endpoint (if configured) and announces it on the ledger when the
    /// provider record does not already say the same.
    async fn start_peer(&self) -> Result<(), WorkerError> {
        let Some(p2p) = &self.cfg.p2p else {
            return Ok(());
        };
        let peer = self
            .peer
            .get_or_try_init(|| {
                Peer::bind(
                    transport_secret(&self.cfg.key),
                    p2p.listen,
                    Some(self.chunks.clone()),
                )
            })
            .await?;
        let announcement = peer.announcement(&p2p.announce);
        if announcement.addrs.is_empty() {
            tracing::warn!(listen = %p2p.listen, "listening for peers on an unspecified address with nothing to announce; pass the address other workers reach this one at");
            return Ok(());
        }
        let recorded = self.client.provider(&self.me).await?.and_then(|p| p.peer);
        if recorded.as_ref() != Some(&announcement) {
            let h = self
                .send(TxKind::AnnouncePeer {
                    peer: announcement.clone(),
                })
                .await?;
            self.client
                .wait_committed(&h, Duration::from_secs(60))
                .await?;
        }
        tracing::info!(endpoint = %announcement.endpoint, addrs = ?announcement.addrs, "serving chunks to peers");
        Ok(())
    }

    /// Peer-to-peer sources for a tree: the node's endpoint if it serves one, then each of
    /// the providers `holders` (not this worker) likely to hold it that serves peer to peer.
    async fn peer_sources(&self, holders: &[Address]) -> Vec<PeerSource> {
        let Some(peer) = self.peer.get() else {
            return Vec::new();
        };
        // The node is a source in any case: a lookup that fails leaves only it.
        let announced = announced_peers(&self.client, holders, &[self.me])
            .await
            .unwrap_or_default();
        announced
            .labelled()
            .into_iter()
            .filter_map(|(label, addr)| peer.source(&addr, label))
            .collect()
    }

    /// Pulls tree `cid` from the node and from `holders` that serve peer to peer.
    async fn pull(
        &self,
        cid: &Hash,
        key: &DataKey,
        holders: &[Address],
        dest: &std::path::Path,
    ) -> Result<(), WorkerError> {
        let peers = self.peer_sources(holders).await;
        let mut sources: Vec<&dyn ChunkSource> = vec![&self.client];
        sources.extend(peers.iter().map(|p| p as &dyn ChunkSource));
        let report = pull_tree_from(&sources, cid, key, &self.chunks, dest, &transfer()).await?;
        let from_peers: u64 = report
            .sources
            .iter()
            .filter(|s| s.source.starts_with("peer "))
            .map(|s| s.chunks)
            .sum();
        self.peer_chunks
            .fetch_add(from_peers, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(%cid, ?report.sources, "pulled");
        let mut pulls = lock(&self.pulls);
        if pulls.len() == 64 {
            pulls.remove(0);
        }
        pulls.push((*cid, report.sources));
        Ok(())
    }

    /// The provider's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// Signs and submits `kind` with the next nonce.
    async fn send(&self, kind: TxKind) -> Result<Hash, ClientError> {
        let _guard = self.nonce.lock().await;
        let fee = *lock(&self.fee);
        self.client.sign_and_send(&self.cfg.key, fee, kind).await
    }

    /// Locks stake and registers the hardware; returns once both are in a block.
    pub async fn register(&self) -> Result<(), WorkerError> {
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
        self.register().await?;
        self.serve(shutdown).await
    }

    /// Works (after [`Worker::register`]) until `shutdown` turns true and its running and
    /// committed tasks are done.
    pub async fn serve(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let follower = tokio::spawn(Self::follow_blocks(Arc::clone(&self)));
        let result = self.work(&mut shutdown).await;
        follower.abort();
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
        match t.phase {
            Phase::Bidding if !draining && !t.bids.iter().any(|(p, _)| *p == self.me) => {
                let active = lock(&self.running).len() as u32;
                match self
                    .cfg
                    .policy
                    .decide(&view.prescription, &self.cfg.hardware, active)
                {
                    Decision::Bid(price) if self.mark("bid", r, 0).await => {
                        let sent = self
                            .send(TxKind::Bid {
                                job: view.id,
                                task: t.index,
                                price,
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
                        let c = commitment(&res.output, &res.salt, &self.me);
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
                    if !is_executor && self.cfg.behavior.is_lazy() {
                        return self.make_up_result(r, t.round);
                    }
                    let worker = Arc::clone(self);
                    let view = view.clone();
                    let items = t.items;
                    let round = t.round;
                    let limit = run_limit(
                        view.prescription.instructions.task_deadline_ms,
                        t.deadline_ms,
                    );
                    let handle = tokio::spawn(async move {
                        let running = worker.metrics.run_started();
                        let outcome = match worker
                            .execute(&view, r, items, round, limit, is_executor)
                            .await
                        {
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

    /// Fetches the inputs, runs the program, uploads the outputs, records the result; says
    /// how the program ended.
    async fn execute(
        &self,
        view: &JobView,
        r: TaskRef,
        items: (u64, u64),
        round: u8,
        limit: Duration,
        as_executor: bool,
    ) -> Result<RunOutcome, WorkerError> {
        let dir = self.task_dir(r);
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        if dir.exists() {
            // A run cut off by a restart starts again from nothing.
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        std::fs::create_dir_all(&dir).map_err(io)?;
        let (inputs, outputs) = sandbox::layout(&dir);
        for cid in view.prescription.data.iter().map(|d| &d.cid) {
            // The node wraps the input keys for the executor and council when the auction
            // closes; until then this fails and the next pass tries again.
            let key = self.client.granted_key(cid, &self.cfg.key).await?;
            // Whoever else works on this job has fetched the same inputs.
            let holders: Vec<Address> = view
                .tasks
                .iter()
                .flat_map(|t| t.executor.into_iter().chain(t.council.iter().copied()))
                .collect();
            self.pull(cid, &key, &holders, &inputs).await?;
        }
        let env = TaskEnv {
            job: view.id.to_string(),
            task: r.1,
            items,
        };
        let deadline = limit;
        let (run_done, done) = watch::channel(false);
        let streaming = tokio::spawn(crate::logs::stream(
            self.client.clone(),
            self.cfg.key.clone(),
            dir.clone(),
            r,
            done,
        ));
        let started = Instant::now();
        let outcome = sandbox::run(
            &view.prescription.program,
            &dir,
            &env,
            deadline,
            self.cfg.launcher.as_ref(),
        )
        .await;
        self.metrics.program_ran(started.elapsed());
        let _ = run_done.send(true);
        let _ = streaming.await;
        let outcome = outcome.map_err(|e| WorkerError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // The exit status is part of the result, so a program that fails the same way
        // everywhere is a valid (if useless) result rather than a timeout.
        let status = match (outcome.timed_out, outcome.code) {
            (true, _) => "timeout".to_string(),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "killed".to_string(),
        };
        let ended = match (outcome.timed_out, outcome.code) {
            (true, _) => RunOutcome::Timeout,
            (false, Some(0)) => RunOutcome::Success,
            (false, Some(_)) => RunOutcome::Failure,
            (false, None) => RunOutcome::Killed,
        };
        std::fs::create_dir_all(&outputs).map_err(io)?;
        std::fs::write(outputs.join(".gridwork-status"), format!("{status}\n")).map_err(io)?;
        if as_executor && self.cfg.behavior.lies() {
            std::fs::write(outputs.join(".gridwork-status"), "exit 0\nforged_result\n")
                .map_err(io)?;
        }
        let output = self.push_output(view, r, round, &outputs).await?;
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        self.save_result(
            r,
            &RunResult {
                output,
                salt: Hash(salt),
                seconds: outcome.seconds,
                round,
            },
        )?;
        tracing::info!(job = %view.id, task = r.1, %status, seconds = outcome.seconds, "task ran");
        Ok(ended)
    }

    /// Pushes a run's outputs and lets the requester and the other members of the task
    /// decrypt them. The key is convergent ([`DataKey::convergent`] over job, task, attempt
    /// and the outputs' plaintext digest), so runs of one attempt that agree produce the same
    /// content id, which is what the ledger compares under the exact-hash equivalence. The
    /// attempt and round are in the key so a new attempt's (or an enlarged council's) runs
    /// produce a new id: an id revealed earlier is worth nothing to a copier (the ledger
    /// refuses it again).
    async fn push_output(
        &self,
        view: &JobView,
        r: TaskRef,
        round: u8,
        outputs: &std::path::Path,
    ) -> Result<Hash, WorkerError> {
        let key = output_key(view, r, round, outputs)?;
        let opts = TransferOptions {
            // Kept in the chunk store, which is what this worker serves to peers.
            keep: self.peer.get().map(|_| self.chunks.clone()),
            ..transfer()
        };
        let report = self.client.push_tree(outputs, &key, &opts).await?;
        let mut recipients = vec![view.requester];
        if let Some(t) = view.tasks.iter().find(|t| t.index == r.1) {
            recipients.extend(t.executor);
            recipients.extend(t.council.iter().copied());
        }
        self.share_output(&report.cid, &key, &recipients).await?;
        Ok(report.cid)
    }

    /// Lets `recipients` (but this worker) decrypt output tree `cid`.
    async fn share_output(
        &self,
        cid: &Hash,
        key: &DataKey,
        recipients: &[Address],
    ) -> Result<(), WorkerError> {
        for who in recipients {
            if *who == self.me {
                continue;
            }
            match self.client.account(who).await?.public_key {
                Some(pk) => self.client.share_key(cid, key, &pk).await?,
                None => {
                    tracing::warn!(%who, "no public key on the ledger; cannot share the output with it")
                }
            }
        }
        Ok(())
    }

    fn save_result(&self, r: TaskRef, result: &RunResult) -> Result<(), WorkerError> {
        let dir = self.task_dir(r);
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let tmp = dir.join("result.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(result).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, dir.join("result.json")).map_err(io)
    }

    /// `LazyCouncilMember`: a result for a run that never happened.
    fn make_up_result(&self, r: TaskRef, round: u8) -> Result<(), WorkerError> {
        let mut made_up = [0u8; 32];
        OsRng.fill_bytes(&mut made_up);
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        self.save_result(
            r,
            &RunResult {
                output: Hash(made_up),
                salt: Hash(salt),
                seconds: 1,
                round,
            },
        )
    }

    /// Judges every other revealed output of the task against this worker's own and sends
    /// the judgement. Each party first lets all the others decrypt its output (members drawn
    /// after its run have no grant yet). An output this worker cannot fetch yet is tried
    /// again at the next pass, until the judging deadline is near; then it is judged as not
    /// equivalent (its owner kept it from the others).
    async fn judge_all(
        &self,
        view: &JobView,
        t: &TaskView,
        r: TaskRef,
        mine: &RunResult,
    ) -> Result<(), WorkerError> {
        let lazy = self.cfg.behavior.is_lazy() && t.executor != Some(self.me);
        if !lazy && !lock(&self.judging).contains(&("shared", r, t.round)) {
            let outputs = sandbox::layout(&self.task_dir(r)).1;
            let key = output_key(view, r, mine.round, &outputs)?;
            let mut everyone = vec![view.requester];
            everyone.extend(t.executor);
            everyone.extend(t.council.iter().copied());
            self.share_output(&mine.output, &key, &everyone).await?;
            lock(&self.judging).insert(("shared", r, t.round));
        }
        let mut equivalent = Vec::new();
        let mut waiting = Vec::new();
        for (who, theirs) in t.revealed.iter().filter(|(p, _)| *p != self.me) {
            if lazy {
                equivalent.push(*who);
                continue;
            }
            // A huge or slow output must not make this worker miss the deadline.
            let budget = t
                .deadline_ms
                .saturating_sub(now_ms())
                .saturating_sub(JUDGE_MARGIN_MS / 2);
            let verdict = tokio::time::timeout(
                Duration::from_millis(budget),
                self.judge(&view.prescription.equivalence, r, mine, who, theirs),
            )
            .await;
            match verdict {
                Ok(Ok(true)) => equivalent.push(*who),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::info!(error = %e, job = %view.id, task = r.1, party = %who, "cannot judge an output yet");
                    waiting.push(*who);
                }
                Err(_) => {
                    tracing::warn!(job = %view.id, task = r.1, party = %who, "judging an output took too long; judged as not equivalent");
                }
            }
        }
        if !waiting.is_empty() && now_ms().saturating_add(JUDGE_MARGIN_MS) < t.deadline_ms {
            return Ok(());
        }
        if !self.mark("judge", r, t.round).await {
            return Ok(());
        }
        let kind = TxKind::Judge {
            job: view.id,
            task: t.index,
            attempt: t.attempt,
            round: t.round,
            equivalent,
        };
        let sent = self.send(kind).await;
        self.sent_as("judge", r, t.round, &sent, true);
        sent?;
        Ok(())
    }

    /// This worker's verdict on another party's output: the same content id, or equivalent
    /// under the job's function when compared on the plaintext.
    async fn judge(
        &self,
        e: &Equivalence,
        r: TaskRef,
        mine: &RunResult,
        holder: &Address,
        theirs: &Hash,
    ) -> Result<bool, WorkerError> {
        if mine.output == *theirs {
            return Ok(true);
        }
        if let Some(v) = lock(&self.verdicts).get(&(r, *theirs)) {
            return Ok(*v);
        }
        let dir = self.task_dir(r);
        let their_dir = dir.join(format!("judged-{theirs}"));
        if their_dir.exists() {
            std::fs::remove_dir_all(&their_dir).map_err(|source| WorkerError::Io {
                path: their_dir.display().to_string(),
                source,
            })?;
        }
        let key = match self.client.granted_key(theirs, &self.cfg.key).await {
            Ok(key) => key,
            Err(e) => {
                // Every honest run pushes (and pins) its output before committing to it: an
                // output the node does not hold was never produced, and no grant will come.
                if self.client.pin_view(theirs).await?.is_none() {
                    lock(&self.verdicts).insert((r, *theirs), false);
                    return Ok(false);
                }
                return Err(e.into());
            }
        };
        self.pull(theirs, &key, &[*holder], &their_dir).await?;
        let verdict = gridwork_verify::equivalent(e, &sandbox::layout(&dir).1, &their_dir)
            .map_err(|err| WorkerError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::other(err.to_string()),
            })?;
        let _ = std::fs::remove_dir_all(&their_dir);
        let same = verdict.is_same();
        lock(&self.verdicts).insert((r, *theirs), same);
        Ok(same)
    }
}

/// How long before the judging deadline a worker stops waiting for outputs it cannot fetch
/// and judges without them.
const JUDGE_MARGIN_MS: u64 = 10_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a run may take: the task's deadline, or what is left of the chain's commit
/// deadline once the council is drawn (members start after the executor), less a margin to
/// push the outputs and commit. A program that never ends is cut off in time and its
/// "timeout" result committed, so no honest party misses the deadline because of it.
fn run_limit(task_deadline_ms: u64, chain_deadline_ms: u64) -> Duration {
    let left = chain_deadline_ms.saturating_sub(now_ms());
    let limit = if left > 1_000 {
        task_deadline_ms.min(left)
    } else {
        task_deadline_ms
    };
    let margin = (limit / 10).max(2_000);
    Duration::from_millis(limit.saturating_sub(margin).max(500))
}

/// The convergent key of a run's outputs: over job, task, attempt, round and the outputs'
/// plaintext digest (see [`Worker::push_output`]).
fn output_key(
    view: &JobView,
    r: TaskRef,
    round: u8,
    outputs: &std::path::Path,
) -> Result<DataKey, WorkerError> {
    let digest = tree_digest(outputs)?;
    let mut context = view.id.as_bytes().to_vec();
    context.extend_from_slice(&r.1.to_le_bytes());
    context.extend_from_slice(&r.2.to_le_bytes());
    context.push(round);
    Ok(DataKey::convergent(&context, &digest))
}
