//! The batch market through the ledger: honest work is paid, cheaters are caught.
//!
//! Byzantine actors are named test doubles: `lying_executor`, `dissenting_council_member`,
//! `copying_council_member`, `vanishing_executor`.

use gridwork_protocol::{dev_keypair, Event, Genesis, Params, Phase, State, TaskKey, TxError};
use gridwork_types::{
    commitment, Address, Amount, DataInput, Equivalence, Gpu, GpuVendor, Halting, Hardware, Hash,
    Instructions, Keypair, OwnerApproval, Payment, Prescription, Program, Requirements, SignedTx,
    Transaction, TxKind, GRID,
};

const T0: u64 = 1_700_000_000_000;
const CHAIN: &str = "market-test";
const PROVIDERS: u32 = 6;

/// A chain with a requester (dev0) and staked, registered providers (dev1..=dev6).
///
/// After every block the state's changes go to `disk` and the state is rebuilt from it, as a
/// node restarting there would be: every block after the first runs on a reloaded state.
struct Market {
    state: State,
    replica: State,
    disk: Disk,
    now: u64,
    nonces: std::collections::BTreeMap<Address, u64>,
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

    /// A finished job as archived, read by id like the node reads it.
    pub(crate) fn archived(&self, job: &Hash) -> Option<gridwork_protocol::ArchivedJob> {
        let mut key = vec![gridwork_protocol::PREFIX_ARCHIVE];
        key.extend_from_slice(job.as_bytes());
        let bytes = self.entries.get(&key)?;
        Some(gridwork_types::Decode::from_bytes(bytes).expect("archived job decodes"))
    }
}

fn params() -> Params {
    Params {
        max_job_failures: 1,
        ..Params::default()
    }
}

fn gpu_box() -> Hardware {
    Hardware {
        gpus: vec![Gpu {
            vendor: GpuVendor::Nvidia,
            model: "L4".into(),
            vram_mib: 24_000,
        }],
        cpu_cores: 8,
        memory_mib: 32_000,
    }
}

fn requester() -> Keypair {
    dev_keypair(0)
}

fn provider(i: u32) -> Keypair {
    dev_keypair(i)
}

fn prescription(tasks: u64, council: u8, equivalence: Equivalence) -> Prescription {
    Prescription {
        data: vec![DataInput {
            cid: Hash([7; 32]),
            claim: Hash([8; 32]),
        }],
        program: Program {
            command: "render".into(),
            args: vec![],
        },
        instructions: Instructions {
            items: tasks,
            chunk: 1,
            requirements: Requirements {
                gpu_vendor: Some(GpuVendor::Nvidia),
                min_gpus: 1,
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
    }
}

fn salt(who: &Keypair) -> Hash {
    Hash::of(&who.address().0)
}

impl Market {
    fn new() -> Market {
        let genesis = Genesis::dev(CHAIN, T0, PROVIDERS + 2, params());
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
        let stakes: Vec<SignedTx> = (1..=PROVIDERS)
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
        let regs: Vec<SignedTx> = (1..=PROVIDERS)
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

    fn tx(&mut self, key: &Keypair, kind: TxKind) -> SignedTx {
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
    fn block(&mut self, txs: Vec<SignedTx>) -> Vec<Event> {
        self.at(self.now + 1, txs)
    }

    fn at(&mut self, t: u64, txs: Vec<SignedTx>) -> Vec<Event> {
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
    fn refused(&mut self, key: &Keypair, kind: TxKind) -> TxError {
        let tx = self.tx(key, kind);
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

    fn submit(&mut self, p: Prescription, deposit: Amount) -> Hash {
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
    fn task(&self, job: Hash, index: u32) -> gridwork_protocol::Task {
        match self.state.task(&TaskKey { job, index }) {
            Some(t) => t.clone(),
            None => self.disk.archived(&job).expect("a known job").tasks[index as usize].clone(),
        }
    }

    /// A job, from the hot state or, once finished, the archive.
    fn job(&self, job: Hash) -> gridwork_protocol::Job {
        match self.state.job(&job) {
            Some(j) => j.clone(),
            None => self.disk.archived(&job).expect("a known job").job,
        }
    }

    fn key_of(address: Address) -> Keypair {
        (1..=PROVIDERS)
            .map(provider)
            .find(|k| k.address() == address)
            .unwrap()
    }

    /// Commits `outputs[i]` for each of `who` in one block.
    fn commit_all(&mut self, job: Hash, task: u32, who: &[(Keypair, Hash)]) {
        let attempt = self.task(job, task).attempt;
        let txs = who
            .iter()
            .map(|(k, out)| {
                let c = commitment(out, &salt(k), &k.address());
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

    fn reveal(&mut self, job: Hash, task: u32, who: &Keypair, output: Hash) -> Vec<Event> {
        self.reveal_claiming(job, task, who, output, 10)
    }

    /// A reveal that reports `seconds` of run time.
    fn reveal_claiming(
        &mut self,
        job: Hash,
        task: u32,
        who: &Keypair,
        output: Hash,
        seconds: u64,
    ) -> Vec<Event> {
        let attempt = self.task(job, task).attempt;
        let tx = self.tx(
            who,
            TxKind::Reveal {
                job,
                task,
                attempt,
                output,
                salt: salt(who),
                seconds,
            },
        );
        self.block(vec![tx])
    }

    /// `who` bids on the task (closing its auction) and the council is drawn; returns the
    /// council's keys.
    fn win(&mut self, job: Hash, task: u32, who: &Keypair) -> Vec<Keypair> {
        let bid = self.tx(
            who,
            TxKind::Bid {
                job,
                task,
                price: Amount(GRID / 200),
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
    fn judge(&mut self, job: Hash, task: u32, who: &Keypair, equivalent: &[Address]) -> Vec<Event> {
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

    fn balance(&self, k: &Keypair) -> u128 {
        self.state.account(&k.address()).balance.0
    }

    fn stake(&self, a: &Address) -> u128 {
        let acct = self.state.account(a);
        acct.stake_locked.0 + acct.unbonding_total().0
    }
}

/// What submitting `p` costs on top of its deposit, not refunded.
fn state_fee(p: &Prescription) -> u128 {
    params().state_fee(p).unwrap().0
}

fn deposit_for(p: &Prescription) -> Amount {
    let per = gridwork_protocol::max_task_cost(p, &params()).unwrap();
    Amount(per.0 * u128::from(p.instructions.items))
}

#[test]
fn honest_executor_and_council_complete_the_job_and_payments_add_up() {
    let mut m = Market::new();
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let deposit = deposit_for(&p);
    let before = m.balance(&requester());
    let state = state_fee(&p);
    let job = m.submit(p, deposit);
    assert_eq!(m.balance(&requester()), before - deposit.0 - state);

    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    let events = m.block(vec![bid]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::AuctionClosed { .. })),
        "{events:?}"
    );
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Committing);
    assert_eq!(t.executor, Some(provider(1).address()));
    assert_eq!(t.council.len(), 3);
    assert!(!t.council.contains(&provider(1).address()));

    let out = Hash([42; 32]);
    let mut all = vec![(provider(1), out)];
    all.extend(t.council.iter().map(|a| (Market::key_of(*a), out)));
    let earned_before: Vec<u128> = all.iter().map(|(k, _)| m.balance(k)).collect();
    m.commit_all(job, 0, &all);
    assert_eq!(m.task(job, 0).phase, Phase::Revealing);
    m.reveal(job, 0, &provider(1), out);
    let mut events = Vec::new();
    for (k, o) in &all[1..] {
        events.extend(m.reveal(job, 0, k, *o));
    }
    assert_eq!(m.task(job, 0).phase, Phase::Settled);
    assert_eq!(m.task(job, 0).result, Some(out));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ProofOfCompute { seconds: 10, .. })));

    // Executor: 10 s at GRID/200 plus the proof-of-compute reward (2.5% of that);
    // council: 10% each; the requester pays 5% of all that as the market fee.
    let paid = 10 * (GRID / 200);
    let reward = paid * u128::from(params().reward_bps) / 10_000;
    let fee = (paid + 3 * (paid / 10)) * u128::from(params().market_fee_bps) / 10_000;
    let gained: Vec<u128> = all
        .iter()
        .zip(&earned_before)
        .map(|((k, _), b)| m.balance(k) - b)
        .collect();
    assert_eq!(gained[0], paid + reward);
    for g in &gained[1..] {
        assert_eq!(*g, paid / 10);
    }
    // Requester got back everything not paid out.
    let job_rec = m.job(job);
    assert!(job_rec.finished);
    assert_eq!(
        m.balance(&requester()),
        before - paid - 3 * (paid / 10) - fee - state
    );
    assert_eq!(m.state.provider(&provider(1).address()).unwrap().streak, 1);
    // Finished, the job and its tasks left the hot state (and the state root) for the
    // archive, where they are read by id.
    assert!(m.state.job(&job).is_none());
    assert_eq!(m.state.tasks_of(&job).count(), 0);
    assert_eq!(m.state.jobs().count(), 0);
    let archived = m.disk.archived(&job).unwrap();
    assert_eq!(archived.tasks.len(), 1);
    assert!(archived.tasks.iter().all(|t| t.result.is_some()));
}

/// Everything the market's accounts hold: balances, stake and escrow (the whole chain but
/// the rewards pool).
fn coalition_holdings(m: &Market) -> u128 {
    m.state.accounts().map(|(_, a)| a.total()).sum::<u128>()
        + m.state.jobs().map(|(_, j)| j.escrow.0).sum::<u128>()
}

/// `SybilRewardFarmer`: one party is the requester and every provider, so whatever its jobs
/// pay goes back to itself, and the pool is its only possible source of profit. It tries the
/// attack found in review (no council, an unbounded deadline, a huge reported run time) and
/// then a council of its own Sybils vouching for the huge run time. The bounds refuse the
/// deadline; unchecked work earns no reward; checked work earns less than the fee it pays in.
/// Over the whole run the party's holdings only shrink and the pool only grows.
#[test]
fn sybil_reward_farmer_gains_less_from_the_pool_than_it_pays_in() {
    let mut m = Market::new();
    let pool_before = m.state.rewards_pool().0;
    let held_before = coalition_holdings(&m);

    // A deadline past the bound is refused with the field named.
    let mut p = prescription(1, 0, Equivalence::ExactHash {});
    p.instructions.task_deadline_ms = u64::MAX / 2;
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            deposit: Amount(1),
            prescription: p,
        },
    );
    assert!(
        matches!(
            err,
            TxError::BadPrescription {
                field: "instructions.task_deadline_ms",
                ..
            }
        ),
        "{err}"
    );

    // The longest deadline allowed, no council, and a claim of u64::MAX seconds.
    let mut p = prescription(1, 0, Equivalence::ExactHash {});
    p.instructions.task_deadline_ms = params().max_task_deadline_ms;
    p.payment = gridwork_types::Payment::PerTaskSecond {
        max_price: Amount(GRID / 100),
    };
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let bid = m.tx(
        &executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 100),
        },
    );
    m.block(vec![bid]);
    let out = Hash([9; 32]);
    m.commit_all(job, 0, &[(provider(1), out)]);
    let events = m.reveal_claiming(job, 0, &executor, out, u64::MAX);
    let reward_of = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::ProofOfCompute { reward, fee, .. } => Some((*reward, *fee)),
                _ => None,
            })
            .expect("settled")
    };
    let (reward, fee) = reward_of(&events);
    assert_eq!(reward, Amount::ZERO, "nobody checked this run");
    assert!(fee.0 > 0);
    assert!(m.state.rewards_pool().0 > pool_before);

    // Now with a council of its own Sybil, which vouches for the same huge run time.
    let mut p = prescription(1, 1, Equivalence::ExactHash {});
    p.instructions.task_deadline_ms = params().max_task_deadline_ms;
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = m.tx(
        &executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 100),
        },
    );
    m.block(vec![bid]);
    let council = m.task(job, 0).council;
    let member = Market::key_of(council[0]);
    m.commit_all(job, 0, &[(provider(1), out), (member.clone(), out)]);
    m.reveal_claiming(job, 0, &executor, out, u64::MAX);
    let pool_mid = m.state.rewards_pool().0;
    let events = m.reveal_claiming(job, 0, &member, out, u64::MAX);
    let (reward, fee) = reward_of(&events);
    assert!(reward.0 > 0, "checked work is rewarded");
    assert!(
        reward < fee,
        "but by less than the fee it paid: {reward} vs {fee}"
    );
    assert!(m.state.rewards_pool().0 > pool_mid);
    assert!(m.state.rewards_pool().0 > pool_before);
    assert!(coalition_holdings(&m) < held_before);
}

/// `ResultCopier`: after a task reopens, the outputs revealed in the failed attempt are public.
/// The next executor commits the honest council member's revealed output instead of running
/// the program. Its reveal is refused as a copy; it then misses the reveal deadline, is
/// slashed, and the task goes back to auction, where an honest run settles it.
#[test]
fn result_copier_gains_nothing_from_an_earlier_attempts_output() {
    let mut m = Market::new();
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = |m: &mut Market, who: &Keypair| {
        let tx = m.tx(
            who,
            TxKind::Bid {
                job,
                task: 0,
                price: Amount(GRID / 200),
            },
        );
        m.block(vec![tx]);
    };
    // Attempt 0: a lying executor is rejected by the three honest council members.
    bid(&mut m, &provider(1));
    let members: Vec<Keypair> = m
        .task(job, 0)
        .council
        .iter()
        .map(|a| Market::key_of(*a))
        .collect();
    let (forged, truth) = (Hash([66; 32]), Hash([1; 32]));
    m.commit_all(
        job,
        0,
        &[
            (provider(1), forged),
            (members[0].clone(), truth),
            (members[1].clone(), truth),
            (members[2].clone(), truth),
        ],
    );
    m.reveal(job, 0, &provider(1), forged);
    for k in &members {
        m.reveal(job, 0, k, truth);
    }
    assert_eq!(m.task(job, 0).attempt, 1);

    // Attempt 1: the copier wins and commits the truth revealed in attempt 0.
    let copier = (1..=PROVIDERS)
        .map(provider)
        .find(|k| {
            k.address() != provider(1).address()
                && members.iter().all(|m| m.address() != k.address())
        })
        .unwrap();
    bid(&mut m, &copier);
    let t = m.task(job, 0);
    assert_eq!(t.executor, Some(copier.address()));
    let fresh = Hash([2; 32]);
    let mut commits = vec![(copier.clone(), truth)];
    commits.extend(t.council.iter().map(|a| (Market::key_of(*a), fresh)));
    m.commit_all(job, 0, &commits);
    let attempt = m.task(job, 0).attempt;
    let err = m.refused(
        &copier,
        TxKind::Reveal {
            job,
            task: 0,
            attempt,
            output: truth,
            salt: salt(&copier),
            seconds: 10,
        },
    );
    assert_eq!(err, TxError::CopiedResult { output: truth });
    let stake = m.stake(&copier.address());
    let events = m.at(m.now + params().reveal_window_ms + 1, vec![]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == copier.address())));
    assert!(m.stake(&copier.address()) < stake);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt, t.result), (Phase::Bidding, 2, None));
}

/// `SilentCouncil`, at commit: the council member drawn never runs the program. It used to
/// be dropped, and an empty council accepted the executor's result unchecked. Now the silent
/// member pays, its seat is drawn again, and the result settles only once the new member has
/// run the program and agreed.
#[test]
fn a_silent_council_member_is_slashed_and_replaced_and_never_lets_a_result_through() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let bid = m.tx(
        &executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let silent = m.task(job, 0).council[0];
    let out = Hash([5; 32]);
    m.commit_all(job, 0, &[(executor.clone(), out)]);
    let stake = m.stake(&silent);
    // The others stay online (workers heartbeat); the draw takes online providers only.
    let beats: Vec<SignedTx> = (2..=PROVIDERS)
        .map(|i| m.tx(&provider(i), TxKind::Heartbeat))
        .collect();
    m.at(m.now + p.instructions.task_deadline_ms - 1_000, beats);
    let events = m.at(m.now + 1_001, vec![]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == silent)));
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Committing, "not waved through: {}", t.note);
    assert_eq!(t.council.len(), 1);
    let replacement = t.council[0];
    assert_ne!(replacement, silent);
    assert!(m.stake(&silent) < stake);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::CouncilRedrawn { replaced, .. } if replaced == &vec![silent])));
    // The executor's commitment stands; the replacement runs, commits and agrees.
    let member = Market::key_of(replacement);
    m.commit_all(job, 0, &[(member.clone(), out)]);
    m.reveal(job, 0, &executor, out);
    m.reveal(job, 0, &member, out);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.result), (Phase::Settled, Some(out)));
    // Nobody was left busy by the swap.
    for i in 1..=PROVIDERS {
        let who = provider(i).address();
        assert_eq!(m.state.provider(&who).unwrap().active, 0, "{who}");
    }
}

/// `SilentCouncil`, at reveal: of a council of three, one agrees and two never reveal. One
/// vote of three is no majority: the task reopens, the silent members pay, and the executor,
/// who did its part, is neither paid nor slashed.
#[test]
fn a_council_that_stays_silent_at_reveal_lets_nothing_through() {
    let mut m = Market::new();
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let bid = m.tx(
        &executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let council: Vec<Keypair> = m
        .task(job, 0)
        .council
        .iter()
        .map(|a| Market::key_of(*a))
        .collect();
    let out = Hash([5; 32]);
    let mut all = vec![(executor.clone(), out)];
    all.extend(council.iter().map(|k| (k.clone(), out)));
    m.commit_all(job, 0, &all);
    m.reveal(job, 0, &executor, out);
    m.reveal(job, 0, &council[0], out);
    let (exec_stake, exec_balance) = (m.stake(&executor.address()), m.balance(&executor));
    let events = m.at(m.now + params().reveal_window_ms + 1, vec![]);
    for silent in &council[1..] {
        assert!(events.iter().any(
            |e| matches!(e, Event::Slashed { provider, .. } if *provider == silent.address())
        ));
    }
    // One run agreeing with the executor is not two thirds of four seats: the council is
    // enlarged to five seats, the silent seats drawn again. Six providers cannot fill them
    // (the silent two are barred), so the task reopens; nobody who did its part is paid or
    // blamed.
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::CouncilEnlarged { seats: 5, .. })));
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt, t.result), (Phase::Bidding, 1, None));
    assert!(
        t.note.to_string().contains("too few eligible providers"),
        "{}",
        t.note
    );
    assert_eq!(m.stake(&executor.address()), exec_stake);
    assert_eq!(m.balance(&executor), exec_balance);
}

/// The node is down for ten minutes while a task waits for reveals. Nobody could reveal, so
/// when the chain comes back nobody is slashed: the deadline moves to a grace period, the
/// reveals come in, and the task settles.
#[test]
fn a_deadline_that_passes_while_the_chain_is_down_penalises_nobody() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let bid = m.tx(
        &executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let member = Market::key_of(m.task(job, 0).council[0]);
    let out = Hash([5; 32]);
    m.commit_all(job, 0, &[(executor.clone(), out), (member.clone(), out)]);
    let stakes = [m.stake(&executor.address()), m.stake(&member.address())];
    // The first block after the outage.
    let events = m.at(m.now + 600_000, vec![]);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Slashed { .. })),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::DeadlineDeferred { until_ms, .. } if *until_ms == m.now + params().outage_grace_ms)));
    assert_eq!(m.task(job, 0).phase, Phase::Revealing);
    m.reveal(job, 0, &executor, out);
    m.reveal(job, 0, &member, out);
    assert_eq!(m.task(job, 0).phase, Phase::Settled);
    assert_eq!(
        [m.stake(&executor.address()), m.stake(&member.address())],
        stakes
    );
}

/// `DrawGrinder`: a party runs three Sybil providers (dev4 bids as executor, dev5 and dev6
/// hope for the council seat) and, before sending each auction-closing bid, predicts the
/// council by building the blocks itself on a copy of the chain; it sends only when the
/// prediction puts a Sybil on the council, and otherwise waits for a new head (a filler
/// transfer) and tries again. The council comes from the hash of the block holding the bid,
/// which depends on the sequencer's block time (here jittered, as a real node's clock is), so
/// the prediction is worthless: over 60 jobs the Sybils sit on about 2 in 5 councils (their
/// share of the eligible stake), not on every one as when the draw was seeded by the head
/// the bid was sent on.
#[test]
fn draw_grinder_cannot_time_its_bid_into_a_favourable_council() {
    let mut m = Market::new();
    let sybils = [provider(5).address(), provider(6).address()];
    let executor = provider(4);
    let mut jitter: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next_jitter = move || {
        jitter ^= jitter << 13;
        jitter ^= jitter >> 7;
        jitter ^= jitter << 17;
        jitter % 40
    };
    let mut captured = 0;
    let trials = 60;
    for _ in 0..trials {
        // Everyone stays online.
        let beats: Vec<SignedTx> = (1..=PROVIDERS)
            .map(|i| m.tx(&provider(i), TxKind::Heartbeat))
            .collect();
        m.block(beats);
        let p = prescription(1, 1, Equivalence::ExactHash {});
        let job = m.submit(p.clone(), deposit_for(&p));
        for _ in 0..20 {
            let bid = m.tx(
                &executor,
                TxKind::Bid {
                    job,
                    task: 0,
                    price: Amount(GRID / 200),
                },
            );
            // The grinder's best guess: the block right after the head, then the draw.
            let mut sim = m.state.clone();
            let guess = m.now + 1;
            sim.build_block(guess, Address([0; 20]), vec![bid.clone()]);
            sim.build_block(guess + 1, Address([0; 20]), vec![]);
            let predicted = sim
                .task(&TaskKey { job, index: 0 })
                .unwrap()
                .council
                .clone();
            if predicted.iter().any(|a| sybils.contains(a)) {
                let t = m.now + 1 + next_jitter();
                m.at(t, vec![bid]);
                break;
            }
            *m.nonces.get_mut(&executor.address()).unwrap() -= 1;
            let filler = m.tx(
                &provider(6),
                TxKind::Transfer {
                    to: provider(5).address(),
                    amount: Amount(1),
                },
            );
            m.block(vec![filler]);
        }
        let t = m.task(job, 0);
        if t.council.iter().any(|a| sybils.contains(a)) {
            captured += 1;
        }
    }
    assert!(
        captured < trials * 3 / 4,
        "the Sybils sat on {captured} of {trials} councils"
    );
}

#[test]
fn lying_executor_is_caught_slashed_and_the_task_rerun_by_another() {
    let mut m = Market::new();
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let lying_executor = provider(1);
    let bid = m.tx(
        &lying_executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let council: Vec<Keypair> = m
        .task(job, 0)
        .council
        .iter()
        .map(|a| Market::key_of(*a))
        .collect();
    let (truth, forged_result) = (Hash([1; 32]), Hash([66; 32]));
    let mut all = vec![(lying_executor.clone(), forged_result)];
    all.extend(council.iter().map(|k| (k.clone(), truth)));
    let stake_before = m.stake(&lying_executor.address());
    m.commit_all(job, 0, &all);
    m.reveal(job, 0, &lying_executor, forged_result);
    let mut events = Vec::new();
    for k in &council {
        // Council members vote `agree`, but under exact-hash equivalence the ledger derives the
        // vote from the hashes.
        events.extend(m.reveal(job, 0, k, truth));
    }
    assert!(events.iter().any(
        |e| matches!(e, Event::Slashed { provider, .. } if *provider == lying_executor.address())
    ));
    assert_eq!(
        m.stake(&lying_executor.address()),
        stake_before - stake_before / 10
    );
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 1));
    assert_eq!(
        m.state.provider(&lying_executor.address()).unwrap().streak,
        0
    );

    // The liar is blocklisted for this job; an honest provider takes the task.
    let err = m.refused(
        &lying_executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(1),
        },
    );
    assert!(matches!(err, TxError::Blocklisted { .. }), "{err}");
    let honest = (1..=PROVIDERS)
        .map(provider)
        .find(|k| k.address() != lying_executor.address())
        .unwrap();
    let bid = m.tx(
        &honest,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let t = m.task(job, 0);
    assert_eq!(t.executor, Some(honest.address()));
    assert!(
        !t.council.contains(&lying_executor.address()),
        "a blocklisted provider is not drawn"
    );
    // Honest runs of a new attempt produce a new content id (their key covers the attempt).
    let truth = Hash([2; 32]);
    let mut all = vec![(honest.clone(), truth)];
    all.extend(t.council.iter().map(|a| (Market::key_of(*a), truth)));
    m.commit_all(job, 0, &all);
    for (k, o) in &all {
        m.reveal(job, 0, k, *o);
    }
    let t = m.task(job, 0);
    assert_eq!(
        (t.phase, t.result),
        (Phase::Settled, Some(truth)),
        "the requester gets the right result"
    );
    assert!(m.job(job).finished);
}

/// `LazyCouncilMember`, under numeric tolerance: a member that never runs the program commits
/// a made-up output. Whether it then names everyone (to be paid for agreeing) or nobody (to
/// sway the result), its claims count for nothing: agreement needs both sides to name each
/// other, and nobody who ran the program names its output. The result settles as the honest
/// runs decide, and the lazy member is slashed and unpaid.
#[test]
fn lazy_council_member_neither_earns_nor_sways_the_decision() {
    for lazy_claims_everyone in [true, false] {
        let mut m = Market::new();
        let p = prescription(
            1,
            3,
            Equivalence::NumericTolerance {
                abs_ppb: 1_000,
                rel_ppb: 0,
            },
        );
        let job = m.submit(p.clone(), deposit_for(&p));
        let executor = provider(1);
        let council = m.win(job, 0, &executor);
        let (a, b, lazy) = (&council[0], &council[1], &council[2]);
        let outs = [
            Hash([1; 32]),
            Hash([2; 32]),
            Hash([3; 32]),
            Hash([0xaa; 32]),
        ];
        let parties = [&executor, a, b, lazy];
        let all: Vec<(Keypair, Hash)> = parties.iter().map(|k| (*k).clone()).zip(outs).collect();
        m.commit_all(job, 0, &all);
        for (k, out) in &all {
            m.reveal(job, 0, k, *out);
        }
        assert_eq!(m.task(job, 0).phase, Phase::Judging);
        let lazy_balance = m.balance(lazy);
        let lazy_stake = m.stake(&lazy.address());
        let honest = [executor.address(), a.address(), b.address()];
        for k in [&executor, a, b] {
            let others: Vec<Address> = honest
                .iter()
                .copied()
                .filter(|x| *x != k.address())
                .collect();
            m.judge(job, 0, k, &others);
        }
        let claims = if lazy_claims_everyone {
            honest.to_vec()
        } else {
            Vec::new()
        };
        let events = m.judge(job, 0, lazy, &claims);
        let t = m.task(job, 0);
        assert_eq!(t.phase, Phase::Settled, "{}", t.note);
        assert_eq!(t.result, Some(outs[0]));
        let council_paid: Vec<Address> = events
            .iter()
            .find_map(|e| match e {
                Event::ProofOfCompute { council, .. } => Some(council.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(council_paid, vec![a.address(), b.address()]);
        assert_eq!(
            m.balance(lazy),
            lazy_balance,
            "the lazy member earned nothing"
        );
        assert!(
            m.stake(&lazy.address()) < lazy_stake,
            "the lazy member paid"
        );
    }
}

/// `NondeterministicProgram`: every run of the task gives a different output (a render whose
/// PNG metadata holds a timestamp). The executor and its one council member disagree; before
/// anyone is slashed the council grows by two; the four runs still agree with nobody, so the
/// program is judged nondeterministic: nobody is slashed, the requester pays for the runs,
/// and the task fails with the reason in its note (`job status`).
#[test]
fn nondeterministic_program_slashes_nobody_and_says_why() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let deposit = deposit_for(&p);
    let before = m.balance(&requester());
    let job = m.submit(p.clone(), deposit);
    let executor = provider(1);
    let first = m.win(job, 0, &executor);
    m.commit_all(
        job,
        0,
        &[
            (executor.clone(), Hash([1; 32])),
            (first[0].clone(), Hash([2; 32])),
        ],
    );
    m.reveal(job, 0, &executor, Hash([1; 32]));
    let events = m.reveal(job, 0, &first[0], Hash([2; 32]));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::CouncilEnlarged { seats: 3, .. })));
    assert!(!events.iter().any(|e| matches!(e, Event::Slashed { .. })));
    let t = m.task(job, 0);
    assert_eq!(
        (t.phase, t.round, t.council.len()),
        (Phase::Committing, 1, 3)
    );
    let stakes: Vec<u128> = (1..=PROVIDERS)
        .map(|i| m.stake(&provider(i).address()))
        .collect();
    let joined: Vec<Keypair> = t.council[1..].iter().map(|a| Market::key_of(*a)).collect();
    m.commit_all(
        job,
        0,
        &[
            (joined[0].clone(), Hash([3; 32])),
            (joined[1].clone(), Hash([4; 32])),
        ],
    );
    m.reveal(job, 0, &joined[0], Hash([3; 32]));
    m.reveal(job, 0, &joined[1], Hash([4; 32]));
    assert_eq!(m.task(job, 0).phase, Phase::Judging);
    let balances: Vec<u128> = (1..=PROVIDERS).map(|i| m.balance(&provider(i))).collect();
    let mut events = Vec::new();
    for k in [&executor, &first[0], &joined[0], &joined[1]] {
        events.extend(m.judge(job, 0, k, &[]));
    }
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Failed);
    assert!(
        t.note.to_string().contains("nondeterministic"),
        "{}",
        t.note
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Slashed { .. })));
    let after: Vec<u128> = (1..=PROVIDERS)
        .map(|i| m.stake(&provider(i).address()))
        .collect();
    assert_eq!(after, stakes, "nobody was slashed");
    // The executor was paid for its run (10 s at its price); members whose outputs nobody
    // confirmed were not. The requester got back all but that and the market fee.
    let paid = GRID / 200 * 10;
    let exec_index = (1..=PROVIDERS)
        .position(|i| provider(i).address() == executor.address())
        .unwrap();
    assert_eq!(m.balance(&executor), balances[exec_index] + paid);
    let fee = paid * u128::from(params().market_fee_bps) / 10_000;
    assert!(m.job(job).finished);
    assert_eq!(m.balance(&requester()), before - paid - fee - state_fee(&p));
}

/// A lying executor on a deterministic program cannot hide behind "nondeterministic": its one
/// council member disagrees, the council grows, and the new members' runs (keyed by the new
/// round, so the first member's revealed id is no use to them) agree with the first member.
/// Three of four seats is a clear majority against the executor: it is slashed, the majority
/// paid, and the task runs again. A new member that copies the revealed id is refused.
#[test]
fn a_liar_cannot_hide_behind_nondeterminism() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let liar = provider(1);
    let first = m.win(job, 0, &liar);
    let (forged, truth, truth_round1) = (Hash([0xee; 32]), Hash([1; 32]), Hash([2; 32]));
    m.commit_all(job, 0, &[(liar.clone(), forged), (first[0].clone(), truth)]);
    m.reveal(job, 0, &liar, forged);
    m.reveal(job, 0, &first[0], truth);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.round), (Phase::Committing, 1));
    let joined: Vec<Keypair> = t.council[1..].iter().map(|a| Market::key_of(*a)).collect();
    // One new member commits the first member's revealed id instead of running.
    let copier = &joined[1];
    m.commit_all(
        job,
        0,
        &[(joined[0].clone(), truth_round1), (copier.clone(), truth)],
    );
    let err = m.refused(
        copier,
        TxKind::Reveal {
            job,
            task: 0,
            attempt: 0,
            output: truth,
            salt: salt(copier),
            seconds: 10,
        },
    );
    assert_eq!(err, TxError::CopiedResult { output: truth });
    m.reveal(job, 0, &joined[0], truth_round1);
    // The copier stays silent; at the reveal deadline it pays, and judging begins.
    let copier_stake = m.stake(&copier.address());
    m.at(m.now + params().reveal_window_ms + 1, vec![]);
    assert!(m.stake(&copier.address()) < copier_stake);
    assert_eq!(m.task(job, 0).phase, Phase::Judging);
    // The liar claims everyone agrees with it; the honest runs name each other.
    let (e, a, b) = (liar.address(), first[0].address(), joined[0].address());
    let liar_stake = m.stake(&e);
    m.judge(job, 0, &liar, &[a, b]);
    m.judge(job, 0, &first[0], &[b]);
    let events = m.judge(job, 0, &joined[0], &[a]);
    // Two honest runs of four seats, with one silent, is short of a clear majority; the runs
    // that were revealed do hold one, so this is silence, not nondeterminism: the task runs
    // again, and the liar is not paid.
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 1), "{}", t.note);
    assert!(
        !events.iter().any(|e| matches!(e, Event::TaskFailed { .. })),
        "not judged nondeterministic"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::TaskSettled { .. })));
    assert_eq!(m.stake(&e), liar_stake);

    // Attempt 1, without a copier: a liar meets three honest runs.
    let liar2 = (1..=PROVIDERS)
        .map(provider)
        .find(|k| {
            m.state
                .job(&job)
                .unwrap()
                .failures
                .iter()
                .all(|f| f.provider != k.address())
        })
        .unwrap();
    let first = m.win(job, 0, &liar2);
    let (forged, truth, truth_round1) = (Hash([0xed; 32]), Hash([3; 32]), Hash([4; 32]));
    m.commit_all(
        job,
        0,
        &[(liar2.clone(), forged), (first[0].clone(), truth)],
    );
    m.reveal(job, 0, &liar2, forged);
    m.reveal(job, 0, &first[0], truth);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.round), (Phase::Committing, 1));
    let joined: Vec<Keypair> = t.council[1..].iter().map(|a| Market::key_of(*a)).collect();
    let commits: Vec<(Keypair, Hash)> = joined.iter().map(|k| (k.clone(), truth_round1)).collect();
    m.commit_all(job, 0, &commits);
    for k in &joined {
        m.reveal(job, 0, k, truth_round1);
    }
    let (e, a) = (liar2.address(), first[0].address());
    let (b, c) = (joined[0].address(), joined[1].address());
    let liar_stake = m.stake(&e);
    let paid_before: Vec<u128> = [&first[0], &joined[0], &joined[1]]
        .iter()
        .map(|k| m.balance(k))
        .collect();
    m.judge(job, 0, &liar2, &[a, b, c]);
    m.judge(job, 0, &first[0], &[b, c]);
    m.judge(job, 0, &joined[0], &[a]);
    let events = m.judge(job, 0, &joined[1], &[a]);
    assert!(events
        .iter()
        .any(|ev| matches!(ev, Event::Slashed { provider, .. } if *provider == e)));
    assert!(m.stake(&e) < liar_stake);
    for (k, before) in [&first[0], &joined[0], &joined[1]].iter().zip(paid_before) {
        assert!(
            m.balance(k) > before,
            "the majority that caught the liar is paid"
        );
    }
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 2), "{}", t.note);
}

/// A liar with one colluding member on the enlarged council: the liar and the colluder name
/// each other, the two honest runs name each other. No clear majority, but this is no
/// nondeterministic program: runs that agree with each other disagree with the executor's.
/// The task reopens, the liar is not paid and gets a failure on the job (with
/// `max_job_failures` 1 here, it may not bid on it again).
#[test]
fn a_liar_and_one_colluder_cannot_buy_the_nondeterministic_verdict() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let liar = provider(1);
    let first = m.win(job, 0, &liar);
    let (forged, truth) = (Hash([0xee; 32]), Hash([1; 32]));
    m.commit_all(job, 0, &[(liar.clone(), forged), (first[0].clone(), truth)]);
    m.reveal(job, 0, &liar, forged);
    m.reveal(job, 0, &first[0], truth);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.round), (Phase::Committing, 1));
    let joined: Vec<Keypair> = t.council[1..].iter().map(|a| Market::key_of(*a)).collect();
    let (honest, colluder) = (&joined[0], &joined[1]);
    m.commit_all(
        job,
        0,
        &[
            (honest.clone(), Hash([2; 32])),
            (colluder.clone(), Hash([3; 32])),
        ],
    );
    m.reveal(job, 0, honest, Hash([2; 32]));
    m.reveal(job, 0, colluder, Hash([3; 32]));
    let liar_balance = m.balance(&liar);
    m.judge(job, 0, &liar, &[colluder.address()]);
    m.judge(job, 0, colluder, &[liar.address()]);
    m.judge(job, 0, &first[0], &[honest.address()]);
    let events = m.judge(job, 0, honest, &[first[0].address()]);
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::RunsDisagreed { .. } | Event::TaskFailed { .. })));
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 1), "{}", t.note);
    assert!(
        t.note.to_string().contains("disagree with the executor"),
        "{}",
        t.note
    );
    assert_eq!(m.balance(&liar), liar_balance, "the liar is not paid");
    let err = m.refused(
        &liar,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    assert!(matches!(err, TxError::Blocklisted { .. }), "{err}");
}

/// An executor that ran the program and revealed, then missed the judging deadline: the
/// members that judged name its output, which counts (a silent party's output can still be
/// confirmed by others; only its own claims are missing). The result settles, and the
/// executor pays the timeout rate for its silence, not the price of the whole task.
#[test]
fn an_executor_silent_at_judging_keeps_its_confirmed_result() {
    let mut m = Market::new();
    let p = prescription(
        1,
        3,
        Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 0,
        },
    );
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let council = m.win(job, 0, &executor);
    let mut all = vec![(executor.clone(), Hash([1; 32]))];
    all.extend(
        council
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), Hash([2 + i as u8; 32]))),
    );
    m.commit_all(job, 0, &all);
    for (k, out) in &all {
        m.reveal(job, 0, k, *out);
    }
    let everyone: Vec<Address> = all.iter().map(|(k, _)| k.address()).collect();
    for k in &council {
        let others: Vec<Address> = everyone
            .iter()
            .copied()
            .filter(|a| *a != k.address())
            .collect();
        m.judge(job, 0, k, &others);
    }
    let stake = m.stake(&executor.address());
    let events = m.at(m.now + params().judge_window_ms + 1, vec![]);
    let t = m.task(job, 0);
    assert_eq!(
        (t.phase, t.result),
        (Phase::Settled, Some(Hash([1; 32]))),
        "{}",
        t.note
    );
    let slashed: u128 = events
        .iter()
        .filter_map(|e| match e {
            Event::Slashed {
                provider, amount, ..
            } if *provider == executor.address() => Some(amount.0),
            _ => None,
        })
        .sum();
    assert_eq!(slashed, stake / 100, "the timeout rate only, once");
}

/// `RequesterGriefer`: a requester offers the highest price for a task whose program never
/// ends, hoping the honest members drawn for its council miss the deadline and pay the
/// price of the task. Drawn members chose nothing: a miss costs them the timeout rate, never
/// a share of the price; and no single miss, even an executor's, takes more than half the
/// stake.
#[test]
fn a_requester_cannot_make_drawn_members_pay_the_price_of_its_task() {
    let mut m = Market::new();
    let mut p = prescription(1, 1, Equivalence::ExactHash {});
    p.payment = Payment::FixedPerTask {
        max_price: params().max_price,
    };
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let bid = m.tx(
        &executor,
        TxKind::Bid {
            job,
            task: 0,
            price: params().max_price,
        },
    );
    m.block(vec![bid]);
    let member = Market::key_of(m.task(job, 0).council[0]);
    m.commit_all(job, 0, &[(executor.clone(), Hash([1; 32]))]);
    let member_stake = m.stake(&member.address());
    m.at(m.now + 60_000, vec![]);
    assert_eq!(
        m.stake(&member.address()),
        member_stake - member_stake / 100
    );
    // An executor that bid 1,000 GRID and vanished pays, but at most half its stake.
    p.instructions.council_size = 0;
    let job2 = m.submit(p.clone(), deposit_for(&p));
    let other = (1..=PROVIDERS)
        .map(provider)
        .find(|k| {
            m.job(job)
                .failures
                .iter()
                .all(|f| f.provider != k.address())
                && k.address() != executor.address()
        })
        .unwrap();
    let alive = m.tx(&other, TxKind::Heartbeat);
    let bid = m.tx(
        &other,
        TxKind::Bid {
            job: job2,
            task: 0,
            price: params().max_price,
        },
    );
    m.block(vec![alive, bid]);
    let stake = m.stake(&other.address());
    let deadline = m.task(job2, 0).deadline_ms;
    m.at(deadline, vec![]);
    assert_eq!(m.stake(&other.address()), stake - stake / 2);
}

#[test]
fn dissenting_council_member_in_the_minority_is_slashed() {
    let mut m = Market::new();
    let p = prescription(
        1,
        3,
        Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 0,
        },
    );
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let council: Vec<Keypair> = m
        .task(job, 0)
        .council
        .iter()
        .map(|a| Market::key_of(*a))
        .collect();
    let out = Hash([5; 32]);
    let mut all = vec![(provider(1), out)];
    // Numeric tolerance: council outputs differ in bytes but agree within tolerance.
    all.extend(
        council
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), Hash([10 + i as u8; 32]))),
    );
    m.commit_all(job, 0, &all);
    m.reveal(job, 0, &provider(1), out);
    let dissenting_council_member = council[2].clone();
    let stake_before = m.stake(&dissenting_council_member.address());
    m.reveal(job, 0, &council[0], all[1].1);
    m.reveal(job, 0, &council[1], all[2].1);
    m.reveal(job, 0, &dissenting_council_member, all[3].1);
    assert_eq!(m.task(job, 0).phase, Phase::Judging);
    // The executor and two members find each other's outputs equivalent; the dissenter
    // finds nobody's equivalent to its own.
    let (e, a, b) = (
        provider(1).address(),
        council[0].address(),
        council[1].address(),
    );
    m.judge(job, 0, &provider(1), &[a, b]);
    m.judge(job, 0, &council[0], &[e, b]);
    m.judge(job, 0, &council[1], &[e, a]);
    let events = m.judge(job, 0, &dissenting_council_member, &[]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::TaskSettled { .. })));
    assert!(events.iter().any(
        |e| matches!(e, Event::Slashed { provider, .. } if *provider == dissenting_council_member.address())
    ));
    assert!(m.stake(&dissenting_council_member.address()) < stake_before);
}

#[test]
fn copying_council_member_cannot_reveal_someone_elses_commitment() {
    let mut m = Market::new();
    let p = prescription(1, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let copying_council_member = Market::key_of(m.task(job, 0).council[0]);
    let out = Hash([9; 32]);
    let exec_commit = commitment(&out, &salt(&provider(1)), &provider(1).address());
    let c1 = m.tx(
        &provider(1),
        TxKind::Commit {
            job,
            task: 0,
            attempt: 0,
            commitment: exec_commit,
        },
    );
    // The copier submits the executor's commitment as its own.
    let c2 = m.tx(
        &copying_council_member,
        TxKind::Commit {
            job,
            task: 0,
            attempt: 0,
            commitment: exec_commit,
        },
    );
    m.block(vec![c1, c2]);
    m.reveal(job, 0, &provider(1), out);
    // Revealing the executor's output and salt does not open the copied commitment: it is
    // bound to the committer's address.
    let err = m.refused(
        &copying_council_member,
        TxKind::Reveal {
            job,
            task: 0,
            attempt: 0,
            output: out,
            salt: salt(&provider(1)),
            seconds: 1,
        },
    );
    assert_eq!(err, TxError::RevealMismatch);
    // When the reveal window closes the silent copier is slashed and, no vote being in, its
    // seat is drawn again with more seats besides: the executor's result is not let through.
    let stake_before = m.stake(&copying_council_member.address());
    let events = m.at(m.now + Params::default().reveal_window_ms + 1, vec![]);
    assert!(events.iter().any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == copying_council_member.address())));
    assert!(m.stake(&copying_council_member.address()) < stake_before);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.round, t.result), (Phase::Committing, 1, None));
    assert!(!t.council.contains(&copying_council_member.address()));
}

#[test]
fn vanishing_executor_is_penalised_and_the_task_reauctioned_after_its_deadline() {
    let mut m = Market::new();
    let p = prescription(1, 0, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let vanishing_executor = provider(2);
    let bid = m.tx(
        &vanishing_executor,
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    assert_eq!(m.state.next_deadline(), Some(m.now + 60_000));
    let stake_before = m.stake(&vanishing_executor.address());
    let events = m.at(m.now + 60_000, vec![]);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::TaskReopened { attempt: 1, .. })),
        "{events:?}"
    );
    assert_eq!(
        m.stake(&vanishing_executor.address()),
        stake_before - stake_before / 100
    );
    assert_eq!(m.task(job, 0).phase, Phase::Bidding);
}

/// State has a price: a job pays `state_fee_per_entry` for each task and input it adds to
/// the ledger, into the rewards pool and not refunded, so a 10,000-task job is no longer free
/// to park in every node's state.
#[test]
fn a_jobs_state_fee_grows_with_the_tasks_it_creates() {
    let mut m = Market::new();
    let mut paid = Vec::new();
    for tasks in [1u64, 100] {
        let p = prescription(tasks, 0, Equivalence::ExactHash {});
        let (pool, balance) = (m.state.rewards_pool().0, m.balance(&requester()));
        let job = m.submit(p.clone(), deposit_for(&p));
        let cancel = m.tx(&requester(), TxKind::CancelJob { job });
        m.block(vec![cancel]);
        assert_eq!(m.state.rewards_pool().0 - pool, state_fee(&p));
        assert_eq!(balance - m.balance(&requester()), state_fee(&p));
        paid.push(state_fee(&p));
    }
    // One input besides the task each: 2 and 101 entries.
    assert_eq!(paid[1], paid[0] / 2 * 101);
    assert!(paid[1] > 50 * paid[0]);
}

/// `VanishingBidder`: a provider that wins auctions and never runs them. Each miss in a row
/// costs twice the one before, and never less than the work would have paid; a provider that
/// stopped sending heartbeats may not bid at all.
#[test]
fn a_vanishing_bidder_pays_more_each_time_and_offline_providers_cannot_bid() {
    let mut m = Market::new();
    let mut p = prescription(1, 0, Equivalence::ExactHash {});
    p.payment = Payment::PerTaskSecond {
        max_price: Amount(GRID),
    };
    let vanisher = provider(2);
    let mut slashed = Vec::new();
    for _ in 0..3 {
        let job = m.submit(p.clone(), deposit_for(&p));
        let alive = m.tx(&vanisher, TxKind::Heartbeat);
        let bid = m.tx(
            &vanisher,
            TxKind::Bid {
                job,
                task: 0,
                price: Amount(GRID / 20),
            },
        );
        m.block(vec![alive, bid]);
        let events = m.at(m.now + 60_000, vec![]);
        let amount = events
            .iter()
            .find_map(|e| match e {
                Event::Slashed {
                    provider, amount, ..
                } if *provider == vanisher.address() => Some(amount.0),
                _ => None,
            })
            .expect("the vanished executor is slashed");
        slashed.push(amount);
    }
    // The work was worth 0.05 GRID x 60 s = 3 GRID: more than 1% of the 100 GRID stake.
    let work = GRID / 20 * 60;
    assert!(slashed[0] >= work, "{slashed:?}");
    assert!(
        slashed[1] > slashed[0] && slashed[2] > slashed[1],
        "{slashed:?}"
    );
    // Silent for longer than the heartbeat timeout: its bid is refused.
    let job = m.submit(p.clone(), deposit_for(&p));
    m.at(m.now + params().heartbeat_timeout_ms + 1, vec![]);
    let err = m.refused(
        &provider(3),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 20),
        },
    );
    assert!(matches!(err, TxError::ProviderOffline { .. }), "{err}");
}

/// A job whose task no provider can run (it asks for more GPUs than any has) does not sit in
/// `bidding` forever: at the time bound its requester set, the task fails with the reason and
/// the whole deposit returns. A bound past the network's longest is refused with the limit.
#[test]
fn a_job_nobody_can_run_ends_with_a_refund_at_its_time_bound() {
    let mut m = Market::new();
    let mut p = prescription(2, 0, Equivalence::ExactHash {});
    p.instructions.requirements.min_gpus = 64;
    p.halting.give_up_ms = 3_600_000;
    let before = m.balance(&requester());
    let job = m.submit(p.clone(), deposit_for(&p));
    m.at(m.now + 5_000, vec![]);
    assert_eq!(m.task(job, 0).phase, Phase::Bidding);
    let give_up_at = m.job(job).give_up_at_ms;
    assert_eq!(m.state.next_deadline(), Some(give_up_at));
    let events = m.at(give_up_at, vec![]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::JobFinished { .. })));
    for i in 0..2 {
        let t = m.task(job, i);
        assert_eq!(t.phase, Phase::Failed);
        assert!(
            t.note.to_string().contains("give_up_after_s")
                && t.note.to_string().contains("no provider bid"),
            "{}",
            t.note
        );
    }
    assert_eq!(m.balance(&requester()), before - state_fee(&p));

    let mut p = prescription(1, 0, Equivalence::ExactHash {});
    p.halting.give_up_ms = params().max_give_up_ms + 1;
    let deposit = deposit_for(&p);
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: p,
            deposit,
        },
    );
    assert!(
        matches!(
            err,
            TxError::BadPrescription {
                field: "halting.give_up_ms",
                ..
            }
        ),
        "{err}"
    );
}

/// A task that keeps being reopened (here: its executors vanish) ends at the job's bound
/// too, rather than at `max_attempts` rounds of auctions far later.
#[test]
fn a_task_reopened_past_its_jobs_time_bound_fails_with_a_refund() {
    let mut m = Market::new();
    let mut p = prescription(1, 0, Equivalence::ExactHash {});
    p.halting.give_up_ms = 50_000;
    let before = m.balance(&requester());
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = m.tx(
        &provider(2),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    // The executor misses its commit deadline after the bound has passed.
    let events = m.at(m.now + 60_000, vec![]);
    assert!(
        events.iter().any(|e| matches!(e, Event::TaskFailed { .. })),
        "{events:?}"
    );
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Failed);
    assert!(t.note.to_string().contains("give_up_after_s"), "{}", t.note);
    assert!(m.job(job).finished);
    assert_eq!(m.balance(&requester()), before - state_fee(&p));
}

#[test]
fn a_task_fails_after_max_attempts_and_its_escrow_returns() {
    let mut m = Market::new();
    let mut p = prescription(1, 0, Equivalence::ExactHash {});
    p.halting.first_bids = 1;
    let job = m.submit(p.clone(), deposit_for(&p));
    let before = m.balance(&requester());
    for attempt in 0..Params::default().max_attempts {
        let who = provider(1 + attempt % PROVIDERS);
        // Only providers seen alive recently may bid.
        let alive = m.tx(&who, TxKind::Heartbeat);
        let bid = m.tx(
            &who,
            TxKind::Bid {
                job,
                task: 0,
                price: Amount(GRID / 200),
            },
        );
        m.block(vec![alive, bid]);
        m.at(m.now + 60_000, vec![]);
    }
    assert_eq!(m.task(job, 0).phase, Phase::Failed);
    assert!(m.job(job).finished);
    assert_eq!(m.balance(&requester()), before + deposit_for(&p).0);
}

#[test]
fn cancel_returns_what_is_not_running() {
    let mut m = Market::new();
    let p = prescription(3, 0, Equivalence::ExactHash {});
    let deposit = deposit_for(&p);
    let before = m.balance(&requester());
    let job = m.submit(p.clone(), deposit);
    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let cancel = m.tx(&requester(), TxKind::CancelJob { job });
    m.block(vec![cancel]);
    let per_task = deposit.0 / 3;
    assert_eq!(
        m.balance(&requester()),
        before - per_task - state_fee(&p),
        "the running task's reserve stays in escrow"
    );
    assert_eq!(m.task(job, 1).phase, Phase::Cancelled);
    // The running task still finishes and is paid; then the rest comes back.
    let out = Hash([3; 32]);
    m.commit_all(job, 0, &[(provider(1), out)]);
    m.reveal(job, 0, &provider(1), out);
    assert!(m.job(job).finished);
    let paid = 10 * (GRID / 200);
    let fee = paid * u128::from(params().market_fee_bps) / 10_000;
    assert_eq!(m.balance(&requester()), before - paid - fee - state_fee(&p));
    // Finished, the job has left the hot state: there is nothing to cancel.
    let err = m.refused(&requester(), TxKind::CancelJob { job });
    assert!(matches!(err, TxError::UnknownJob { .. }), "{err}");
    assert!(m.state.job(&job).is_none() && m.disk.archived(&job).is_some());
}

#[test]
fn bad_jobs_and_bids_get_clear_errors() {
    let mut m = Market::new();
    let p = prescription(2, 1, Equivalence::ExactHash {});
    let short = Amount(deposit_for(&p).0 - 1);
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: p.clone(),
            deposit: short,
        },
    );
    assert!(matches!(err, TxError::DepositTooLow { .. }), "{err}");

    let mut even = p.clone();
    even.instructions.council_size = 2;
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: even,
            deposit: Amount::grid(1_000),
        },
    );
    assert!(
        err.to_string().contains("instructions.council_size"),
        "{err}"
    );

    let mut empty = p.clone();
    empty.instructions.chunk = 0;
    let err = m.refused(
        &requester(),
        TxKind::SubmitJob {
            prescription: empty,
            deposit: Amount::grid(1_000),
        },
    );
    assert!(err.to_string().contains("instructions.chunk"), "{err}");

    // Hardware nobody has: bids are refused with the reason, and the task says why it waits.
    let mut huge = p.clone();
    huge.instructions.requirements.min_vram_mib = 80_000;
    let job = m.submit(huge.clone(), deposit_for(&huge));
    let err = m.refused(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(1),
        },
    );
    assert!(
        matches!(&err, TxError::HardwareUnfit { reason } if reason.contains("80000 MiB")),
        "{err}"
    );
    m.at(m.now + 5_000, vec![]);
    assert!(m.task(job, 0).note.to_string().contains("no bids yet"));

    let job = m.submit(p.clone(), deposit_for(&p));
    let err = m.refused(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID),
        },
    );
    assert!(matches!(err, TxError::BadPrice { .. }), "{err}");
    let err = m.refused(
        &requester(),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(1),
        },
    );
    assert!(matches!(err, TxError::NotAProvider { .. }), "{err}");
    let err = m.refused(
        &provider(1),
        TxKind::Commit {
            job,
            task: 0,
            attempt: 0,
            commitment: Hash::ZERO,
        },
    );
    assert!(matches!(err, TxError::WrongPhase { .. }), "{err}");
}

#[test]
fn the_first_bid_after_an_empty_deadline_closes_the_auction() {
    let mut m = Market::new();
    let mut p = prescription(1, 1, Equivalence::ExactHash {});
    p.halting.first_bids = 0;
    let job = m.submit(p.clone(), deposit_for(&p));
    m.at(m.now + 5_000, vec![]);
    assert_eq!(
        m.state.next_deadline(),
        Some(m.job(job).give_up_at_ms),
        "an auction with no bids needs no blocks until the job's time bound"
    );
    let bid = m.tx(
        &provider(3),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    assert_eq!(m.task(job, 0).phase, Phase::Committing);
}

/// Re-registers `workers` as acting for `owner`.
fn approve(m: &mut Market, owner: &Keypair, workers: &[u32]) {
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

#[test]
fn council_never_holds_two_workers_of_one_owner_nor_the_executors_owner() {
    let mut m = Market::new();
    let owner = dev_keypair(PROVIDERS + 1);
    // One operator runs providers 1..=3; providers 4, 5 and 6 are independent.
    approve(&mut m, &owner, &[1, 2, 3]);
    assert_eq!(
        m.state.provider(&provider(2).address()).unwrap().owner,
        owner.address()
    );
    let p = prescription(2, 3, Equivalence::ExactHash {});
    let deposit = deposit_for(&p);
    let job = m.submit(p, deposit);
    // Provider 1 executes task 0: its siblings 2 and 3 may not check it.
    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let mut council = m.task(job, 0).council;
    council.sort();
    let mut independent: Vec<Address> = (4..=6).map(|i| provider(i).address()).collect();
    independent.sort();
    assert_eq!(council, independent);

    // Provider 4 executes task 1: the council takes at most one of the operator's workers.
    let bid = m.tx(
        &provider(4),
        TxKind::Bid {
            job,
            task: 1,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let council = m.task(job, 1).council;
    assert_eq!(council.len(), 3, "{council:?}");
    let owners: Vec<Address> = council
        .iter()
        .map(|a| m.state.provider(a).unwrap().owner)
        .collect();
    assert_eq!(
        owners.iter().filter(|o| **o == owner.address()).count(),
        1,
        "{owners:?}"
    );
    assert!(council.contains(&provider(5).address()), "{council:?}");
    assert!(council.contains(&provider(6).address()), "{council:?}");
}

#[test]
fn too_few_distinct_owners_leave_the_auction_open_with_a_reason() {
    let mut m = Market::new();
    let owner = dev_keypair(PROVIDERS + 1);
    approve(&mut m, &owner, &[2, 3, 4, 5, 6]);
    // Besides executor 1 there is one owner only, and the job wants three council members.
    let p = prescription(1, 3, Equivalence::ExactHash {});
    let deposit = deposit_for(&p);
    let job = m.submit(p, deposit);
    let bid = m.tx(
        &provider(1),
        TxKind::Bid {
            job,
            task: 0,
            price: Amount(GRID / 200),
        },
    );
    m.block(vec![bid]);
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Bidding);
    assert!(
        t.note.to_string().contains("waiting for council members"),
        "{}",
        t.note
    );
}

#[test]
fn an_owner_approval_must_be_the_owners_signature_for_this_worker_and_chain() {
    let mut m = Market::new();
    let owner = dev_keypair(PROVIDERS + 1);
    let for_someone_else = OwnerApproval::sign(CHAIN, &owner, &provider(2).address());
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: Some(for_someone_else),
        },
    );
    assert!(matches!(err, TxError::BadOwnerApproval { .. }), "{err}");
    let other_chain = OwnerApproval::sign("another-chain", &owner, &provider(1).address());
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: Some(other_chain),
        },
    );
    assert!(matches!(err, TxError::BadOwnerApproval { .. }), "{err}");
    // Claiming an owner with someone else's key in the approval does not verify either.
    let forged = OwnerApproval {
        owner: owner.public(),
        signature: provider(1).sign(&OwnerApproval::message(CHAIN, &provider(1).address())),
    };
    let err = m.refused(
        &provider(1),
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: Some(forged),
        },
    );
    assert!(matches!(err, TxError::BadOwnerApproval { .. }), "{err}");
    assert_eq!(
        m.state.provider(&provider(1).address()).unwrap().owner,
        provider(1).address()
    );
}

#[test]
fn providers_need_stake_to_register() {
    let mut m = Market::new();
    let newcomer = dev_keypair(PROVIDERS + 1);
    let err = m.refused(
        &newcomer,
        TxKind::RegisterProvider {
            hardware: gpu_box(),
            owner: None,
        },
    );
    assert!(matches!(err, TxError::StakeTooLow { .. }), "{err}");
    let err = m.refused(&newcomer, TxKind::Heartbeat);
    assert!(matches!(err, TxError::NotAProvider { .. }), "{err}");
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Submit {
            tasks: u64,
            council: u8,
            numeric: bool,
        },
        Bid {
            job: usize,
            task: u32,
            who: u32,
            price: u128,
        },
        Commit {
            job: usize,
            task: u32,
            lie: bool,
        },
        Reveal {
            job: usize,
            task: u32,
            vote: bool,
        },
        Judge {
            job: usize,
            task: u32,
            /// Bit i set: the i-th party to reveal names everyone (a liar's claim) rather
            /// than the parties with its own output.
            claims: u8,
        },
        Heartbeat {
            who: u32,
        },
        Cancel {
            job: usize,
        },
        Wait {
            ms: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (1u64..4, prop::sample::select(vec![0u8, 1, 3]), any::<bool>())
                .prop_map(|(tasks, council, numeric)| Op::Submit { tasks, council, numeric }),
            4 => (0usize..4, 0u32..3, 1u32..=PROVIDERS, 1u128..(GRID / 100))
                .prop_map(|(job, task, who, price)| Op::Bid { job, task, who, price }),
            4 => (0usize..4, 0u32..3, prop::bool::weighted(0.2)).prop_map(|(job, task, lie)| Op::Commit { job, task, lie }),
            4 => (0usize..4, 0u32..3, prop::bool::weighted(0.8)).prop_map(|(job, task, vote)| Op::Reveal { job, task, vote }),
            3 => (0usize..4, 0u32..3, any::<u8>()).prop_map(|(job, task, claims)| Op::Judge { job, task, claims }),
            2 => (1u32..=PROVIDERS).prop_map(|who| Op::Heartbeat { who }),
            1 => (0usize..4).prop_map(|job| Op::Cancel { job }),
            2 => (0u64..90_000).prop_map(|ms| Op::Wait { ms }),
        ]
    }

    /// The honest and the forged output of a run in `attempt` and `round` (distinct across
    /// both, as the worker's keys make them).
    fn outputs(attempt: u32, round: u8) -> (Hash, Hash) {
        let n = attempt as u8 + 16 * round;
        (Hash([1 + n; 32]), Hash([0xee - n; 32]))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever honest and Byzantine providers do, supply is conserved after every block
        /// and a replica applying the same blocks reaches the same state root.
        #[test]
        fn random_market_workloads_conserve_supply_and_replay_deterministically(ops in prop::collection::vec(op(), 1..40)) {
            let mut m = Market::new();
            let mut jobs: Vec<Hash> = Vec::new();
            for op in ops {
                // Indices pick among the jobs and tasks that exist.
                let pick = |jobs: &Vec<Hash>, m: &Market, j: usize, t: u32| -> Option<(Hash, u32)> {
                    let job = *jobs.get(j % jobs.len().max(1))?;
                    let tasks = m.state.job(&job)?.tasks.max(1);
                    Some((job, t % tasks))
                };
                let mut txs = Vec::new();
                let mut t = m.now + 1;
                match op {
                    Op::Submit { tasks, council, numeric } => {
                        let eq = if numeric { Equivalence::NumericTolerance { abs_ppb: 1, rel_ppb: 1 } } else { Equivalence::ExactHash {} };
                        let p = prescription(tasks, council, eq);
                        let tx = m.tx(&requester(), TxKind::SubmitJob { deposit: deposit_for(&p), prescription: p });
                        jobs.push(tx.hash());
                        txs.push(tx);
                    }
                    Op::Bid { job, task, who, price } => {
                        if let Some((job, task)) = pick(&jobs, &m, job, task) {
                            txs.push(m.tx(&provider(who), TxKind::Bid { job, task, price: Amount(price) }));
                        }
                    }
                    Op::Commit { job, task, lie } => {
                        if let Some((job, task, t)) = pick(&jobs, &m, job, task).and_then(|(j, i)| m.state.task(&TaskKey { job: j, index: i }).map(|t| (j, i, t.clone()))) {
                            for who in t.executor.iter().chain(t.council.iter()) {
                                let k = Market::key_of(*who);
                                let (honest, forged) = outputs(t.attempt, t.round);
                                let out = if lie && Some(*who) == t.executor { forged } else { honest };
                                let c = commitment(&out, &salt(&k), who);
                                txs.push(m.tx(&k, TxKind::Commit { job, task, attempt: t.attempt, commitment: c }));
                            }
                        }
                    }
                    Op::Reveal { job, task, vote } => {
                        if let Some((job, task, t)) = pick(&jobs, &m, job, task).and_then(|(j, i)| m.state.task(&TaskKey { job: j, index: i }).map(|t| (j, i, t.clone()))) {
                            // The executor reveals first, then the council.
                            let mut commits = t.commits.clone();
                            commits.sort_by_key(|c| Some(c.provider) != t.executor);
                            for c in &commits {
                                let k = Market::key_of(c.provider);
                                for out in (0..=t.round).flat_map(|r| { let (h, f) = outputs(t.attempt, r); [h, f] }) {
                                    if commitment(&out, &salt(&k), &c.provider) == c.commitment {
                                        txs.push(m.tx(&k, TxKind::Reveal { job, task, attempt: t.attempt, output: out, salt: salt(&k), seconds: if vote { 7 } else { u64::MAX / 3 } }));
                                    }
                                }
                            }
                        }
                    }
                    Op::Judge { job, task, claims } => {
                        if let Some((job, task, t)) = pick(&jobs, &m, job, task).and_then(|(j, i)| m.state.task(&TaskKey { job: j, index: i }).map(|t| (j, i, t.clone()))) {
                            for (i, r) in t.reveals.iter().enumerate() {
                                let equivalent: Vec<Address> = t.reveals.iter()
                                    .filter(|o| o.provider != r.provider && (claims & (1 << (i % 8)) != 0 || o.output == r.output))
                                    .map(|o| o.provider)
                                    .collect();
                                let k = Market::key_of(r.provider);
                                txs.push(m.tx(&k, TxKind::Judge { job, task, attempt: t.attempt, round: t.round, equivalent }));
                            }
                        }
                    }
                    Op::Heartbeat { who } => txs.push(m.tx(&provider(who), TxKind::Heartbeat)),
                    Op::Cancel { job } => {
                        if let Some((job, _)) = pick(&jobs, &m, job, 0) {
                            txs.push(m.tx(&requester(), TxKind::CancelJob { job }));
                        }
                    }
                    Op::Wait { ms } => t = m.now + ms,
                }
                // Like the node's producer, make a block at each deadline on the way.
                for _ in 0..64 {
                    match m.state.next_deadline() {
                        Some(d) if d < t => {
                            let pool = m.state.rewards_pool();
                            let built = m.state.build_block(d.max(m.now), Address([0; 20]), vec![]);
                            m.now = built.block.header.timestamp_ms;
                            prop_assert!(m.state.rewards_pool() >= pool);
                            prop_assert_eq!(m.state.check_conservation(), Ok(()));
                            m.replica.apply_block(&built.block).unwrap();
                            prop_assert_eq!(m.replica.root(), m.state.root());
                            m.state = m.disk.restart(&mut m.state);
                        }
                        _ => break,
                    }
                }
                // Transactions that do not apply are left out; their nonces are reused.
                let pool_before = m.state.rewards_pool();
                let built = m.state.build_block(t, Address([0; 20]), txs);
                // Every account here is one party (SybilRewardFarmer): it never takes more out
                // of the pool than it pays in, block by block.
                prop_assert!(m.state.rewards_pool() >= pool_before, "the pool paid out more than came in");
                m.now = t;
                for (tx, _) in &built.rejected {
                    let n = m.nonces.get_mut(&tx.tx.sender()).unwrap();
                    *n = (*n).min(tx.tx.nonce);
                }
                prop_assert_eq!(m.state.check_conservation(), Ok(()));
                m.replica.apply_block(&built.block).unwrap();
                prop_assert_eq!(m.replica.root(), m.state.root());
                // A restart after every block: the rest of the workload runs on the state
                // rebuilt from what storage was given.
                m.state = m.disk.restart(&mut m.state);
            }
        }
    }
}

#[test]
fn providers_announce_usable_peer_addresses_and_can_withdraw_them() {
    let mut m = Market::new();
    let endpoint = dev_keypair(PROVIDERS + 7).public();
    let peer = |addrs: &[&str]| TxKind::AnnouncePeer {
        peer: gridwork_types::PeerAddr {
            endpoint,
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        },
    };
    for bad in [
        &["0.0.0.0:7000"][..],
        &["10.0.0.1:0"],
        &["not an address"],
        &[
            "10.0.0.1:1",
            "10.0.0.1:2",
            "10.0.0.1:3",
            "10.0.0.1:4",
            "10.0.0.1:5",
        ],
    ] {
        let err = m.refused(&provider(1), peer(bad));
        assert!(
            matches!(err, TxError::BadPeerAddress { .. }),
            "{bad:?}: {err}"
        );
    }
    let stranger = dev_keypair(PROVIDERS + 2);
    let err = m.refused(&stranger, peer(&["10.0.0.1:7000"]));
    assert!(matches!(err, TxError::NotAProvider { .. }), "{err}");

    let tx = m.tx(&provider(1), peer(&["10.0.0.1:7000", "[fd00::1]:7000"]));
    let events = m.block(vec![tx]);
    assert!(events.contains(&Event::PeerAnnounced {
        provider: provider(1).address()
    }));
    let record = m.state.provider(&provider(1).address()).unwrap();
    assert_eq!(
        record.peer.as_ref().map(|p| (p.endpoint, p.addrs.len())),
        Some((endpoint, 2))
    );
    let tx = m.tx(&provider(1), peer(&[]));
    m.block(vec![tx]);
    assert_eq!(m.state.provider(&provider(1).address()).unwrap().peer, None);
}

/// `DuplicateActionSpammer`: one sender queues the same market action many times (a job's
/// cancellation, a bid on one task), each copy valid against the committed state when it is
/// admitted, at a fee that outbids honest traffic. Only the first can take effect; every other
/// copy is still in the block and pays its fee, so priority and mempool places cost what they
/// say, per copy. (Before: refused copies were left out and paid nothing.)
#[test]
fn duplicate_market_actions_each_pay_their_fee_though_only_the_first_acts() {
    let mut m = Market::new();
    let p = prescription(2, 1, Equivalence::ExactHash {});
    let job = m.submit(p.clone(), deposit_for(&p));
    let fee = Amount(GRID / 1_000);
    let paying = |m: &mut Market, key: &Keypair, kind: TxKind| {
        let mut signed = m.tx(key, kind);
        signed.tx.fee = fee;
        signed.tx.clone().sign(CHAIN, key)
    };
    let bidder = provider(1);
    let mut txs: Vec<SignedTx> = (0..3)
        .map(|_| {
            let kind = TxKind::Bid {
                job,
                task: 0,
                price: Amount(GRID / 1_000),
            };
            paying(&mut m, &bidder, kind)
        })
        .collect();
    txs.extend((0..4).map(|_| paying(&mut m, &requester(), TxKind::CancelJob { job })));
    let pool = m.state.rewards_pool();
    let balances = [bidder.address(), requester().address()].map(|a| m.state.account(&a).balance);

    m.now += 1;
    let built = m.state.build_block(m.now, Address([0; 20]), txs);
    m.replica.apply_block(&built.block).unwrap();
    assert_eq!(m.replica.root(), m.state.root());
    assert_eq!(m.state.check_conservation(), Ok(()));

    assert!(built.rejected.is_empty(), "{:?}", built.rejected);
    assert_eq!(built.block.txs.len(), 7, "every copy is in the block");
    let refused: Vec<&str> = built.failed.iter().map(|(_, e)| e.code()).collect();
    // Two more bids on a task whose auction the first closed (one bid is enough here), then
    // three more cancellations of a cancelled job.
    assert_eq!(
        refused,
        [
            "wrong_phase",
            "wrong_phase",
            "job_closed",
            "job_closed",
            "job_closed"
        ]
    );
    assert!(built.receipts.iter().all(|r| r.fee == fee));
    assert_eq!(
        m.state.rewards_pool(),
        Amount(pool.0 + 7 * fee.0),
        "seven fees, not two"
    );
    assert_eq!(
        m.state.account(&bidder.address()).balance,
        Amount(balances[0].0 - 3 * fee.0)
    );
    assert_eq!(m.state.account(&bidder.address()).nonce, 3 + 2);
    // The refused copies did nothing else: one bid, one cancellation.
    let events: Vec<&Event> = built.receipts.iter().flat_map(|r| &r.events).collect();
    let bids = events
        .iter()
        .filter(|e| matches!(e, Event::BidPlaced { .. }))
        .count();
    let cancels = events
        .iter()
        .filter(|e| matches!(e, Event::JobCancelled { .. }))
        .count();
    assert_eq!((bids, cancels), (1, 1));
}
