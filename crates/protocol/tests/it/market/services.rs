//! Services (stream tasks) through the ledger: a council drawn from subscribers, members paid by
//! the gateway's cumulative receipts, disputes decided by members' signed responses.
//!
//! Byzantine actors are named doubles: `ReceiptReplayer` (sends a settled receipt again),
//! `ReceiptForger` (signs its own receipts), `OverspendingGateway` (acknowledges more than the
//! escrow holds), `LyingMember` (answers differently from the council), `Equivocator` (signs
//! two answers to one request), `FramingFormers` (dropped members outvoting a current one),
//! `StrangerDropper`, `SybilSubscriber` (a second provider of a seated owner) and
//! `RequesterSubscriber` (the requester's own provider).

use gridwork_protocol::{Event, ServiceStatus, TxError, SETTLE_WINDOW_MS};
use gridwork_types::{
    Address, Amount, Equivalence, Hash, Keypair, OwnerApproval, Program, Requirements,
    ResponseMethod, ServiceSpec, SignedReceipt, SignedResponse, StreamPrice, StreamReceipt,
    StreamResponse, TxKind, GRID,
};

use super::support::*;

/// The key the requester's gateway signs receipts with.
pub(super) fn gateway() -> Keypair {
    Keypair::from_seed([42; 32])
}

pub(super) fn max_price() -> StreamPrice {
    StreamPrice {
        per_response: Amount(GRID / 1_000),
        per_unit: Amount(GRID / 1_000_000),
    }
}

pub(super) fn spec(council: u8) -> ServiceSpec {
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
        requirements: Requirements {
            min_gpus: 1,
            ..Default::default()
        },
        method: ResponseMethod::Unanimous {},
        council_size: council,
        max_price: max_price(),
        equivalence: Equivalence::ExactHash {},
        max_response_ms: 30_000,
        response_ms_per_kib: 100,
        max_downtime_ms: 0,
        max_unsettled: Amount::grid(1),
        gateway: gateway().public(),
    }
}

/// Publishes `spec` with `deposit`; the service id.
pub(super) fn create(m: &mut Market, spec: ServiceSpec, deposit: Amount) -> Hash {
    let tx = m.tx(&requester(), TxKind::CreateService { spec, deposit });
    let id = tx.hash();
    m.block(vec![tx]);
    id
}

pub(super) fn subscribe(m: &mut Market, service: Hash, who: &[u32]) -> Vec<Event> {
    let txs = who
        .iter()
        .map(|i| {
            m.tx(
                &provider(*i),
                TxKind::Subscribe {
                    service,
                    price: max_price(),
                },
            )
        })
        .collect();
    m.block(txs)
}

/// A service of `council` seats with providers 1..=`subscribers` subscribed, its council drawn.
fn running(council: u8, subscribers: u32) -> (Market, Hash) {
    let mut m = Market::new();
    let id = create(&mut m, spec(council), Amount::grid(10));
    subscribe(&mut m, id, &(1..=subscribers).collect::<Vec<_>>());
    (m, id)
}

fn receipt(service: Hash, provider: Address, responses: u64, owed: Amount) -> SignedReceipt {
    StreamReceipt {
        service,
        provider,
        responses,
        units: responses * 100,
        owed,
    }
    .sign(CHAIN, &gateway())
}

pub(super) fn answer(who: &Keypair, service: Hash, request: u8, response: u8) -> SignedResponse {
    StreamResponse {
        service,
        request: Hash([request; 32]),
        response: Hash([response; 32]),
        units: 100,
    }
    .sign(CHAIN, who)
}

/// A dispute of `responses` sent by `from` is refused: nobody to slash.
fn nobody_to_slash(m: &mut Market, from: &Keypair, id: Hash, responses: Vec<SignedResponse>) {
    let e = m.refused(
        from,
        TxKind::DisputeResponses {
            service: id,
            responses,
        },
    );
    assert!(
        matches!(&e, TxError::BadDispute { problem, .. } if problem.contains("nobody to slash")),
        "{e}"
    );
}

pub(super) fn council(m: &Market, id: Hash) -> Vec<Keypair> {
    m.state
        .service(&id)
        .unwrap()
        .council
        .iter()
        .map(|a| Market::key_of(*a))
        .collect()
}

fn status(m: &Market, id: Hash) -> ServiceStatus {
    m.state.service(&id).unwrap().status
}

#[test]
fn a_service_forms_from_its_subscribers_and_pays_each_member_what_the_gateway_signs() {
    let mut m = Market::new();
    let id = create(&mut m, spec(3), Amount::grid(10));
    assert_eq!(status(&m, id), ServiceStatus::Forming);
    let events = subscribe(&mut m, id, &[1, 2, 3, 4]);
    // The seats are drawn at the next block, from a hash nobody knew when subscribing.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ServiceCouncil { council, .. } if council.len() == 3)),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ServiceStatus { status, .. } if status == "up")));
    assert_eq!(status(&m, id), ServiceStatus::Up);
    let members = council(&m, id);
    for k in &members {
        assert_eq!(m.state.provider(&k.address()).unwrap().active, 1);
    }

    // Each member's first receipt pays what it acknowledges, the market fee on top from the
    // escrow; a later, cumulative one pays only what it adds.
    let owed = Amount(GRID / 10);
    let before: Vec<Amount> = members
        .iter()
        .map(|k| m.state.account(&k.address()).balance)
        .collect();
    let (escrow, pool) = (m.state.service(&id).unwrap().escrow, m.state.rewards_pool());
    let receipts = members
        .iter()
        .map(|k| receipt(id, k.address(), 100, owed))
        .collect();
    // Anyone may send them: the gateway's signatures are what count.
    let tx = m.tx(&provider(5), TxKind::SettleStream { receipts });
    m.block(vec![tx]);
    let fee = Amount(owed.0 * 500 / 10_000);
    for (k, b) in members.iter().zip(&before) {
        assert_eq!(
            m.state.account(&k.address()).balance,
            b.checked_add(owed).unwrap()
        );
    }
    let s = m.state.service(&id).unwrap();
    assert_eq!(s.escrow, Amount(escrow.0 - 3 * (owed.0 + fee.0)));
    assert_eq!(s.paid, Amount(3 * owed.0));
    assert_eq!(m.state.rewards_pool(), Amount(pool.0 + 3 * fee.0));
    let first = &members[0];
    let later = receipt(id, first.address(), 250, Amount(owed.0 * 5 / 2));
    let tx = m.tx(
        first,
        TxKind::SettleStream {
            receipts: vec![later],
        },
    );
    let events = m.block(vec![tx]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::StreamSettled { amount, responses: 250, .. } if *amount == Amount(owed.0 * 3 / 2)
    )));
    let pay = m
        .state
        .service(&id)
        .unwrap()
        .pay_of(&first.address())
        .cloned()
        .unwrap();
    assert_eq!(
        (pay.responses, pay.units, pay.paid),
        (250, 25_000, Amount(owed.0 * 5 / 2))
    );
}

/// `ReceiptReplayer` and `ReceiptForger`: a receipt already paid, one not signed by the
/// gateway key (or for another chain), one for a provider never seated, and two for one
/// member in a transaction are refused, and pay nothing.
#[test]
fn stale_forged_or_foreign_receipts_pay_nothing() {
    let (mut m, id) = running(3, 4);
    let member = council(&m, id)[0].clone();
    let paid = receipt(id, member.address(), 10, Amount(GRID / 100));
    let tx = m.tx(
        &member,
        TxKind::SettleStream {
            receipts: vec![paid.clone()],
        },
    );
    m.block(vec![tx]);
    let balance = m.state.account(&member.address()).balance;
    let refused = |m: &mut Market, receipts: Vec<SignedReceipt>| {
        m.refused(&member, TxKind::SettleStream { receipts })
    };
    let e = refused(&mut m, vec![paid.clone()]);
    assert!(
        matches!(&e, TxError::BadReceipt { problem, .. } if problem.contains("nothing new")),
        "{e}"
    );
    let forged = StreamReceipt {
        owed: Amount::grid(5),
        ..paid.receipt.clone()
    }
    .sign(CHAIN, &member);
    let e = refused(&mut m, vec![forged]);
    assert!(
        matches!(&e, TxError::BadReceipt { problem, .. } if problem.contains("gateway key")),
        "{e}"
    );
    let other_chain = StreamReceipt {
        owed: Amount::grid(5),
        ..paid.receipt.clone()
    }
    .sign("another-chain", &gateway());
    assert_eq!(refused(&mut m, vec![other_chain]).code(), "bad_receipt");
    let outsider = (1..=PROVIDERS)
        .map(provider)
        .find(|k| m.state.service(&id).unwrap().pay_of(&k.address()).is_none())
        .unwrap();
    let e = refused(&mut m, vec![receipt(id, outsider.address(), 1, Amount(1))]);
    assert!(
        matches!(&e, TxError::BadReceipt { problem, .. } if problem.contains("never sat")),
        "{e}"
    );
    let twice = vec![
        receipt(id, member.address(), 11, Amount(GRID / 50)),
        receipt(id, member.address(), 12, Amount(GRID / 40)),
    ];
    assert_eq!(refused(&mut m, twice).code(), "bad_receipt");
    let e = refused(
        &mut m,
        vec![receipt(Hash([9; 32]), member.address(), 1, Amount(1))],
    );
    assert_eq!(e.code(), "unknown_service");
    assert_eq!(m.state.account(&member.address()).balance, balance);
}

/// `OverspendingGateway`: it acknowledges more than the escrow holds. The ledger pays what is
/// there, the service goes down ("escrow low"), and after a top-up the same receipt pays the
/// rest.
#[test]
fn a_receipt_beyond_the_escrow_pays_what_is_there_and_the_rest_after_a_top_up() {
    let mut m = Market::new();
    let reserve = spec(1).reserve(500).unwrap();
    let id = create(&mut m, spec(1), reserve);
    subscribe(&mut m, id, &[1, 2]);
    assert_eq!(status(&m, id), ServiceStatus::Up);
    let member = council(&m, id)[0].clone();
    let owed = Amount::grid(3);
    let before = m.state.account(&member.address()).balance;
    let tx = m.tx(
        &member,
        TxKind::SettleStream {
            receipts: vec![receipt(id, member.address(), 3_000, owed)],
        },
    );
    let events = m.block(vec![tx]);
    let s = m.state.service(&id).unwrap().clone();
    assert_eq!(s.escrow, Amount::ZERO, "everything there was paid out");
    let got = m.state.account(&member.address()).balance.0 - before.0;
    assert!(got > 0 && got < owed.0);
    assert_eq!(s.status, ServiceStatus::Down);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ServiceStatus { status, reason, .. } if status == "down" && reason.contains("escrow low")
    )), "{events:?}");
    let tx = m.tx(
        &requester(),
        TxKind::FundService {
            service: id,
            amount: Amount::grid(10),
        },
    );
    m.block(vec![tx]);
    assert_eq!(status(&m, id), ServiceStatus::Up);
    let tx = m.tx(
        &member,
        TxKind::SettleStream {
            receipts: vec![receipt(id, member.address(), 3_000, owed)],
        },
    );
    m.block(vec![tx]);
    assert_eq!(
        m.state.account(&member.address()).balance,
        before.checked_add(owed).unwrap()
    );
    let s = m.state.service(&id).unwrap();
    assert!(s.downtime_ms > 0);
}

/// `LyingMember`: two members sign one response to a request, the third another. The third is
/// slashed, leaves, may never subscribe again, and a subscriber takes its seat at the next
/// block; the same evidence sent again slashes nobody.
#[test]
fn an_outvoted_member_is_slashed_barred_and_replaced() {
    let (mut m, id) = running(3, 4);
    let members = council(&m, id);
    let (honest, liar) = (&members[..2], &members[2]);
    let stake = m.state.account(&liar.address()).stake_locked;
    let pool = m.state.rewards_pool();
    let mut responses: Vec<SignedResponse> = honest.iter().map(|k| answer(k, id, 1, 10)).collect();
    responses.push(answer(liar, id, 1, 66));
    // The requester's gateway sends it, but anyone could.
    let tx = m.tx(
        &provider(6),
        TxKind::DisputeResponses {
            service: id,
            responses: responses.clone(),
        },
    );
    let events = m.block(vec![tx]);
    let taken = Amount(stake.0 / 10);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ServiceSlashed { provider, amount, .. } if *provider == liar.address() && *amount == taken
    )), "{events:?}");
    assert_eq!(
        m.state.account(&liar.address()).stake_locked,
        Amount(stake.0 - taken.0)
    );
    assert_eq!(m.state.rewards_pool(), pool.checked_add(taken).unwrap());
    let s = m.state.service(&id).unwrap();
    assert!(!s.council.contains(&liar.address()) && s.barred.contains(&liar.address()));
    // Its seat went to the fourth subscriber at the next block.
    assert_eq!(s.council.len(), 3, "{:?}", s.council);
    assert_eq!(s.status, ServiceStatus::Up);
    assert_eq!(m.state.provider(&liar.address()).unwrap().active, 0);
    nobody_to_slash(&mut m, &provider(6), id, responses);
    let e = m.refused(
        liar,
        TxKind::Subscribe {
            service: id,
            price: max_price(),
        },
    );
    assert!(
        matches!(&e, TxError::BadSubscription { problem, .. } if problem.contains("slashed")),
        "{e}"
    );
}

/// `FramingFormers`: members dropped from the council still hold keys that signed for it, but
/// only today's council counts toward a majority: two former members cannot outvote one current
/// member, one member against one is no majority of three seats, and a provider that never
/// sat signs nothing that counts.
#[test]
fn no_majority_of_the_current_council_slashes_nobody() {
    let (mut m, id) = running(3, 6);
    let members = council(&m, id);
    let e = m.refused(
        &requester(),
        TxKind::DisputeResponses {
            service: id,
            responses: vec![
                answer(&members[0], id, 1, 10),
                answer(&members[1], id, 1, 66),
            ],
        },
    );
    assert!(
        matches!(&e, TxError::BadDispute { problem, .. } if problem.contains("more than half")),
        "{e}"
    );
    // Drop two members; their seats are drawn again from the other subscribers.
    let drops = members[..2]
        .iter()
        .map(|k| {
            m.tx(
                &requester(),
                TxKind::DropMember {
                    service: id,
                    member: k.address(),
                },
            )
        })
        .collect();
    m.block(drops);
    assert_eq!(m.state.service(&id).unwrap().council.len(), 3);
    let formers: Vec<SignedResponse> = members[..2].iter().map(|k| answer(k, id, 2, 66)).collect();
    let mut framing = formers.clone();
    framing.push(answer(&members[2], id, 2, 10));
    let e = m.refused(
        &requester(),
        TxKind::DisputeResponses {
            service: id,
            responses: framing,
        },
    );
    assert!(
        matches!(&e, TxError::BadDispute { problem, .. } if problem.contains("more than half")),
        "{e}"
    );
    let never = (1..=PROVIDERS)
        .map(provider)
        .find(|k| m.state.service(&id).unwrap().pay_of(&k.address()).is_none());
    if let Some(stranger) = never {
        let e = m.refused(
            &requester(),
            TxKind::DisputeResponses {
                service: id,
                responses: vec![answer(&stranger, id, 3, 66), answer(&members[2], id, 3, 10)],
            },
        );
        assert!(
            matches!(&e, TxError::BadDispute { problem, .. } if problem.contains("never sat")),
            "{e}"
        );
    }
    let mut mixed = vec![answer(&members[2], id, 4, 10)];
    mixed.push(answer(&members[2], id, 5, 10));
    assert_eq!(
        m.refused(
            &requester(),
            TxKind::DisputeResponses {
                service: id,
                responses: mixed,
            }
        )
        .code(),
        "bad_dispute"
    );
    for k in &members {
        assert_eq!(
            m.state.provider(&k.address()).unwrap().slashed,
            Amount::ZERO
        );
    }
}

/// `Equivocator`: a member that signs two different responses to one request lied to one
/// side; its own two signatures are enough.
#[test]
fn a_member_that_signs_two_answers_to_one_request_is_slashed() {
    let (mut m, id) = running(3, 3);
    let cheat = council(&m, id)[0].clone();
    let tx = m.tx(
        &requester(),
        TxKind::DisputeResponses {
            service: id,
            responses: vec![answer(&cheat, id, 7, 10), answer(&cheat, id, 7, 11)],
        },
    );
    let events = m.block(vec![tx]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ServiceSlashed { provider, reason, .. } if *provider == cheat.address() && reason.contains("two different")
    )), "{events:?}");
    // Three providers subscribed, one barred: the service is down with a seat empty.
    assert_eq!(status(&m, id), ServiceStatus::Down);
}

/// A dropped member is replaced and still settles what it was acknowledged. `StrangerDropper`:
/// only the requester or its gateway key may drop.
#[test]
fn dropped_members_are_replaced_and_still_settle_what_they_were_acknowledged() {
    let (mut m, id) = running(1, 3);
    let member = council(&m, id)[0].clone();
    let stranger = (1..=PROVIDERS)
        .map(provider)
        .find(|k| k.address() != member.address())
        .unwrap();
    let e = m.refused(
        &stranger,
        TxKind::DropMember {
            service: id,
            member: member.address(),
        },
    );
    assert_eq!(e.code(), "not_service_requester");
    // The gateway's key drops it (the gateway saw it answer late).
    let tx = m.tx(
        &gateway(),
        TxKind::DropMember {
            service: id,
            member: member.address(),
        },
    );
    m.block(vec![tx]);
    let s = m.state.service(&id).unwrap();
    assert!(!s.council.contains(&member.address()) && s.council.len() == 1);
    assert!(s.subscription(&member.address()).is_none());
    let before = m.state.account(&member.address()).balance;
    let tx = m.tx(
        &member,
        TxKind::SettleStream {
            receipts: vec![receipt(id, member.address(), 5, Amount(GRID / 200))],
        },
    );
    m.block(vec![tx]);
    assert_eq!(
        m.state.account(&member.address()).balance,
        before.checked_add(Amount(GRID / 200)).unwrap()
    );
    assert_eq!(
        m.state.provider(&member.address()).unwrap().slashed,
        Amount::ZERO
    );
    let e = m.refused(
        &requester(),
        TxKind::DropMember {
            service: id,
            member: member.address(),
        },
    );
    assert!(
        matches!(
            e,
            TxError::NotServing {
                role: "a council member",
                ..
            }
        ),
        "{e}"
    );
}

/// H: a service down longer than its `max_downtime_ms` in one stretch ends; its members settle
/// within the settle window, then the rest of the escrow returns. A closed service takes no
/// subscriber, and a requester's close works the same way.
#[test]
fn a_service_down_too_long_closes_and_returns_its_escrow_after_the_settle_window() {
    let mut m = Market::new();
    let mut s = spec(1);
    s.max_downtime_ms = 60_000;
    let id = create(&mut m, s, Amount::grid(10));
    subscribe(&mut m, id, &[1]);
    assert_eq!(status(&m, id), ServiceStatus::Up);
    let member = council(&m, id)[0].clone();
    let tx = m.tx(&member, TxKind::Unsubscribe { service: id });
    m.block(vec![tx]);
    assert_eq!(status(&m, id), ServiceStatus::Down);
    // Still down 59 s later: nothing yet. At 60 s the producer's block closes it.
    let down_at = m.state.service(&id).unwrap().since_ms;
    m.at(down_at + 59_000, vec![]);
    assert_eq!(status(&m, id), ServiceStatus::Down);
    assert_eq!(m.state.next_deadline(), Some(down_at + 60_000));
    let events = m.at(down_at + 60_000, vec![]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ServiceStatus { status, reason, .. } if status == "closing" && reason.contains("max_downtime")
    )), "{events:?}");
    let e = m.refused(
        &provider(2),
        TxKind::Subscribe {
            service: id,
            price: max_price(),
        },
    );
    assert_eq!(e.code(), "service_closed");
    // Within the window the member settles; after it, the rest returns.
    let tx = m.tx(
        &member,
        TxKind::SettleStream {
            receipts: vec![receipt(id, member.address(), 1, Amount(GRID / 1_000))],
        },
    );
    m.block(vec![tx]);
    let escrow = m.state.service(&id).unwrap().escrow;
    let balance = m.state.account(&requester().address()).balance;
    let closes = m.state.service(&id).unwrap().closes_at_ms;
    assert_eq!(closes, down_at + 60_000 + SETTLE_WINDOW_MS);
    let events = m.at(closes, vec![]);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ServiceClosed { refund, .. } if *refund == escrow)));
    // Closed for good, it leaves the hot state (and the state root) for the archive: a
    // requester that opens and closes services leaves no state behind.
    assert!(
        m.state.service(&id).is_none(),
        "a closed service kept in the state"
    );
    let s = m
        .disk
        .archived_service(&id)
        .expect("the closed service archived");
    assert_eq!(s.status, ServiceStatus::Closed);
    assert_eq!(s.escrow, Amount::ZERO);
    assert_eq!(
        m.state.account(&requester().address()).balance,
        balance.checked_add(escrow).unwrap()
    );
    let e = m.refused(
        &requester(),
        TxKind::FundService {
            service: id,
            amount: Amount::grid(1),
        },
    );
    assert_eq!(e.code(), "unknown_service");
    assert_eq!(s.downtime_ms, 60_000);
    // What `service status` shows of its periods: each stretch that ended, in order, the
    // one down exactly H long.
    let stretches: Vec<(ServiceStatus, u64)> = s
        .periods
        .iter()
        .map(|p| (p.status, p.to_ms - p.from_ms))
        .collect();
    assert_eq!(
        stretches.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [
            ServiceStatus::Forming,
            ServiceStatus::Up,
            ServiceStatus::Down,
            ServiceStatus::Closing
        ],
        "{stretches:?}"
    );
    assert_eq!(stretches[2].1, 60_000, "{stretches:?}");
    let e = m.refused(
        &member,
        TxKind::SettleStream {
            receipts: vec![receipt(id, member.address(), 2, Amount(GRID / 500))],
        },
    );
    assert_eq!(e.code(), "unknown_service");
    assert!(e.to_string().contains("closed for good"), "{e}");

    // The requester's own close: members leave at once, the escrow waits the window.
    let (mut m, id) = running(1, 2);
    let e = m.refused(&provider(1), TxKind::CloseService { service: id });
    assert_eq!(e.code(), "not_service_requester");
    let tx = m.tx(&requester(), TxKind::CloseService { service: id });
    m.block(vec![tx]);
    let s = m.state.service(&id).unwrap();
    assert_eq!(s.status, ServiceStatus::Closing);
    assert!(s.council.is_empty() && s.subscribers.is_empty());
    assert!(s.escrow > Amount::ZERO);
}

/// `SybilSubscriber` and `RequesterSubscriber`: one owner takes one seat, however many
/// providers it subscribes, and the requester's own providers take none.
#[test]
fn one_owner_takes_one_seat_and_the_requester_none() {
    let mut m = Market::new();
    // Provider 5 acts for provider 4's owner; provider 6 for the requester.
    let regs = [(5, provider(4)), (6, requester())]
        .into_iter()
        .map(|(i, owner)| {
            let approval = OwnerApproval::sign(CHAIN, &owner, &provider(i).address());
            m.tx(
                &provider(i),
                TxKind::RegisterProvider {
                    hardware: gpu_box(),
                    owner: Some(approval),
                },
            )
        })
        .collect();
    m.block(regs);
    let id = create(&mut m, spec(3), Amount::grid(10));
    let e = m.refused(
        &provider(6),
        TxKind::Subscribe {
            service: id,
            price: max_price(),
        },
    );
    assert!(
        matches!(&e, TxError::BadSubscription { problem, .. } if problem.contains("requester's own")),
        "{e}"
    );
    subscribe(&mut m, id, &[1, 4, 5]);
    let s = m.state.service(&id).unwrap();
    assert_eq!(s.council.len(), 2, "two owners, two seats: {:?}", s.council);
    assert!(
        !(s.council.contains(&provider(4).address()) && s.council.contains(&provider(5).address()))
    );
    assert_eq!(s.status, ServiceStatus::Forming);
    subscribe(&mut m, id, &[2]);
    assert_eq!(status(&m, id), ServiceStatus::Up);
}

#[test]
fn a_service_the_ledger_cannot_keep_is_refused_naming_the_field() {
    let mut m = Market::new();
    let reserve = spec(3).reserve(500).unwrap();
    let cases: Vec<(ServiceSpec, &str)> = vec![
        (
            ServiceSpec {
                council_size: 2,
                ..spec(3)
            },
            "council_size",
        ),
        (
            ServiceSpec {
                council_size: 0,
                ..spec(3)
            },
            "council_size",
        ),
        (
            ServiceSpec {
                equivalence: Equivalence::Image {
                    min_psnr_mdb: 5_000,
                    max_diff: 255,
                },
                ..spec(3)
            },
            "equivalence.min_psnr_db",
        ),
        (
            ServiceSpec {
                equivalence: Equivalence::NumericTolerance {
                    abs_ppb: 0,
                    rel_ppb: 0,
                },
                ..spec(3)
            },
            "equivalence",
        ),
        (
            ServiceSpec {
                method: ResponseMethod::Weighted { weight_bps: 0 },
                ..spec(3)
            },
            "method.weight",
        ),
        (
            ServiceSpec {
                max_price: StreamPrice::default(),
                ..spec(3)
            },
            "max_price",
        ),
        (
            ServiceSpec {
                max_unsettled: Amount::ZERO,
                ..spec(3)
            },
            "max_unsettled",
        ),
        (
            ServiceSpec {
                max_response_ms: 0,
                ..spec(3)
            },
            "max_response_ms",
        ),
        (
            ServiceSpec {
                program: Program {
                    outputs: vec!["out.txt".into()],
                    ..spec(3).program
                },
                ..spec(3)
            },
            "program.outputs",
        ),
        (
            ServiceSpec {
                program: Program {
                    command: "python3".into(),
                    ..spec(3).program
                },
                ..spec(3)
            },
            "program.command",
        ),
        (
            ServiceSpec {
                program: Program {
                    vendor_images: vec![gridwork_types::VendorImage {
                        vendor: gridwork_types::GpuVendor::Nvidia,
                        image: Hash([9; 32]),
                    }],
                    ..spec(3).program
                },
                ..spec(3)
            },
            "program.vendor_images",
        ),
    ];
    for (bad, field) in cases {
        let e = m.refused(
            &requester(),
            TxKind::CreateService {
                spec: bad,
                deposit: Amount::grid(10),
            },
        );
        assert!(
            matches!(&e, TxError::BadService { field: f, .. } if *f == field),
            "{field}: {e}"
        );
    }
    let e = m.refused(
        &requester(),
        TxKind::CreateService {
            spec: spec(3),
            deposit: Amount(reserve.0 - 1),
        },
    );
    assert!(
        matches!(e, TxError::DepositTooLow { required, .. } if required == reserve),
        "{e}"
    );
    let id = create(&mut m, spec(3), reserve);
    let e = m.refused(
        &provider(1),
        TxKind::Subscribe {
            service: id,
            price: StreamPrice {
                per_response: Amount(GRID),
                per_unit: Amount::ZERO,
            },
        },
    );
    assert!(
        matches!(&e, TxError::BadSubscription { problem, .. } if problem.contains("above")),
        "{e}"
    );
    let e = m.refused(
        &requester(),
        TxKind::Subscribe {
            service: id,
            price: max_price(),
        },
    );
    assert_eq!(e.code(), "not_a_provider");
}

/// Found by a review: two members unbonded and withdrew their whole stake, kept their seats,
/// and outvoted an honest member at no risk. A member at work keeps the minimum stake locked.
#[test]
fn a_seated_member_cannot_unbond_below_the_minimum_stake() {
    let (mut m, id) = running(3, 3);
    let member = council(&m, id)[0].clone();
    let stake = m.state.account(&member.address()).stake_locked;
    let e = m.refused(&member, TxKind::StakeUnbond { amount: stake });
    assert!(matches!(e, TxError::StakeInUse { active: 1, .. }), "{e}");
    // Down to the minimum it may.
    let tx = m.tx(
        &member,
        TxKind::StakeUnbond {
            amount: Amount(stake.0 - Amount::grid(100).0),
        },
    );
    m.block(vec![tx]);
    // Once it leaves, the rest may go too.
    let tx = m.tx(&member, TxKind::Unsubscribe { service: id });
    m.block(vec![tx]);
    let tx = m.tx(
        &member,
        TxKind::StakeUnbond {
            amount: Amount::grid(100),
        },
    );
    m.block(vec![tx]);
    assert_eq!(
        m.state.account(&member.address()).stake_locked,
        Amount::ZERO
    );
}

/// Found by a review: the honest majority of a request left the service; the liar and two
/// newcomers, now the council, signed the liar's answer after the fact to slash the members
/// that left. Only today's members are judged by today's council.
#[test]
fn a_later_council_cannot_slash_members_that_left() {
    let (mut m, id) = running(3, 6);
    let members = council(&m, id);
    let (honest, liar) = (&members[..2], &members[2]);
    let evidence: Vec<SignedResponse> = honest.iter().map(|k| answer(k, id, 1, 10)).collect();
    let leave = honest
        .iter()
        .map(|k| m.tx(k, TxKind::Unsubscribe { service: id }))
        .collect();
    m.block(leave);
    let now = council(&m, id);
    assert!(now.iter().any(|k| k.address() == liar.address()) && now.len() == 3);
    let mut responses = evidence;
    responses.extend(now.iter().map(|k| answer(k, id, 1, 66)));
    nobody_to_slash(&mut m, liar, id, responses);
    for k in honest {
        assert_eq!(
            m.state.provider(&k.address()).unwrap().slashed,
            Amount::ZERO
        );
    }
}

/// `LeavingLiar`: a member answers differently from the other two and unsubscribes in the
/// same block, before the gateway's dispute lands. It used to escape (only members seated
/// now were judged); it is judged by the council it left, for `LEAVER_DISPUTE_MS`: slashed
/// and barred. After that window a former member is judged no more.
#[test]
fn a_liar_that_leaves_as_it_answers_is_still_outvoted_by_the_council_it_left() {
    let (mut m, id) = running(3, 6);
    let members = council(&m, id);
    let (honest, liar) = (&members[..2], &members[2]);
    let stake = m.state.account(&liar.address()).stake_locked;
    let mut responses: Vec<SignedResponse> = honest.iter().map(|k| answer(k, id, 1, 10)).collect();
    responses.push(answer(liar, id, 1, 66));
    let leave = m.tx(liar, TxKind::Unsubscribe { service: id });
    m.block(vec![leave]);
    assert!(!council(&m, id)
        .iter()
        .any(|k| k.address() == liar.address()));
    let tx = m.tx(
        &provider(6),
        TxKind::DisputeResponses {
            service: id,
            responses: responses.clone(),
        },
    );
    let events = m.block(vec![tx]);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::ServiceSlashed { provider, .. } if *provider == liar.address()
        )),
        "{events:?}"
    );
    assert_eq!(
        m.state.account(&liar.address()).stake_locked,
        Amount(stake.0 - stake.0 / 10)
    );
    assert!(m
        .state
        .service(&id)
        .unwrap()
        .barred
        .contains(&liar.address()));
    for k in honest {
        assert_eq!(
            m.state.provider(&k.address()).unwrap().slashed,
            Amount::ZERO
        );
    }

    // Another leaver, past the window: no longer judged.
    let (mut m, id) = running(3, 6);
    let members = council(&m, id);
    let (honest, liar) = (&members[..2], &members[2]);
    let mut responses: Vec<SignedResponse> = honest.iter().map(|k| answer(k, id, 1, 10)).collect();
    responses.push(answer(liar, id, 1, 66));
    let leave = m.tx(liar, TxKind::Unsubscribe { service: id });
    m.block(vec![leave]);
    let later = m.now + gridwork_protocol::LEAVER_DISPUTE_MS + 1;
    m.at(later, vec![]);
    nobody_to_slash(&mut m, &provider(6), id, responses);
}

/// `FramingLeavers`' other side: a member that left is judged by the council it left, never
/// by members drawn after it: two of them and a colluder that sat with it are no majority of
/// the council it left (the colluder alone of the two others there).
#[test]
fn members_drawn_after_a_member_left_do_not_judge_it() {
    let (mut m, id) = running(3, 6);
    let members = council(&m, id);
    let (leaver, colluder) = (&members[0], &members[1]);
    let leave = m.tx(leaver, TxKind::Unsubscribe { service: id });
    m.block(vec![leave]);
    let newcomers: Vec<Keypair> = council(&m, id)
        .into_iter()
        .filter(|k| !members.iter().any(|o| o.address() == k.address()))
        .collect();
    assert!(!newcomers.is_empty(), "a seat was drawn again");
    let mut responses = vec![answer(leaver, id, 1, 10), answer(colluder, id, 1, 66)];
    responses.extend(newcomers.iter().map(|k| answer(k, id, 1, 66)));
    // The newcomers and the colluder agree: a majority of today's council, which outvotes
    // nobody seated (all agree), and no majority of the council the leaver left.
    nobody_to_slash(&mut m, &provider(6), id, responses);
    assert_eq!(
        m.state.provider(&leaver.address()).unwrap().slashed,
        Amount::ZERO
    );
}

/// `SybilSubscriber` filling the list: 256 subscribers of the minimum stake keep a service's
/// list full. A provider with more stake locked takes the place of the least (of those
/// waiting for a seat; seated members keep theirs), which is told so; one with no more is
/// refused, saying what to beat.
#[test]
fn a_full_subscriber_list_takes_a_provider_with_more_stake_in_place_of_the_least() {
    let full = gridwork_protocol::MAX_SUBSCRIBERS as u32;
    let mut m = Market::with_providers(full + 2);
    let id = create(&mut m, spec(3), Amount::grid(10));
    subscribe(&mut m, id, &(1..=full).collect::<Vec<_>>());
    let s = m.state.service(&id).unwrap();
    assert_eq!(s.subscribers.len(), gridwork_protocol::MAX_SUBSCRIBERS);
    let seated = s.council.clone();
    let (equal, richer) = (provider(full + 1), provider(full + 2));
    let e = m.refused(
        &equal,
        TxKind::Subscribe {
            service: id,
            price: max_price(),
        },
    );
    assert!(
        matches!(&e, TxError::BadSubscription { problem, .. } if problem.contains("lock more")),
        "{e}"
    );
    let more = m.tx(
        &richer,
        TxKind::StakeLock {
            amount: Amount::grid(1),
        },
    );
    m.block(vec![more]);
    let events = subscribe(&mut m, id, &[full + 2]);
    let out = events
        .iter()
        .find_map(|e| match e {
            Event::Unsubscribed {
                provider, reason, ..
            } if reason.contains("displaced") => Some(*provider),
            _ => None,
        })
        .expect("one displaced");
    let s = m.state.service(&id).unwrap();
    assert_eq!(s.subscribers.len(), gridwork_protocol::MAX_SUBSCRIBERS);
    assert!(s.subscription(&richer.address()).is_some());
    assert!(s.subscription(&out).is_none());
    assert!(!seated.contains(&out), "a seated member keeps its place");
    assert_eq!(s.council, seated);
}

/// Found by a review: a subscriber offline when a seat opened came back but was never drawn
/// (nothing made the service due again), and the service closed at its max_downtime with a
/// fit subscriber waiting. Open seats are looked at again while subscribers wait.
#[test]
fn a_seat_is_drawn_once_a_waiting_subscriber_is_fit_again() {
    let mut m = Market::new();
    let mut s = spec(1);
    s.max_downtime_ms = 600_000;
    let id = create(&mut m, s, Amount::grid(10));
    subscribe(&mut m, id, &[1, 2]);
    let member = council(&m, id)[0].clone();
    let other = if member.address() == provider(1).address() {
        provider(2)
    } else {
        provider(1)
    };
    // Every heartbeat goes stale; the requester drops the member; nobody online to draw.
    let t = m.now + 61_000;
    let drop = m.tx(
        &requester(),
        TxKind::DropMember {
            service: id,
            member: member.address(),
        },
    );
    m.at(t, vec![drop]);
    assert_eq!(status(&m, id), ServiceStatus::Down);
    // The other subscriber comes back and keeps its heartbeat.
    for _ in 0..3 {
        let hb = m.tx(&other, TxKind::Heartbeat);
        let t = m.now + 30_000;
        m.at(t, vec![hb]);
    }
    let s = m.state.service(&id).unwrap();
    assert!(s.council.contains(&other.address()), "{s:?}");
    assert_eq!(s.status, ServiceStatus::Up);
}

/// Found by a review: the requester's gateway signed a huge receipt for a seated member the
/// requester runs (of an owner it did not approve), settled it first, and the honest members'
/// receipts within `max_unsettled` paid nothing. A receipt takes only its own seat's share and
/// what is free; a member that left keeps its share until it settles or its window ends.
#[test]
fn a_receipt_cannot_take_the_share_set_aside_for_another_member() {
    let mut m = Market::new();
    let reserve = spec(3).reserve(500).unwrap();
    let id = create(&mut m, spec(3), reserve);
    subscribe(&mut m, id, &[1, 2, 3]);
    assert_eq!(status(&m, id), ServiceStatus::Up);
    let members = council(&m, id);
    let (sybil, honest, leaving) = (&members[0], &members[1], &members[2]);
    let drain = receipt(id, sybil.address(), 1, Amount::grid(1_000));
    let tx = m.tx(
        sybil,
        TxKind::SettleStream {
            receipts: vec![drain],
        },
    );
    m.block(vec![tx]);
    let s = m.state.service(&id).unwrap();
    // The sybil took its own seat's share: a third of the reserve, fee included.
    assert_eq!(s.escrow, Amount(reserve.0 - reserve.0 / 3));
    // The third member leaves before it settles: its share stays set aside for it.
    let tx = m.tx(leaving, TxKind::Unsubscribe { service: id });
    m.block(vec![tx]);
    for k in [honest, leaving] {
        let before = m.state.account(&k.address()).balance;
        let tx = m.tx(
            k,
            TxKind::SettleStream {
                receipts: vec![receipt(id, k.address(), 1_000, Amount::grid(1))],
            },
        );
        m.block(vec![tx]);
        let got = m.state.account(&k.address()).balance.0 - before.0;
        assert_eq!(
            got, GRID,
            "a member served within max_unsettled and got {got}"
        );
    }
}

/// Members learn where the gateway listens from the ledger: the requester or its gateway key
/// says so; a stranger cannot point members elsewhere, and a URL the ledger cannot keep is
/// refused.
#[test]
fn only_the_requester_or_its_gateway_key_says_where_the_gateway_listens() {
    let (mut m, id) = running(1, 1);
    let announce = |url: &str| TxKind::AnnounceGateway {
        service: id,
        url: url.into(),
    };
    let e = m.refused(&provider(2), announce("http://evil.example:80"));
    assert_eq!(e.code(), "not_service_requester");
    for bad in [
        "ftp://x",
        "http://a b",
        &format!("http://{}", "a".repeat(300)),
    ] {
        let e = m.refused(&requester(), announce(bad));
        assert!(
            matches!(
                e,
                TxError::BadService {
                    field: "gateway url",
                    ..
                }
            ),
            "{bad}: {e}"
        );
    }
    let tx = m.tx(&gateway(), announce("http://127.0.0.1:8088"));
    let events = m.block(vec![tx]);
    assert!(events.iter().any(
        |e| matches!(e, Event::GatewayAnnounced { url, .. } if url == "http://127.0.0.1:8088")
    ));
    assert_eq!(
        m.state.service(&id).unwrap().gateway_url,
        "http://127.0.0.1:8088"
    );
}
