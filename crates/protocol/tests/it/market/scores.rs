//! CPU scores: declared with a provider's hardware, required by jobs, spot-checked by the
//! councils against run times. `inflated_scorer` declares a score ten times its machine's.

use gridwork_protocol::{Event, Phase, TxError};
use gridwork_types::{Amount, Equivalence, Hash, Keypair, Prescription, TxKind, GRID};

use super::support::{deposit_for, gpu_box, prescription, provider, Market};

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

/// A job of one task without GPUs (its run time is the CPUs'), council of three.
fn cpu_job() -> Prescription {
    let mut p = prescription(1, 3, Equivalence::ExactHash {});
    p.instructions.requirements.gpu_vendor = None;
    p.instructions.requirements.min_gpus = 0;
    p
}

/// Runs one task of `p` to its end: `executor` wins it and reports `seconds`, the council
/// agrees with it and reports `member_seconds` each. The events of the reveals.
fn run(
    m: &mut Market,
    p: Prescription,
    executor: &Keypair,
    seconds: u64,
    member_seconds: u64,
) -> Vec<Event> {
    let job = m.submit(p.clone(), deposit_for(&p));
    let council = m.win(job, 0, executor);
    let out = Hash([3; 32]);
    let mut all = vec![(executor.clone(), out)];
    all.extend(council.iter().map(|k| (k.clone(), out)));
    m.commit_all(job, 0, &all);
    let mut events = m.reveal_claiming(job, 0, executor, out, seconds);
    for k in &council {
        events.extend(m.reveal_claiming(job, 0, k, out, member_seconds));
    }
    assert_eq!(m.task(job, 0).phase, Phase::Settled);
    events
}

#[test]
fn an_inflated_scorer_whose_runs_are_far_slower_loses_its_score_for_good() {
    let mut m = Market::new();
    let inflated_scorer = provider(1);
    declare(&mut m, 1, 10_000);
    for i in 2..=6 {
        declare(&mut m, i, 1_000);
    }
    // A GPU job's time is its GPUs': no check, whatever the times.
    let events = run(
        &mut m,
        prescription(1, 3, Equivalence::ExactHash {}),
        &inflated_scorer,
        100,
        50,
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::ScoreLost { .. })),
        "{events:?}"
    );
    // Members of score 1,000 took 50 s: a machine of 10,000 would take 5 s; it took 100.
    let events = run(&mut m, cpu_job(), &inflated_scorer, 100, 50);
    assert!(
        events.iter().any(|e| matches!(e, Event::ScoreLost { provider, claimed: 10_000, seconds: 100, predicted: 5 } if *provider == inflated_scorer.address())),
        "{events:?}"
    );
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
fn an_honest_score_survives_its_spot_checks() {
    let mut m = Market::new();
    declare(&mut m, 1, 2_000);
    for i in 2..=6 {
        declare(&mut m, i, 1_000);
    }
    // Members of half its score took 100 s: 50 predicted; 60 is within the slack. So is a
    // short run, however slow (start-up dominates it).
    for (seconds, members) in [(60, 100), (9, 1)] {
        let events = run(&mut m, cpu_job(), &provider(1), seconds, members);
        assert!(
            !events.iter().any(|e| matches!(e, Event::ScoreLost { .. })),
            "{events:?}"
        );
    }
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
    // Provider 2 loses its score on a CPU job, and with it the jobs that need one.
    run(&mut m, cpu_job(), &provider(2), 100, 20);
    assert!(m.state.provider(&provider(2).address()).unwrap().score_lost);
    let err = m.refused(&provider(2), bid(GRID / 200));
    assert!(matches!(err, TxError::HardwareUnfit { .. }), "{err}");
    let council = m.win(job, 0, &provider(3));
    assert!(council.iter().all(|k| k.address() != provider(2).address()));
}
