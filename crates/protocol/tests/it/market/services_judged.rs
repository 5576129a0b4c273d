//! Disputes of a service whose equivalence is not exact (numbers within a tolerance, images
//! by their pixels): honest members' answers differ in their bytes, so their hashes prove
//! nothing, and the council judges: each member signs which answers it finds equivalent to
//! its own. A member whose answer more than half the seats judged not equivalent, those
//! judges agreeing among themselves, is slashed.
//!
//! Byzantine actors are named doubles: `LyingMember` (answers beyond the tolerance and judges
//! the honest as liars), `FramingJudge` (a minority judging an honest answer not equivalent),
//! `TwoFacedJudge` (a judgement naming another answer as its own, or an answer both
//! equivalent and not), `LeavingLiar` (leaves as it answers) and `HashDisputer` (sends the
//! differing hashes as if the service were exact).

use gridwork_protocol::{Event, TxError};
use gridwork_types::{
    Amount, Equivalence, Hash, Keypair, ServiceSpec, SignedJudgement, SignedResponse,
    StreamJudgement, TxKind,
};

use super::services::{answer, council, create, spec, subscribe};
use super::support::*;

/// A service of `council` seats whose answers agree within a tolerance, providers
/// 1..=`subscribers` subscribed, its council drawn.
fn tolerant(council: u8, subscribers: u32) -> (Market, Hash) {
    let mut m = Market::new();
    let spec = ServiceSpec {
        equivalence: Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 1_000,
        },
        ..spec(council)
    };
    let id = create(&mut m, spec, Amount::grid(10));
    subscribe(&mut m, id, &(1..=subscribers).collect::<Vec<_>>());
    (m, id)
}

/// `who`'s judgement of request `request`: its own answer `own`, the answers it finds
/// equivalent to it and those it does not.
fn judge(
    who: &Keypair,
    service: Hash,
    request: u8,
    own: u8,
    agree: &[u8],
    differ: &[u8],
) -> SignedJudgement {
    StreamJudgement {
        service,
        request: Hash([request; 32]),
        own: Hash([own; 32]),
        agree: agree.iter().map(|h| Hash([*h; 32])).collect(),
        differ: differ.iter().map(|h| Hash([*h; 32])).collect(),
    }
    .sign(CHAIN, who)
}

fn judged(
    service: Hash,
    responses: Vec<SignedResponse>,
    judgements: Vec<SignedJudgement>,
) -> TxKind {
    TxKind::JudgeResponses {
        service,
        responses,
        judgements,
    }
}

/// The judgement is refused, its problem containing `why`.
fn refused_for(m: &mut Market, kind: TxKind, why: &str) {
    let e = m.refused(&provider(6), kind);
    assert!(
        matches!(&e, TxError::BadDispute { problem, .. } if problem.contains(why)),
        "{e}"
    );
}

fn slashed(events: &[Event], who: &Keypair) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::ServiceSlashed { provider, .. } if *provider == who.address()))
}

fn unslashed(m: &Market, who: &[Keypair]) {
    for k in who {
        assert_eq!(
            m.state.provider(&k.address()).unwrap().slashed,
            Amount::ZERO,
            "{}",
            k.address()
        );
    }
}

/// `LyingMember`: two honest members answer alike within the tolerance (different bytes),
/// the liar beyond it, and judges the honest as liars. The honest two are a majority of three
/// seats agreeing with each other: the liar is slashed, barred and replaced. `HashDisputer`:
/// the same responses as a dispute of hashes are refused (they differ even between the honest).
#[test]
fn a_member_its_council_judges_not_equivalent_is_slashed() {
    let (mut m, id) = tolerant(3, 4);
    let members = council(&m, id);
    let (a, b, liar) = (&members[0], &members[1], &members[2]);
    let stake = m.state.account(&liar.address()).stake_locked;
    let responses = vec![
        answer(a, id, 1, 10),
        answer(b, id, 1, 11),
        answer(liar, id, 1, 66),
    ];
    let judgements = vec![
        judge(a, id, 1, 10, &[11], &[66]),
        judge(b, id, 1, 11, &[10], &[66]),
        judge(liar, id, 1, 66, &[], &[10, 11]),
    ];
    let e = m.refused(
        &provider(6),
        TxKind::DisputeResponses {
            service: id,
            responses: responses.clone(),
        },
    );
    assert!(
        matches!(&e, TxError::BadDispute { problem, .. } if problem.contains("JudgeResponses")),
        "{e}"
    );
    let tx = m.tx(
        &provider(6),
        judged(id, responses.clone(), judgements.clone()),
    );
    let events = m.block(vec![tx]);
    assert!(slashed(&events, liar), "{events:?}");
    assert!(!slashed(&events, a) && !slashed(&events, b), "{events:?}");
    assert_eq!(
        m.state.account(&liar.address()).stake_locked,
        Amount(stake.0 - stake.0 / 10)
    );
    let s = m.state.service(&id).unwrap();
    assert!(s.barred.contains(&liar.address()) && !s.council.contains(&liar.address()));
    assert_eq!(s.council.len(), 3, "the fourth subscriber takes the seat");
    unslashed(&m, &[a.clone(), b.clone()]);
    // Sent again, it slashes nobody twice.
    refused_for(&mut m, judged(id, responses, judgements), "nobody to slash");
}

/// `FramingJudge`: one member of three judges an honest answer not equivalent. One judge is
/// no majority of three seats, however it words it; and where every honest answer differs
/// from every other beyond the tolerance (a server less deterministic than its equivalence
/// asks), the honest judge each other apart but agree with no one: nobody is slashed.
#[test]
fn judges_that_are_no_majority_agreeing_among_themselves_slash_nobody() {
    let (mut m, id) = tolerant(3, 3);
    let members = council(&m, id);
    let (a, b, framer) = (&members[0], &members[1], &members[2]);
    refused_for(
        &mut m,
        judged(
            id,
            vec![
                answer(a, id, 1, 10),
                answer(b, id, 1, 11),
                answer(framer, id, 1, 12),
            ],
            vec![
                judge(a, id, 1, 10, &[11, 12], &[]),
                judge(b, id, 1, 11, &[10, 12], &[]),
                judge(framer, id, 1, 12, &[11], &[10]),
            ],
        ),
        "nobody to slash",
    );
    // Every answer judged apart from every other by both other members: each is "outvoted"
    // by two judges, but the two disagree with each other, so they are no majority.
    refused_for(
        &mut m,
        judged(
            id,
            vec![
                answer(a, id, 2, 20),
                answer(b, id, 2, 21),
                answer(framer, id, 2, 22),
            ],
            vec![
                judge(a, id, 2, 20, &[], &[21, 22]),
                judge(b, id, 2, 21, &[], &[20, 22]),
                judge(framer, id, 2, 22, &[], &[20, 21]),
            ],
        ),
        "nobody to slash",
    );
    // Agreement must be mutual: a judge that says it agrees with another is not enough when
    // the other does not say so too.
    refused_for(
        &mut m,
        judged(
            id,
            vec![
                answer(a, id, 3, 30),
                answer(b, id, 3, 31),
                answer(framer, id, 3, 32),
            ],
            vec![
                judge(a, id, 3, 30, &[], &[31, 32]),
                judge(framer, id, 3, 32, &[30], &[31]),
            ],
        ),
        "nobody to slash",
    );
    unslashed(&m, &members);
}

/// `TwoFacedJudge`: a judgement names its judge's own answer, so one naming another than the
/// response the judge signed is a second answer to one request; and one that finds an answer
/// both equivalent to its own and not (across two judgements) lied to one side. Either is
/// slashed on its own signatures.
#[test]
fn a_judge_that_signs_two_answers_or_two_verdicts_is_slashed() {
    let (mut m, id) = tolerant(3, 5);
    let members = council(&m, id);
    let (a, two_faced) = (&members[0], &members[1]);
    let tx = m.tx(
        &provider(6),
        judged(
            id,
            vec![answer(a, id, 1, 10), answer(two_faced, id, 1, 11)],
            vec![judge(two_faced, id, 1, 12, &[10], &[])],
        ),
    );
    let events = m.block(vec![tx]);
    assert!(slashed(&events, two_faced), "{events:?}");
    assert!(!slashed(&events, a), "{events:?}");
    let now = council(&m, id);
    let (c, d) = (&now[0], &now[1]);
    let tx = m.tx(
        &provider(6),
        judged(
            id,
            vec![answer(c, id, 2, 20), answer(d, id, 2, 21)],
            vec![
                judge(d, id, 2, 21, &[20], &[]),
                judge(d, id, 2, 21, &[], &[20]),
            ],
        ),
    );
    let events = m.block(vec![tx]);
    assert!(slashed(&events, d), "{events:?}");
    assert!(!slashed(&events, c), "{events:?}");
}

/// What does not check out is refused, naming the problem: a judgement of another request or
/// service, one not signed by its judge on this chain, a judge that never sat, none at all,
/// and judgements of a service whose equivalence is exact (its hashes decide).
#[test]
fn judgements_that_do_not_check_out_are_refused() {
    let (mut m, id) = tolerant(3, 6);
    let members = council(&m, id);
    let (a, b) = (&members[0], &members[1]);
    let responses = vec![answer(a, id, 1, 10), answer(b, id, 1, 66)];
    refused_for(
        &mut m,
        judged(id, responses.clone(), vec![judge(a, id, 2, 10, &[], &[66])]),
        "the request the responses answer",
    );
    let mut forged = judge(a, id, 1, 10, &[], &[66]);
    forged.judgement.differ.clear();
    refused_for(
        &mut m,
        judged(id, responses.clone(), vec![forged]),
        "not signed",
    );
    refused_for(&mut m, judged(id, responses.clone(), vec![]), "send 1 to");
    let stranger = (1..=PROVIDERS)
        .map(provider)
        .find(|k| m.state.service(&id).unwrap().pay_of(&k.address()).is_none())
        .unwrap();
    refused_for(
        &mut m,
        judged(
            id,
            responses.clone(),
            vec![judge(&stranger, id, 1, 10, &[], &[66])],
        ),
        "never sat",
    );
    let too_many: Vec<u8> = (0..=gridwork_types::MAX_JUDGED as u8).collect();
    refused_for(
        &mut m,
        judged(
            id,
            responses.clone(),
            vec![judge(a, id, 1, 10, &[], &too_many)],
        ),
        "at most",
    );
    let mut exact = Market::new();
    let ex = create(&mut exact, spec(3), Amount::grid(10));
    subscribe(&mut exact, ex, &[1, 2, 3]);
    let members = council(&exact, ex);
    let e = exact.refused(
        &provider(6),
        judged(
            ex,
            vec![
                answer(&members[0], ex, 1, 10),
                answer(&members[1], ex, 1, 66),
            ],
            vec![judge(&members[0], ex, 1, 10, &[], &[66])],
        ),
    );
    assert!(
        matches!(&e, TxError::BadDispute { problem, .. } if problem.contains("DisputeResponses")),
        "{e}"
    );
}

/// `LeavingLiar` under a tolerance: it leaves as it answers, and is judged by the council it
/// left (its two honest fellows), not by the members drawn after.
#[test]
fn a_liar_that_leaves_is_judged_by_the_council_it_left() {
    let (mut m, id) = tolerant(3, 6);
    let members = council(&m, id);
    let (a, b, liar) = (&members[0], &members[1], &members[2]);
    let leave = m.tx(liar, TxKind::Unsubscribe { service: id });
    m.block(vec![leave]);
    let tx = m.tx(
        &provider(6),
        judged(
            id,
            vec![
                answer(a, id, 1, 10),
                answer(b, id, 1, 11),
                answer(liar, id, 1, 66),
            ],
            vec![
                judge(a, id, 1, 10, &[11], &[66]),
                judge(b, id, 1, 11, &[10], &[66]),
            ],
        ),
    );
    let events = m.block(vec![tx]);
    assert!(slashed(&events, liar), "{events:?}");
    unslashed(&m, &[a.clone(), b.clone()]);
}

/// Found by a review: a liar that left as it answered, with an accomplice holding the request
/// to its end, had its evidence land after two answer times (the request's, then the
/// judges'), when a leaver of an exact service is judged no more. A leaver of a judged
/// service is judged for three; past them, no longer.
#[test]
fn a_leaver_of_a_judged_service_is_judged_for_three_answer_times() {
    for (late_by, slashed_then) in [(2, true), (3, false)] {
        let mut m = Market::new();
        let spec = ServiceSpec {
            equivalence: Equivalence::NumericTolerance {
                abs_ppb: 1_000,
                rel_ppb: 1_000,
            },
            max_response_ms: 300_000,
            ..spec(3)
        };
        let within = spec.max_response_ms + spec.response_ms_per_kib * 1024;
        let id = create(&mut m, spec, Amount::grid(10));
        subscribe(&mut m, id, &[1, 2, 3, 4, 5, 6]);
        let members = council(&m, id);
        let (a, b, liar) = (&members[0], &members[1], &members[2]);
        let leave = m.tx(liar, TxKind::Unsubscribe { service: id });
        m.block(vec![leave]);
        let at = m.now + late_by * within + 1_000;
        m.at(at, vec![]);
        let kind = judged(
            id,
            vec![
                answer(a, id, 1, 10),
                answer(b, id, 1, 11),
                answer(liar, id, 1, 66),
            ],
            vec![
                judge(a, id, 1, 10, &[11], &[66]),
                judge(b, id, 1, 11, &[10], &[66]),
            ],
        );
        if slashed_then {
            let tx = m.tx(&provider(6), kind);
            let events = m.block(vec![tx]);
            assert!(slashed(&events, liar), "{events:?}");
        } else {
            refused_for(&mut m, kind, "nobody to slash");
        }
    }
}
