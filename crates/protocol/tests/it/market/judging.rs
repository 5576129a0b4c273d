//! Judging an executor: liars caught and slashed, nondeterministic programs, and executors silent
//! at judging.

use gridwork_protocol::{Event, Phase, TxError};
use gridwork_types::RunEnd;
use gridwork_types::{Address, Amount, Equivalence, Hash, Keypair, TxKind, GRID};

use super::support::{
    deposit_for, params, prescription, provider, requester, salt, state_fee, Market, PROVIDERS,
};

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
            cached: false,
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
            cached: false,
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
            ended: RunEnd::SUCCESS,
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
            cached: false,
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
