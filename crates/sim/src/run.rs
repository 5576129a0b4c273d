//! The simulation's loop: the chain set up, then messages delivered, blocks produced, the node
//! restarted and faults drawn, all in virtual time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use gridwork_node::{AdmitError, Clock, ManualClock, Node};
use gridwork_protocol::{Allocation, Event, Genesis, Params, TxError};
use gridwork_storage::MemoryStore;
use gridwork_types::{
    Amount, Equivalence, Halting, Hardware, Hash, Instructions, Keypair, Payment, Prescription,
    Program, Requirements, Segments, SignedTx, Transaction, TxKind, GRID,
};

use super::{
    consensus, worker_key, Behavior, Outcome, Rng, Sim, SimConfig, SimError, WallTime, Worker,
    PRICE, SEGMENTS,
};

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
        let (store, store_dir): (Arc<dyn gridwork_storage::Store>, _) = if cfg.durable {
            let dir = tempfile::tempdir()
                .map_err(|e| SimError::Config(format!("a directory for the store: {e}")))?;
            let redb = gridwork_storage::RedbStore::open(&dir.path().join("chain.redb"))
                .map_err(|e| SimError::Config(format!("opening the store: {e}")))?;
            (Arc::new(redb), Some(dir))
        } else {
            (Arc::new(MemoryStore::new()), None)
        };
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
            _store_dir: store_dir,
            node,
            requester,
            workers,
            by_address,
            jobs: Vec::new(),
            service: None,
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
                replays_drawn: 0,
                slashes: 0,
                slashes_of_byzantine: 0,
                txs: 0,
                refused_in_block: 0,
                service_responses: 0,
                service_owed: Amount::ZERO,
                service_paid: Amount::ZERO,
                service_settlements: 0,
                service_councils: 0,
                service_disputes: 0,
                service_closed: false,
                hot_services: 0,
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
                command: "inputs/simulated".into(),
                args: vec![],
                outputs: Vec::new(),
                image: None,
                network: false,
                vendor_images: Vec::new(),
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
            segments: None,
        };
        let params = Params::default();
        let per_task = gridwork_protocol::max_task_cost(&prescription, &params)
            .ok_or_else(|| SimError::Config("the job's cost overflows".into()))?;
        let deposit = Amount(per_task.0 * u128::from(self.cfg.tasks_per_job));
        let checkpointed = Prescription {
            segments: Some(Segments {
                count: SEGMENTS,
                replayed: 1,
            }),
            ..prescription.clone()
        };
        let txs: Vec<SignedTx> = (0..self.cfg.jobs)
            .map(|n| {
                let segmented = self.cfg.checkpointed && self.cfg.council > 0 && n % 2 == 1;
                Transaction {
                    from: self.requester.public(),
                    nonce: u64::from(n),
                    fee: Amount::ZERO,
                    kind: TxKind::SubmitJob {
                        prescription: if segmented {
                            checkpointed.clone()
                        } else {
                            prescription.clone()
                        },
                        deposit,
                    },
                }
                .sign(&self.chain_id, &self.requester)
            })
            .collect();
        self.jobs = txs.iter().map(SignedTx::hash).collect();
        self.admit_all(txs)?;
        if self.cfg.service {
            let gateway = worker_key(u32::MAX - 1);
            let create = Transaction {
                from: self.requester.public(),
                nonce: u64::from(self.cfg.jobs),
                fee: Amount::ZERO,
                kind: TxKind::CreateService {
                    spec: super::service::spec(&gateway, self.cfg.tolerant_service),
                    deposit: Amount::grid(100),
                },
            }
            .sign(&self.chain_id, &self.requester);
            self.service = Some(super::service::SimService::new(
                create.hash(),
                gateway,
                self.clock.now_ms(),
            ));
            self.admit_all(vec![create])?;
        }
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
                Event::ReplayDrawn { .. } => self.outcome.replays_drawn += 1,
                Event::TxFailed { .. } => self.outcome.refused_in_block += 1,
                Event::StreamSettled { .. } => self.outcome.service_settlements += 1,
                Event::ServiceCouncil { .. } => self.outcome.service_councils += 1,
                Event::ResponsesDisputed { .. } => self.outcome.service_disputes += 1,
                Event::Slashed { provider, .. } | Event::ServiceSlashed { provider, .. } => {
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
            self.deliver_gateway(now);
            if let Some(event) = self.node.ledger().produce_block(false)? {
                self.record(&event);
            }
            let open = self.act(now);
            if let Some(service) = self.service.as_mut() {
                service.draining = open == 0;
            }
            let serving = self.serve(now);
            if open == 0 && !serving {
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
        let virtual_ms = self.clock.now_ms() - start;
        self.close_service()?;
        let mut outcome = self.outcome.clone();
        outcome.hot_services = self.node.ledger().hot_services();
        if let Some(service) = &self.service {
            outcome.service_closed = self
                .node
                .ledger()
                .service(&service.id)
                .is_some_and(|(s, _, _)| s.status == gridwork_protocol::ServiceStatus::Closed);
            let (responses, owed) = service.acknowledged();
            outcome.service_responses = responses;
            outcome.service_owed = Amount(owed);
            outcome.service_paid = self
                .node
                .ledger()
                .service(&service.id)
                .map_or(Amount::ZERO, |(s, _, _)| s.paid);
        }
        outcome.trace = Hash(*self.trace.finalize().as_bytes());
        outcome.state_root = self.node.ledger().state_root();
        outcome.virtual_ms = virtual_ms;
        outcome.wall = WallTime(wall.elapsed());
        Ok(outcome)
    }

    /// The market done, the requester closes its service; the settle window passes (the
    /// clock jumps it) and the service closes for good, leaving the hot state for the
    /// archive; then the node restarts from its store, which must read it back from there.
    fn close_service(&mut self) -> Result<(), SimError> {
        let Some(id) = self.service.as_ref().map(|s| s.id) else {
            return Ok(());
        };
        let nonce = self
            .node
            .ledger()
            .account(&self.requester.address())
            .next_nonce;
        let close = Transaction {
            from: self.requester.public(),
            nonce,
            fee: Amount::ZERO,
            kind: TxKind::CloseService { service: id },
        }
        .sign(&self.chain_id, &self.requester);
        self.admit_all(vec![close])?;
        self.block_now()?;
        self.clock.advance(gridwork_protocol::SETTLE_WINDOW_MS);
        self.block_now()?;
        self.restart()?;
        Ok(())
    }

    /// A new node over the same store: its state read back from it.
    fn restart(&mut self) -> Result<(), SimError> {
        self.node.shutdown();
        self.node = Node::with_store_and_clock(
            Box::new(self.store.clone()),
            None,
            consensus(),
            1_000_000,
            Arc::new(self.clock.clone()),
        )?;
        Ok(())
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
            self.restart()?;
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

    pub(super) fn send(&mut self, i: usize, kind: TxKind, now: u64) {
        let tx = self.sign_for(i, kind);
        let delay = self.rng.below(self.cfg.max_delay_ms + 1);
        let w = &mut self.workers[i];
        // In order on one connection: never before the message ahead of it.
        let at = w.outbox.back().map_or(now, |(t, _)| *t).max(now + delay);
        w.outbox.push_back((at, tx));
    }

    pub(super) fn alive(&self, i: usize, now: u64) -> bool {
        self.workers[i].dies_at > now
    }
}
