//! Attacks on the market's incentives: sybil farming, copied results and commitments, ground draws,
//! requesters that make councils pay.

use gridwork_protocol::{Event, Params, Phase, TaskKey, TxError};
use gridwork_types::RunEnd;
use gridwork_types::{
    commitment, Address, Amount, Equivalence, Hash, Keypair, Payment, SignedTx, TxKind, GRID,
};

use super::support::{
    coalition_holdings, deposit_for, params, prescription, provider, requester, salt, Market,
    PROVIDERS,
};

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
            cached: false,
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
            cached: false,
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
                cached: false,
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
            ended: RunEnd::SUCCESS,
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
                    cached: false,
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
            cached: false,
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
            cached: false,
        },
    );
    m.block(vec![alive, bid]);
    let stake = m.stake(&other.address());
    let deadline = m.task(job2, 0).deadline_ms;
    m.at(deadline, vec![]);
    assert_eq!(m.stake(&other.address()), stake - stake / 2);
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
            cached: false,
        },
    );
    m.block(vec![bid]);
    let copying_council_member = Market::key_of(m.task(job, 0).council[0]);
    let out = Hash([9; 32]);
    let exec_commit = commitment(
        &out,
        &RunEnd::SUCCESS,
        &salt(&provider(1)),
        &provider(1).address(),
    );
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
            ended: RunEnd::SUCCESS,
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
