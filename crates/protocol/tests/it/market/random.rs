//! Random sequences of market actions keep the ledger's invariants.

use gridwork_protocol::TaskKey;
use gridwork_types::RunEnd;
use gridwork_types::{
    commitment, Address, Amount, Equivalence, Hash, Keypair, Program, Requirements, ResponseMethod,
    Segments, ServiceSpec, StreamJudgement, StreamPrice, StreamReceipt, StreamResponse, TxKind,
    GRID,
};

use super::support::{
    deposit_for, gpu_box, prescription, provider, requester, salt, Market, PROVIDERS,
};

use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        tasks: u64,
        council: u8,
        numeric: bool,
        /// In checkpointed segments (with a council).
        segmented: bool,
        /// Needs a CPU score and no GPU (its runs' times are spot-checked).
        scored: bool,
    },
    /// A provider declares a CPU score (kept while it works, lost after strikes).
    Declare {
        who: u32,
        score: u32,
    },
    Bid {
        job: usize,
        task: u32,
        who: u32,
        price: u128,
        cached: bool,
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
    /// The requester publishes a service.
    CreateService {
        council: u8,
        downtime: bool,
        /// Its answers compared within a tolerance: disputes judged by the council.
        tolerant: bool,
    },
    Subscribe {
        service: usize,
        who: u32,
    },
    Unsubscribe {
        service: usize,
        who: u32,
    },
    /// The requester drops one of the council.
    Drop {
        service: usize,
        member: usize,
    },
    /// The gateway acknowledges more responses of one member (cumulatively), and a member
    /// settles them; sometimes beyond the escrow.
    Settle {
        service: usize,
        member: usize,
        owed: u128,
    },
    /// The council answers a request; bit i set: the i-th member answers otherwise.
    Dispute {
        service: usize,
        lies: u8,
    },
    Fund {
        service: usize,
    },
    Close {
        service: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u64..4, prop::sample::select(vec![0u8, 1, 3]), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(tasks, council, numeric, segmented, scored)| Op::Submit { tasks, council, numeric, segmented, scored }),
        1 => (1u32..=PROVIDERS, prop::sample::select(vec![0u32, 400, 1_000, 50_000]))
            .prop_map(|(who, score)| Op::Declare { who, score }),
        4 => (0usize..4, 0u32..3, 1u32..=PROVIDERS, 1u128..(GRID / 100), prop::bool::weighted(0.2))
            .prop_map(|(job, task, who, price, cached)| Op::Bid { job, task, who, price, cached }),
        4 => (0usize..4, 0u32..3, prop::bool::weighted(0.2)).prop_map(|(job, task, lie)| Op::Commit { job, task, lie }),
        4 => (0usize..4, 0u32..3, prop::bool::weighted(0.8)).prop_map(|(job, task, vote)| Op::Reveal { job, task, vote }),
        3 => (0usize..4, 0u32..3, any::<u8>()).prop_map(|(job, task, claims)| Op::Judge { job, task, claims }),
        2 => (1u32..=PROVIDERS).prop_map(|who| Op::Heartbeat { who }),
        1 => (0usize..4).prop_map(|job| Op::Cancel { job }),
        2 => (0u64..90_000).prop_map(|ms| Op::Wait { ms }),
        1 => (prop::sample::select(vec![1u8, 3]), any::<bool>(), any::<bool>()).prop_map(|(council, downtime, tolerant)| Op::CreateService { council, downtime, tolerant }),
        2 => (0usize..3, 1u32..=PROVIDERS).prop_map(|(service, who)| Op::Subscribe { service, who }),
        1 => (0usize..3, 1u32..=PROVIDERS).prop_map(|(service, who)| Op::Unsubscribe { service, who }),
        1 => (0usize..3, 0usize..3).prop_map(|(service, member)| Op::Drop { service, member }),
        2 => (0usize..3, 0usize..3, 1u128..(3 * GRID)).prop_map(|(service, member, owed)| Op::Settle { service, member, owed }),
        1 => (0usize..3, any::<u8>()).prop_map(|(service, lies)| Op::Dispute { service, lies }),
        1 => (0usize..3).prop_map(|service| Op::Fund { service }),
        1 => (0usize..3).prop_map(|service| Op::Close { service }),
    ]
}

/// The key the requester's gateway signs receipts with.
fn gateway() -> Keypair {
    Keypair::from_seed([42; 32])
}

fn service_spec(council: u8, downtime: bool, tolerant: bool) -> ServiceSpec {
    ServiceSpec {
        program: Program {
            command: "inputs/serve".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        data: Vec::new(),
        requirements: Requirements::default(),
        method: ResponseMethod::Optimistic {},
        council_size: council,
        max_price: StreamPrice {
            per_response: Amount(GRID / 1_000),
            per_unit: Amount::ZERO,
        },
        equivalence: if tolerant {
            Equivalence::NumericTolerance {
                abs_ppb: 0,
                rel_ppb: 1_000,
            }
        } else {
            Equivalence::ExactHash {}
        },
        max_response_ms: 30_000,
        response_ms_per_kib: 0,
        max_downtime_ms: if downtime { 120_000 } else { 0 },
        max_unsettled: Amount::grid(1),
        gateway: gateway().public(),
    }
}

/// The honest and the forged output of a run in `attempt` and `round` (distinct across
/// both, as the worker's keys make them).
fn outputs(attempt: u32, round: u8) -> (Hash, Hash) {
    let n = attempt as u8 + 16 * round;
    (Hash([1 + n; 32]), Hash([0xee - n; 32]))
}

/// A council member's replay of a checkpointed task in `attempt` and `round`, and the
/// executor's first three checkpoints (its output is the fourth).
fn replay(attempt: u32, round: u8) -> (Hash, [Hash; 3]) {
    let n = attempt as u8 + 16 * round;
    (
        Hash([0x80 + n; 32]),
        [1u8, 2, 3].map(|k| {
            let mut id = [0x55; 32];
            (id[0], id[1]) = (n, k);
            Hash(id)
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever honest and Byzantine providers do, supply is conserved after every block
    /// and a replica applying the same blocks reaches the same state root.
    #[test]
    fn random_market_workloads_conserve_supply_and_replay_deterministically(ops in prop::collection::vec(op(), 1..40)) {
        let mut m = Market::new();
        let mut jobs: Vec<Hash> = Vec::new();
        let mut services: Vec<Hash> = Vec::new();
        // What the gateway acknowledged so far, per service and member.
        let mut owed: std::collections::BTreeMap<(Hash, Address), u128> = Default::default();
        let mut request = 0u8;
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
                Op::Submit { tasks, council, numeric, segmented, scored } => {
                    let eq = if numeric { Equivalence::NumericTolerance { abs_ppb: 1, rel_ppb: 1 } } else { Equivalence::ExactHash {} };
                    let mut p = prescription(tasks, council, eq);
                    if segmented && council > 0 {
                        p.segments = Some(Segments { count: 4, replayed: 2 });
                    }
                    if scored {
                        p.instructions.requirements.gpu_vendor = None;
                        p.instructions.requirements.min_gpus = 0;
                        p.instructions.requirements.min_cpu_score = 400;
                    }
                    let tx = m.tx(&requester(), TxKind::SubmitJob { deposit: deposit_for(&p), prescription: p });
                    jobs.push(tx.hash());
                    txs.push(tx);
                }
                Op::Bid { job, task, who, price, cached } => {
                    if let Some((job, task)) = pick(&jobs, &m, job, task) {
                        txs.push(m.tx(&provider(who), TxKind::Bid { job, task, price: Amount(price), cached }));
                    }
                }
                Op::Commit { job, task, lie } => {
                    if let Some((job, task, t)) = pick(&jobs, &m, job, task).and_then(|(j, i)| m.state.task(&TaskKey { job: j, index: i }).map(|t| (j, i, t.clone()))) {
                        let segmented = m.state.job(&job).is_some_and(|j| j.prescription.segments.is_some());
                        for who in t.executor.iter().chain(t.council.iter()) {
                            let k = Market::key_of(*who);
                            let (honest, forged) = outputs(t.attempt, t.round);
                            let executor = Some(*who) == t.executor;
                            let out = if lie && executor { forged } else { honest };
                            let (replayed, first) = replay(t.attempt, t.round);
                            let out = match (segmented, executor) {
                                (true, true) => *t.checkpoints.last().unwrap_or(&out),
                                (true, false) => replayed,
                                (false, _) => out,
                            };
                            let c = commitment(&out, &RunEnd::SUCCESS, &salt(&k), who);
                            txs.push(m.tx(&k, TxKind::Commit { job, task, attempt: t.attempt, commitment: c }));
                            if segmented && executor && t.checkpoints.is_empty() {
                                // Binds its checkpoints after its commitment (in one block). A
                                // liar sometimes says its run failed early, though it committed
                                // to a success: its reveal is refused.
                                let mut checkpoints = first[..if lie { 1 } else { 3 }].to_vec();
                                checkpoints.push(out);
                                txs.push(m.tx(&k, TxKind::Checkpoints { job, task, attempt: t.attempt, checkpoints, failed: lie }));
                            }
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
                            for out in (0..=t.round).flat_map(|r| { let (h, f) = outputs(t.attempt, r); [h, f, replay(t.attempt, r).0] }) {
                                if commitment(&out, &RunEnd::SUCCESS, &salt(&k), &c.provider) == c.commitment {
                                    txs.push(m.tx(&k, TxKind::Reveal { job, task, attempt: t.attempt, output: out, salt: salt(&k), seconds: if vote { 7 } else { u64::MAX / 3 }, ended: RunEnd::SUCCESS, }));
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
                Op::Declare { who, score } => {
                    let hardware = gridwork_types::Hardware { cpu_score: score, ..gpu_box() };
                    txs.push(m.tx(&provider(who), TxKind::RegisterProvider { hardware, owner: None }));
                }
                Op::Cancel { job } => {
                    if let Some((job, _)) = pick(&jobs, &m, job, 0) {
                        txs.push(m.tx(&requester(), TxKind::CancelJob { job }));
                    }
                }
                Op::Wait { ms } => t = m.now + ms,
                Op::CreateService { council, downtime, tolerant } => {
                    let spec = service_spec(council, downtime, tolerant);
                    let deposit = Amount::grid(u64::from(council) * 2);
                    let tx = m.tx(&requester(), TxKind::CreateService { spec, deposit });
                    services.push(tx.hash());
                    txs.push(tx);
                }
                Op::Subscribe { service, who } => {
                    if let Some(id) = services.get(service % services.len().max(1)) {
                        let price = StreamPrice { per_response: Amount(GRID / 2_000), per_unit: Amount::ZERO };
                        txs.push(m.tx(&provider(who), TxKind::Subscribe { service: *id, price }));
                    }
                }
                Op::Unsubscribe { service, who } => {
                    if let Some(id) = services.get(service % services.len().max(1)) {
                        txs.push(m.tx(&provider(who), TxKind::Unsubscribe { service: *id }));
                    }
                }
                Op::Drop { service, member } => {
                    if let Some((id, s)) = services.get(service % services.len().max(1)).and_then(|id| Some((*id, m.state.service(id)?.clone()))) {
                        if let Some(member) = s.council.get(member % s.council.len().max(1)) {
                            txs.push(m.tx(&requester(), TxKind::DropMember { service: id, member: *member }));
                        }
                    }
                }
                Op::Settle { service, member, owed: more } => {
                    if let Some((id, s)) = services.get(service % services.len().max(1)).and_then(|id| Some((*id, m.state.service(id)?.clone()))) {
                        if let Some(p) = s.pay.get(member % s.pay.len().max(1)) {
                            let total = owed.entry((id, p.provider)).or_insert(0);
                            *total += more;
                            let receipt = StreamReceipt { service: id, provider: p.provider, responses: *total as u64, units: 0, owed: Amount(*total) }
                                .sign(super::support::CHAIN, &gateway());
                            txs.push(m.tx(&Market::key_of(p.provider), TxKind::SettleStream { receipts: vec![receipt] }));
                        }
                    }
                }
                Op::Dispute { service, lies } => {
                    if let Some((id, s)) = services.get(service % services.len().max(1)).and_then(|id| Some((*id, m.state.service(id)?.clone()))) {
                        request = request.wrapping_add(1);
                        let lie = |i: usize| lies & (1 << (i % 8)) != 0;
                        let tolerant = s.spec.equivalence != (Equivalence::ExactHash {});
                        // Under a tolerance each honest member's answer has its own bytes.
                        let answer = |i: usize| Hash([if lie(i) { 200 } else if tolerant { i as u8 } else { 1 }; 32]);
                        let responses: Vec<_> = s.council.iter().enumerate().map(|(i, a)| {
                            StreamResponse { service: id, request: Hash([request; 32]), response: answer(i), units: 1 }
                                .sign(super::support::CHAIN, &Market::key_of(*a))
                        }).collect();
                        if tolerant {
                            // Each judges the others: the honest agree among themselves.
                            let judgements = s.council.iter().enumerate().map(|(i, a)| {
                                let others = (0..s.council.len()).filter(|j| *j != i);
                                let (agree, differ): (Vec<usize>, Vec<usize>) = others.partition(|j| !lie(i) && !lie(*j));
                                StreamJudgement {
                                    service: id,
                                    request: Hash([request; 32]),
                                    own: answer(i),
                                    agree: agree.into_iter().map(answer).collect(),
                                    differ: differ.into_iter().map(answer).collect(),
                                }
                                .sign(super::support::CHAIN, &Market::key_of(*a))
                            }).collect();
                            txs.push(m.tx(&requester(), TxKind::JudgeResponses { service: id, responses, judgements }));
                        } else {
                            txs.push(m.tx(&requester(), TxKind::DisputeResponses { service: id, responses }));
                        }
                    }
                }
                Op::Fund { service } => {
                    if let Some(id) = services.get(service % services.len().max(1)) {
                        txs.push(m.tx(&requester(), TxKind::FundService { service: *id, amount: Amount::grid(1) }));
                    }
                }
                Op::Close { service } => {
                    if let Some(id) = services.get(service % services.len().max(1)) {
                        txs.push(m.tx(&requester(), TxKind::CloseService { service: *id }));
                    }
                }
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
