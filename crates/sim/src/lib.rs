//! A deterministic simulation of a Gridwork market: the real node (mempool, producer,
//! ledger, a [`MemoryStore`]) in virtual time ([`ManualClock`]), driven by simulated workers
//! whose behaviour, run times, message delays and faults are drawn from one seed. A run of
//! thousands of tasks takes seconds of wall time, and the same seed replays it exactly: the
//! same blocks, the same state root ([`Outcome::trace`] folds every block hash).
//!
//! What is simulated and what is real:
//! - Real: the node's admission (signatures, mempool, fee market), block production and its
//!   timing rules (`Solo`), the whole ledger (auctions, councils, deadlines, slashing,
//!   settlement), the store, and a node restart (a new `Node` over the same store: the
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
//! - Not simulated: the data plane (tasks have no inputs and outputs are ids), the HTTP API
//!   and real processes. The worker agent's own tests cover those with real processes.
#![deny(missing_docs, unreachable_pub)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridwork_api::{JobStatus, JobView, Phase, TaskView};
use gridwork_consensus::Solo;
use gridwork_node::{AdmitError, Clock, ManualClock, Node, NodeError};
use gridwork_protocol::{Allocation, Event, Genesis, Params, TxError};
use gridwork_storage::MemoryStore;
use gridwork_types::{
    commitment, Address, Amount, Equivalence, Halting, Hardware, Hash, Instructions, Keypair,
    Payment, Prescription, Program, Requirements, SignedTx, Transaction, TxKind, GRID,
};

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
    /// Slashes, and those of workers that were honest and alive when slashed (none expected:
    /// a dead worker is slashed for its silence).
    pub slashes: u64,
    /// Slashes of liars, lazy and vanishing workers.
    pub slashes_of_byzantine: u64,
    /// Transactions in blocks, and of them those the market refused (`TxFailed`).
    pub txs: u64,
    /// Transactions the market refused in their block.
    pub refused_in_block: u64,
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
    Bid,
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
    store: Arc<MemoryStore>,
    node: Node,
    chain_id: String,
    requester: Keypair,
    workers: Vec<Worker>,
    by_address: BTreeMap<Address, usize>,
    jobs: Vec<Hash>,
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

fn worker_key(i: u32) -> Keypair {
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork-sim-worker");
    h.update(&i.to_le_bytes());
    Keypair::from_seed(*h.finalize().as_bytes())
}

fn consensus() -> Box<Solo> {
    Box::new(Solo::new(200, 20_000, Address([0; 20])))
}

impl Sim {
    /// A market as `cfg` says: genesis, staked and registered workers, jobs submitted.
    pub fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        let byzantine = cfg.liars + cfg.lazy + cfg.vanishing;
        if cfg.workers < u32::from(cfg.council) + 2 || byzantine > cfg.workers {
            return Err(SimError::Config(format!(
                "{} workers cannot serve councils of {} with {byzantine} Byzantine: need at least council + 2 workers",
                cfg.workers, cfg.council
            )));
        }
        if cfg.jobs == 0 || cfg.tasks_per_job == 0 || cfg.tick_ms == 0 {
            return Err(SimError::Config(
                "need at least one job of one task, and a tick".into(),
            ));
        }
        let start_ms = 1_700_000_000_000;
        let clock = ManualClock::new(start_ms);
        let requester = worker_key(u32::MAX);
        let keys: Vec<Keypair> = (0..cfg.workers).map(worker_key).collect();
        let each = 1_000_000 * GRID;
        let pool = 1_000_000 * GRID;
        let mut allocations: Vec<Allocation> = keys
            .iter()
            .chain(std::iter::once(&requester))
            .map(|k| Allocation {
                address: k.address(),
                amount: Amount(each),
                vesting: None,
            })
            .collect();
        allocations.sort_by_key(|a| a.address);
        let genesis = Genesis {
            chain_id: "gridwork-sim".into(),
            timestamp_ms: start_ms,
            total_supply: Amount(each * (u128::from(cfg.workers) + 1) + pool),
            rewards_pool: Amount(pool),
            params: Params {
                emission_start_ms: start_ms,
                emission_total: Amount(pool),
                ..Params::default()
            },
            allocations,
        };
        let store = Arc::new(MemoryStore::new());
        let node = Node::with_store_and_clock(
            Box::new(store.clone()),
            Some(&genesis),
            consensus(),
            1_000_000,
            Arc::new(clock.clone()),
        )?;
        let mut rng = Rng(cfg.seed);
        // Who misbehaves, who dies, when the node restarts: all from the seed.
        let mut order: Vec<usize> = (0..cfg.workers as usize).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut behaviors = vec![Behavior::Honest; cfg.workers as usize];
        let mut roles = order.iter();
        for (count, behavior) in [
            (cfg.liars, Behavior::Liar),
            (cfg.lazy, Behavior::Lazy),
            (cfg.vanishing, Behavior::Vanishing),
        ] {
            for _ in 0..count {
                if let Some(&i) = roles.next() {
                    behaviors[i] = behavior;
                }
            }
        }
        let mut dies_at = vec![u64::MAX; cfg.workers as usize];
        for &i in roles.take(cfg.deaths as usize) {
            dies_at[i] = start_ms + rng.below(cfg.fault_window_ms);
        }
        let mut restarts_at: Vec<u64> = (0..cfg.restarts)
            .map(|_| start_ms + rng.below(cfg.fault_window_ms))
            .collect();
        restarts_at.sort_unstable();
        let workers: Vec<Worker> = keys
            .into_iter()
            .zip(behaviors)
            .zip(dies_at)
            .map(|((key, behavior), dies_at)| Worker {
                address: key.address(),
                key,
                behavior,
                dies_at,
                dead: false,
                next_nonce: 0,
                outbox: VecDeque::new(),
                started: BTreeMap::new(),
                sent: BTreeMap::new(),
                last_heartbeat: start_ms,
            })
            .collect();
        let by_address = workers
            .iter()
            .enumerate()
            .map(|(i, w)| (w.address, i))
            .collect();
        let mut sim = Sim {
            chain_id: genesis.chain_id.clone(),
            cfg,
            clock,
            store,
            node,
            requester,
            workers,
            by_address,
            jobs: Vec::new(),
            restarts_at,
            rng,
            outcome: Outcome {
                trace: Hash::ZERO,
                state_root: Hash::ZERO,
                height: 0,
                virtual_ms: 0,
                settled: 0,
                failed: 0,
                reopened: 0,
                slashes: 0,
                slashes_of_byzantine: 0,
                txs: 0,
                refused_in_block: 0,
                restarts: 0,
                deaths: 0,
                wall: WallTime::default(),
            },
            trace: blake3::Hasher::new(),
        };
        sim.set_up()?;
        Ok(sim)
    }

    /// Stake, registration and the jobs, each in a block of its own at once.
    fn set_up(&mut self) -> Result<(), SimError> {
        for phase in 0..2 {
            let txs: Vec<SignedTx> = (0..self.workers.len())
                .map(|i| {
                    let kind = if phase == 0 {
                        TxKind::StakeLock {
                            amount: Amount::grid(1_000),
                        }
                    } else {
                        TxKind::RegisterProvider {
                            hardware: Hardware::default(),
                            owner: None,
                        }
                    };
                    self.sign_for(i, kind)
                })
                .collect();
            self.admit_all(txs)?;
            self.block_now()?;
        }
        let prescription = Prescription {
            data: Vec::new(),
            program: Program {
                command: "simulated".into(),
                args: vec![],
            },
            instructions: Instructions {
                items: u64::from(self.cfg.tasks_per_job),
                chunk: 1,
                requirements: Requirements::default(),
                task_deadline_ms: self.cfg.max_run_ms + 30_000,
                council_size: self.cfg.council,
            },
            payment: Payment::FixedPerTask { max_price: PRICE },
            equivalence: Equivalence::ExactHash {},
            halting: Halting {
                first_bids: self.cfg.bids_per_task.max(1),
                deadline_ms: 5_000,
                reserve_price: None,
                give_up_ms: 0,
            },
        };
        let params = Params::default();
        let per_task = gridwork_protocol::max_task_cost(&prescription, &params)
            .ok_or_else(|| SimError::Config("the job's cost overflows".into()))?;
        let deposit = Amount(per_task.0 * u128::from(self.cfg.tasks_per_job));
        let txs: Vec<SignedTx> = (0..self.cfg.jobs)
            .map(|n| {
                Transaction {
                    from: self.requester.public(),
                    nonce: u64::from(n),
                    fee: Amount::ZERO,
                    kind: TxKind::SubmitJob {
                        prescription: prescription.clone(),
                        deposit,
                    },
                }
                .sign(&self.chain_id, &self.requester)
            })
            .collect();
        self.jobs = txs.iter().map(SignedTx::hash).collect();
        self.admit_all(txs)?;
        self.block_now()?;
        Ok(())
    }

    fn sign_for(&mut self, i: usize, kind: TxKind) -> SignedTx {
        let w = &mut self.workers[i];
        let tx = Transaction {
            from: w.key.public(),
            nonce: w.next_nonce,
            fee: Amount::ZERO,
            kind,
        }
        .sign(&self.chain_id, &w.key);
        w.next_nonce += 1;
        tx
    }

    fn admit_all(&self, txs: Vec<SignedTx>) -> Result<(), SimError> {
        for r in self.node.submit(txs) {
            r.map_err(|e| SimError::Config(format!("setting up the market: {e}")))?;
        }
        Ok(())
    }

    fn block_now(&mut self) -> Result<(), SimError> {
        self.clock.advance(1);
        if let Some(event) = self.node.ledger().produce_block(true)? {
            self.record(&event);
        }
        Ok(())
    }

    fn record(&mut self, event: &gridwork_node::Committed) {
        self.trace.update(event.header.hash().as_bytes());
        self.outcome.height = event.height();
        self.outcome.txs += event.receipts.len() as u64;
        let events = event
            .events
            .iter()
            .chain(event.receipts.iter().flat_map(|r| r.events.iter()));
        for e in events {
            match e {
                Event::TaskSettled { .. } => self.outcome.settled += 1,
                Event::TaskFailed { .. } => self.outcome.failed += 1,
                Event::TaskReopened { .. } => self.outcome.reopened += 1,
                Event::TxFailed { .. } => self.outcome.refused_in_block += 1,
                Event::Slashed { provider, .. } => {
                    self.outcome.slashes += 1;
                    let byzantine = self
                        .by_address
                        .get(provider)
                        .is_some_and(|&i| self.workers[i].behavior != Behavior::Honest);
                    self.outcome.slashes_of_byzantine += u64::from(byzantine);
                }
                _ => {}
            }
        }
    }

    /// Runs until every job finished (or `max_virtual_ms` passed).
    pub fn run(mut self) -> Result<Outcome, SimError> {
        let wall = Instant::now();
        let start = self.clock.now_ms();
        loop {
            self.clock.advance(self.cfg.tick_ms);
            let now = self.clock.now_ms();
            self.faults(now)?;
            self.deliver(now);
            if let Some(event) = self.node.ledger().produce_block(false)? {
                self.record(&event);
            }
            let open = self.act(now);
            if open == 0 {
                break;
            }
            if now - start > self.cfg.max_virtual_ms {
                return Err(SimError::Unfinished {
                    open,
                    virtual_ms: now - start,
                    height: self.outcome.height,
                });
            }
        }
        let mut outcome = self.outcome.clone();
        outcome.trace = Hash(*self.trace.finalize().as_bytes());
        outcome.state_root = self.node.ledger().state_root();
        outcome.virtual_ms = self.clock.now_ms() - start;
        outcome.wall = WallTime(wall.elapsed());
        Ok(outcome)
    }

    /// Deaths and restarts due by `now`.
    fn faults(&mut self, now: u64) -> Result<(), SimError> {
        for w in &mut self.workers {
            if w.dies_at <= now && !w.dead {
                w.dead = true;
                w.outbox.clear();
                self.outcome.deaths += 1;
            }
        }
        while self.restarts_at.first().is_some_and(|t| *t <= now) {
            self.restarts_at.remove(0);
            self.node.shutdown();
            self.node = Node::with_store_and_clock(
                Box::new(self.store.clone()),
                None,
                consensus(),
                1_000_000,
                Arc::new(self.clock.clone()),
            )?;
            self.outcome.restarts += 1;
        }
        Ok(())
    }

    /// Hands the node every message due by `now`, each worker's in order.
    fn deliver(&mut self, now: u64) {
        for i in 0..self.workers.len() {
            while self.workers[i]
                .outbox
                .front()
                .is_some_and(|(t, _)| *t <= now)
            {
                let Some((_, tx)) = self.workers[i].outbox.pop_front() else {
                    break;
                };
                let refused = self.node.submit(vec![tx]).pop().and_then(Result::err);
                if let Some(AdmitError::Mempool(gridwork_node::MempoolError::Invalid(
                    TxError::NonceFuture { .. } | TxError::NonceReplayed { .. },
                ))) = refused
                {
                    // Its earlier messages were lost (a restart): reconnect from the node's
                    // nonce, and send what is still needed again.
                    let w = &mut self.workers[i];
                    w.outbox.clear();
                    w.sent.clear();
                    w.next_nonce = self.node.ledger().account(&w.address).next_nonce;
                }
            }
        }
    }

    fn send(&mut self, i: usize, kind: TxKind, now: u64) {
        let tx = self.sign_for(i, kind);
        let delay = self.rng.below(self.cfg.max_delay_ms + 1);
        let w = &mut self.workers[i];
        // In order on one connection: never before the message ahead of it.
        let at = w.outbox.back().map_or(now, |(t, _)| *t).max(now + delay);
        w.outbox.push_back((at, tx));
    }

    fn alive(&self, i: usize, now: u64) -> bool {
        self.workers[i].dies_at > now
    }

    /// Every worker's turn: heartbeats, then each open task's next steps. Returns the jobs
    /// still open.
    fn act(&mut self, now: u64) -> usize {
        for i in 0..self.workers.len() {
            if self.alive(i, now) && now - self.workers[i].last_heartbeat >= HEARTBEAT_EVERY_MS {
                self.workers[i].last_heartbeat = now;
                self.send(i, TxKind::Heartbeat, now);
            }
        }
        let mut open = 0;
        for j in 0..self.jobs.len() {
            let id = self.jobs[j];
            let Some(view) = gridwork_node::api::views::job_on(&self.node, &id) else {
                continue;
            };
            if view.status != JobStatus::Open {
                continue;
            }
            open += 1;
            for t in &view.tasks {
                self.step(&view, t, now);
            }
        }
        open
    }

    fn due(&self, i: usize, step: Step, r: TaskRef, now: u64) -> bool {
        self.alive(i, now)
            && self.workers[i]
                .sent
                .get(&(step, r))
                .is_none_or(|at| now - at >= RESEND_AFTER_MS)
    }

    fn mark(&mut self, i: usize, step: Step, r: TaskRef, now: u64) {
        self.workers[i].sent.insert((step, r), now);
    }

    /// The output a worker's run of `r` has: honest runs of one task, attempt and round agree.
    fn output(&self, i: usize, r: TaskRef, executor: bool) -> Hash {
        let (job, task, attempt, round) = r;
        let w = &self.workers[i];
        let forged = match w.behavior {
            Behavior::Liar => executor,
            Behavior::Lazy => !executor,
            Behavior::Honest | Behavior::Vanishing => false,
        };
        if !forged {
            return honest_output(r);
        }
        let mut h = blake3::Hasher::new();
        h.update(b"made up");
        h.update(&w.address.0);
        h.update(job.as_bytes());
        h.update(&task.to_le_bytes());
        h.update(&attempt.to_le_bytes());
        h.update(&[round]);
        Hash(*h.finalize().as_bytes())
    }

    /// Whether `output`, revealed for task `r` in this or an earlier round, is an honest run's:
    /// what judging on the plaintext finds equivalent (content ids differ by round, as a real
    /// output's do by the key it is sealed under, the result does not).
    fn is_honest(r: TaskRef, output: &Hash) -> bool {
        let (job, task, attempt, round) = r;
        (0..=round).any(|k| honest_output((job, task, attempt, k)) == *output)
    }

    /// A value drawn from the seed for `purpose` of worker `i`'s run of `r`.
    fn drawn_for_run(&self, purpose: &[u8], i: usize, r: TaskRef) -> u64 {
        let (job, task, attempt, round) = r;
        drawn(
            self.cfg.seed,
            &[
                purpose,
                &self.workers[i].address.0,
                job.as_bytes(),
                &task.to_le_bytes(),
                &attempt.to_le_bytes(),
                &[round],
            ],
        )
    }

    fn salt(&self, i: usize, r: TaskRef) -> Hash {
        Hash::of(&self.drawn_for_run(b"salt", i, r).to_le_bytes())
    }

    fn run_ms(&self, i: usize, r: TaskRef) -> u64 {
        1_000 + self.drawn_for_run(b"run", i, r) % self.cfg.max_run_ms.saturating_sub(1_000).max(1)
    }

    fn step(&mut self, view: &JobView, t: &TaskView, now: u64) {
        let r: TaskRef = (view.id, t.index, t.attempt, t.round);
        match t.phase {
            Phase::Bidding => {
                if t.bids.len() as u32 >= self.cfg.bids_per_task {
                    return;
                }
                // Bidders drawn by the seed for this task and attempt, among the living.
                let n = self.workers.len() as u64;
                let first = drawn(
                    self.cfg.seed,
                    &[
                        b"bidders",
                        view.id.as_bytes(),
                        &t.index.to_le_bytes(),
                        &t.attempt.to_le_bytes(),
                    ],
                ) % n;
                let mut wanted = self.cfg.bids_per_task as usize;
                for k in 0..n {
                    let i = ((first + k * 7919) % n) as usize;
                    if wanted == 0 {
                        break;
                    }
                    if !self.alive(i, now) {
                        continue;
                    }
                    wanted -= 1;
                    let address = self.workers[i].address;
                    if t.bids.iter().any(|(p, _)| *p == address) || !self.due(i, Step::Bid, r, now)
                    {
                        continue;
                    }
                    self.mark(i, Step::Bid, r, now);
                    self.send(
                        i,
                        TxKind::Bid {
                            job: view.id,
                            task: t.index,
                            price: PRICE,
                        },
                        now,
                    );
                }
            }
            Phase::Committing => {
                for who in t.executor.iter().chain(t.council.iter()) {
                    let Some(&i) = self.by_address.get(who) else {
                        continue;
                    };
                    let executor = t.executor == Some(*who);
                    if t.committed.contains(who)
                        || (executor && self.workers[i].behavior == Behavior::Vanishing)
                        || !self.due(i, Step::Commit, r, now)
                    {
                        continue;
                    }
                    let started = *self.workers[i].started.entry(r).or_insert(now);
                    let lazy = !executor && self.workers[i].behavior == Behavior::Lazy;
                    if !lazy && now < started + self.run_ms(i, r) {
                        continue;
                    }
                    let output = self.output(i, r, executor);
                    let salt = self.salt(i, r);
                    self.mark(i, Step::Commit, r, now);
                    self.send(
                        i,
                        TxKind::Commit {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            commitment: commitment(&output, &salt, who),
                        },
                        now,
                    );
                }
            }
            Phase::Revealing => {
                let executor_revealed = t.revealed.iter().any(|(p, _)| Some(*p) == t.executor);
                for who in t.executor.iter().chain(t.council.iter()) {
                    let Some(&i) = self.by_address.get(who) else {
                        continue;
                    };
                    let executor = t.executor == Some(*who);
                    if !t.committed.contains(who)
                        || t.revealed.iter().any(|(p, _)| p == who)
                        || (!executor && !executor_revealed)
                        || !self.due(i, Step::Reveal, r, now)
                    {
                        continue;
                    }
                    let output = self.output(i, r, executor);
                    let salt = self.salt(i, r);
                    self.mark(i, Step::Reveal, r, now);
                    self.send(
                        i,
                        TxKind::Reveal {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            output,
                            salt,
                            seconds: self.run_ms(i, r) / 1_000,
                        },
                        now,
                    );
                }
            }
            Phase::Judging => {
                for (who, mine) in &t.revealed {
                    let Some(&i) = self.by_address.get(who) else {
                        continue;
                    };
                    if t.judged.contains(who) || !self.due(i, Step::Judge, r, now) {
                        continue;
                    }
                    // Honest parties compare results, not ids: an honest run of an earlier
                    // round is equivalent to theirs. A lazy member names everyone.
                    let lazy = self.workers[i].behavior == Behavior::Lazy;
                    let honest = Self::is_honest(r, mine);
                    let equivalent: Vec<Address> = t
                        .revealed
                        .iter()
                        .filter(|(p, out)| {
                            p != who && (lazy || out == mine || (honest && Self::is_honest(r, out)))
                        })
                        .map(|(p, _)| *p)
                        .collect();
                    self.mark(i, Step::Judge, r, now);
                    self.send(
                        i,
                        TxKind::Judge {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            round: t.round,
                            equivalent,
                        },
                        now,
                    );
                }
            }
            Phase::Settled | Phase::Failed | Phase::Cancelled => {}
        }
    }
}

/// The content id of an honest run of task `r` (job, task, attempt, round): honest runs of
/// one round agree.
fn honest_output(r: TaskRef) -> Hash {
    let (job, task, attempt, round) = r;
    let mut h = blake3::Hasher::new();
    h.update(b"the result");
    h.update(job.as_bytes());
    h.update(&task.to_le_bytes());
    h.update(&attempt.to_le_bytes());
    h.update(&[round]);
    Hash(*h.finalize().as_bytes())
}

/// Runs the simulation `cfg` describes.
pub fn simulate(cfg: SimConfig) -> Result<Outcome, SimError> {
    Sim::new(cfg)?.run()
}
