//! Councils: silent, lazy and dissenting members, and who may sit on one (owners, distinct owners).

use gridwork_protocol::{dev_keypair, Event, Phase};
use gridwork_types::{Address, Amount, Equivalence, Hash, Keypair, SignedTx, TxKind, GRID};

use super::support::{approve, deposit_for, params, prescription, provider, Market, PROVIDERS};

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
            cached: false,
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
            cached: false,
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
            cached: false,
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
            cached: false,
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
            cached: false,
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
            cached: false,
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
