//! Checkpointed runs (training): the executor binds every checkpoint, the ledger then draws
//! the segments its council replays, and the task is decided on the replays.
//!
//! Byzantine doubles: `skipping_trainer` (its checkpoints do not follow from the segments
//! before them), `unbinding_trainer` (commits but never binds its checkpoints),
//! `checkpoint_copier` (a member that reveals one of the executor's checkpoints as its
//! replay), `eager_member` (commits before anything is drawn), `swapping_trainer` (reveals
//! an output other than its last checkpoint).

use gridwork_protocol::{Event, Phase, TxError};
use gridwork_types::{Address, Equivalence, Hash, Keypair, Prescription, RunEnd, Segments, TxKind};

use super::support::{deposit_for, prescription, provider, Market, PROVIDERS};

const COUNT: u32 = 8;

fn training(count: u32, replayed: u32) -> Prescription {
    Prescription {
        segments: Some(Segments { count, replayed }),
        ..prescription(1, 3, Equivalence::ExactHash {})
    }
}

/// The executor's checkpoints of attempt `attempt`: `COUNT` distinct ids.
fn checkpoints(attempt: u8) -> Vec<Hash> {
    (1..=COUNT as u8)
        .map(|k| Hash([attempt * 20 + k; 32]))
        .collect()
}

fn bind(m: &mut Market, job: Hash, who: &Keypair, ids: Vec<Hash>) -> Vec<Event> {
    let attempt = m.task(job, 0).attempt;
    let tx = m.tx(
        who,
        TxKind::Checkpoints {
            job,
            task: 0,
            attempt,
            checkpoints: ids,
            failed: false,
        },
    );
    m.block(vec![tx])
}

/// The executor commits to its run (its output the last of `ids`, ended as `ended`), then
/// binds `ids`; the replay is drawn at the next block. The events of both.
fn commit_and_bind(
    m: &mut Market,
    job: Hash,
    executor: &Keypair,
    ids: &[Hash],
    ended: RunEnd,
    failed: bool,
) -> Vec<Event> {
    m.commit_runs(job, 0, &[(executor.clone(), *ids.last().unwrap(), ended)]);
    let attempt = m.task(job, 0).attempt;
    let tx = m.tx(
        executor,
        TxKind::Checkpoints {
            job,
            task: 0,
            attempt,
            checkpoints: ids.to_vec(),
            failed,
        },
    );
    m.block(vec![tx])
}

/// A job in 8 segments (2 replayed) with an executor and a council of three.
fn won(m: &mut Market) -> (Hash, Keypair, Vec<Keypair>) {
    let p = training(COUNT, 2);
    let job = m.submit(p.clone(), deposit_for(&p));
    let executor = provider(1);
    let council = m.win(job, 0, &executor);
    assert_eq!(council.len(), 3);
    (job, executor, council)
}

fn addresses(keys: &[&Keypair]) -> Vec<Address> {
    keys.iter().map(|k| k.address()).collect()
}

/// Every party names every other as equivalent; the events of the judgements.
fn all_agree(m: &mut Market, job: Hash, executor: &Keypair, council: &[Keypair]) -> Vec<Event> {
    let everyone: Vec<&Keypair> = std::iter::once(executor).chain(council.iter()).collect();
    let mut events = Vec::new();
    for k in &everyone {
        let others: Vec<&Keypair> = everyone
            .iter()
            .copied()
            .filter(|o| o.address() != k.address())
            .collect();
        events.extend(m.judge(job, 0, k, &addresses(&others)));
    }
    events
}

/// Every council member names the other members, not the executor; the events.
fn members_agree(m: &mut Market, job: Hash, council: &[Keypair]) -> Vec<Event> {
    let mut events = Vec::new();
    for k in council {
        let others: Vec<&Keypair> = council
            .iter()
            .filter(|o| o.address() != k.address())
            .collect();
        events.extend(m.judge(job, 0, k, &addresses(&others)));
    }
    events
}

/// What the executor was paid when the task settled.
fn executor_paid(events: &[Event]) -> u128 {
    events
        .iter()
        .find_map(|e| match e {
            Event::TaskSettled { paid, .. } => Some(paid.0),
            _ => None,
        })
        .expect("settled")
}

#[test]
fn an_honest_trainer_is_settled_on_replays_of_drawn_segments_and_paid_for_its_whole_run() {
    let mut m = Market::new();
    let (job, executor, council) = won(&mut m);
    // The executor has a task deadline for each of its 8 segments.
    let deadline = prescription(1, 3, Equivalence::ExactHash {})
        .instructions
        .task_deadline_ms;
    assert_eq!(m.task(job, 0).deadline_ms, m.now + 8 * deadline);
    let eager_member = &council[0];
    let err = m.refused(
        eager_member,
        TxKind::Commit {
            job,
            task: 0,
            attempt: 0,
            commitment: Hash([1; 32]),
        },
    );
    assert!(matches!(err, TxError::ReplayNotDrawn { .. }), "{err}");

    let ids = checkpoints(0);
    let events = commit_and_bind(&mut m, job, &executor, &ids, RunEnd::SUCCESS, false);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::CheckpointsBound { count: COUNT, .. })));
    // The draw comes at the next block (the harness makes it at once, as the producer does).
    let drawn = events
        .iter()
        .find_map(|e| match e {
            Event::ReplayDrawn { segments, .. } => Some(segments.clone()),
            _ => None,
        })
        .expect("the replay is drawn at the next block");
    let t = m.task(job, 0);
    assert_eq!(t.replay, drawn);
    assert_eq!(drawn.len(), 2);
    // The members have a task deadline for each segment they replay, as the executor had.
    assert_eq!(t.deadline_ms, m.now + 2 * deadline);
    assert!(drawn[0] < drawn[1] && drawn[1] < COUNT, "{drawn:?}");
    assert_eq!(t.checkpoints, ids);

    // Members' replays reach the same checkpoints; sealed under their own keys, their trees
    // have ids of their own (equal among themselves: the same replay, the same key).
    let last = *ids.last().unwrap();
    let replay = Hash([77; 32]);
    let runs: Vec<_> = council.iter().map(|k| (k.clone(), replay)).collect();
    m.commit_all(job, 0, &runs);
    // The executor claims 50 s; each member replayed 2 of 8 segments in 10 s, which stands
    // for 40 s of the whole run.
    m.reveal_claiming(job, 0, &executor, last, 50);
    for k in &council {
        m.reveal_claiming(job, 0, k, replay, 10);
    }
    // Never decided by ids, even under exact-hash: a replay is not the executor's output.
    assert_eq!(m.task(job, 0).phase, Phase::Judging);
    let events = all_agree(&mut m, job, &executor, &council);
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Settled);
    assert_eq!(t.result, Some(last));
    let paid = executor_paid(&events);
    assert_eq!(paid, 40 * t.price.0, "40 s of the claimed 50");
}

#[test]
fn a_skipping_trainer_is_slashed_when_the_council_replays_a_segment_it_faked() {
    let mut m = Market::new();
    let (job, skipping_trainer, council) = won(&mut m);
    let ids = checkpoints(0);
    commit_and_bind(&mut m, job, &skipping_trainer, &ids, RunEnd::SUCCESS, false);
    let last = *ids.last().unwrap();
    let replay = Hash([78; 32]);
    let runs: Vec<_> = council.iter().map(|k| (k.clone(), replay)).collect();
    m.commit_all(job, 0, &runs);
    let stake = m.stake(&skipping_trainer.address());
    m.reveal(job, 0, &skipping_trainer, last);
    for k in &council {
        m.reveal(job, 0, k, replay);
    }
    // The members' replays of a drawn segment agree with each other and not with the
    // checkpoint the trainer bound for it; the trainer names them all (it has nothing to
    // lose by lying).
    m.judge(
        job,
        0,
        &skipping_trainer,
        &addresses(&council.iter().collect::<Vec<_>>()),
    );
    let mut events = Vec::new();
    events.extend(members_agree(&mut m, job, &council));
    assert!(
        events.iter().any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == skipping_trainer.address())),
        "{events:?}"
    );
    assert!(m.stake(&skipping_trainer.address()) < stake);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 1));
    // A new attempt binds new checkpoints and draws anew; the old ones are refused, so a
    // reopened task cannot be offered them again for a luckier draw.
    assert!(t.checkpoints.is_empty() && t.replay.is_empty());
    let sybil = provider(5);
    m.win(job, 0, &sybil);
    m.commit_runs(job, 0, &[(sybil.clone(), Hash([99; 32]), RunEnd::SUCCESS)]);
    let err = m.refused(
        &sybil,
        TxKind::Checkpoints {
            job,
            task: 0,
            attempt: 1,
            checkpoints: ids.clone(),
            failed: false,
        },
    );
    assert!(
        matches!(err, TxError::CopiedResult { output } if output == ids[0]),
        "{err}"
    );
}

#[test]
fn an_unbinding_trainer_is_penalised_as_if_it_never_committed() {
    let mut m = Market::new();
    let (job, unbinding_trainer, _council) = won(&mut m);
    let last = *checkpoints(0).last().unwrap();
    m.commit_all(job, 0, &[(unbinding_trainer.clone(), last)]);
    let stake = m.stake(&unbinding_trainer.address());
    let deadline = m.task(job, 0).deadline_ms;
    let events = m.at(deadline + 1, vec![]);
    assert!(
        events.iter().any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == unbinding_trainer.address())),
        "{events:?}"
    );
    assert!(m.stake(&unbinding_trainer.address()) < stake);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 1));
}

#[test]
fn checkpoints_and_reveals_that_cannot_be_the_runs_are_refused() {
    let mut m = Market::new();
    // A job that is not checkpointed takes no checkpoints.
    let plain = prescription(1, 1, Equivalence::ExactHash {});
    let plain_job = m.submit(plain.clone(), deposit_for(&plain));
    let executor = provider(1);
    m.win(plain_job, 0, &executor);
    let err = m.refused(
        &executor,
        TxKind::Checkpoints {
            job: plain_job,
            task: 0,
            attempt: 0,
            checkpoints: checkpoints(0),
            failed: false,
        },
    );
    assert!(matches!(err, TxError::NotCheckpointed { .. }), "{err}");

    let (job, executor, council) = {
        let p = training(COUNT, 2);
        let job = m.submit(p.clone(), deposit_for(&p));
        let executor = provider(2);
        let council = m.win(job, 0, &executor);
        (job, executor, council)
    };
    let send = |m: &mut Market, who: &Keypair, ids: Vec<Hash>| {
        m.refused(
            who,
            TxKind::Checkpoints {
                job,
                task: 0,
                attempt: 0,
                checkpoints: ids,
                failed: false,
            },
        )
    };
    // swapping_trainer: commits to an output other than its last checkpoint.
    let swapped = Hash([9; 32]);
    let err = send(&mut m, &executor, checkpoints(0));
    assert!(
        matches!(&err, TxError::BadCheckpoints { reason } if reason.contains("commit to the run's output first")),
        "{err}"
    );
    m.commit_runs(job, 0, &[(executor.clone(), swapped, RunEnd::SUCCESS)]);
    let short = checkpoints(0)[..3].to_vec();
    let err = send(&mut m, &executor, short);
    assert!(
        matches!(&err, TxError::BadCheckpoints { reason } if reason.contains("8 segments")),
        "{err}"
    );
    let mut twice = checkpoints(0);
    twice[5] = twice[2];
    let err = send(&mut m, &executor, twice);
    assert!(
        matches!(&err, TxError::BadCheckpoints { reason } if reason.contains("checkpoint 6 is checkpoint 3")),
        "{err}"
    );
    let err = send(&mut m, &council[0], checkpoints(0));
    assert!(matches!(err, TxError::NotAssigned { .. }), "{err}");
    bind(&mut m, job, &executor, checkpoints(0));
    let err = send(&mut m, &executor, checkpoints(1));
    assert!(matches!(err, TxError::AlreadyDone { .. }), "{err}");

    // The swapping trainer's reveal is refused, so it cannot deliver a result the replays
    // never vouched for.
    let ids = checkpoints(0);
    let replay = Hash([79; 32]);
    let runs: Vec<_> = council.iter().map(|k| (k.clone(), replay)).collect();
    m.commit_all(job, 0, &runs);
    let tx = m.reveal_tx(
        job,
        0,
        &executor,
        swapped,
        10,
        gridwork_types::RunEnd::SUCCESS,
    );
    let err = m.refused_signed(tx);
    assert!(
        matches!(&err, TxError::BadCheckpoints { reason } if reason.contains(&ids[7].to_string())),
        "{err}"
    );
}

#[test]
fn a_checkpoint_copier_cannot_reveal_the_executors_checkpoint_as_its_replay() {
    let mut m = Market::new();
    let (job, executor, council) = won(&mut m);
    let ids = checkpoints(0);
    commit_and_bind(&mut m, job, &executor, &ids, RunEnd::SUCCESS, false);
    let drawn = m.task(job, 0).replay;
    // The copier names the checkpoint the executor bound for the end of a drawn segment.
    let copied = ids[drawn[0] as usize];
    let checkpoint_copier = &council[0];
    let last = *ids.last().unwrap();
    let replay = Hash([80; 32]);
    let mut runs = vec![(checkpoint_copier.clone(), copied)];
    runs.extend(council[1..].iter().map(|k| (k.clone(), replay)));
    m.commit_all(job, 0, &runs);
    m.reveal(job, 0, &executor, last);
    let tx = m.reveal_tx(
        job,
        0,
        checkpoint_copier,
        copied,
        10,
        gridwork_types::RunEnd::SUCCESS,
    );
    let err = m.refused_signed(tx);
    assert!(
        matches!(err, TxError::CopiedResult { output } if output == copied),
        "{err}"
    );
}

#[test]
fn a_silent_member_is_replaced_by_one_that_replays_the_same_segments() {
    let mut m = Market::new();
    let (job, executor, council) = won(&mut m);
    let ids = checkpoints(0);
    commit_and_bind(&mut m, job, &executor, &ids, RunEnd::SUCCESS, false);
    let drawn = m.task(job, 0).replay;
    let replay = Hash([81; 32]);
    let runs: Vec<_> = council[1..].iter().map(|k| (k.clone(), replay)).collect();
    m.commit_all(job, 0, &runs);
    // The others stay online (workers heartbeat); the draw takes online providers only.
    let beats: Vec<_> = (2..=PROVIDERS)
        .map(|i| m.tx(&provider(i), TxKind::Heartbeat))
        .collect();
    let deadline = m.task(job, 0).deadline_ms;
    m.at(deadline - 1_000, beats);
    let events = m.at(deadline + 1, vec![]);
    assert!(
        events.iter().any(|e| matches!(e, Event::CouncilRedrawn { replaced, .. } if replaced == &vec![council[0].address()])),
        "{events:?}"
    );
    let t = m.task(job, 0);
    assert_eq!(t.phase, Phase::Committing);
    assert_eq!(t.replay, drawn, "the replay stands for the new member");
    let newcomer = t
        .council
        .iter()
        .find(|a| !council.iter().any(|k| k.address() == **a))
        .map(|a| Market::key_of(*a))
        .expect("a new member");
    m.commit_all(job, 0, &[(newcomer, replay)]);
    assert_eq!(m.task(job, 0).phase, Phase::Revealing);
}

#[test]
fn the_replay_is_drawn_only_after_the_checkpoints_are_bound_and_differs_between_tasks() {
    let mut m = Market::new();
    let p = Prescription {
        instructions: gridwork_types::Instructions {
            items: 6,
            ..training(COUNT, 1).instructions
        },
        ..training(COUNT, 1)
    };
    let job = m.submit(p.clone(), deposit_for(&p));
    let mut draws = std::collections::BTreeSet::new();
    for task in 0..6 {
        let executor = provider(1 + task % 2);
        m.win(job, task, &executor);
        assert!(m.task(job, task).replay.is_empty());
        let attempt = m.task(job, task).attempt;
        let ids = checkpoints(task as u8);
        let commit = m.tx(
            &executor,
            TxKind::Commit {
                job,
                task,
                attempt,
                commitment: gridwork_types::commitment(
                    &ids[7],
                    &RunEnd::SUCCESS,
                    &Hash([1; 32]),
                    &executor.address(),
                ),
            },
        );
        let bind = m.tx(
            &executor,
            TxKind::Checkpoints {
                job,
                task,
                attempt,
                checkpoints: ids,
                failed: false,
            },
        );
        m.block(vec![commit, bind]);
        let t = m.task(job, task);
        assert_eq!(t.replay.len(), 1);
        draws.insert(t.replay[0]);
    }
    assert!(draws.len() > 1, "six tasks drew {draws:?}");
}

#[test]
fn a_checkpointed_job_that_cannot_be_checked_is_refused_with_the_field_to_fix() {
    let mut m = Market::new();
    for (segments, council, field) in [
        (
            Segments {
                count: 1,
                replayed: 1,
            },
            3,
            "segments.count",
        ),
        (
            Segments {
                count: 257,
                replayed: 1,
            },
            3,
            "segments.count",
        ),
        (
            Segments {
                count: 8,
                replayed: 0,
            },
            3,
            "segments.replayed",
        ),
        (
            Segments {
                count: 8,
                replayed: 9,
            },
            3,
            "segments.replayed",
        ),
        (
            Segments {
                count: 8,
                replayed: 2,
            },
            0,
            "instructions.council_size",
        ),
    ] {
        let p = Prescription {
            segments: Some(segments),
            ..prescription(1, council, Equivalence::ExactHash {})
        };
        let err = m.refused_submission(p);
        assert!(
            matches!(&err, TxError::BadPrescription { field: f, .. } if *f == field),
            "{segments:?}: {err}"
        );
    }
}

/// The executor's run failed in its third segment: it binds the three checkpoints it has and
/// says so; the council replays that segment alone.
fn failed_run(m: &mut Market) -> (Hash, Keypair, Vec<Keypair>, Hash) {
    let (job, executor, council) = won(m);
    let ids = checkpoints(0)[..3].to_vec();
    commit_and_bind(m, job, &executor, &ids, RunEnd::Exit { code: 1 }, true);
    let t = m.task(job, 0);
    assert!(t.run_failed);
    // The failed segment, and two drawn among the two before it, as for any run.
    assert_eq!(t.replay, vec![0, 1, 2]);
    (job, executor, council, ids[2])
}

#[test]
fn a_failed_run_is_replayed_at_its_failing_segment_and_paid_for_that_segment() {
    let mut m = Market::new();
    let (job, executor, council, last) = failed_run(&mut m);
    let failure = RunEnd::Exit { code: 1 };
    let replay = Hash([82; 32]);
    let runs: Vec<_> = council
        .iter()
        .map(|k| (k.clone(), replay, failure))
        .collect();
    m.commit_runs(job, 0, &runs);
    let tx = m.reveal_tx(job, 0, &executor, last, 50, failure);
    m.block(vec![tx]);
    for k in &council {
        let tx = m.reveal_tx(job, 0, k, replay, 10, failure);
        m.block(vec![tx]);
    }
    let events = all_agree(&mut m, job, &executor, &council);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.ended), (Phase::Settled, Some(failure)));
    let paid = executor_paid(&events);
    // The 10 s the members took for the three segments it ran.
    assert_eq!(paid, 10 * t.price.0);
}

#[test]
fn a_faked_failure_is_rejected_when_the_replay_of_its_segment_succeeds() {
    let mut m = Market::new();
    // faking_trainer: says its run failed early, to be paid for little work it never did.
    let (job, faking_trainer, council, last) = failed_run(&mut m);
    let failure = RunEnd::Exit { code: 1 };
    let replay = Hash([83; 32]);
    let runs: Vec<_> = council
        .iter()
        .map(|k| (k.clone(), replay, RunEnd::SUCCESS))
        .collect();
    m.commit_runs(job, 0, &runs);
    let tx = m.reveal_tx(job, 0, &faking_trainer, last, 50, failure);
    m.block(vec![tx]);
    for k in &council {
        m.reveal(job, 0, k, replay);
    }
    let mut events = m.judge(job, 0, &faking_trainer, &[]);
    events.extend(members_agree(&mut m, job, &council));
    assert!(
        events.iter().any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == faking_trainer.address())),
        "{events:?}"
    );
    assert_eq!(m.task(job, 0).attempt, 1);
}

/// `failed` must match how the run ended: a run bound as failed cannot reveal a success (it
/// would settle a fraction of the training as the whole, checked on its last segment), and
/// a run bound whole cannot reveal a failure.
#[test]
fn a_run_bound_as_failed_cannot_reveal_a_success_nor_a_whole_one_a_failure() {
    for (ended, failed, bound) in [
        (RunEnd::SUCCESS, true, 1),
        (RunEnd::Exit { code: 2 }, false, 8),
    ] {
        let mut m = Market::new();
        let (job, executor, council) = won(&mut m);
        let ids = checkpoints(0)[..bound].to_vec();
        commit_and_bind(&mut m, job, &executor, &ids, ended, failed);
        let runs: Vec<_> = council
            .iter()
            .map(|k| (k.clone(), Hash([84; 32])))
            .collect();
        m.commit_all(job, 0, &runs);
        let tx = m.reveal_tx(job, 0, &executor, *ids.last().unwrap(), 10, ended);
        let err = m.refused_signed(tx);
        assert!(
            matches!(&err, TxError::BadCheckpoints { reason } if reason.contains("bound as")),
            "{err}"
        );
    }
}

/// `walking_trainer`: binds, sees the draw, and does not reveal (a faked segment was drawn).
/// That costs what being caught costs, not a missed deadline's smaller penalty.
#[test]
fn a_trainer_that_walks_away_after_the_draw_pays_what_being_caught_costs() {
    let mut m = Market::new();
    let (job, walking_trainer, council) = won(&mut m);
    let ids = checkpoints(0);
    commit_and_bind(&mut m, job, &walking_trainer, &ids, RunEnd::SUCCESS, false);
    let runs: Vec<_> = council
        .iter()
        .map(|k| (k.clone(), Hash([85; 32])))
        .collect();
    m.commit_all(job, 0, &runs);
    assert_eq!(m.task(job, 0).phase, Phase::Revealing);
    let stake = m.stake(&walking_trainer.address());
    let deadline = m.task(job, 0).deadline_ms;
    let events = m.at(deadline + 1, vec![]);
    assert!(
        events.iter().any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == walking_trainer.address())),
        "{events:?}"
    );
    let bps = u128::from(super::support::params().slash_bps);
    assert_eq!(
        m.stake(&walking_trainer.address()),
        stake - stake * bps / 10_000
    );
    assert_eq!(m.task(job, 0).attempt, 1);
}

/// `splitting_trainer`: a segment it faked is drawn, so it shares the checkpoint that segment
/// starts from with two members and not the third, hoping the council splits (two replays
/// against it, one that could not start) and the task reopens unpunished. A replay that could
/// not start counts against the executor: a clear majority rejects it.
#[test]
fn a_trainer_that_keeps_its_checkpoints_from_some_members_is_rejected() {
    let mut m = Market::new();
    let (job, splitting_trainer, council) = won(&mut m);
    let ids = checkpoints(0);
    commit_and_bind(
        &mut m,
        job,
        &splitting_trainer,
        &ids,
        RunEnd::SUCCESS,
        false,
    );
    let replay = Hash([86; 32]);
    let left_out = Hash([87; 32]);
    let runs = vec![
        (council[0].clone(), replay, RunEnd::SUCCESS),
        (council[1].clone(), replay, RunEnd::SUCCESS),
        (council[2].clone(), left_out, RunEnd::NotStarted {}),
    ];
    m.commit_runs(job, 0, &runs);
    let stake = m.stake(&splitting_trainer.address());
    m.reveal(job, 0, &splitting_trainer, *ids.last().unwrap());
    for (k, out, ended) in &runs {
        let tx = m.reveal_tx(job, 0, k, *out, 10, *ended);
        m.block(vec![tx]);
    }
    let everyone: Vec<&Keypair> = std::iter::once(&splitting_trainer)
        .chain(council.iter())
        .collect();
    m.judge(job, 0, &splitting_trainer, &addresses(&everyone[1..]));
    m.judge(job, 0, &council[0], &addresses(&[&council[1]]));
    m.judge(job, 0, &council[1], &addresses(&[&council[0]]));
    let events = m.judge(job, 0, &council[2], &[]);
    assert!(
        events.iter().any(|e| matches!(e, Event::Slashed { provider, .. } if *provider == splitting_trainer.address())),
        "{events:?}"
    );
    assert!(m.stake(&splitting_trainer.address()) < stake);
    let t = m.task(job, 0);
    assert_eq!((t.phase, t.attempt), (Phase::Bidding, 1), "{}", t.note);
}

/// `crying_member`: the executor shared everything, and one member says its replay could not
/// start, to have the executor rejected. The two that replayed agree with the executor: a
/// clear majority accepts, and the crying member is slashed as the minority.
#[test]
fn a_member_that_falsely_says_it_could_not_start_is_outvoted() {
    let mut m = Market::new();
    let (job, executor, council) = won(&mut m);
    let ids = checkpoints(0);
    commit_and_bind(&mut m, job, &executor, &ids, RunEnd::SUCCESS, false);
    let replay = Hash([88; 32]);
    let crying_member = &council[2];
    let runs = vec![
        (council[0].clone(), replay, RunEnd::SUCCESS),
        (council[1].clone(), replay, RunEnd::SUCCESS),
        (crying_member.clone(), Hash([89; 32]), RunEnd::NotStarted {}),
    ];
    m.commit_runs(job, 0, &runs);
    m.reveal(job, 0, &executor, *ids.last().unwrap());
    for (k, out, ended) in &runs {
        let tx = m.reveal_tx(job, 0, k, *out, 10, *ended);
        m.block(vec![tx]);
    }
    m.judge(job, 0, &executor, &addresses(&[&council[0], &council[1]]));
    m.judge(job, 0, &council[0], &addresses(&[&executor, &council[1]]));
    m.judge(job, 0, &council[1], &addresses(&[&executor, &council[0]]));
    let events = m.judge(job, 0, crying_member, &[]);
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Slashed { provider, .. } if *provider == crying_member.address())
        ),
        "{events:?}"
    );
    assert_eq!(m.task(job, 0).phase, Phase::Settled);
}
