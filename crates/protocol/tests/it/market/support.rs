//! The market harness: a chain of funded providers and a requester, the transactions they send,
//! blocks in virtual time, and a store to restart from.

use gridwork_protocol::{dev_keypair, Event, Genesis, Params, State, TaskKey, TxError};
use gridwork_types::RunEnd;
use gridwork_types::{
    commitment, Address, Amount, DataInput, Equivalence, Gpu, GpuVendor, Halting, Hardware, Hash,
    Instructions, Keypair, OwnerApproval, Payment, Prescription, Program, Requirements, SignedTx,
    Transaction, TxKind, GRID,
};

const T0: u64 = 1_700_000_000_000;
pub(super) const CHAIN: &str = "market-test";
pub(super) const PROVIDERS: u32 = 6;

/// A chain with a requester (dev0) and staked, registered providers (dev1..=dev6).
///
/// After every block the state's changes go to `disk` and the state is rebuilt from it, as a
/// node restarting there would be: every block after the first runs on a reloaded state.
pub(super) struct Market {
    pub(super) state: State,
    pub(super) replica: State,
    pub(super) disk: Disk,
    pub(super) now: u64,
    pub(super) nonces: std::collections::BTreeMap<Address, u64>,
}

/// What storage keeps of the state: the entries [`State::take_changes`] hands over.
#[derive(Default)]
pub(crate) struct Disk {
    entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Disk {
    /// Writes what changed in `state` since the last call, rebuilds a state from everything
    /// written (a restart) and checks that it is the same state.
    pub(crate) fn restart(&mut self, state: &mut State) -> State {
        let changes = state.take_changes();
        for (key, value) in changes.entries {
            match value {
                Some(v) => self.entries.insert(key, v),
                None => self.entries.remove(&key),
            };
        }
        let reloaded = State::from_parts(
            state.chain_id().to_string(),
            state.params().clone(),
            state.total_supply(),
            changes.rewards_pool,
            self.entries.iter().map(|(k, v)| (k.clone(), v.clone())),
            state.head().clone(),
        )
        .expect("stored entries decode");
        assert_eq!(
            reloaded.root(),
            state.root(),
            "state reloaded from its stored changes differs"
        );
        reloaded
    }

    /// A closed service as archived, read by id like the node reads it.
    pub(crate) fn archived_service(&self, id: &Hash) -> Option<gridwork_protocol::Service> {
        let bytes = self
            .entries
            .get(&gridwork_protocol::service_archive_key(id))?;
        Some(gridwork_types::Decode::from_bytes(bytes).expect("archived service decodes"))
    }

    /// A finished job as archived, read by id like the node reads it.
    pub(crate) fn archived(&self, job: &Hash) -> Option<gridwork_protocol::ArchivedJob> {
        let mut key = vec![gridwork_protocol::PREFIX_ARCHIVE];
        key.extend_from_slice(job.as_bytes());
        let bytes = self.entries.get(&key)?;
        Some(gridwork_types::Decode::from_bytes(bytes).expect("archived job decodes"))
    }
}

pub(super) fn params() -> Params {
    Params {
        max_job_failures: 1,
        ..Params::default()
    }
}

pub(super) fn gpu_box() -> Hardware {
    Hardware {
        gpus: vec![Gpu {
            vendor: GpuVendor::Nvidia,
            model: "L4".into(),
            vram_mib: 24_000,
        }],
        cpu_cores: 8,
        memory_mib: 32_000,
        software: Vec::new(),
        cpu_score: 0,
    }
}

pub(super) fn requester() -> Keypair {
    dev_keypair(0)
}

pub(super) fn provider(i: u32) -> Keypair {
    dev_keypair(i)
}

pub(super) fn prescription(tasks: u64, council: u8, equivalence: Equivalence) -> Prescription {
    Prescription {
        data: vec![DataInput {
            cid: Hash([7; 32]),
            claim: Hash([8; 32]),
            name: String::new(),
        }],
        program: Program {
            command: "inputs/render".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        instructions: Instructions {
            items: tasks,
            chunk: 1,
            requirements: Requirements {
                gpu_vendor: Some(GpuVendor::Nvidia),
                min_gpus: 1,
                min_cpu_score: 0,
                ..Default::default()
            },
            task_deadline_ms: 60_000,
            council_size: council,
        },
        payment: Payment::PerTaskSecond {
            max_price: Amount(GRID / 100),
        },
        equivalence,
        halting: Halting {
            first_bids: 1,
            deadline_ms: 5_000,
            reserve_price: None,
            give_up_ms: 0,
        },
        segments: None,
    }
}

pub(super) fn salt(who: &Keypair) -> Hash {
    Hash::of(&who.address().0)
}

impl Market {
    pub(super) fn new() -> Market {
        Market::with_providers(PROVIDERS)
    }

    /// A market of `providers` registered providers (dev keys 1 to `providers`), each with
    /// 1,000 GRID locked.
    pub(super) fn with_providers(providers: u32) -> Market {
        let genesis = Genesis::dev(CHAIN, T0, providers + 2, params());
        let (state, _) = State::genesis(&genesis).unwrap();
        let (replica, _) = State::genesis(&genesis).unwrap();
        let mut disk = Disk::default();
        let mut state = state;
        let state = disk.restart(&mut state);
        let mut m = Market {
            state,
            replica,
            disk,
            now: T0,
            nonces: Default::default(),
        };
        let stakes: Vec<SignedTx> = (1..=providers)
            .map(|i| {
                m.tx(
                    &provider(i),
                    TxKind::StakeLock {
                        amount: Amount::grid(1_000),
                    },
                )
            })
            .collect();
        m.block(stakes);
        let regs: Vec<SignedTx> = (1..=providers)
            .map(|i| {
                m.tx(
                    &provider(i),
                    TxKind::RegisterProvider {
                        hardware: gpu_box(),
                        owner: None,
                    },
                )
            })
            .collect();
        m.block(regs);
        m
    }

    pub(super) fn tx(&mut self, key: &Keypair, kind: TxKind) -> SignedTx {
        let nonce = self.nonces.entry(key.address()).or_insert(0);
        let tx = Transaction {
            from: key.public(),
            nonce: *nonce,
            fee: Amount::ZERO,
            kind,
        }
        .sign(CHAIN, key);
        *nonce += 1;
        tx
    }

    /// One block 1 ms after the last; every transaction must apply. The replica applies the
    /// same block and must reach the same root; supply must be conserved.
    pub(super) fn block(&mut self, txs: Vec<SignedTx>) -> Vec<Event> {
        self.at(self.now + 1, txs)
    }

    pub(super) fn at(&mut self, t: u64, txs: Vec<SignedTx>) -> Vec<Event> {
        self.now = t;
        let built = self.state.build_block(t, Address([0; 20]), txs);
        assert!(built.rejected.is_empty(), "rejected: {:?}", built.rejected);
        self.replica.apply_block(&built.block).unwrap();
        assert_eq!(self.replica.root(), self.state.root());
        assert_eq!(self.state.check_conservation(), Ok(()));
        self.state = self.disk.restart(&mut self.state);
        let mut events = built.events;
        events.extend(built.receipts.into_iter().flat_map(|r| r.events));
        // Like the node's producer: a deadline already due (a council to draw) gets the next
        // block at once.
        if self.state.next_deadline().is_some_and(|d| d <= self.now) {
            events.extend(self.at(self.now + 1, vec![]));
        }
        events
    }

    /// The error one transaction gets. The market refused it: it is in the block, paid its
    /// fee and spent its nonce, and did nothing else (`TxFailed`).
    pub(super) fn refused(&mut self, key: &Keypair, kind: TxKind) -> TxError {
        let tx = self.tx(key, kind);
        self.refused_signed(tx)
    }

    /// The error a signed transaction gets (see [`Market::refused`]).
    pub(super) fn refused_signed(&mut self, tx: SignedTx) -> TxError {
        let pool = self.state.rewards_pool();
        let mut built = self
            .state
            .build_block(self.now + 1, Address([0; 20]), vec![tx.clone()]);
        self.now += 1;
        self.replica.apply_block(&built.block).unwrap();
        assert_eq!(self.replica.root(), self.state.root());
        self.state = self.disk.restart(&mut self.state);
        assert!(built.rejected.is_empty(), "{:?}", built.rejected);
        assert_eq!(
            built.failed.len(),
            1,
            "the market took it: {:?}",
            built.receipts
        );
        let (code, _) = built.receipts[0].failure().expect("the receipt says why");
        let error = built.failed.remove(0).1;
        assert_eq!(code, error.code());
        assert_eq!(built.receipts[0].fee, tx.tx.fee);
        assert_eq!(
            self.state.rewards_pool(),
            pool.checked_add(tx.tx.fee).unwrap()
        );
        error
    }

    /// The error the requester's submission of `p` (with the deposit it needs) gets.
    pub(super) fn refused_submission(&mut self, p: Prescription) -> TxError {
        let deposit = deposit_for(&p);
        self.refused(
            &requester(),
            TxKind::SubmitJob {
                prescription: p,
                deposit,
            },
        )
    }

    pub(super) fn submit(&mut self, p: Prescription, deposit: Amount) -> Hash {
        let tx = self.tx(
            &requester(),
            TxKind::SubmitJob {
                prescription: p,
                deposit,
            },
        );
        let id = tx.hash();
        self.block(vec![tx]);
        id
    }

    /// A task, from the hot state or, once its job finished, the archive.
    pub(super) fn task(&self, job: Hash, index: u32) -> gridwork_protocol::Task {
        match self.state.task(&TaskKey { job, index }) {
            Some(t) => t.clone(),
            None => self.disk.archived(&job).expect("a known job").tasks[index as usize].clone(),
        }
    }

    /// A job, from the hot state or, once finished, the archive.
    pub(super) fn job(&self, job: Hash) -> gridwork_protocol::Job {
        match self.state.job(&job) {
            Some(j) => j.clone(),
            None => self.disk.archived(&job).expect("a known job").job,
        }
    }

    pub(super) fn key_of(address: Address) -> Keypair {
        (1..=PROVIDERS)
            .map(provider)
            .find(|k| k.address() == address)
            .unwrap()
    }

    /// Commits `outputs[i]` of a successful run for each of `who` in one block.
    pub(super) fn commit_all(&mut self, job: Hash, task: u32, who: &[(Keypair, Hash)]) {
        let runs: Vec<(Keypair, Hash, RunEnd)> = who
            .iter()
            .map(|(k, out)| (k.clone(), *out, RunEnd::SUCCESS))
            .collect();
        self.commit_runs(job, task, &runs);
    }

    /// Commits each party's output and how its run ended, in one block.
    pub(super) fn commit_runs(&mut self, job: Hash, task: u32, runs: &[(Keypair, Hash, RunEnd)]) {
        let attempt = self.task(job, task).attempt;
        let txs = runs
            .iter()
            .map(|(k, out, ended)| {
                let c = commitment(out, ended, &salt(k), &k.address());
                self.tx(
                    k,
                    TxKind::Commit {
                        job,
                        task,
                        attempt,
                        commitment: c,
                    },
                )
            })
            .collect();
        self.block(txs);
    }

    pub(super) fn reveal(
        &mut self,
        job: Hash,
        task: u32,
        who: &Keypair,
        output: Hash,
    ) -> Vec<Event> {
        self.reveal_claiming(job, task, who, output, 10)
    }

    /// A reveal that reports `seconds` of run time.
    pub(super) fn reveal_claiming(
        &mut self,
        job: Hash,
        task: u32,
        who: &Keypair,
        output: Hash,
        seconds: u64,
    ) -> Vec<Event> {
        let tx = self.reveal_tx(job, task, who, output, seconds, RunEnd::SUCCESS);
        self.block(vec![tx])
    }

    /// A reveal of `output` from a run that ended as `ended`.
    pub(super) fn reveal_run(
        &mut self,
        job: Hash,
        task: u32,
        who: &Keypair,
        output: Hash,
        ended: RunEnd,
    ) -> Vec<Event> {
        let tx = self.reveal_tx(job, task, who, output, 10, ended);
        self.block(vec![tx])
    }

    pub(super) fn reveal_tx(
        &mut self,
        job: Hash,
        task: u32,
        who: &Keypair,
        output: Hash,
        seconds: u64,
        ended: RunEnd,
    ) -> SignedTx {
        let attempt = self.task(job, task).attempt;
        self.tx(
            who,
            TxKind::Reveal {
                job,
                task,
                attempt,
                output,
                salt: salt(who),
                seconds,
                ended,
            },
        )
    }

    /// `who` bids on the task (closing its auction) and the council is drawn; returns the
    /// council's keys.
    pub(super) fn win(&mut self, job: Hash, task: u32, who: &Keypair) -> Vec<Keypair> {
        let bid = self.tx(
            who,
            TxKind::Bid {
                job,
                task,
                price: Amount(GRID / 200),
                cached: false,
            },
        );
        self.block(vec![bid]);
        self.task(job, task)
            .council
            .iter()
            .map(|a| Market::key_of(*a))
            .collect()
    }

    /// `who` names the parties whose outputs it found equivalent to its own.
    pub(super) fn judge(
        &mut self,
        job: Hash,
        task: u32,
        who: &Keypair,
        equivalent: &[Address],
    ) -> Vec<Event> {
        let t = self.task(job, task);
        let tx = self.tx(
            who,
            TxKind::Judge {
                job,
                task,
                attempt: t.attempt,
                round: t.round,
                equivalent: equivalent.to_vec(),
            },
        );
        self.block(vec![tx])
    }

    pub(super) fn balance(&self, k: &Keypair) -> u128 {
        self.state.account(&k.address()).balance.0
    }

    pub(super) fn stake(&self, a: &Address) -> u128 {
        let acct = self.state.account(a);
        acct.stake_locked.0 + acct.unbonding_total().0
    }
}

/// What submitting `p` costs on top of its deposit, not refunded.
pub(super) fn state_fee(p: &Prescription) -> u128 {
    params().state_fee(p).unwrap().0
}

pub(super) fn deposit_for(p: &Prescription) -> Amount {
    let per = gridwork_protocol::max_task_cost(p, &params()).unwrap();
    Amount(per.0 * u128::from(p.instructions.items))
}

/// Everything the market's accounts hold: balances, stake and escrow (the whole chain but
/// the rewards pool).
pub(super) fn coalition_holdings(m: &Market) -> u128 {
    m.state.accounts().map(|(_, a)| a.total()).sum::<u128>()
        + m.state.jobs().map(|(_, j)| j.escrow.0).sum::<u128>()
}

/// Re-registers `workers` as acting for `owner`.
pub(super) fn approve(m: &mut Market, owner: &Keypair, workers: &[u32]) {
    let txs = workers
        .iter()
        .map(|i| {
            let approval = OwnerApproval::sign(CHAIN, owner, &provider(*i).address());
            m.tx(
                &provider(*i),
                TxKind::RegisterProvider {
                    hardware: gpu_box(),
                    owner: Some(approval),
                },
            )
        })
        .collect();
    m.block(txs);
}
