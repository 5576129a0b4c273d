//! A deterministic simulation of a Gridwork market: the real node (mempool, producer,
//! ledger, a store: [`gridwork_storage::MemoryStore`] or redb) in virtual time
//! ([`ManualClock`]), driven by simulated workers whose behaviour, run times, message delays and faults are drawn from one seed. A run of
//! thousands of tasks takes seconds of wall time, and the same seed replays it exactly: the
//! same blocks, the same state root ([`Outcome::trace`] folds every block hash).
//!
//! What is simulated and what is real:
//! - Real: the node's admission (signatures, mempool, fee market), block production and its
//!   timing rules (`Solo`), the whole ledger (auctions, councils, deadlines, slashing,
//!   settlement), the store (in memory, or redb on disk with `SimConfig::durable`), and a
//!   node restart (a new `Node` over the same store, its state read back from it: the
//!   mempool is lost, the chain is not).
//! - Simulated: the workers. Each follows the protocol as the worker agent does (heartbeat,
//!   bid, run, commit, reveal after the executor, judge), with a behaviour ([`Behavior`]):
//!   honest, a liar (forges its output as executor), lazy (makes its output up on a council)
//!   or vanishing (wins and never commits). Runs take seeded times; outputs are content ids
//!   (honest runs of one task, attempt and round agree); messages reach the node after a
//!   seeded delay, in order per worker (one connection each); a worker that dies stops for
//!   good. A worker whose message is refused for its nonce (its earlier ones were lost with
//!   the mempool at a restart) reconnects: its undelivered messages are dropped and it
//!   starts again from the node's nonce.
//! - A service (`SimConfig::service`, `service.rs`): the requester's model service beside the
//!   jobs, its council drawn from the workers' subscriptions, its gateway simulated (requests,
//!   receipts, drops of silent members, disputes of lying ones), its members settling their
//!   receipts; real: every ledger rule of it.
//! - Not simulated: the data plane (tasks have no inputs and outputs are ids), the HTTP API
//!   and real processes. The worker agent's own tests cover those with real processes.
#![deny(missing_docs, unreachable_pub)]

mod run;
mod service;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use gridwork_consensus::Solo;
use gridwork_node::{ManualClock, Node, NodeError};
use gridwork_types::{Address, Amount, Hash, Keypair, SignedTx, GRID};

/// How a simulated worker behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Runs tasks and reports what it got.
    Honest,
    /// As executor, reports a forged output.
    Liar,
    /// On a council, does not run the program: makes an output up, and names everyone as
    /// equivalent when judging.
    Lazy,
    /// Wins auctions and never commits.
    Vanishing,
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Everything random (run times, delays, who bids, faults) is drawn from this.
    pub seed: u64,
    /// Workers (providers).
    pub workers: u32,
    /// Of them, liars, lazy council members and vanishing executors (the rest are honest).
    pub liars: u32,
    /// Lazy council members.
    pub lazy: u32,
    /// Vanishing executors.
    pub vanishing: u32,
    /// Jobs, all submitted at the start.
    pub jobs: u32,
    /// Tasks per job.
    pub tasks_per_job: u32,
    /// Council size of every job.
    pub council: u8,
    /// Every other job runs in checkpointed segments (4, one replayed: training), when it has
    /// a council: its executors bind checkpoints, the ledger draws what the council replays.
    pub checkpointed: bool,
    /// A service runs beside the jobs: a council of three drawn from every worker's
    /// subscription, a request a second through a simulated gateway, receipts settled on the
    /// ledger, silent members dropped, lying ones disputed; once the jobs are done its
    /// members settle everything they were acknowledged.
    pub service: bool,
    /// The service compares answers within a tolerance: its council judges a liar's answer
    /// (`JudgeResponses`) where hashes decide otherwise (`DisputeResponses`).
    pub tolerant_service: bool,
    /// The node's store is redb in a temporary directory, fsynced every block as a real
    /// node's, so each restart reads the state back from disk (else the in-memory store).
    pub durable: bool,
    /// Bids each task gets (from workers drawn by the seed) before its auction closes.
    pub bids_per_task: u32,
    /// Honest workers that die at a random moment of the first `fault_window_ms`.
    pub deaths: u32,
    /// Node restarts at random moments of the first `fault_window_ms`.
    pub restarts: u32,
    /// When deaths and restarts happen.
    pub fault_window_ms: u64,
    /// Each message reaches the node between 0 and this late.
    pub max_delay_ms: u64,
    /// A run takes between one second and this long.
    pub max_run_ms: u64,
    /// Virtual time per step (the node's block interval is 200 ms).
    pub tick_ms: u64,
    /// The simulation gives up after this much virtual time.
    pub max_virtual_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            workers: 12,
            liars: 0,
            lazy: 0,
            vanishing: 0,
            jobs: 4,
            tasks_per_job: 8,
            council: 1,
            checkpointed: true,
            service: true,
            tolerant_service: false,
            durable: false,
            bids_per_task: 3,
            deaths: 0,
            restarts: 0,
            fault_window_ms: 60_000,
            max_delay_ms: 300,
            max_run_ms: 10_000,
            tick_ms: 100,
            max_virtual_ms: 3_600_000,
        }
    }
}

/// How a simulation ended. Two runs of one seed are equal (except for `wall`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Every block hash in order, folded: equal traces mean equal chains.
    pub trace: Hash,
    /// The state root at the end.
    pub state_root: Hash,
    /// Blocks made.
    pub height: u64,
    /// Virtual time the market took.
    pub virtual_ms: u64,
    /// Tasks settled, and tasks failed (or cancelled).
    pub settled: u64,
    /// Tasks failed.
    pub failed: u64,
    /// Reopenings (a task sent back to bidding).
    pub reopened: u64,
    /// Replays drawn for checkpointed tasks (one per attempt whose executor bound its
    /// checkpoints).
    pub replays_drawn: u64,
    /// Slashes, and those of workers that were honest and alive when slashed (none expected:
    /// a dead worker is slashed for its silence).
    pub slashes: u64,
    /// Slashes of liars, lazy and vanishing workers.
    pub slashes_of_byzantine: u64,
    /// Transactions in blocks, and of them those the market refused (`TxFailed`).
    pub txs: u64,
    /// Transactions the market refused in their block.
    pub refused_in_block: u64,
    /// The service's requests its gateway acknowledged, summed over members.
    pub service_responses: u64,
    /// What the gateway's receipts owe its members in all.
    pub service_owed: Amount,
    /// What the ledger paid the members in all.
    pub service_paid: Amount,
    /// Settlements of receipts on the ledger.
    pub service_settlements: u64,
    /// Councils the service had (each re-formation, after a drop or a slash, counts).
    pub service_councils: u64,
    /// Disputes the ledger upheld.
    pub service_disputes: u64,
    /// Once the market is done, the requester closes the service and its settle window
    /// passes: whether it ended closed for good, read back from the archive after a restart.
    pub service_closed: bool,
    /// Services the hot state holds at the end (a closed one is archived: none).
    pub hot_services: usize,
    /// Node restarts that happened.
    pub restarts: u32,
    /// Workers that died.
    pub deaths: u32,
    /// Wall time the simulation took (not part of equality).
    pub wall: WallTime,
}

/// Wall time, ignored by equality (it differs between two runs of one seed).
#[derive(Debug, Clone, Copy, Default)]
pub struct WallTime(pub Duration);

impl PartialEq for WallTime {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for WallTime {}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration cannot make a market.
    #[error("{0}")]
    Config(String),
    /// The node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Not every job finished within `max_virtual_ms`.
    #[error("{open} jobs still open after {virtual_ms} ms of virtual time (height {height})")]
    Unfinished {
        /// Jobs open.
        open: usize,
        /// Virtual time.
        virtual_ms: u64,
        /// Blocks made.
        height: u64,
    },
}

/// The seeded generator: SplitMix64 (small, fast, and the same everywhere).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A value drawn for a named purpose from the seed alone: the same whatever order the
/// simulation asks in.
fn drawn(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

/// What one worker did or means to do, so it is not sent twice while in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Subscribe,
    Settle,
    Bid,
    Checkpoints,
    Commit,
    Reveal,
    Judge,
}

type TaskRef = (Hash, u32, u32, u8);

#[derive(Debug)]
struct Worker {
    key: Keypair,
    address: Address,
    behavior: Behavior,
    /// Dies at this virtual time (never: `u64::MAX`).
    dies_at: u64,
    /// Died (and was counted).
    dead: bool,
    next_nonce: u64,
    /// Messages on their way to the node, in order.
    outbox: VecDeque<(u64, SignedTx)>,
    /// When it started each run it was assigned (task, attempt, round).
    started: BTreeMap<TaskRef, u64>,
    /// Steps sent and when, so nothing is sent twice while it travels.
    sent: BTreeMap<(Step, TaskRef), u64>,
    last_heartbeat: u64,
}

/// The simulation.
pub struct Sim {
    cfg: SimConfig,
    clock: ManualClock,
    store: Arc<dyn gridwork_storage::Store>,
    /// Where a durable store lives, removed with the simulation.
    _store_dir: Option<tempfile::TempDir>,
    node: Node,
    chain_id: String,
    requester: Keypair,
    workers: Vec<Worker>,
    by_address: BTreeMap<Address, usize>,
    jobs: Vec<Hash>,
    service: Option<service::SimService>,
    restarts_at: Vec<u64>,
    rng: Rng,
    outcome: Outcome,
    trace: blake3::Hasher,
}

/// How long a sent step waits before it is sent again (it may have been lost with the
/// mempool at a restart).
const RESEND_AFTER_MS: u64 = 5_000;
/// How often a worker sends a heartbeat (the chain's timeout is 60 s).
const HEARTBEAT_EVERY_MS: u64 = 20_000;
/// The price every worker asks.
const PRICE: Amount = Amount(GRID / 100);
/// Segments of a checkpointed job's run (`SimConfig::checkpointed`).
const SEGMENTS: u32 = 4;

fn worker_key(i: u32) -> Keypair {
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork-sim-worker");
    h.update(&i.to_le_bytes());
    Keypair::from_seed(*h.finalize().as_bytes())
}

fn consensus() -> Box<Solo> {
    Box::new(Solo::new(200, 20_000, Address([0; 20])))
}

/// Runs the simulation `cfg` describes.
pub fn simulate(cfg: SimConfig) -> Result<Outcome, SimError> {
    Sim::new(cfg)?.run()
}
