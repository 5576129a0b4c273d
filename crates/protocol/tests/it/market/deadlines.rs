//! Deadlines and time bounds: vanishing executors and bidders, refunds, attempts, cancels and a
//! chain that was down.

use gridwork_protocol::{Event, Params, Phase, TxError};
use gridwork_types::{Amount, Equivalence, Hash, Payment, TxKind, GRID};

use super::support::{
    deposit_for, params, prescription, provider, requester, state_fee, Market, PROVIDERS,
};

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
            cached: false,
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
            cached: false,
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
                cached: false,
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
            cached: false,
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
            cached: false,
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
                cached: false,
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
            cached: false,
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
            cached: false,
        },
    );
    m.block(vec![bid]);
    assert_eq!(m.task(job, 0).phase, Phase::Committing);
}
