//! Services (stream tasks) on the ledger: `CreateService`, `FundService`, `CloseService`,
//! `Subscribe`, `Unsubscribe`, `DropMember`, `SettleStream`, `DisputeResponses`, and what block
//! time does to a service (seats drawn, too long down, the settle window over).
//!
//! # Lifecycle of a service
//!
//! ```text
//! Forming --(council full, escrow covers the reserve)--> Up
//! Up --(a seat empties, or escrow below the reserve)--> Down --(both hold again)--> Up
//! Down --(longer than max_downtime_ms in one stretch)--> Closing
//! any --(CloseService)--> Closing --(SETTLE_WINDOW_MS)--> Closed (the rest of the escrow back)
//! ```
//!
//! # Rules (read as each party would use them)
//!
//! - **Seats are drawn, not bought.** Subscribers at or under the service's `max_price` are
//!   drawn into the council as seats open, at the next block, from the hash of the block
//!   before it, owners weighted by their locked stake (`draw_by_stake`, as for a job's council),
//!   one seat per owner, never the requester's own providers. A council chosen by price could
//!   be filled by one party's Sybils undercutting everyone, and that party would decide every
//!   dispute; drawn by stake, its seats cost stake. Each member is paid its own price.
//! - **Pay is what the gateway signs.** The requester's gateway acknowledges each member's
//!   responses with a cumulative [`StreamReceipt`](gridwork_types::StreamReceipt) signed by
//!   the service's gateway key; the ledger pays the difference between its `owed` and what the
//!   member was paid, plus the market fee, from the escrow. A stale or repeated receipt adds
//!   nothing and is refused; one for a provider never seated is refused. A member's risk is
//!   what it served since its last acknowledged receipt: it stops serving when that passes
//!   `max_unsettled`, and the service is up only while the escrow covers that for every seat.
//!   A receipt takes only from its own seat's share and what is free: the share of every other
//!   seated member, and of each that left until it settles or the settle window ends, stays
//!   set aside (a review found a requester's own member could settle a huge receipt first and
//!   leave the honest ones nothing). What a receipt cannot take stays owed, paid after a
//!   top-up.
//! - **Closing waits for the last receipts.** `CloseService` (or too long down) ends the
//!   service for its members at once, but the escrow stays [`SETTLE_WINDOW_MS`] so every member
//!   can settle what it was acknowledged; only then does the rest return.
//! - **Disputes are decided by signatures.** Every member signs each response it gives
//!   ([`StreamResponse`](gridwork_types::StreamResponse): service, request, response hash).
//!   Signed responses to one request that differ are evidence anyone may send: a response
//!   signed by more than half of the council's seats, counting only current members, outvotes
//!   the current members that signed another, who are slashed `slash_bps`, leave the service
//!   and may never subscribe to it again. A member that signed two different responses to one
//!   request (any that ever sat) is slashed for that alone. Only today's council counts and
//!   is judged: a party that once held seats cannot outvote it, and a party that comes to
//!   hold a majority cannot reach back to members that left; evidence sent again slashes
//!   nobody twice (the slashed are barred). A member at work keeps the minimum stake locked
//!   (`StakeUnbond` below it is refused while it sits), so what it signs can be slashed.
//! - **Dropping costs stake nothing.** The requester (or its gateway key) drops a member that
//!   answers late or not at all; the seat is drawn again. It gains the requester nothing: what
//!   the member was acknowledged it still settles.

use gridwork_types::{
    Address, Amount, Encode, Equivalence, Hash, ResponseMethod, ServiceSpec, SignedJudgement,
    SignedReceipt, SignedResponse, StreamPrice, MAX_RECEIPTS_PER_TX,
};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::error::TxError;
use crate::receipt::Event;
use crate::state::State;

use super::auction::{draw_by_stake, Candidate};
use super::*;

/// How long a closing service keeps its escrow for its members' last receipts.
pub const SETTLE_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// The most subscribers a service keeps at once (council members among them).
pub const MAX_SUBSCRIBERS: usize = 256;
/// The longest gateway URL a service keeps.
pub const MAX_GATEWAY_URL: usize = 256;
/// The most members a service pays over its life: a service whose council turned over this
/// often takes no new members.
pub const MAX_MEMBERS_EVER: usize = 1024;

/// Where a service stands. On the wire (JSON) as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ServiceStatus {
    /// Not up yet: its council is filling, or its escrow is short.
    Forming,
    /// Serving: the council is full and the escrow covers the reserve.
    Up,
    /// Was up, is not: a seat is empty or the escrow fell below the reserve.
    Down,
    /// Ended for its members; the escrow waits for their last receipts.
    Closing,
    /// Over; the rest of the escrow went back.
    Closed,
}

impl ServiceStatus {
    /// The name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Forming => "forming",
            ServiceStatus::Up => "up",
            ServiceStatus::Down => "down",
            ServiceStatus::Closing => "closing",
            ServiceStatus::Closed => "closed",
        }
    }

    /// Closing or closed: nobody serves it any more.
    pub fn is_ended(self) -> bool {
        matches!(self, ServiceStatus::Closing | ServiceStatus::Closed)
    }
}

gridwork_types::codec_enum!(ServiceStatus, "service status" {
    0 => Forming {},
    1 => Up {},
    2 => Down {},
    3 => Closing {},
    4 => Closed {},
});

/// The most finished stretches of one status a service keeps (the oldest go first).
pub const MAX_PERIODS: usize = 16;

/// A finished stretch of one status: what `service status` shows of a service's up and down
/// periods against its H.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatusPeriod {
    /// The status it held.
    pub status: ServiceStatus,
    /// Block time it began.
    pub from_ms: u64,
    /// Block time it ended.
    pub to_ms: u64,
}

gridwork_types::codec_struct!(StatusPeriod {
    status: ServiceStatus,
    from_ms: u64,
    to_ms: u64,
});

/// A provider's offer to serve a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// The provider.
    pub provider: Address,
    /// Its price per response.
    pub price: StreamPrice,
    /// When it subscribed.
    pub since_ms: u64,
}

gridwork_types::codec_struct!(Subscription {
    provider: Address,
    price: StreamPrice,
    since_ms: u64
});

/// What a member (any that ever sat) was paid for a service so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberPay {
    /// The member.
    pub provider: Address,
    /// Responses its latest settled receipt acknowledged.
    pub responses: u64,
    /// Units (bytes) they came to.
    pub units: u64,
    /// Paid so far (without the market fee).
    pub paid: Amount,
    /// A member that left: until this block time (or its first settlement after leaving)
    /// its seat's share of the escrow stays set aside for its last receipt. 0 otherwise.
    pub holds_until_ms: u64,
    /// The escrow set aside for its next receipts: up to a seat's share (`max_unsettled` and
    /// the fee on it), filled from what is free in the order members first sat.
    pub share: Amount,
    /// When it last left the council (0: never, or it sits): for [`LEAVER_DISPUTE_MS`] after,
    /// what it answered while it sat can still be disputed, judged by `left_with`.
    pub left_at_ms: u64,
    /// The council it left (the others then seated): who judges it after it left.
    pub left_with: Vec<Address>,
}

gridwork_types::codec_struct!(MemberPay {
    provider: Address,
    responses: u64,
    units: u64,
    paid: Amount,
    holds_until_ms: u64,
    share: Amount,
    left_at_ms: u64,
    left_with: Vec<Address>
});

/// How long at least after a member leaves the council (unsubscribing, dropped) a dispute may
/// still outvote it, judged by the council it left: a liar that unsubscribed the moment it
/// answered used to escape its outvote, since only members seated now were judged. Ten
/// minutes, or twice the longest a request may wait for its answers where that is longer (a
/// gateway files its evidence once a request closes: [`Service::leaver_window_ms`]).
pub const LEAVER_DISPUTE_MS: u64 = 10 * 60 * 1000;

/// A published service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Who pays.
    pub requester: Address,
    /// What it serves, checked and paid how.
    pub spec: ServiceSpec,
    /// Escrow still held.
    pub escrow: Amount,
    /// When it was created.
    pub created_ms: u64,
    /// Where it stands.
    pub status: ServiceStatus,
    /// When the status began.
    pub since_ms: u64,
    /// Time spent down, in finished stretches (the current one is `now - since_ms`).
    pub downtime_ms: u64,
    /// Providers that offer to serve it, in the order they subscribed.
    pub subscribers: Vec<Subscription>,
    /// Its council: the subscribers that serve every request now.
    pub council: Vec<Address>,
    /// Every member that ever sat, with what it was paid.
    pub pay: Vec<MemberPay>,
    /// Paid to members so far (without the market fee).
    pub paid: Amount,
    /// Providers slashed on it: they may never serve it again.
    pub barred: Vec<Address>,
    /// Disputes decided.
    pub disputes: u32,
    /// When a closing service returns the rest of its escrow (0 while open).
    pub closes_at_ms: u64,
    /// Where its gateway listens (`AnnounceGateway`); empty until announced.
    pub gateway_url: String,
    /// Its last [`MAX_PERIODS`] finished status periods, oldest first (the current one is
    /// `status` since `since_ms`).
    pub periods: Vec<StatusPeriod>,
}

gridwork_types::codec_struct!(Service {
    requester: Address,
    spec: ServiceSpec,
    escrow: Amount,
    created_ms: u64,
    status: ServiceStatus,
    since_ms: u64,
    downtime_ms: u64,
    subscribers: Vec<Subscription>,
    council: Vec<Address>,
    pay: Vec<MemberPay>,
    paid: Amount,
    barred: Vec<Address>,
    disputes: u32,
    closes_at_ms: u64,
    gateway_url: String,
    periods: Vec<StatusPeriod>,
});

impl Service {
    /// Moves to `status` at `now`: the stretch that ends is kept (the last
    /// [`MAX_PERIODS`]) and, if it was down, counted as downtime.
    fn enter(&mut self, status: ServiceStatus, now: u64) {
        if self.status == ServiceStatus::Down {
            self.downtime_ms = self
                .downtime_ms
                .saturating_add(now.saturating_sub(self.since_ms));
        }
        if self.periods.len() >= MAX_PERIODS {
            self.periods.remove(0);
        }
        self.periods.push(StatusPeriod {
            status: self.status,
            from_ms: self.since_ms,
            to_ms: now,
        });
        self.status = status;
        self.since_ms = now;
    }

    /// The subscription of `provider`, if it has one.
    pub fn subscription(&self, provider: &Address) -> Option<&Subscription> {
        self.subscribers.iter().find(|s| s.provider == *provider)
    }

    /// How long after a member left a dispute may still outvote it: [`LEAVER_DISPUTE_MS`], or
    /// twice the longest a request waits for its answers (`max_response_ms` and
    /// `response_ms_per_kib` for a MiB) where that is longer (a review found an accomplice
    /// that never answers holds the request, and its evidence, open past ten minutes).
    pub fn leaver_window_ms(&self) -> u64 {
        let answer_within = self
            .spec
            .max_response_ms
            .saturating_add(self.spec.response_ms_per_kib.saturating_mul(1024));
        // Judged answers take longer: the request's time, then the judges' (a review found a
        // liar that left as it answered, with an accomplice holding the request to its end,
        // outlasted two of them).
        let times = if self.spec.equivalence == (Equivalence::ExactHash {}) {
            2
        } else {
            3
        };
        LEAVER_DISPUTE_MS.max(answer_within.saturating_mul(times))
    }

    /// What `provider` was paid, if it ever sat on the council.
    pub fn pay_of(&self, provider: &Address) -> Option<&MemberPay> {
        self.pay.iter().find(|p| p.provider == *provider)
    }

    /// Seats without a member.
    pub fn open_seats(&self) -> usize {
        usize::from(self.spec.council_size).saturating_sub(self.council.len())
    }

    /// Takes `provider` off the council and the subscribers; whether it sat. A member's seat
    /// share of the escrow stays set aside for its last receipt until `holds_until_ms`.
    fn remove(&mut self, provider: &Address, now: u64, holds_until_ms: u64) -> bool {
        self.subscribers.retain(|s| s.provider != *provider);
        let before = self.council.len();
        self.council.retain(|m| m != provider);
        let sat = before != self.council.len();
        if sat {
            if let Some(p) = self.pay.iter_mut().find(|p| p.provider == *provider) {
                p.holds_until_ms = holds_until_ms;
                p.left_at_ms = now;
                p.left_with = self.council.clone();
            }
        }
        sat
    }

    /// Whether `p`'s share is set aside at block time `now`: it sits, or it left and its
    /// hold has not ended.
    fn holds(&self, p: &MemberPay, now: u64) -> bool {
        self.council.contains(&p.provider) || p.holds_until_ms > now
    }

    /// The escrow no member's share holds at block time `now`.
    fn free(&self, now: u64) -> u128 {
        let held: u128 = self
            .pay
            .iter()
            .filter(|p| self.holds(p, now))
            .map(|p| p.share.0)
            .sum();
        self.escrow.0.saturating_sub(held)
    }

    /// Releases the shares of members that no longer hold one and tops up those that do,
    /// up to a seat's share each, from what is free, in the order members first sat.
    fn rebalance(&mut self, now: u64, market_fee_bps: u32) {
        let seat = self.spec.reserve(market_fee_bps).map_or(u128::MAX, |r| {
            r.0 / u128::from(self.spec.council_size.max(1))
        });
        let holding: Vec<bool> = self.pay.iter().map(|p| self.holds(p, now)).collect();
        for (p, holds) in self.pay.iter_mut().zip(&holding) {
            if !holds {
                p.share = Amount::ZERO;
            }
        }
        let mut free = self.free(now);
        for (p, holds) in self.pay.iter_mut().zip(holding) {
            if holds && p.share.0 < seat {
                let top = (seat - p.share.0).min(free);
                p.share = Amount(p.share.0 + top);
                free -= top;
            }
        }
    }
}

/// What the ledger makes of a dispute.
struct Dispute {
    /// The request disputed.
    request: Hash,
    /// The response more than half the council's seats signed, if one was.
    majority: Option<Hash>,
    /// Members that signed two different responses to it (not slashed on it before).
    equivocators: Vec<Address>,
    /// Members whose response differs from the majority's (not slashed on it before).
    outvoted: Vec<Address>,
}

/// A dispute's request, each signer's answer, and the signers that signed two different ones.
type SignedAnswers = (Hash, Vec<(Address, Hash)>, Vec<Address>);

/// A dispute of service `service` refused for `problem`.
fn bad_dispute<T>(service: Hash, problem: String) -> Result<T, TxError> {
    Err(TxError::BadDispute { service, problem })
}

/// Notes `who`'s answer `h`: the first it signed, or, if it differs from that, proof that
/// `who` signed two answers to one request.
fn note_answer(
    answers: &mut Vec<(Address, Hash)>,
    equivocators: &mut Vec<Address>,
    who: Address,
    h: Hash,
) {
    match answers.iter().find(|(a, _)| *a == who) {
        Some((_, first)) if *first != h => {
            if !equivocators.contains(&who) {
                equivocators.push(who);
            }
        }
        Some(_) => {}
        None => answers.push((who, h)),
    }
}

/// Checks a service's shape against the chain's parameters; errors name the field.
pub fn validate_service(spec: &ServiceSpec, params: &crate::Params) -> Result<(), TxError> {
    let bad = |field: &'static str, problem: String| Err(TxError::BadService { field, problem });
    validate_program(
        &spec.program,
        &spec.data,
        &spec.requirements,
        params,
        &ProgramFields {
            software: "requirements.software",
            memory: "requirements.min_memory_mib",
            inputs: "data",
        },
    )
    .or_else(|(field, problem)| bad(field, problem))?;
    if !spec.program.outputs.is_empty() {
        return bad(
            "program.outputs",
            "a service answers requests over HTTP and leaves no outputs; remove them".into(),
        );
    }
    if !spec.program.vendor_images.is_empty() {
        // Every member answers every request and the answers are compared: builds that
        // differ would make honest members disagree.
        return bad(
            "program.vendor_images",
            "a service's council compares every member's answer to each request, so it runs one build; name one image".into(),
        );
    }
    if spec.council_size == 0
        || spec.council_size > params.max_council_size
        || spec.council_size % 2 == 0
    {
        return bad(
            "council_size",
            format!(
                "is {}; it must be odd, from 1 to {}, so a majority always exists",
                spec.council_size, params.max_council_size
            ),
        );
    }
    if let ResponseMethod::Weighted { weight_bps } = spec.method {
        if weight_bps == 0 || weight_bps > 10_000 {
            return bad(
                "method.weight",
                format!(
                    "is {}; a weight is a share of the council, above 0 and at most 1",
                    f64::from(weight_bps) / 10_000.0
                ),
            );
        }
    }
    let max = &spec.max_price;
    if max.per_response.0 == 0 && max.per_unit.0 == 0 {
        return bad(
            "max_price",
            "is zero; a service pays its members per response, per unit, or both".into(),
        );
    }
    if max.per_response > params.max_price || max.per_unit > params.max_price {
        return bad(
            "max_price",
            format!("each part is at most {} GRID", params.max_price),
        );
    }
    if let Some(problem) = super::equivalence_problem(&spec.equivalence) {
        return bad("equivalence.min_psnr_db", problem);
    }
    // A tolerance of nothing would judge honest members apart for their last digits (a
    // review found two that agree byte for byte then outvote the third): it is exact_hash.
    if spec.equivalence
        == (Equivalence::NumericTolerance {
            abs_ppb: 0,
            rel_ppb: 0,
        })
    {
        return bad(
            "equivalence",
            "is numeric_tolerance with no tolerance; name one (abs or rel above 0) or use exact_hash".into(),
        );
    }
    if spec.max_response_ms == 0 || spec.max_response_ms > params.max_task_deadline_ms {
        return bad(
            "max_response_ms",
            format!(
                "must be positive and at most {} s",
                params.max_task_deadline_ms / 1000
            ),
        );
    }
    if spec.response_ms_per_kib > params.max_task_deadline_ms {
        return bad(
            "response_ms_per_kib",
            format!("is at most {} s", params.max_task_deadline_ms / 1000),
        );
    }
    if spec.max_downtime_ms > params.max_give_up_ms {
        return bad(
            "max_downtime_ms",
            format!(
                "is at most {} s (0: the service never ends on its own)",
                params.max_give_up_ms / 1000
            ),
        );
    }
    let per_response = max.of(0).unwrap_or(Amount::ZERO);
    if spec.max_unsettled < per_response || spec.max_unsettled.0 == 0 {
        return bad(
            "max_unsettled",
            format!(
                "is {} GRID; it must cover at least one response at the highest price ({} GRID)",
                spec.max_unsettled,
                per_response.max(Amount(1))
            ),
        );
    }
    if spec.reserve(params.market_fee_bps).is_none() {
        return bad("max_unsettled", "is too large".into());
    }
    Ok(())
}

impl State {
    /// A service.
    pub fn service(&self, id: &Hash) -> Option<&Service> {
        self.services.get(id)
    }

    /// Every service, by id.
    pub fn services(&self) -> impl Iterator<Item = (&Hash, &Service)> {
        self.services.iter()
    }

    fn service_or_err(&self, id: Hash) -> Result<&Service, TxError> {
        self.services
            .get(&id)
            .ok_or(TxError::UnknownService { service: id })
    }

    fn open_service(&self, id: Hash) -> Result<&Service, TxError> {
        let s = self.service_or_err(id)?;
        if s.status.is_ended() {
            return Err(TxError::ServiceClosed { service: id });
        }
        Ok(s)
    }

    /// `CreateService`: a valid spec and a deposit that covers its reserve.
    pub(super) fn check_create_service(
        &self,
        spec: &ServiceSpec,
        deposit: Amount,
    ) -> Result<(), TxError> {
        validate_service(spec, &self.params)?;
        let required = spec
            .reserve(self.params.market_fee_bps)
            .ok_or(TxError::Overflow)?;
        if deposit < required {
            return Err(TxError::DepositTooLow { required, deposit });
        }
        Ok(())
    }

    pub(super) fn apply_create_service(
        &mut self,
        requester: Address,
        id: Hash,
        spec: &ServiceSpec,
        deposit: Amount,
        now: u64,
    ) -> Vec<Event> {
        self.services.insert(
            id,
            Service {
                requester,
                spec: spec.clone(),
                escrow: deposit,
                created_ms: now,
                status: ServiceStatus::Forming,
                since_ms: now,
                downtime_ms: 0,
                subscribers: Vec::new(),
                council: Vec::new(),
                pay: Vec::new(),
                paid: Amount::ZERO,
                barred: Vec::new(),
                disputes: 0,
                closes_at_ms: 0,
                gateway_url: String::new(),
                periods: Vec::new(),
            },
        );
        vec![Event::ServiceCreated {
            service: id,
            requester,
            deposit,
        }]
    }

    /// `FundService`: by its requester, while it is open.
    pub(super) fn check_fund_service(
        &self,
        sender: Address,
        id: Hash,
        amount: Amount,
    ) -> Result<(), TxError> {
        let s = self.open_service(id)?;
        if s.requester != sender {
            return Err(TxError::NotServiceRequester { service: id });
        }
        if amount.0 == 0 {
            return Err(TxError::ZeroAmount);
        }
        Ok(())
    }

    pub(super) fn apply_fund_service(&mut self, id: Hash, amount: Amount, now: u64) -> Vec<Event> {
        let Some(mut s) = self.services.get(&id).cloned() else {
            return Vec::new();
        };
        s.escrow = Amount(s.escrow.0.saturating_add(amount.0));
        let mut events = vec![Event::ServiceFunded {
            service: id,
            amount,
        }];
        events.extend(self.put_service(id, s, now));
        events
    }

    /// `CloseService`: by its requester, while it is open.
    pub(super) fn check_close_service(&self, sender: Address, id: Hash) -> Result<(), TxError> {
        let s = self.open_service(id)?;
        if s.requester != sender {
            return Err(TxError::NotServiceRequester { service: id });
        }
        Ok(())
    }

    pub(super) fn apply_close_service(&mut self, id: Hash, now: u64) -> Vec<Event> {
        let Some(s) = self.services.get(&id).cloned() else {
            return Vec::new();
        };
        self.begin_closing(id, s, now, "closed by its requester")
    }

    /// Ends a service for its members; its escrow waits [`SETTLE_WINDOW_MS`].
    fn begin_closing(&mut self, id: Hash, mut s: Service, now: u64, why: &str) -> Vec<Event> {
        let closes_at = now.saturating_add(SETTLE_WINDOW_MS);
        let council = s.council.clone();
        for member in &council {
            s.remove(member, now, closes_at);
            self.adjust_active(member, -1);
        }
        // Each judged, after, by the whole council it sat with (not by the few left when
        // it was taken off).
        for p in s.pay.iter_mut().filter(|p| council.contains(&p.provider)) {
            p.left_with = council
                .iter()
                .filter(|m| **m != p.provider)
                .copied()
                .collect();
        }
        s.subscribers.clear();
        s.enter(ServiceStatus::Closing, now);
        s.closes_at_ms = closes_at;
        self.due_services.insert(id, s.closes_at_ms);
        self.services.insert(id, s);
        vec![Event::ServiceStatus {
            service: id,
            status: ServiceStatus::Closing.as_str().into(),
            reason: format!(
                "{why}; members settle their last receipts within {} h, then the rest of the escrow returns",
                SETTLE_WINDOW_MS / 3_600_000
            ),
        }]
    }

    /// `Subscribe`: a staked, online provider that meets the requirements, of an owner other
    /// than the requester, not barred, not yet subscribed, at a price within the maximum.
    pub(super) fn check_subscribe(
        &self,
        sender: Address,
        sender_account: &Account,
        id: Hash,
        price: &StreamPrice,
        now: u64,
    ) -> Result<(), TxError> {
        let p = &self.params;
        let provider = self.check_provider(sender)?;
        let s = self.open_service(id)?;
        let refuse = |problem: String| {
            Err(TxError::BadSubscription {
                service: id,
                problem,
            })
        };
        let owner_of = |a: &Address| self.providers.get(a).map_or(*a, |p| p.owner);
        if sender == s.requester
            || provider.owner == s.requester
            || provider.owner == owner_of(&s.requester)
        {
            return refuse(
                "it is the requester's own provider; a requester does not check itself".into(),
            );
        }
        if s.barred.contains(&sender) {
            return refuse("this provider was slashed on it and may not serve it again".into());
        }
        if s.subscription(&sender).is_some() {
            return refuse("already subscribed".into());
        }
        if !price.within(&s.spec.max_price) {
            return refuse(format!(
                "the price ({} GRID a response, {} GRID a unit) is above the service's maximum ({} and {})",
                price.per_response, price.per_unit, s.spec.max_price.per_response, s.spec.max_price.per_unit
            ));
        }
        if s.subscribers.len() >= MAX_SUBSCRIBERS {
            // A full list takes a provider with more stake locked than the least of those
            // waiting for a seat, in its place (`displaced`).
            let least = self.displaced(s).map(|a| self.account(&a).stake_locked);
            if least.is_none_or(|least| sender_account.stake_locked <= least) {
                return refuse(format!(
                    "it has {MAX_SUBSCRIBERS} subscribers, the most a service keeps, and none waiting for a seat has less stake locked than this provider ({} GRID{}): lock more to take the place of the least",
                    sender_account.stake_locked,
                    least.map_or(String::new(), |l| format!(" against {l} GRID"))
                ));
            }
        }
        if s.pay_of(&sender).is_none() && s.pay.len() >= MAX_MEMBERS_EVER {
            return refuse(format!(
                "{MAX_MEMBERS_EVER} members have served it, the most one service pays; the requester may create a new one"
            ));
        }
        if provider.status(now, p.heartbeat_timeout_ms) == PoolStatus::Offline {
            return Err(TxError::ProviderOffline {
                address: sender,
                last_heartbeat_ms: provider.last_heartbeat_ms,
            });
        }
        if sender_account.stake_locked < p.min_provider_stake {
            return Err(TxError::StakeTooLow {
                required: p.min_provider_stake,
                locked: sender_account.stake_locked,
            });
        }
        if let Some(reason) = s
            .spec
            .requirements
            .unmet_by(&provider.hardware)
            .or_else(|| {
                s.spec
                    .program
                    .image_for(&provider.hardware, &s.spec.requirements)
                    .err()
            })
        {
            return Err(TxError::HardwareUnfit { reason });
        }
        Ok(())
    }

    pub(super) fn apply_subscribe(
        &mut self,
        sender: Address,
        id: Hash,
        price: StreamPrice,
        now: u64,
    ) -> Vec<Event> {
        let Some(mut s) = self.services.get(&id).cloned() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        if s.subscribers.len() >= MAX_SUBSCRIBERS {
            if let Some(out) = self.displaced(&s) {
                s.subscribers.retain(|x| x.provider != out);
                events.push(Event::Unsubscribed {
                    service: id,
                    provider: out,
                    reason: "displaced from a full subscriber list by a provider with more stake locked; it may subscribe again".into(),
                });
            }
        }
        s.subscribers.push(Subscription {
            provider: sender,
            price,
            since_ms: now,
        });
        if s.open_seats() > 0 {
            // Drawn at the next block, from a hash nobody knows now.
            self.due_services.insert(id, now);
        }
        self.services.insert(id, s);
        events.push(Event::Subscribed {
            service: id,
            provider: sender,
            price,
        });
        events
    }

    /// Of a full subscriber list, who gives its place to a newcomer with more stake locked:
    /// the subscriber waiting for a seat (seated members keep theirs) with the least stake
    /// locked, the latest to subscribe of equals. So Sybils that fill a service's list to
    /// keep honest providers from its council (`SybilSubscriber`) must each hold more stake
    /// than every honest provider that wants in, not merely the minimum.
    fn displaced(&self, s: &Service) -> Option<Address> {
        s.subscribers
            .iter()
            .filter(|x| !s.council.contains(&x.provider))
            .min_by_key(|x| {
                (
                    self.account(&x.provider).stake_locked,
                    std::cmp::Reverse(x.since_ms),
                    std::cmp::Reverse(x.provider),
                )
            })
            .map(|x| x.provider)
    }

    /// `Unsubscribe`: by a subscriber (council members among them).
    pub(super) fn check_unsubscribe(&self, sender: Address, id: Hash) -> Result<(), TxError> {
        let s = self.open_service(id)?;
        if s.subscription(&sender).is_none() {
            return Err(TxError::NotServing {
                service: id,
                provider: sender,
                role: "a subscriber",
            });
        }
        Ok(())
    }

    pub(super) fn apply_unsubscribe(&mut self, sender: Address, id: Hash, now: u64) -> Vec<Event> {
        self.leave(id, sender, now, "left")
    }

    /// `DropMember`: by the requester or its gateway key, of a council member.
    pub(super) fn check_drop_member(
        &self,
        sender: Address,
        id: Hash,
        member: Address,
    ) -> Result<(), TxError> {
        let s = self.open_service(id)?;
        if sender != s.requester && sender != s.spec.gateway.address() {
            return Err(TxError::NotServiceRequester { service: id });
        }
        if !s.council.contains(&member) {
            return Err(TxError::NotServing {
                service: id,
                provider: member,
                role: "a council member",
            });
        }
        Ok(())
    }

    pub(super) fn apply_drop_member(&mut self, id: Hash, member: Address, now: u64) -> Vec<Event> {
        self.leave(
            id,
            member,
            now,
            "dropped by the requester (late, silent or unwanted); it may subscribe again",
        )
    }

    /// Takes `provider` off a service, its seat to be drawn again at the next block.
    fn leave(&mut self, id: Hash, provider: Address, now: u64, reason: &str) -> Vec<Event> {
        let Some(mut s) = self.services.get(&id).cloned() else {
            return Vec::new();
        };
        if s.remove(&provider, now, now.saturating_add(SETTLE_WINDOW_MS)) {
            self.adjust_active(&provider, -1);
            self.due_services.insert(id, now);
        }
        let mut events = vec![Event::Unsubscribed {
            service: id,
            provider,
            reason: reason.into(),
        }];
        events.extend(self.put_service(id, s, now));
        events
    }

    /// `AnnounceGateway`: by the requester or its gateway key, of an open service, an
    /// `http(s)://` URL of at most [`MAX_GATEWAY_URL`] printable bytes.
    pub(super) fn check_announce_gateway(
        &self,
        sender: Address,
        id: Hash,
        url: &str,
    ) -> Result<(), TxError> {
        let s = self.open_service(id)?;
        if sender != s.requester && sender != s.spec.gateway.address() {
            return Err(TxError::NotServiceRequester { service: id });
        }
        let scheme = url.starts_with("http://") || url.starts_with("https://");
        if !scheme
            || url.len() > MAX_GATEWAY_URL
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(TxError::BadService {
                field: "gateway url",
                problem: format!(
                    "`{}` is not an http(s):// URL of at most {MAX_GATEWAY_URL} bytes without spaces",
                    url.chars().take(80).collect::<String>()
                ),
            });
        }
        Ok(())
    }

    pub(super) fn apply_announce_gateway(&mut self, id: Hash, url: &str) -> Vec<Event> {
        let Some(mut s) = self.services.get(&id).cloned() else {
            return Vec::new();
        };
        s.gateway_url = url.to_string();
        self.services.insert(id, s);
        vec![Event::GatewayAnnounced {
            service: id,
            url: url.to_string(),
        }]
    }

    /// `SettleStream`: each receipt signed by its service's gateway key, for a provider that
    /// sat on the council, owing more than it was paid; one receipt per member and service.
    pub(super) fn check_settle(&self, receipts: &[SignedReceipt]) -> Result<(), TxError> {
        if receipts.is_empty() || receipts.len() > MAX_RECEIPTS_PER_TX {
            return Err(TxError::BadReceipt {
                service: receipts.first().map_or(Hash::ZERO, |r| r.receipt.service),
                provider: receipts
                    .first()
                    .map_or(Address([0; 20]), |r| r.receipt.provider),
                problem: format!("send 1 to {MAX_RECEIPTS_PER_TX} receipts in one transaction"),
            });
        }
        for (n, signed) in receipts.iter().enumerate() {
            let r = &signed.receipt;
            let refuse = |problem: String| {
                Err(TxError::BadReceipt {
                    service: r.service,
                    provider: r.provider,
                    problem,
                })
            };
            if receipts[..n]
                .iter()
                .any(|o| o.receipt.service == r.service && o.receipt.provider == r.provider)
            {
                return refuse("two receipts for one member; send only the latest".into());
            }
            let s = self.service_or_err(r.service)?;
            if s.status == ServiceStatus::Closed {
                return Err(TxError::ServiceClosed { service: r.service });
            }
            if signed.verify(&self.chain_id, &s.spec.gateway).is_err() {
                return refuse("not signed by the service's gateway key on this chain".into());
            }
            let Some(pay) = s.pay_of(&r.provider) else {
                return refuse("it never sat on the service's council".into());
            };
            let paid = pay.paid;
            if r.owed <= paid {
                return refuse(format!(
                    "it owes {} GRID and {} GRID was paid already: nothing new (send the latest receipt)",
                    r.owed, paid
                ));
            }
            if r.responses < pay.responses || r.units < pay.units {
                return refuse("it acknowledges fewer responses than one already settled".into());
            }
        }
        Ok(())
    }

    pub(super) fn apply_settle(&mut self, receipts: &[SignedReceipt], now: u64) -> Vec<Event> {
        let fee_bps = u128::from(self.params.market_fee_bps);
        let mut events = Vec::new();
        for signed in receipts {
            let r = &signed.receipt;
            let Some(mut s) = self.services.get(&r.service).cloned() else {
                continue;
            };
            let seated = s.council.contains(&r.provider);
            let free = s.free(now);
            let holds = s.pay_of(&r.provider).is_some_and(|p| s.holds(p, now));
            let Some(pay) = s.pay.iter_mut().find(|p| p.provider == r.provider) else {
                continue;
            };
            let owed = r.owed.0.saturating_sub(pay.paid.0);
            // What the escrow can cover, fee included: this member's share and what is free,
            // never the shares set aside for the others (their last receipts).
            let mine = if holds { pay.share.0 } else { 0 };
            let available = mine.saturating_add(free).min(s.escrow.0);
            let affordable = mul_div(available, 10_000, 10_000 + fee_bps);
            let amount = owed.min(affordable);
            let fee = mul_div(amount, fee_bps, 10_000).min(available - amount);
            s.escrow = Amount(s.escrow.0 - amount - fee);
            pay.share = Amount(pay.share.0.saturating_sub(amount + fee));
            pay.paid = Amount(pay.paid.0 + amount);
            pay.responses = r.responses;
            pay.units = r.units;
            if !seated {
                // Its share is no longer set aside: what is left owed waits for a top-up.
                pay.holds_until_ms = 0;
            }
            s.paid = Amount(s.paid.0.saturating_add(amount));
            self.credit(r.provider, Amount(amount));
            self.add_earnings(&r.provider, Amount(amount));
            self.set_pool(Amount(self.rewards_pool.0.saturating_add(fee)));
            events.push(Event::StreamSettled {
                service: r.service,
                provider: r.provider,
                amount: Amount(amount),
                fee: Amount(fee),
                responses: r.responses,
            });
            events.extend(self.put_service(r.service, s, now));
        }
        events
    }

    /// `DisputeResponses`: signed responses of members to one request of the service, that
    /// name somebody to slash: outvoted by more than half the council's seats (current members
    /// only), or two different responses from one member.
    pub(super) fn check_dispute(
        &self,
        id: Hash,
        responses: &[SignedResponse],
        now: u64,
    ) -> Result<(), TxError> {
        self.dispute_outcome(id, responses, now).map(|_| ())
    }

    /// The response the majority signed and who is to be slashed, or why there is none.
    fn dispute_outcome(
        &self,
        id: Hash,
        responses: &[SignedResponse],
        now: u64,
    ) -> Result<Dispute, TxError> {
        let s = self.service_or_err(id)?;
        let refuse = |problem: String| bad_dispute(id, problem);
        if s.spec.equivalence != (Equivalence::ExactHash {}) {
            return refuse("its answers are compared by an equivalence other than exact_hash, so differing hashes prove nothing: its council judges them (send JudgeResponses, with the members' signed judgements)".into());
        }
        let (request, answers, mut equivocators) = self.signed_answers(id, s, responses)?;
        let seats = usize::from(s.spec.council_size);
        let mut tally: Vec<(Hash, usize)> = Vec::new();
        for (who, h) in &answers {
            if !s.council.contains(who) || equivocators.contains(who) {
                continue;
            }
            match tally.iter_mut().find(|(t, _)| t == h) {
                Some((_, n)) => *n += 1,
                None => tally.push((*h, 1)),
            }
        }
        let majority = tally.iter().find(|(_, n)| 2 * n > seats).map(|(h, _)| *h);
        // Only members seated now are judged by today's council: one that left was judged by
        // its own (a review found a later council, or a party that comes to hold one, could
        // otherwise slash every honest former member over requests it never served).
        let mut outvoted = Vec::new();
        if let Some(m) = majority {
            for (who, h) in &answers {
                if *h != m && !equivocators.contains(who) && s.council.contains(who) {
                    outvoted.push(*who);
                }
            }
        }
        // A member that left within LEAVER_DISPUTE_MS is judged by the council it left: a
        // majority of its seats among those members and itself (never a later council, so
        // a party that came to hold one later cannot reach back).
        for (who, h) in &answers {
            let Some(p) = s.pay_of(who) else {
                continue;
            };
            let recent = !s.council.contains(who)
                && p.left_at_ms > 0
                && now < p.left_at_ms.saturating_add(s.leaver_window_ms());
            if !recent || equivocators.contains(who) {
                continue;
            }
            let mut judges: Vec<(Hash, usize)> = Vec::new();
            for (judge, jh) in &answers {
                if (judge == who || p.left_with.contains(judge)) && !equivocators.contains(judge) {
                    match judges.iter_mut().find(|(t, _)| t == jh) {
                        Some((_, n)) => *n += 1,
                        None => judges.push((*jh, 1)),
                    }
                }
            }
            let theirs = judges.iter().find(|(_, n)| 2 * n > seats).map(|(h, _)| *h);
            if theirs.is_some_and(|m| m != *h) {
                outvoted.push(*who);
            }
        }
        equivocators.retain(|a| !s.barred.contains(a));
        outvoted.retain(|a| !s.barred.contains(a));
        if equivocators.is_empty() && outvoted.is_empty() {
            let largest = tally.iter().map(|(_, n)| *n).max().unwrap_or(0);
            return refuse(match majority {
                Some(_) => "nobody to slash: every signer agrees with the majority or was slashed on this service already".into(),
                None => format!(
                    "no response is signed by more than half of the council's {seats} seats (the largest group has {largest} current members); send more members' signed responses"
                ),
            });
        }
        Ok(Dispute {
            request,
            majority,
            equivocators,
            outvoted,
        })
    }

    /// The responses of a dispute checked (2 to twice the largest council, each to one
    /// request of this service, signed on this chain by a member that sat): the request, each
    /// signer's answer, and the signers that signed two different answers (which proves
    /// they lied to one side).
    fn signed_answers(
        &self,
        id: Hash,
        s: &Service,
        responses: &[SignedResponse],
    ) -> Result<SignedAnswers, TxError> {
        let refuse = |problem: String| bad_dispute(id, problem);
        let most = 2 * usize::from(self.params.max_council_size);
        if responses.len() < 2 || responses.len() > most {
            return refuse(format!("send 2 to {most} signed responses to one request"));
        }
        let request = responses[0].response.request;
        for r in responses {
            if r.response.service != id || r.response.request != request {
                return refuse("every response must be to the same request of this service".into());
            }
            if r.verify(&self.chain_id).is_err() {
                return refuse(format!(
                    "the response of {} is not signed by its key on this chain",
                    r.provider.address()
                ));
            }
            if s.pay_of(&r.provider.address()).is_none() {
                return refuse(format!(
                    "{} never sat on the service's council",
                    r.provider.address()
                ));
            }
        }
        let mut answers: Vec<(Address, Hash)> = Vec::new();
        let mut equivocators: Vec<Address> = Vec::new();
        for r in responses {
            note_answer(
                &mut answers,
                &mut equivocators,
                r.provider.address(),
                r.response.response,
            );
        }
        Ok((request, answers, equivocators))
    }

    /// `JudgeResponses`: members' signed responses to one request of a service whose
    /// equivalence is not exact, and their signed judgements of each other's, that name
    /// somebody to slash.
    pub(super) fn check_judge_responses(
        &self,
        id: Hash,
        responses: &[SignedResponse],
        judgements: &[SignedJudgement],
        now: u64,
    ) -> Result<(), TxError> {
        self.judged_outcome(id, responses, judgements, now)
            .map(|_| ())
    }

    /// Who the judgements slash, or why nobody. A member is outvoted when more than half of
    /// the council's seats judged its answer not equivalent to theirs, and those judges agree
    /// among themselves: each signed the same answer as one of them (the anchor) or judged
    /// the anchor's equivalent to its own and was so judged by it. Under an honest majority
    /// whose answers are equivalent no honest member is so judged (an honest judge never
    /// says an equivalent answer differs); where honest answers differ beyond the tolerance
    /// (a server not as deterministic as its equivalence asks), honest judges disagree among
    /// themselves and nobody is slashed. Judges are the members seated now for a member
    /// seated now, and the council a member left for a recent leaver, as for
    /// `DisputeResponses`.
    fn judged_outcome(
        &self,
        id: Hash,
        responses: &[SignedResponse],
        judgements: &[SignedJudgement],
        now: u64,
    ) -> Result<Dispute, TxError> {
        let s = self.service_or_err(id)?;
        let refuse = |problem: String| bad_dispute(id, problem);
        if s.spec.equivalence == (Equivalence::ExactHash {}) {
            return refuse("its equivalence is exact_hash: the hashes its members signed decide its disputes (send DisputeResponses)".into());
        }
        let (request, mut answers, mut equivocators) = self.signed_answers(id, s, responses)?;
        let most = 2 * usize::from(self.params.max_council_size);
        if judgements.is_empty() || judgements.len() > most {
            return refuse(format!("send 1 to {most} signed judgements of the request"));
        }
        // Each judge's verdicts: what it found equivalent to its own answer, and what not.
        let mut verdicts: Vec<(Address, Vec<Hash>, Vec<Hash>)> = Vec::new();
        for j in judgements {
            let v = &j.judgement;
            let judge = j.judge.address();
            if v.service != id || v.request != request {
                return refuse(
                    "every judgement must be of the request the responses answer".into(),
                );
            }
            if v.agree.len() + v.differ.len() > gridwork_types::MAX_JUDGED {
                return refuse(format!(
                    "a judgement names at most {} responses",
                    gridwork_types::MAX_JUDGED
                ));
            }
            if j.verify(&self.chain_id).is_err() {
                return refuse(format!(
                    "the judgement of {judge} is not signed by its key on this chain"
                ));
            }
            if s.pay_of(&judge).is_none() {
                return refuse(format!("{judge} never sat on the service's council"));
            }
            // A judgement names the judge's own answer: one other than it signed is a second.
            note_answer(&mut answers, &mut equivocators, judge, v.own);
            match verdicts.iter_mut().find(|(a, _, _)| *a == judge) {
                Some((_, agree, differ)) => {
                    agree.extend(&v.agree);
                    differ.extend(&v.differ);
                }
                None => verdicts.push((judge, v.agree.clone(), v.differ.clone())),
            }
        }
        // One that judged an answer both equivalent to its own and not lied to one side.
        for (judge, agree, differ) in &verdicts {
            if agree.iter().any(|h| differ.contains(h)) && !equivocators.contains(judge) {
                equivocators.push(*judge);
            }
        }
        let answer_of = |who: &Address| answers.iter().find(|(a, _)| a == who).map(|(_, h)| *h);
        let verdict_of = |who: &Address| verdicts.iter().find(|(a, _, _)| a == who);
        let seats = usize::from(s.spec.council_size);
        let mut outvoted = Vec::new();
        let mut majority = None;
        for (target, h) in &answers {
            if equivocators.contains(target) {
                continue;
            }
            let Some(p) = s.pay_of(target) else {
                continue;
            };
            let seated = s.council.contains(target);
            let recent = !seated
                && p.left_at_ms > 0
                && now < p.left_at_ms.saturating_add(s.leaver_window_ms());
            if !seated && !recent {
                continue;
            }
            // Who judges it: today's council, or the one it left.
            let may_judge = |j: &Address| {
                if seated {
                    s.council.contains(j)
                } else {
                    p.left_with.contains(j)
                }
            };
            let against: Vec<(Address, Hash)> = verdicts
                .iter()
                .filter(|(j, _, differ)| {
                    j != target && may_judge(j) && !equivocators.contains(j) && differ.contains(h)
                })
                .filter_map(|(j, _, _)| answer_of(j).map(|own| (*j, own)))
                .filter(|(_, own)| own != h)
                .collect();
            let agreed = |a: &(Address, Hash), k: &(Address, Hash)| {
                a.1 == k.1
                    || (verdict_of(&a.0).is_some_and(|(_, agree, _)| agree.contains(&k.1))
                        && verdict_of(&k.0).is_some_and(|(_, agree, _)| agree.contains(&a.1)))
            };
            if let Some(anchor) = against
                .iter()
                .find(|a| 2 * against.iter().filter(|k| agreed(a, k)).count() > seats)
            {
                outvoted.push(*target);
                majority.get_or_insert(anchor.1);
            }
        }
        equivocators.retain(|a| !s.barred.contains(a));
        outvoted.retain(|a| !s.barred.contains(a));
        if equivocators.is_empty() && outvoted.is_empty() {
            return refuse(format!(
                "nobody to slash: no member's answer is judged not equivalent by more than half of the council's {seats} seats agreeing among themselves, and nobody signed two answers or two verdicts (or they were slashed on this service already); send more members' judgements"
            ));
        }
        Ok(Dispute {
            request,
            majority,
            equivocators,
            outvoted,
        })
    }

    pub(super) fn apply_judge_responses(
        &mut self,
        id: Hash,
        responses: &[SignedResponse],
        judgements: &[SignedJudgement],
        now: u64,
    ) -> Vec<Event> {
        match self.judged_outcome(id, responses, judgements, now) {
            Ok(dispute) => self.slash_disputed(id, dispute, now),
            Err(_) => Vec::new(),
        }
    }

    pub(super) fn apply_dispute(
        &mut self,
        id: Hash,
        responses: &[SignedResponse],
        now: u64,
    ) -> Vec<Event> {
        match self.dispute_outcome(id, responses, now) {
            Ok(dispute) => self.slash_disputed(id, dispute, now),
            Err(_) => Vec::new(),
        }
    }

    /// Slashes what a dispute (of hashes, or judged) names, and bars them from the service.
    fn slash_disputed(&mut self, id: Hash, dispute: Dispute, now: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let slashed: Vec<Address> = dispute
            .equivocators
            .iter()
            .chain(&dispute.outvoted)
            .copied()
            .collect();
        for provider in &slashed {
            let amount = self.take_stake(provider, self.params.slash_bps);
            self.set_pool(Amount(self.rewards_pool.0.saturating_add(amount.0)));
            if let Some(mut p) = self.providers.get(provider).cloned() {
                p.failed += 1;
                p.streak = 0;
                self.providers.insert(*provider, p);
            }
            events.push(Event::ServiceSlashed {
                service: id,
                provider: *provider,
                amount,
                reason: if dispute.equivocators.contains(provider) {
                    "signed two different responses (or verdicts) to one request".into()
                } else {
                    "outvoted: more than half the council's seats answered otherwise".into()
                },
            });
            events.extend(self.leave(id, *provider, now, "slashed; barred from this service"));
        }
        if let Some(mut s) = self.services.get(&id).cloned() {
            s.barred.extend(slashed.iter().copied());
            s.disputes += 1;
            self.services.insert(id, s);
        }
        events.push(Event::ResponsesDisputed {
            service: id,
            request: dispute.request,
            majority: dispute.majority.unwrap_or(Hash::ZERO),
            slashed,
        });
        events
    }

    /// What block time does to the services due at `now`: seats drawn, a service down too
    /// long closed, a closing one's escrow returned.
    pub(crate) fn run_service_deadlines(&mut self, now: u64) -> Vec<Event> {
        let due: Vec<Hash> = self
            .due_services
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut events = Vec::new();
        for id in due {
            self.due_services.remove(&id);
            let Some(mut s) = self.services.get(&id).cloned() else {
                continue;
            };
            match s.status {
                ServiceStatus::Closed => {}
                ServiceStatus::Closing => {
                    if now < s.closes_at_ms {
                        self.due_services.insert(id, s.closes_at_ms);
                        continue;
                    }
                    let refund = s.escrow;
                    s.escrow = Amount::ZERO;
                    s.enter(ServiceStatus::Closed, now);
                    self.credit(s.requester, refund);
                    // Nothing more can happen to it: history, not state.
                    self.archive_service(id, s);
                    events.push(Event::ServiceStatus {
                        service: id,
                        status: ServiceStatus::Closed.as_str().into(),
                        reason: "the settle window is over".into(),
                    });
                    events.push(Event::ServiceClosed {
                        service: id,
                        refund,
                    });
                }
                ServiceStatus::Forming | ServiceStatus::Up | ServiceStatus::Down => {
                    // Seats first: a subscriber fit now may keep the service from closing.
                    if s.open_seats() > 0 {
                        events.extend(self.fill_seats(id, &mut s, now));
                    }
                    events.extend(self.put_service(id, s, now));
                    let Some(s) = self.services.get(&id).cloned() else {
                        continue;
                    };
                    if s.status == ServiceStatus::Down
                        && s.spec.max_downtime_ms > 0
                        && now.saturating_sub(s.since_ms) >= s.spec.max_downtime_ms
                    {
                        events.extend(self.begin_closing(
                            id,
                            s,
                            now,
                            "down longer than its max_downtime",
                        ));
                        continue;
                    }
                    // Subscribers not fit now (offline, short of stake) may be fit later:
                    // look again while a seat is open (a review found a service closed with
                    // a fit subscriber waiting, because nothing made it due again).
                    let waiting = s
                        .subscribers
                        .iter()
                        .any(|sub| !s.council.contains(&sub.provider));
                    if s.open_seats() > 0 && waiting {
                        let again =
                            now.saturating_add((self.params.heartbeat_timeout_ms / 2).max(1_000));
                        let due = self.due_services.get(&id).copied().unwrap_or(u64::MAX);
                        self.due_services.insert(id, due.min(again));
                    }
                }
            }
        }
        events
    }

    /// Draws subscribers into the open seats of `s`, as many as there are eligible owners.
    fn fill_seats(&mut self, id: Hash, s: &mut Service, now: u64) -> Vec<Event> {
        let candidates = self.seat_candidates(s, now);
        let seats = s.open_seats().min(candidates.len());
        if seats == 0 {
            return Vec::new();
        }
        let mut seed = Vec::with_capacity(80);
        seed.extend_from_slice(b"gridwork service seats v1");
        self.head_hash.encode(&mut seed);
        id.encode(&mut seed);
        (s.council.len() as u32).encode(&mut seed);
        let Some(drawn) = draw_by_stake(&seed, candidates, seats) else {
            return Vec::new();
        };
        for member in &drawn {
            self.adjust_active(member, 1);
            if s.pay_of(member).is_none() {
                s.pay.push(MemberPay {
                    provider: *member,
                    responses: 0,
                    units: 0,
                    paid: Amount::ZERO,
                    holds_until_ms: 0,
                    share: Amount::ZERO,
                    left_at_ms: 0,
                    left_with: Vec::new(),
                });
            }
        }
        s.council.extend(drawn);
        vec![Event::ServiceCouncil {
            service: id,
            council: s.council.clone(),
        }]
    }

    /// Subscribers that may take a seat of `s`: online, staked, fit, not seated, of owners
    /// other than the requester's and the seated members', grouped by owner with the owner's
    /// locked stake as its weight.
    fn seat_candidates(&self, s: &Service, now: u64) -> Vec<Candidate> {
        let p = &self.params;
        let owner_of = |a: &Address| self.providers.get(a).map_or(*a, |p| p.owner);
        let mut barred: Vec<Address> = s.council.iter().map(owner_of).collect();
        barred.extend([s.requester, owner_of(&s.requester)]);
        let needs = s.spec.requirements.software_needs();
        // A service pays at most MAX_MEMBERS_EVER members over its life: past it, only those
        // that sat before may sit again.
        let full = s.pay.len() >= MAX_MEMBERS_EVER;
        let mut by_owner: std::collections::BTreeMap<Address, Candidate> = Default::default();
        for sub in &s.subscribers {
            let a = sub.provider;
            if full && s.pay_of(&a).is_none() {
                continue;
            }
            let Some(prov) = self.providers.get(&a) else {
                continue;
            };
            let stake = self
                .accounts
                .get(&a)
                .map_or(Amount::ZERO, |acct| acct.stake_locked);
            let eligible = !s.council.contains(&a)
                && !barred.contains(&prov.owner)
                && prov.status(now, p.heartbeat_timeout_ms) != PoolStatus::Offline
                && stake >= p.min_provider_stake
                && s.spec.requirements.met_by(&needs, &prov.hardware)
                && s.spec
                    .program
                    .image_for(&prov.hardware, &s.spec.requirements)
                    .is_ok();
            if eligible {
                by_owner
                    .entry(prov.owner)
                    .or_insert_with(Candidate::empty)
                    .add(a, stake.0);
            }
        }
        by_owner.into_values().collect()
    }

    /// Writes `s` back with the status its council and escrow give it now, and the events
    /// of a change (a stretch down that can end the service is timed from here).
    fn put_service(&mut self, id: Hash, mut s: Service, now: u64) -> Vec<Event> {
        let mut events = Vec::new();
        if !s.status.is_ended() {
            let reserve = s
                .spec
                .reserve(self.params.market_fee_bps)
                .unwrap_or(Amount(u128::MAX));
            let (target, reason) = if s.open_seats() > 0 {
                (
                    ServiceStatus::Down,
                    format!(
                        "its council has {} of {} members",
                        s.council.len(),
                        s.spec.council_size
                    ),
                )
            } else if s.escrow < reserve {
                (
                    ServiceStatus::Down,
                    format!(
                        "escrow low: {} GRID, below the {} GRID that covers every seat's unsettled pay; fund the service",
                        s.escrow, reserve
                    ),
                )
            } else {
                (ServiceStatus::Up, "its council is full and funded".into())
            };
            let target = match (target, s.status) {
                (ServiceStatus::Down, ServiceStatus::Forming) => ServiceStatus::Forming,
                (t, _) => t,
            };
            if target != s.status {
                s.enter(target, now);
                events.push(Event::ServiceStatus {
                    service: id,
                    status: target.as_str().into(),
                    reason,
                });
            }
        }
        s.rebalance(now, self.params.market_fee_bps);
        // A stretch down that lasts max_downtime ends the service at that block.
        if s.status == ServiceStatus::Down && s.spec.max_downtime_ms > 0 {
            let ends = s.since_ms.saturating_add(s.spec.max_downtime_ms);
            let due = self.due_services.get(&id).copied().unwrap_or(u64::MAX);
            self.due_services.insert(id, due.min(ends));
        }
        self.services.insert(id, s);
        events
    }
}
