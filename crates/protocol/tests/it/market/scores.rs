//! CPU scores: declared with a provider's hardware, required by jobs, spot-checked by the
//! councils against run times. `inflated_scorer` declares a score ten times its machine's.

use gridwork_protocol::{Event, Phase, TxError, SCORE_STRIKES};
use gridwork_types::{
    commitment, Amount, Equivalence, Hash, Keypair, Prescription, RunEnd, TxKind, GRID,
};

use super::support::{deposit_for, gpu_box, prescription, provider, salt, Market};

/// Re-registers provider `i` declaring `score`.
fn declare(m: &mut Market, i: u32, score: u32) {
    let tx = m.tx(
        &provider(i),
        TxKind::RegisterProvider {
            hardware: gridwork_types::Hardware {
                cpu_score: score,
                ..gpu_box()
            },
            owner: None,
        },
    );
    m.block(vec![tx]);
}

/// A job of one task without GPUs (its run time is the CPUs') that requires a CPU score of
/// 1,000, council of three, ten minutes a task.
fn cpu_job() -> Prescription {
    let mut p = prescription(1, 3, Equivalence::ExactHash {});
    p.instructions.requirements.gpu_vendor = None;
    p.instructions.requirements.min_gpus = 0;
    p.instructions.requirements.min_cpu_score = 1_000;
    p.instructions.task_deadline_ms = 600_000;
    p
}

/// Every provider's heartbeat: all online (the runs before took minutes).
fn heartbeats(m: &mut Market) {
    let beats = (1..=super::support::PROVIDERS)
        .map(|i| m.tx(&provider(i), TxKind::Heartbeat))
        .collect();
    m.block(beats);
}

/// Runs one task of `p` to its end: `executor` wins it and commits `seconds` later (what the
/// ledger sees), the council agrees with it and reports `member_seconds` each. The events of
/// the reveals.
fn run(
    m: &mut Market,
    p: Prescription,
    executor: &Keypair,
    seconds: u64,
    member_seconds: u64,
) -> Vec<Event> {
    heartbeats(m);
    let job = m.submit(p.clone(), deposit_for(&p));
    let council = m.win(job, 0, executor);
    let closed = m.task(job, 0).phase_started_ms;
    let out = Hash([3; 32]);
    let commits = std::iter::once(executor)
        .chain(council.iter())
        .map(|k| {
            let c = commitment(&out, &RunEnd::SUCCESS, &salt(k), &k.address());
            m.tx(
                k,
                TxKind::Commit {
                    job,
                    task: 0,
                    attempt: 0,
                    commitment: c,
                },
            )
        })
        .collect();
    let ev = m.at(closed + seconds * 1000, commits);
    eprintln!("COMMIT {ev:?}");
    // Whatever it claims: the check judges the time the ledger saw.
    let mut events = m.reveal_claiming(job, 0, executor, out, 1);
    for k in &council {
        events.extend(m.reveal_claiming(job, 0, k, out, member_seconds));
    }
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Settled, "{} {events:?}", t.note);
    events
}

fn lost(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::ScoreLost { .. }))
}

#[test]
fn an_inflated_scorer_whose_runs_are_far_slower_loses_its_score_for_good() {
    let mut m = Market::new();
    let inflated_scorer = provider(1);
    declare(&mut m, 1, 10_000);
    for i in 2..=6 {
        declare(&mut m, i, 1_000);
    }
    // A GPU job's time is its GPUs', and a job that needs no score does not rely on it: no
    // check, whatever the times.
    let mut gpu = cpu_job();
    gpu.instructions.requirements.min_gpus = 1;
    let mut unscored = cpu_job();
    unscored.instructions.requirements.min_cpu_score = 0;
    for p in [gpu, unscored] {
        assert!(!lost(&run(&mut m, p, &inflated_scorer, 200, 100)));
    }
    assert_eq!(
        m.state
            .provider(&inflated_scorer.address())
            .unwrap()
            .score_strikes,
        0
    );
    // Members of score 1,000 took 100 s: a machine of 10,000 would take 10 s; it took 200 s,
    // as the ledger saw (its claim of 1 s changes nothing). Strikes, then the score.
    for n in 1..=SCORE_STRIKES {
        let events = run(&mut m, cpu_job(), &inflated_scorer, 200, 100);
        assert_eq!(lost(&events), n == SCORE_STRIKES, "{events:?}");
    }
    let p = m.state.provider(&inflated_scorer.address()).unwrap();
    assert!(p.score_lost);
    assert_eq!(p.hardware.cpu_score, 0);
    // Declaring it again does not bring it back.
    declare(&mut m, 1, 10_000);
    assert_eq!(
        m.state
            .provider(&inflated_scorer.address())
            .unwrap()
            .hardware
            .cpu_score,
        0
    );
}

#[test]
fn an_honest_score_survives_its_spot_checks_and_does_not_change_under_a_task() {
    let mut m = Market::new();
    declare(&mut m, 1, 2_000);
    for i in 2..=6 {
        declare(&mut m, i, 1_000);
    }
    // Members of half its score took 100 s: 50 predicted, 120 is within the slack (a busy
    // machine, transfers). A slow run strikes once; a good one clears it. A prediction under
    // ten seconds is not judged at all (start-up and transfers dominate it).
    for (seconds, members, strikes) in [(120, 100, 0), (200, 100, 1), (60, 100, 0), (100, 8, 0)] {
        assert!(!lost(&run(
            &mut m,
            cpu_job(),
            &provider(1),
            seconds,
            members
        )));
        assert_eq!(
            m.state
                .provider(&provider(1).address())
                .unwrap()
                .score_strikes,
            strikes
        );
    }
    // A provider at work cannot change its score (to dodge the check, or a member to steer it).
    heartbeats(&mut m);
    let p = cpu_job();
    let job = m.submit(p.clone(), deposit_for(&p));
    m.win(job, 0, &provider(1));
    assert_eq!(m.task(job, 0).executor, Some(provider(1).address()));
    declare(&mut m, 1, 0);
    assert_eq!(
        m.state
            .provider(&provider(1).address())
            .unwrap()
            .hardware
            .cpu_score,
        2_000
    );
}

#[test]
fn a_job_that_needs_a_score_is_run_only_by_providers_that_keep_one() {
    let mut m = Market::new();
    declare(&mut m, 1, 1_000);
    for i in 2..=6 {
        declare(&mut m, i, 5_000);
    }
    let mut p = cpu_job();
    p.instructions.requirements.min_cpu_score = 2_000;
    let job = m.submit(p.clone(), deposit_for(&p));
    let bid = |price| TxKind::Bid {
        job,
        task: 0,
        price: Amount(price),
        cached: false,
    };
    let err = m.refused(&provider(1), bid(GRID / 200));
    assert!(
        matches!(&err, TxError::HardwareUnfit { reason } if reason.contains("CPU score of 2000; has 1000")),
        "{err}"
    );
    // Provider 2 loses its score, and with it the jobs that need one.
    for _ in 0..SCORE_STRIKES {
        run(&mut m, cpu_job(), &provider(2), 500, 100);
    }
    assert!(m.state.provider(&provider(2).address()).unwrap().score_lost);
    let err = m.refused(&provider(2), bid(GRID / 200));
    assert!(matches!(err, TxError::HardwareUnfit { .. }), "{err}");
    let council = m.win(job, 0, &provider(3));
    assert!(council.iter().all(|k| k.address() != provider(2).address()));
}
