//! The batch market on the ledger: providers, jobs, tasks, auctions, councils, commit-reveal,
//! settlement, slashing, reputation and proof-of-compute rewards.
//!
//! # Lifecycle of a task
//!
//! ```text
//! Bidding --(H holds: first N bids, or deadline with a bid)--> Committing
//! Committing --(executor and council all committed)--> Revealing
//! Committing --(deadline, executor silent)--> Bidding (attempt + 1) or Failed
//! Committing --(deadline, council members silent)--> Committing (silent seats drawn again)
//!            or, with too few providers left, Bidding (attempt + 1) or Failed
//! Revealing --(all revealed, or reveal window over)--> tally (exact hash, first round)
//!           or Judging (other equivalences, or an enlarged council)
//! Judging --(all judged, or judging window over)--> tally
//! tally: clear majority for the executor --> Settled
//!        clear majority against it --> Bidding (attempt + 1) or Failed
//!        no clear majority --> Committing (council enlarged, round + 1), or once enlarged:
//!            Failed ("judged nondeterministic"), or Bidding if only silence kept it short
//! Bidding or reopening past the job's time bound --> Failed (escrow refunded)
//! ```
//!
//! # Rules (the design decisions)
//!
//! - **Winner.** The lowest reputation-weighted price: `price * 10,000 / (10,000 + 500 *
//!   min(streak, 10))`, so ten validated results in a row are worth up to a third off the
//!   price; ties go to the lower raw price, then the earlier bid.
//! - **Council.** Drawn at the first block after the auction closes (or after silent members
//!   lose their seats), seeded by the hash of the block that closed it: that hash depends on
//!   the block's time, transactions and resulting state, so nobody sending the closing bid,
//!   a submission or a filler transaction can know the council (with one sequencer, the
//!   sequencer could grind it: see `docs/security.md`). Candidates are registered providers
//!   that are online, staked, meet the task's requirements, are not the executor or the
//!   requester, do not share an owner with either or with a seated member, and are not
//!   blocklisted for the job. Owners are drawn without replacement with probability in
//!   proportion to the locked stake of their eligible providers, then one provider of each:
//!   a council seat costs stake, and spreading stake over Sybil owners buys no extra chance.
//!   A provider's owner is the account that signed its
//!   [`OwnerApproval`](gridwork_types::OwnerApproval), or itself. If too few owners are
//!   eligible at the close the auction stays open and the task's note says why.
//! - **Commit-reveal.** Everyone assigned commits BLAKE3(output || salt || own address) before
//!   anyone reveals, so a lazy council member cannot copy the executor's answer. Council
//!   members reveal after the executor.
//! - **Votes are outputs.** Under exact hash in the first round two runs agree when their
//!   content ids are equal. Otherwise every party judges the others' outputs off the ledger
//!   (on the plaintext, under the job's equivalence) and sends `Judge` naming those
//!   equivalent to its own; two runs agree only when each names the other (a party that did
//!   not judge is confirmed by the naming of the others alone). A party that did not run the
//!   program has an output nobody honest names, so it can neither earn by agreeing nor sway
//!   the decision ([`agreement`]).
//! - **Silence.** A council member who misses the commit deadline is slashed
//!   (`timeout_slash_bps`) and its seat drawn again; it is never just dropped, so a silent
//!   council never lets a result through unchecked.
//! - **Decision.** A clear majority is a largest group of mutually agreeing runs with at
//!   least two runs, two thirds of the seats (executor plus council; silent seats count
//!   against it) and more than half of the council's seats. For the executor: accepted; the executor is paid f (bid price, times run
//!   time capped at the deadline for per-second pricing), each majority member gets
//!   `council_share_bps` of that, the other revealed members are slashed. Against it: the
//!   executor is slashed, the majority is paid its share out of that slash (the rest goes to
//!   the rewards pool), the others who revealed are slashed, and the task reopens.
//! - **Escalation.** Without a clear majority nobody is slashed yet: the council grows by
//!   `escalation_seats`, up to `max_escalations` times ([`largest_council`]); members who
//!   did not reveal lose their seats. New members' outputs are keyed by the round, and an id
//!   revealed in an earlier round or attempt is refused as a copy. Still split (or the
//!   council could not grow), [`State::unresolved`] decides: runs agreeing with each other
//!   against the executor's reopen the task with a failure for the executor; silence that
//!   kept agreeing runs short reopens it; otherwise the program is judged nondeterministic:
//!   nobody is slashed, the executor's run and each member's run that someone confirmed are
//!   paid, and the task fails with the reason.
//! - **Time bound.** A job gives up at `give_up_at_ms` (its `halting.give_up_ms`, or
//!   `default_give_up_ms`): tasks still waiting for bids or a council, or reopened after it,
//!   fail with the reason, and the escrow returns.
//! - **Escrow.** A job's deposit must cover every task at its maximum cost; each task pays at
//!   most that. What is left returns to the requester when the job finishes or is cancelled.
//! - **Failures.** A missed deadline costs `timeout_slash_bps` of stake, doubled for each
//!   miss in a row before it; an executor that bid and then did not commit or reveal pays
//!   never less than what the work would have paid; no miss takes more than half the stake.
//!   A miss resets the streak and counts as a failure on the job;
//!   `max_job_failures` failures blocklist the provider for that job; `max_attempts` attempts
//!   fail the task and refund its share. Only providers with a heartbeat within
//!   `heartbeat_timeout_ms` may bid.
//! - **Market fee.** A settled task pays `market_fee_bps` of what it paid its executor and
//!   council from escrow into the rewards pool.
//! - **Proof of compute.** Every accepted result emits a record. When at least one council
//!   member checked and agreed, the executor also gets `reward_bps` of its pay from the
//!   rewards pool, never more than the pool holds beyond what the emission schedule still
//!   locks. `reward_bps < market_fee_bps`, so whoever plays requester, executor and council at
//!   once pays the pool more than it takes out: rewards cannot be farmed. Per-second pay
//!   counts the executor's reported run time, never more than the median of what the
//!   agreeing council members report for their own runs.
//!
//! Slashed stake is taken from the locked stake first, then from unbonding entries (newest
//! first), so unbonding does not escape a pending judgement.

use gridwork_types::{
    commitment, Address, Amount, Encode, Equivalence, Hardware, Hash, Payment, PeerAddr,
    Prescription,
};
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::error::TxError;
use crate::hashed_map::MapKey;
use crate::receipt::Event;
use crate::state::State;

/// Identifies a task: its job and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TaskKey {
    /// The job id.
    pub job: Hash,
    /// The task index.
    pub index: u32,
}

gridwork_types::codec_struct!(TaskKey {
    job: Hash,
    index: u32
});

impl MapKey for TaskKey {
    fn bucket(&self) -> u8 {
        self.job.0[0]
    }
    fn bucket_start(b: u8) -> Self {
        TaskKey {
            job: Hash::bucket_start(b),
            index: 0,
        }
    }
}

/// A registered provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provider {
    /// The party it works for: the owner that approved it, or itself.
    pub owner: Address,
    /// What its machine offers.
    pub hardware: Hardware,
    /// When it registered.
    pub registered_ms: u64,
    /// Its last heartbeat (or registration).
    pub last_heartbeat_ms: u64,
    /// Validated results in a row (reset by a rejected result or a missed deadline).
    pub streak: u32,
    /// Results accepted (as executor) and majority votes (as council member).
    pub validated: u64,
    /// Rejected results, minority votes and missed deadlines.
    pub failed: u64,
    /// Stake taken so far.
    pub slashed: Amount,
    /// Paid for work so far, rewards included.
    pub earned: Amount,
    /// Tasks it is executing or checking now.
    pub active: u32,
    /// Where its worker serves chunks peer to peer, if it does.
    pub peer: Option<PeerAddr>,
    /// Deadlines missed in a row (reset by work done): each one costs more than the last.
    pub missed: u32,
}

gridwork_types::codec_struct!(Provider {
    owner: Address,
    hardware: Hardware,
    registered_ms: u64,
    last_heartbeat_ms: u64,
    streak: u32,
    validated: u64,
    failed: u64,
    slashed: Amount,
    earned: Amount,
    active: u32,
    peer: Option<PeerAddr>,
    missed: u32,
});

/// What a provider is doing, derived from its record and the block time. On the wire (JSON)
/// as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PoolStatus {
    /// No heartbeat within the timeout.
    Offline,
    /// Online and working on tasks.
    Busy,
    /// Online and idle.
    Available,
}

impl PoolStatus {
    /// The name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolStatus::Offline => "offline",
            PoolStatus::Busy => "busy",
            PoolStatus::Available => "available",
        }
    }
}

impl std::fmt::Display for PoolStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Provider {
    /// Online, busy or available at block time `now_ms`.
    pub fn status(&self, now_ms: u64, heartbeat_timeout_ms: u64) -> PoolStatus {
        if now_ms.saturating_sub(self.last_heartbeat_ms) > heartbeat_timeout_ms {
            PoolStatus::Offline
        } else if self.active > 0 {
            PoolStatus::Busy
        } else {
            PoolStatus::Available
        }
    }
}

/// A failure count of one provider on one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failures {
    /// The provider.
    pub provider: Address,
    /// How many times it failed on the job.
    pub count: u32,
}

gridwork_types::codec_struct!(Failures {
    provider: Address,
    count: u32
});

/// A published job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Who pays.
    pub requester: Address,
    /// What to run.
    pub prescription: Prescription,
    /// Escrow still held.
    pub escrow: Amount,
    /// The most one task can cost (executor and council together).
    pub max_task_cost: Amount,
    /// Number of tasks.
    pub tasks: u32,
    /// Tasks settled.
    pub settled: u32,
    /// Tasks failed or cancelled.
    pub closed: u32,
    /// Paid out so far.
    pub spent: Amount,
    /// Cancelled by the requester.
    pub cancelled: bool,
    /// Every task settled, failed or cancelled, and the escrow refunded.
    pub finished: bool,
    /// Failures per provider (blocklist at `max_job_failures`).
    pub failures: Vec<Failures>,
    /// When it was submitted.
    pub submitted_ms: u64,
    /// Tasks still waiting for bids or a council after this block time fail and their
    /// escrow returns (`halting.give_up_ms`, or the network's default).
    pub give_up_at_ms: u64,
}

gridwork_types::codec_struct!(Job {
    requester: Address,
    prescription: Prescription,
    escrow: Amount,
    max_task_cost: Amount,
    tasks: u32,
    settled: u32,
    closed: u32,
    spent: Amount,
    cancelled: bool,
    finished: bool,
    failures: Vec<Failures>,
    submitted_ms: u64,
    give_up_at_ms: u64,
});

impl Job {
    fn failures_of(&self, provider: &Address) -> u32 {
        self.failures
            .iter()
            .find(|f| f.provider == *provider)
            .map_or(0, |f| f.count)
    }

    fn add_failure(&mut self, provider: Address) {
        match self.failures.iter_mut().find(|f| f.provider == provider) {
            Some(f) => f.count += 1,
            None => self.failures.push(Failures { provider, count: 1 }),
        }
    }
}

/// Where a task stands. On the wire (JSON) as its lowercase name, which node, client and
/// worker share through this type: renaming a variant is a protocol change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Open for bids.
    Bidding,
    /// Executor and council are working; commitments come in.
    Committing,
    /// Commitments are opened.
    Revealing,
    /// The parties compare each other's revealed outputs (equivalences other than exact
    /// hash, and councils enlarged after a disagreement).
    Judging,
    /// Accepted and paid.
    Settled,
    /// Gave up after too many attempts.
    Failed,
    /// Cancelled by the requester.
    Cancelled,
}

impl Phase {
    /// The name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Bidding => "bidding",
            Phase::Committing => "committing",
            Phase::Revealing => "revealing",
            Phase::Judging => "judging",
            Phase::Settled => "settled",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// Settled, failed or cancelled: nothing more happens to the task.
    pub fn is_decided(self) -> bool {
        matches!(self, Phase::Settled | Phase::Failed | Phase::Cancelled)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

gridwork_types::codec_enum!(Phase, "task phase" {
    0 => Bidding {},
    1 => Committing {},
    2 => Revealing {},
    3 => Settled {},
    4 => Failed {},
    5 => Cancelled {},
    6 => Judging {},
});

/// A bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BidRecord {
    /// The bidder.
    pub provider: Address,
    /// Its price.
    pub price: Amount,
}

gridwork_types::codec_struct!(BidRecord {
    provider: Address,
    price: Amount
});

/// A commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRecord {
    /// Who.
    pub provider: Address,
    /// BLAKE3(output || salt || provider).
    pub commitment: Hash,
}

gridwork_types::codec_struct!(CommitRecord {
    provider: Address,
    commitment: Hash
});

/// An opened commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevealRecord {
    /// Who.
    pub provider: Address,
    /// Output content id.
    pub output: Hash,
    /// Reported run time.
    pub seconds: u64,
    /// The round of the attempt it was revealed in.
    pub round: u8,
}

gridwork_types::codec_struct!(RevealRecord {
    provider: Address,
    output: Hash,
    seconds: u64,
    round: u8
});

/// One party's judgement of the other revealed outputs of an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JudgeRecord {
    /// Who judged.
    pub provider: Address,
    /// The parties whose outputs it found equivalent to its own.
    pub equivalent: Vec<Address>,
    /// The round of the attempt it judged.
    pub round: u8,
}

gridwork_types::codec_struct!(JudgeRecord {
    provider: Address,
    equivalent: Vec<Address>,
    round: u8
});

/// A finished job and its tasks (in index order), as kept in the archive after it leaves the
/// hot state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivedJob {
    /// The job as it finished.
    pub job: Job,
    /// Its tasks, by index.
    pub tasks: Vec<Task>,
}

gridwork_types::codec_struct!(ArchivedJob {
    job: Job,
    tasks: Vec<Task>
});

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    /// Where it stands.
    pub phase: Phase,
    /// 0 for the first run; each reopening adds one.
    pub attempt: u32,
    /// When the current phase's clock started.
    pub phase_started_ms: u64,
    /// When the current phase times out.
    pub deadline_ms: u64,
    /// Bids of this attempt, in arrival order.
    pub bids: Vec<BidRecord>,
    /// The executor of this attempt.
    pub executor: Option<Address>,
    /// Its winning price.
    pub price: Amount,
    /// The council of this attempt.
    pub council: Vec<Address>,
    /// Commitments of this attempt.
    pub commits: Vec<CommitRecord>,
    /// Reveals of this attempt.
    pub reveals: Vec<RevealRecord>,
    /// The accepted output, once settled.
    pub result: Option<Hash>,
    /// Why the task waits, for people (`job status`).
    pub note: String,
    /// Outputs revealed in earlier attempts: revealing one again is refused as a copy
    /// (`ResultCopier`). At most `max_attempts x (council + 1)` entries.
    pub earlier_outputs: Vec<Hash>,
    /// Council seats still to be drawn (at the next block; see `draw_seats`).
    pub seats_to_draw: u8,
    /// Providers dropped from this attempt's council (silent), not to be drawn again.
    pub excluded: Vec<Address>,
    /// The council seats of this attempt: the job's `council_size`, plus
    /// `escalation_seats` for each enlargement.
    pub seats: u8,
    /// How many times this attempt's council was enlarged (its runs reached no clear
    /// majority). Outputs of later rounds use a key of their own, so they cannot be copied
    /// from the reveals of earlier ones.
    pub round: u8,
    /// Judgements of this attempt, each with its round; the latest round's count.
    pub judgements: Vec<JudgeRecord>,
}

gridwork_types::codec_struct!(Task {
    phase: Phase,
    attempt: u32,
    phase_started_ms: u64,
    deadline_ms: u64,
    bids: Vec<BidRecord>,
    executor: Option<Address>,
    price: Amount,
    council: Vec<Address>,
    commits: Vec<CommitRecord>,
    reveals: Vec<RevealRecord>,
    result: Option<Hash>,
    note: String,
    earlier_outputs: Vec<Hash>,
    seats_to_draw: u8,
    excluded: Vec<Address>,
    seats: u8,
    round: u8,
    judgements: Vec<JudgeRecord>,
});

impl Task {
    fn assigned(&self) -> impl Iterator<Item = &Address> {
        self.executor.iter().chain(self.council.iter())
    }

    fn committed(&self, who: &Address) -> Option<&CommitRecord> {
        self.commits.iter().find(|c| c.provider == *who)
    }

    fn revealed(&self, who: &Address) -> bool {
        self.reveals.iter().any(|r| r.provider == *who)
    }

    /// Whether `who` judged in the current round.
    fn judged(&self, who: &Address) -> bool {
        self.judgements
            .iter()
            .any(|j| j.provider == *who && j.round == self.round)
    }
}

/// The providers of one owner that may sit on a council, and the owner's weight.
#[derive(Debug, Clone)]
struct Candidate {
    /// The locked stake of these providers together.
    stake: u128,
    providers: Vec<Address>,
}

/// Draws `seats` owners without replacement, each with probability proportional to its
/// stake, and one provider of each (the one whose hash with the seed is lowest). A party gains
/// no seats by spreading its stake over many owners: its chance is its share of the stake.
/// `None` when fewer than `seats` owners are eligible.
fn draw_by_stake(seed: &[u8], mut owners: Vec<Candidate>, seats: usize) -> Option<Vec<Address>> {
    if owners.len() < seats {
        return None;
    }
    let mut drawn = Vec::with_capacity(seats);
    for seat in 0..seats {
        let total: u128 = owners.iter().map(|c| c.stake).sum();
        let mut h = blake3::Hasher::new();
        h.update(b"gridwork council draw v2");
        h.update(seed);
        h.update(&(seat as u32).to_le_bytes());
        let digest = h.finalize();
        let bytes: [u8; 16] = digest.as_bytes()[..16].try_into().ok()?;
        // Stakes are far below 2^128 / 2^64, so the modulo bias is negligible.
        let mut ticket = u128::from_le_bytes(bytes) % total.max(1);
        let index = owners
            .iter()
            .position(|c| {
                if ticket < c.stake {
                    true
                } else {
                    ticket -= c.stake;
                    false
                }
            })
            .unwrap_or(0);
        let owner = owners.remove(index);
        let provider = owner.providers.iter().min_by_key(|a| {
            let mut h = blake3::Hasher::new();
            h.update(seed);
            h.update(&a.0);
            *h.finalize().as_bytes()
        })?;
        drawn.push(*provider);
    }
    Some(drawn)
}

/// `a * b / c` without overflow for the sizes the ledger meets (c > 0).
/// How a task's runs compare (see [`agreement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Agreement {
    /// No council: nothing to compare with (accepted, never rewarded).
    Unchecked,
    /// A clear majority agrees with the executor: the council members in it.
    Accept(Vec<Address>),
    /// A clear majority disagrees with the executor: its members.
    Reject(Vec<Address>),
    /// No clear majority either way: why, for people.
    Split(String),
}

/// The parties who revealed in `t`, and for each a bit set of those whose output agrees with
/// its own: the same content id, or (in a judged round) named as equivalent: by both when
/// both judged, by the one that judged when the other stayed silent. A party's own claims
/// need the other side's confirmation, so a vote is bound to the output its sender committed
/// to before anyone revealed: a party that did not run the program has an output nobody
/// names. Judgements of the latest round judged count.
fn agreeing_pairs(t: &Task) -> (Vec<Address>, Vec<u32>) {
    let parties: Vec<Address> = t.reveals.iter().map(|r| r.provider).take(32).collect();
    let round = t.judgements.iter().map(|j| j.round).max();
    let judgement = |a: &Address| {
        t.judgements
            .iter()
            .find(|j| j.provider == *a && Some(j.round) == round)
    };
    let names = |a: &Address, b: &Address| judgement(a).map(|j| j.equivalent.contains(b));
    let mut adjacent = vec![0u32; parties.len()];
    for i in 0..parties.len() {
        for j in 0..parties.len() {
            let same = t.reveals[i].output == t.reveals[j].output;
            let judged = match (
                names(&parties[i], &parties[j]),
                names(&parties[j], &parties[i]),
            ) {
                (Some(x), Some(y)) => x && y,
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => false,
            };
            if i != j && (same || judged) {
                adjacent[i] |= 1 << j;
            }
        }
    }
    (parties, adjacent)
}

/// Every largest group of mutually agreeing parties (cliques of `adjacent`), as bit sets,
/// with their size. Bron-Kerbosch with pivoting over at most 16 parties.
fn largest_groups(adjacent: &[u32]) -> (u32, Vec<u32>) {
    fn expand(r: u32, mut p: u32, mut x: u32, adj: &[u32], best: &mut (u32, Vec<u32>)) {
        if p == 0 && x == 0 {
            let size = r.count_ones();
            if size > best.0 {
                *best = (size, vec![r]);
            } else if size == best.0 {
                best.1.push(r);
            }
            return;
        }
        if r.count_ones() + p.count_ones() < best.0 {
            return;
        }
        let pivot = (p | x).trailing_zeros() as usize;
        let mut candidates = p & !adj[pivot];
        while candidates != 0 {
            let v = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            expand(r | (1 << v), p & adj[v], x & adj[v], adj, best);
            p &= !(1 << v);
            x |= 1 << v;
        }
    }
    let all = if adjacent.is_empty() {
        0
    } else {
        u32::MAX >> (32 - adjacent.len())
    };
    let mut best = (0, Vec::new());
    expand(0, all, 0, adjacent, &mut best);
    best
}

/// The largest groups of runs that all agree with each other, and whether one of them is a
/// clear majority: at least two runs, two thirds of the task's seats (executor and council,
/// silent seats included: silence is not assent), and more than half of the council's seats.
/// When every largest group is on the same side of the executor's result, that side wins;
/// when they differ, or none is that large, the runs are split.
fn agreement(t: &Task, executor: Address) -> Agreement {
    if t.seats == 0 && t.council.is_empty() {
        return Agreement::Unchecked;
    }
    let (parties, adjacent) = agreeing_pairs(t);
    let m = parties.len();
    if m > 16 {
        return Agreement::Split(format!("{m} runs are more than can be compared"));
    }
    let (best, groups) = largest_groups(&adjacent);
    let seats = usize::from(t.seats).max(t.council.len());
    let n = 1 + seats;
    let k = best as usize;
    let silent = n.saturating_sub(m);
    let e = parties
        .iter()
        .position(|a| *a == executor)
        .unwrap_or(usize::MAX);
    let with_executor = groups
        .iter()
        .filter(|g| e < m && *g & (1 << e) != 0)
        .count();
    let members_in_group = if with_executor > 0 { k - 1 } else { k };
    if k >= 2 && 3 * k >= 2 * n && 2 * members_in_group > seats {
        let members = |gs: &[u32]| -> Vec<Address> {
            let union = gs.iter().fold(0u32, |u, g| u | g);
            (0..m)
                .filter(|i| union & (1 << i) != 0 && *i != e)
                .map(|i| parties[i])
                .collect()
        };
        if with_executor == groups.len() {
            return Agreement::Accept(members(&groups));
        }
        if with_executor == 0 {
            return Agreement::Reject(members(&groups));
        }
        return Agreement::Split(format!(
            "two groups of {k} agreeing runs (of {n} seats) disagree about the executor's result"
        ));
    }
    Agreement::Split(format!(
        "the largest group of agreeing runs has {k} of {n} seats ({silent} silent); a clear majority needs at least two runs, two thirds of the seats and more than half of the council"
    ))
}

/// The parties whose output at least one other party's output agrees with.
fn confirmed_by_someone(t: &Task) -> Vec<Address> {
    let (parties, adjacent) = agreeing_pairs(t);
    parties
        .into_iter()
        .zip(adjacent)
        .filter(|(_, a)| *a != 0)
        .map(|(p, _)| p)
        .collect()
}

/// The median run time reported by `who` in `t`, if any of them revealed.
fn median_seconds(t: &Task, who: &[Address]) -> Option<u64> {
    let mut theirs: Vec<u64> = t
        .reveals
        .iter()
        .filter(|r| who.contains(&r.provider))
        .map(|r| r.seconds)
        .collect();
    theirs.sort_unstable();
    theirs.get(theirs.len() / 2).copied()
}

/// What the executor of a task of `job` earns at `price` for `seconds` of run time.
fn pay_for(job: &Job, price: Amount, seconds: u64) -> Amount {
    match job.prescription.payment {
        Payment::PerTaskSecond { .. } => Amount(price.0.saturating_mul(u128::from(seconds))),
        Payment::FixedPerTask { .. } => price,
    }
}

/// The most seats a task's council can reach by enlargement: the job's council size plus
/// `escalation_seats` for each of `max_escalations`, never past `max_council_size` (nor below
/// the job's own size). A job without a council is never enlarged.
pub fn largest_council(council_size: u8, params: &crate::Params) -> u8 {
    if council_size == 0 {
        return 0;
    }
    let grown = u32::from(council_size)
        + u32::from(params.max_escalations) * u32::from(params.escalation_seats);
    grown.min(u32::from(params.max_council_size.max(council_size))) as u8
}

fn mul_div(a: u128, b: u128, c: u128) -> u128 {
    (a / c) * b + (a % c) * b / c
}

/// The largest cost of one task of `p`: the executor at the highest price, a full council
/// enlarged as far as it can be ([`largest_council`]) and the market fee on both.
pub fn max_task_cost(p: &Prescription, params: &crate::Params) -> Option<Amount> {
    let council_share_bps = params.council_share_bps;
    let cap = p
        .halting
        .reserve_price
        .map_or(p.payment.max_price(), |r| r.min(p.payment.max_price()));
    let executor = match p.payment {
        Payment::PerTaskSecond { .. } => cap
            .0
            .checked_mul(u128::from(p.instructions.task_deadline_ms.div_ceil(1000)))?,
        Payment::FixedPerTask { .. } => cap.0,
    };
    let council = mul_div(
        executor,
        u128::from(council_share_bps)
            * u128::from(largest_council(p.instructions.council_size, params)),
        10_000,
    );
    let work = executor.checked_add(council)?;
    let fee = mul_div(work, u128::from(params.market_fee_bps), 10_000);
    work.checked_add(fee).map(Amount)
}

impl State {
    /// A provider's record.
    pub fn provider(&self, address: &Address) -> Option<&Provider> {
        self.providers.get(address)
    }

    /// Every provider, by address.
    pub fn providers(&self) -> impl Iterator<Item = (&Address, &Provider)> {
        self.providers.iter()
    }

    /// A job.
    pub fn job(&self, id: &Hash) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// Every job, by id.
    pub fn jobs(&self) -> impl Iterator<Item = (&Hash, &Job)> {
        self.jobs.iter()
    }

    /// A task.
    pub fn task(&self, key: &TaskKey) -> Option<&Task> {
        self.tasks.get(key)
    }

    /// The tasks of a job, by index.
    pub fn tasks_of(&self, job: &Hash) -> impl Iterator<Item = (&TaskKey, &Task)> {
        let job = *job;
        self.tasks
            .range(TaskKey { job, index: 0 }..)
            .take_while(move |(k, _)| k.job == job)
    }

    /// Every open task (not settled, failed or cancelled), in no particular order.
    pub fn open_tasks(&self) -> impl Iterator<Item = (&TaskKey, &Task)> {
        self.open_tasks
            .iter()
            .filter_map(|(key, _)| Some((key, self.tasks.get(key)?)))
    }

    /// The earliest deadline of an open task, if any (a block is due then even without
    /// transactions).
    pub fn next_deadline(&self) -> Option<u64> {
        self.open_tasks.iter().map(|(_, d)| *d).min()
    }

    /// Checks a market transaction against the state without changing it. `Ok` means it
    /// applies now (the mempool admits it; the block applies it).
    pub(crate) fn check_market(
        &self,
        kind: &gridwork_types::TxKind,
        sender: Address,
        sender_account: &Account,
        now: u64,
    ) -> Result<(), TxError> {
        use gridwork_types::TxKind as K;
        let p = &self.params;
        match kind {
            K::RegisterProvider { owner, .. } => {
                if let Some(approval) = owner {
                    approval
                        .verify(&self.chain_id, &sender)
                        .map_err(|_| TxError::BadOwnerApproval { worker: sender })?;
                }
                if sender_account.stake_locked < p.min_provider_stake {
                    return Err(TxError::StakeTooLow {
                        required: p.min_provider_stake,
                        locked: sender_account.stake_locked,
                    });
                }
            }
            K::Heartbeat => {
                self.providers
                    .get(&sender)
                    .ok_or(TxError::NotAProvider { address: sender })?;
            }
            K::AnnouncePeer { peer } => {
                self.providers
                    .get(&sender)
                    .ok_or(TxError::NotAProvider { address: sender })?;
                peer.sockets()
                    .map_err(|address| TxError::BadPeerAddress { address })?;
            }
            K::SubmitJob {
                prescription,
                deposit,
            } => {
                validate_prescription(prescription, p)?;
                let tasks = prescription.instructions.task_count();
                let per_task = max_task_cost(prescription, p).ok_or(TxError::Overflow)?;
                let required = per_task
                    .0
                    .checked_mul(u128::from(tasks))
                    .ok_or(TxError::Overflow)?;
                if deposit.0 < required {
                    return Err(TxError::DepositTooLow {
                        required: Amount(required),
                        deposit: *deposit,
                    });
                }
            }
            K::CancelJob { job } => {
                let j = self
                    .jobs
                    .get(job)
                    .ok_or(TxError::UnknownJob { job: *job })?;
                if j.requester != sender {
                    return Err(TxError::NotRequester { job: *job });
                }
                if j.cancelled || j.finished {
                    return Err(TxError::JobClosed { job: *job });
                }
            }
            K::Bid { job, task, price } => {
                self.check_bid(sender, sender_account, *job, *task, *price, now)?
            }
            K::Commit {
                job, task, attempt, ..
            } => {
                let t = self.live_task(*job, *task, *attempt, Phase::Committing)?;
                if !t.assigned().any(|a| *a == sender) {
                    return Err(TxError::NotAssigned {
                        job: *job,
                        task: *task,
                    });
                }
                if t.committed(&sender).is_some() {
                    return Err(TxError::AlreadyDone { what: "committed" });
                }
            }
            K::Reveal {
                job,
                task,
                attempt,
                output,
                salt,
                ..
            } => {
                let t = self.live_task(*job, *task, *attempt, Phase::Revealing)?;
                let c = t.committed(&sender).ok_or(TxError::NotAssigned {
                    job: *job,
                    task: *task,
                })?;
                if t.revealed(&sender) {
                    return Err(TxError::AlreadyDone { what: "revealed" });
                }
                if c.commitment != commitment(output, salt, &sender) {
                    return Err(TxError::RevealMismatch);
                }
                let earlier_round = t
                    .reveals
                    .iter()
                    .any(|r| r.round < t.round && r.output == *output);
                if earlier_round || t.earlier_outputs.contains(output) {
                    return Err(TxError::CopiedResult { output: *output });
                }
                let executor = t.executor.unwrap_or(sender);
                if sender != executor && !t.revealed(&executor) {
                    return Err(TxError::ExecutorNotRevealed);
                }
            }
            K::Judge {
                job,
                task,
                attempt,
                round,
                equivalent,
            } => {
                let t = self.live_task(*job, *task, *attempt, Phase::Judging)?;
                if *round != t.round {
                    return Err(TxError::BadJudgement {
                        reason: format!(
                            "it is for round {round}; the task is in round {}",
                            t.round
                        ),
                    });
                }
                if !t.revealed(&sender) {
                    return Err(TxError::NotAssigned {
                        job: *job,
                        task: *task,
                    });
                }
                if t.judged(&sender) {
                    return Err(TxError::AlreadyDone { what: "judged" });
                }
                for (i, who) in equivalent.iter().enumerate() {
                    let reason = if *who == sender {
                        Some(format!("names the sender {who}; name the others only"))
                    } else if !t.revealed(who) {
                        Some(format!(
                            "names {who}, which revealed no output in this attempt"
                        ))
                    } else if equivalent[..i].contains(who) {
                        Some(format!("names {who} twice"))
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        return Err(TxError::BadJudgement { reason });
                    }
                }
            }
            K::Transfer { .. } | K::StakeLock { .. } | K::StakeUnbond { .. } | K::StakeWithdraw => {
            }
        }
        Ok(())
    }

    fn live_task(
        &self,
        job: Hash,
        index: u32,
        attempt: u32,
        phase: Phase,
    ) -> Result<&Task, TxError> {
        let t = self
            .tasks
            .get(&TaskKey { job, index })
            .ok_or(TxError::UnknownTask { job, task: index })?;
        if t.attempt != attempt {
            return Err(TxError::WrongAttempt {
                current: t.attempt,
                got: attempt,
            });
        }
        if t.phase != phase {
            return Err(TxError::WrongPhase {
                job,
                task: index,
                phase: t.phase,
            });
        }
        Ok(t)
    }

    fn check_bid(
        &self,
        sender: Address,
        account: &Account,
        job_id: Hash,
        index: u32,
        price: Amount,
        now: u64,
    ) -> Result<(), TxError> {
        let p = &self.params;
        let provider = self
            .providers
            .get(&sender)
            .ok_or(TxError::NotAProvider { address: sender })?;
        if account.stake_locked < p.min_provider_stake {
            return Err(TxError::StakeTooLow {
                required: p.min_provider_stake,
                locked: account.stake_locked,
            });
        }
        let job = self
            .jobs
            .get(&job_id)
            .ok_or(TxError::UnknownJob { job: job_id })?;
        let task = self
            .tasks
            .get(&TaskKey { job: job_id, index })
            .ok_or(TxError::UnknownTask {
                job: job_id,
                task: index,
            })?;
        if task.phase != Phase::Bidding {
            return Err(TxError::WrongPhase {
                job: job_id,
                task: index,
                phase: task.phase,
            });
        }
        if job.requester == sender {
            return Err(TxError::OwnJob);
        }
        if let Some(reason) = job
            .prescription
            .instructions
            .requirements
            .unmet_by(&provider.hardware)
        {
            return Err(TxError::HardwareUnfit { reason });
        }
        if job.failures_of(&sender) >= p.max_job_failures {
            return Err(TxError::Blocklisted { job: job_id });
        }
        let h = &job.prescription.halting;
        let cap = h
            .reserve_price
            .map_or(job.prescription.payment.max_price(), |r| {
                r.min(job.prescription.payment.max_price())
            });
        if price > cap || price.0 == 0 {
            return Err(TxError::BadPrice { price, max: cap });
        }
        if task.bids.iter().any(|b| b.provider == sender) {
            return Err(TxError::AlreadyDone {
                what: "bid on this task",
            });
        }
        if provider.status(now, p.heartbeat_timeout_ms) == PoolStatus::Offline {
            return Err(TxError::ProviderOffline {
                address: sender,
                last_heartbeat_ms: provider.last_heartbeat_ms,
            });
        }
        Ok(())
    }

    /// Applies a checked market transaction. Infallible: [`State::check_market`] ran first.
    pub(crate) fn execute_market(
        &mut self,
        kind: &gridwork_types::TxKind,
        sender: Address,
        tx_hash: Hash,
        now: u64,
    ) -> Vec<Event> {
        use gridwork_types::TxKind as K;
        match kind {
            K::RegisterProvider { hardware, owner } => {
                let owner = owner.map_or(sender, |o| o.owner_address());
                let provider = match self.providers.get(&sender) {
                    Some(existing) => Provider {
                        owner,
                        hardware: hardware.clone(),
                        last_heartbeat_ms: now,
                        ..existing.clone()
                    },
                    None => Provider {
                        owner,
                        hardware: hardware.clone(),
                        registered_ms: now,
                        last_heartbeat_ms: now,
                        streak: 0,
                        validated: 0,
                        failed: 0,
                        slashed: Amount::ZERO,
                        earned: Amount::ZERO,
                        active: 0,
                        peer: None,
                        missed: 0,
                    },
                };
                self.providers.insert(sender, provider);
                vec![Event::ProviderRegistered { provider: sender }]
            }
            K::AnnouncePeer { peer } => {
                if let Some(mut provider) = self.providers.get(&sender).cloned() {
                    provider.peer = (!peer.addrs.is_empty()).then(|| peer.clone());
                    self.providers.insert(sender, provider);
                }
                vec![Event::PeerAnnounced { provider: sender }]
            }
            K::Heartbeat => {
                if let Some(mut provider) = self.providers.get(&sender).cloned() {
                    provider.last_heartbeat_ms = now;
                    self.providers.insert(sender, provider);
                }
                vec![Event::Heartbeat { provider: sender }]
            }
            K::SubmitJob {
                prescription,
                deposit,
            } => self.submit_job(sender, tx_hash, prescription, *deposit, now),
            K::CancelJob { job } => self.cancel_job(*job),
            K::Bid { job, task, price } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                let mut events = vec![Event::BidPlaced {
                    job: *job,
                    task: *task,
                    provider: sender,
                    price: *price,
                }];
                if let Some(mut t) = self.tasks.get(&key).cloned() {
                    t.bids.push(BidRecord {
                        provider: sender,
                        price: *price,
                    });
                    t.note = format!("{} bid(s)", t.bids.len());
                    let first = self
                        .jobs
                        .get(job)
                        .map_or(0, |j| j.prescription.halting.first_bids);
                    let enough =
                        (first > 0 && t.bids.len() as u32 >= first) || now >= t.deadline_ms;
                    self.tasks.insert(key, t);
                    if enough {
                        events.extend(self.close_auction(key, now));
                    }
                }
                events
            }
            K::Commit {
                job,
                task,
                commitment,
                ..
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                let Some(mut t) = self.tasks.get(&key).cloned() else {
                    return Vec::new();
                };
                t.commits.push(CommitRecord {
                    provider: sender,
                    commitment: *commitment,
                });
                let events = vec![Event::Committed {
                    job: *job,
                    task: *task,
                    attempt: t.attempt,
                    provider: sender,
                }];
                let all = t.seats_to_draw == 0 && t.assigned().all(|a| t.committed(a).is_some());
                if all {
                    t.phase = Phase::Revealing;
                    t.phase_started_ms = now;
                    t.deadline_ms = now.saturating_add(self.params.reveal_window_ms);
                    t.note = "revealing".into();
                    self.open_tasks.insert(key, t.deadline_ms);
                }
                self.tasks.insert(key, t);
                events
            }
            K::Reveal {
                job,
                task,
                output,
                seconds,
                ..
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                let Some(mut t) = self.tasks.get(&key).cloned() else {
                    return Vec::new();
                };
                t.reveals.push(RevealRecord {
                    provider: sender,
                    output: *output,
                    seconds: *seconds,
                    round: t.round,
                });
                let mut events = vec![Event::Revealed {
                    job: *job,
                    task: *task,
                    attempt: t.attempt,
                    provider: sender,
                    output: *output,
                }];
                let done = t.commits.iter().all(|c| t.revealed(&c.provider));
                self.tasks.insert(key, t);
                if done {
                    events.extend(self.after_reveals(key, now));
                }
                events
            }
            K::Judge {
                job,
                task,
                equivalent,
                ..
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                let Some(mut t) = self.tasks.get(&key).cloned() else {
                    return Vec::new();
                };
                t.judgements.push(JudgeRecord {
                    provider: sender,
                    equivalent: equivalent.clone(),
                    round: t.round,
                });
                let mut events = vec![Event::Judged {
                    job: *job,
                    task: *task,
                    attempt: t.attempt,
                    provider: sender,
                    equivalent: equivalent.clone(),
                }];
                let done = t.reveals.iter().all(|r| t.judged(&r.provider));
                self.tasks.insert(key, t);
                if done {
                    events.extend(self.tally(key, now));
                }
                events
            }
            K::Transfer { .. } | K::StakeLock { .. } | K::StakeUnbond { .. } | K::StakeWithdraw => {
                Vec::new()
            }
        }
    }

    fn submit_job(
        &mut self,
        requester: Address,
        id: Hash,
        p: &Prescription,
        deposit: Amount,
        now: u64,
    ) -> Vec<Event> {
        let tasks = p.instructions.task_count() as u32;
        let max_task_cost = max_task_cost(p, &self.params).unwrap_or(Amount::ZERO);
        self.jobs.insert(
            id,
            Job {
                requester,
                prescription: p.clone(),
                escrow: deposit,
                max_task_cost,
                tasks,
                settled: 0,
                closed: 0,
                spent: Amount::ZERO,
                cancelled: false,
                finished: false,
                failures: Vec::new(),
                submitted_ms: now,
                give_up_at_ms: now.saturating_add(if p.halting.give_up_ms == 0 {
                    self.params.default_give_up_ms
                } else {
                    p.halting.give_up_ms
                }),
            },
        );
        let deadline = now.saturating_add(p.halting.deadline_ms);
        for index in 0..tasks {
            let key = TaskKey { job: id, index };
            self.tasks.insert(
                key,
                Task {
                    phase: Phase::Bidding,
                    attempt: 0,
                    phase_started_ms: now,
                    deadline_ms: deadline,
                    bids: Vec::new(),
                    executor: None,
                    price: Amount::ZERO,
                    council: Vec::new(),
                    commits: Vec::new(),
                    reveals: Vec::new(),
                    result: None,
                    note: "open for bids".into(),
                    earlier_outputs: Vec::new(),
                    seats_to_draw: 0,
                    excluded: Vec::new(),
                    seats: p.instructions.council_size,
                    round: 0,
                    judgements: Vec::new(),
                },
            );
            self.open_tasks.insert(key, deadline);
        }
        vec![Event::JobSubmitted {
            job: id,
            requester,
            tasks,
            deposit,
        }]
    }

    fn cancel_job(&mut self, id: Hash) -> Vec<Event> {
        let Some(mut job) = self.jobs.get(&id).cloned() else {
            return Vec::new();
        };
        let keys: Vec<(TaskKey, Task)> = self.tasks_of(&id).map(|(k, t)| (*k, t.clone())).collect();
        let mut running = 0u128;
        for (key, mut t) in keys {
            match t.phase {
                Phase::Bidding => {
                    t.phase = Phase::Cancelled;
                    t.note = "cancelled by the requester".into();
                    job.closed += 1;
                    self.open_tasks.remove(&key);
                    self.tasks.insert(key, t);
                }
                Phase::Committing | Phase::Revealing | Phase::Judging => running += 1,
                Phase::Settled | Phase::Failed | Phase::Cancelled => {}
            }
        }
        job.cancelled = true;
        let keep = Amount(
            job.max_task_cost
                .0
                .saturating_mul(running)
                .min(job.escrow.0),
        );
        let refund = job.escrow.saturating_sub(keep);
        job.escrow = keep;
        self.credit(job.requester, refund);
        let mut events = vec![Event::JobCancelled { job: id, refund }];
        self.jobs.insert(id, job);
        events.extend(self.finish_if_done(id));
        events
    }

    /// Runs the transitions due at block time `now`: auction deadlines, missed commitments,
    /// missed reveals. Called at the start of every block, before its transactions.
    pub(crate) fn run_deadlines(&mut self, now: u64) -> Vec<Event> {
        let due: Vec<(TaskKey, u64)> = self
            .open_tasks
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, d)| (*k, *d))
            .collect();
        // A deadline that passed long before this block passed while the chain was down
        // (the producer makes a block at every deadline): nobody could commit, reveal or
        // bid, so nobody is penalised for it. It moves to a grace period after this block.
        let (stalled, due): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(_, d)| now - d > self.params.stall_after_ms);
        let mut events = Vec::new();
        for (key, _) in stalled {
            let until = now.saturating_add(self.params.outage_grace_ms);
            self.open_tasks.insert(key, until);
            if let Some(mut t) = self.tasks.get(&key).cloned() {
                t.deadline_ms = until;
                self.tasks.insert(key, t);
            }
            events.push(Event::DeadlineDeferred {
                job: key.job,
                task: key.index,
                until_ms: until,
            });
        }
        let due: Vec<TaskKey> = due.into_iter().map(|(k, _)| k).collect();
        for key in due {
            let Some(t) = self.tasks.get(&key).cloned() else {
                self.open_tasks.remove(&key);
                continue;
            };
            match t.phase {
                Phase::Bidding => {
                    let give_up_at = self.jobs.get(&key.job).map_or(0, |j| j.give_up_at_ms);
                    if now >= give_up_at {
                        let why = if t.bids.is_empty() {
                            "no provider bid in time".to_string()
                        } else {
                            t.note.clone()
                        };
                        events.extend(self.give_up(key, t, why));
                    } else if t.bids.is_empty() {
                        // No block is needed until someone bids (the first bid closes it) or
                        // the job's bound passes.
                        let mut t = t;
                        t.note = "no bids yet; the first bid closes the auction".into();
                        self.open_tasks.insert(key, give_up_at);
                        self.tasks.insert(key, t);
                    } else {
                        events.extend(self.close_auction(key, now));
                    }
                }
                Phase::Committing if t.seats_to_draw > 0 => {
                    events.extend(self.draw_seats(key, t, now));
                }
                Phase::Committing => {
                    let executor = t.executor.unwrap_or(Address([0; 20]));
                    if t.committed(&executor).is_none() {
                        events.extend(self.penalise_vanished(
                            key,
                            executor,
                            "missed the commit deadline",
                        ));
                        events.extend(self.reopen(
                            key,
                            now,
                            "the executor missed its deadline".into(),
                        ));
                    } else {
                        let silent: Vec<Address> = t
                            .council
                            .iter()
                            .filter(|c| t.committed(c).is_none())
                            .copied()
                            .collect();
                        for member in &silent {
                            events.extend(self.penalise_timeout(
                                key,
                                *member,
                                "missed the commit deadline",
                            ));
                        }
                        // A silent seat is never just dropped (an empty council would let the
                        // result through unchecked): it is drawn again, or the task reopens.
                        events.extend(self.redraw_silent(key, t, &silent, now));
                    }
                }
                Phase::Revealing => {
                    let executor = t.executor.unwrap_or(Address([0; 20]));
                    if !t.revealed(&executor) {
                        events.extend(self.penalise_vanished(
                            key,
                            executor,
                            "missed the reveal deadline",
                        ));
                        events.extend(self.reopen(key, now, "the executor did not reveal".into()));
                    } else {
                        let silent: Vec<Address> = t
                            .council
                            .iter()
                            .filter(|c| !t.revealed(c))
                            .copied()
                            .collect();
                        for member in &silent {
                            events.extend(self.penalise_timeout(
                                key,
                                *member,
                                "missed the reveal deadline",
                            ));
                        }
                        events.extend(self.after_reveals(key, now));
                    }
                }
                Phase::Judging => {
                    let silent: Vec<Address> = t
                        .reveals
                        .iter()
                        .filter(|r| !t.judged(&r.provider))
                        .map(|r| r.provider)
                        .collect();
                    for who in &silent {
                        events.extend(self.penalise_timeout(
                            key,
                            *who,
                            "missed the judging deadline",
                        ));
                    }
                    events.extend(self.tally(key, now));
                }
                Phase::Settled | Phase::Failed | Phase::Cancelled => {
                    self.open_tasks.remove(&key);
                }
            }
        }
        events
    }

    /// Opens the seats of council members who missed the commit deadline, to be drawn at
    /// the next block (`draw_seats`, which reopens the task if too few providers are left);
    /// the new members get a full task deadline, and the executor's commitment stands.
    fn redraw_silent(
        &mut self,
        key: TaskKey,
        mut t: Task,
        silent: &[Address],
        now: u64,
    ) -> Vec<Event> {
        for member in silent {
            self.adjust_active(member, -1);
        }
        t.council.retain(|c| !silent.contains(c));
        t.commits.retain(|c| !silent.contains(&c.provider));
        t.excluded.extend(silent.iter().copied());
        t.seats_to_draw = silent.len() as u8;
        t.deadline_ms = now;
        t.note = format!(
            "{} silent council member(s) to be replaced at the next block",
            silent.len()
        );
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CouncilRedrawn {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            replaced: silent.to_vec(),
            council: t.council.clone(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    fn extend_auction(&mut self, key: TaskKey, mut t: Task, now: u64, note: String) -> Vec<Event> {
        let (window, give_up_at) = self.jobs.get(&key.job).map_or((1, 0), |j| {
            (j.prescription.halting.deadline_ms.max(1), j.give_up_at_ms)
        });
        if now >= give_up_at {
            return self.give_up(key, t, note);
        }
        t.deadline_ms = now.saturating_add(window).min(give_up_at);
        t.note = note;
        self.open_tasks.insert(key, t.deadline_ms);
        self.tasks.insert(key, t);
        Vec::new()
    }

    /// Chooses the executor and draws the council; if no council can be formed the auction
    /// stays open and the note says why.
    fn close_auction(&mut self, key: TaskKey, now: u64) -> Vec<Event> {
        let (Some(mut t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let weight = |a: &Address| {
            10_000 + 500 * u128::from(self.providers.get(a).map_or(0, |p| p.streak.min(10)))
        };
        let Some(winner) = t
            .bids
            .iter()
            .enumerate()
            .min_by(|(i, a), (j, b)| {
                let ea = mul_div(a.price.0, 10_000, weight(&a.provider));
                let eb = mul_div(b.price.0, 10_000, weight(&b.provider));
                ea.cmp(&eb).then(a.price.cmp(&b.price)).then(i.cmp(j))
            })
            .map(|(_, b)| b.clone())
        else {
            return Vec::new();
        };
        let size = usize::from(job.prescription.instructions.council_size);
        let available = self
            .council_candidates(&job, winner.provider, now, &[])
            .len();
        if available < size {
            let note = format!(
                "waiting for council members: needs {size} eligible providers of distinct owners besides the executor, {available} available"
            );
            return self.extend_auction(key, t, now, note);
        }
        self.adjust_active(&winner.provider, 1);
        t.phase = Phase::Committing;
        t.executor = Some(winner.provider);
        t.price = winner.price;
        t.council = Vec::new();
        t.seats = size as u8;
        t.seats_to_draw = size as u8;
        t.phase_started_ms = now;
        // The council is drawn at the next block, from this block's hash (see `draw_seats`):
        // nobody sending the closing bid, or the block before it, can know it.
        t.deadline_ms = if size > 0 {
            now
        } else {
            now.saturating_add(job.prescription.instructions.task_deadline_ms)
        };
        t.note = if size > 0 {
            "running; council drawn at the next block".into()
        } else {
            "running".into()
        };
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::AuctionClosed {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            executor: winner.provider,
            price: winner.price,
            council: Vec::new(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// Fills a task's empty council seats, at the first block after they were opened (by the
    /// auction's close or by silent members): the seed is the hash of the block that opened
    /// them (this block's parent), which nobody knew when sending the transactions that went
    /// into it. Without enough eligible providers the task reopens (nobody is at fault).
    fn draw_seats(&mut self, key: TaskKey, mut t: Task, now: u64) -> Vec<Event> {
        let Some(job) = self.jobs.get(&key.job).cloned() else {
            return Vec::new();
        };
        let Some(executor) = t.executor else {
            return Vec::new();
        };
        let seats = usize::from(t.seats_to_draw);
        let mut seated = t.council.clone();
        seated.extend(t.excluded.iter().copied());
        let candidates = self.council_candidates(&job, executor, now, &seated);
        let mut seed = Vec::with_capacity(80);
        self.head_hash.encode(&mut seed);
        key.encode(&mut seed);
        t.attempt.encode(&mut seed);
        (t.council.len() as u32).encode(&mut seed);
        let Some(drawn) = draw_by_stake(&seed, candidates, seats) else {
            if t.round > 0 {
                // Enlarging failed: decide with the runs revealed so far.
                self.tasks.insert(key, t.clone());
                return self.unresolved(
                    key,
                    t,
                    &job,
                    now,
                    "too few eligible providers of distinct owners to enlarge the council".into(),
                );
            }
            self.tasks.insert(key, t);
            return self.reopen(
                key,
                now,
                "too few eligible providers of distinct owners to fill the council".into(),
            );
        };
        for member in &drawn {
            self.adjust_active(member, 1);
        }
        t.council.extend(drawn.iter().copied());
        t.seats_to_draw = 0;
        t.deadline_ms = now.saturating_add(job.prescription.instructions.task_deadline_ms);
        t.note = "running".into();
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CouncilDrawn {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            council: t.council.clone(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// Who may sit on a council for `job` besides `executor` and the `seated`: online,
    /// staked providers that meet the requirements and are not blocklisted, of owners other
    /// than the executor's, the requester's and the seated members'. Grouped by owner: each
    /// owner's providers in address order, with the owner's stake (the locked stake of those
    /// providers) as its weight in the draw. In owner order.
    fn council_candidates(
        &self,
        job: &Job,
        executor: Address,
        now: u64,
        seated: &[Address],
    ) -> Vec<Candidate> {
        let p = &self.params;
        let owner_of = |a: &Address| self.providers.get(a).map_or(*a, |p| p.owner);
        let mut barred: Vec<Address> = seated.iter().map(owner_of).collect();
        barred.extend([owner_of(&executor), job.requester, owner_of(&job.requester)]);
        let mut by_owner: std::collections::BTreeMap<Address, Candidate> = Default::default();
        for (a, prov) in self.providers.iter() {
            let stake = self
                .accounts
                .get(a)
                .map_or(Amount::ZERO, |acct| acct.stake_locked);
            let eligible = *a != executor
                && *a != job.requester
                && !seated.contains(a)
                && !barred.contains(&prov.owner)
                && prov.status(now, p.heartbeat_timeout_ms) != PoolStatus::Offline
                && stake >= p.min_provider_stake
                && job
                    .prescription
                    .instructions
                    .requirements
                    .unmet_by(&prov.hardware)
                    .is_none()
                && job.failures_of(a) < p.max_job_failures;
            if eligible {
                let c = by_owner.entry(prov.owner).or_insert_with(|| Candidate {
                    stake: 0,
                    providers: Vec::new(),
                });
                c.stake = c.stake.saturating_add(stake.0);
                c.providers.push(*a);
            }
        }
        by_owner.into_values().collect()
    }

    fn adjust_active(&mut self, provider: &Address, delta: i32) {
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.active = p.active.saturating_add_signed(delta);
            self.providers.insert(*provider, p);
        }
    }

    /// After the reveals (all in, or the window closed): under exact-hash equivalence in the
    /// first round the revealed ids are the votes and the task is decided at once; otherwise
    /// the parties judge each other's outputs first.
    fn after_reveals(&mut self, key: TaskKey, now: u64) -> Vec<Event> {
        let (Some(mut t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let exact = matches!(job.prescription.equivalence, Equivalence::ExactHash {});
        if t.council.is_empty() || (exact && t.round == 0) || t.reveals.len() < 2 {
            return self.tally(key, now);
        }
        t.phase = Phase::Judging;
        t.phase_started_ms = now;
        t.deadline_ms = now.saturating_add(self.params.judge_window_ms);
        t.note = "judging: the parties compare each other's outputs".into();
        self.open_tasks.insert(key, t.deadline_ms);
        self.tasks.insert(key, t);
        Vec::new()
    }

    /// Decides a task from its reveals and judgements (see [`agreement`]): against a clear
    /// majority the minority is slashed; without one the council is enlarged, and when even
    /// the enlarged council's runs agree with no clear majority the program is judged
    /// nondeterministic.
    fn tally(&mut self, key: TaskKey, now: u64) -> Vec<Event> {
        let (Some(t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let Some(executor) = t.executor else {
            return Vec::new();
        };
        let Some(exec_reveal) = t.reveals.iter().find(|r| r.provider == executor).cloned() else {
            return Vec::new();
        };
        let outcome = agreement(&t, executor);
        let (accepted, majority) = match outcome {
            Agreement::Unchecked => (true, Vec::new()),
            Agreement::Accept(majority) => (true, majority),
            Agreement::Reject(majority) => (false, majority),
            Agreement::Split(why) => {
                let largest =
                    largest_council(job.prescription.instructions.council_size, &self.params);
                if t.round < self.params.max_escalations && t.seats < largest {
                    return self.enlarge(key, t, largest, now, why);
                }
                return self.unresolved(key, t, &job, now, why);
            }
        };
        // Everyone who revealed (and, in a judged round, judged: the silent paid for their
        // silence) and is not in the clear majority disagreed with it.
        let judged_round = t.phase == Phase::Judging;
        let minority: Vec<Address> = t
            .reveals
            .iter()
            .map(|r| r.provider)
            .filter(|a| *a != executor && !majority.contains(a))
            .filter(|a| !judged_round || t.judged(a))
            .collect();
        let mut events = Vec::new();
        let p = self.params.clone();
        let deadline_s = job
            .prescription
            .instructions
            .task_deadline_ms
            .div_ceil(1000);
        if accepted {
            // The run time paid for is the executor's claim, but never more than the median
            // of what the agreeing council members measured for their own runs.
            let seconds = exec_reveal
                .seconds
                .min(median_seconds(&t, &majority).unwrap_or(u64::MAX))
                .min(deadline_s);
            let paid = pay_for(&job, t.price, seconds);
            let share = Amount(mul_div(paid.0, u128::from(p.council_share_bps), 10_000));
            let council_paid = Amount(share.0 * majority.len() as u128);
            self.pay_from_escrow(key.job, executor, paid);
            for member in &majority {
                self.pay_from_escrow(key.job, *member, share);
                self.record_success(member);
            }
            for member in &minority {
                events.extend(self.slash(
                    key,
                    *member,
                    p.slash_bps,
                    "its output disagreed with the clear majority, which accepted the result",
                ));
                self.record_failure(key.job, *member);
            }
            self.record_success(&executor);
            // The market fee goes from escrow to the pool; the reward comes out of the pool,
            // only for work a council member checked, and is smaller than the fee: a party
            // that is requester, executor and council at once pays the pool more than it gets.
            let fee = self.collect_fee(key.job, Amount(paid.0.saturating_add(council_paid.0)));
            let reward = if majority.is_empty() {
                Amount::ZERO
            } else {
                let wanted = mul_div(paid.0, u128::from(p.reward_bps), 10_000);
                Amount(wanted.min(self.rewards_available(now).0))
            };
            self.set_pool(self.rewards_pool.saturating_sub(reward));
            self.credit(executor, reward);
            self.add_earnings(&executor, Amount(paid.0 + reward.0));
            for member in &majority {
                self.add_earnings(member, share);
            }
            for member in t.assigned() {
                self.adjust_active(member, -1);
            }
            let mut t = t;
            t.phase = Phase::Settled;
            t.result = Some(exec_reveal.output);
            t.note = "settled".into();
            self.open_tasks.remove(&key);
            events.push(Event::TaskSettled {
                job: key.job,
                task: key.index,
                attempt: t.attempt,
                executor,
                output: exec_reveal.output,
                paid,
                council_paid,
            });
            events.push(Event::ProofOfCompute {
                job: key.job,
                task: key.index,
                attempt: t.attempt,
                executor,
                council: majority.clone(),
                output: exec_reveal.output,
                seconds,
                cost: Amount(paid.0 + council_paid.0),
                fee,
                reward,
            });
            self.tasks.insert(key, t);
            if let Some(mut j) = self.jobs.get(&key.job).cloned() {
                j.settled += 1;
                self.jobs.insert(key.job, j);
            }
            events.extend(self.finish_if_done(key.job));
        } else {
            let slashed = self.take_stake(&executor, p.slash_bps);
            events.push(Event::Slashed {
                provider: executor,
                amount: slashed,
                job: key.job,
                task: key.index,
                reason: "a clear majority of the council's runs disagreed with its result".into(),
            });
            self.record_failure(key.job, executor);
            // The majority that caught it is paid its usual share out of the slash.
            let usual = pay_for(&job, t.price, exec_reveal.seconds.min(deadline_s));
            let share = mul_div(usual.0, u128::from(p.council_share_bps), 10_000);
            let mut left = slashed.0;
            for member in &majority {
                let pay = share.min(left);
                left -= pay;
                self.credit(*member, Amount(pay));
                self.add_earnings(member, Amount(pay));
                self.record_success(member);
            }
            self.set_pool(Amount(self.rewards_pool.0.saturating_add(left)));
            for member in &minority {
                events.extend(self.slash(
                    key,
                    *member,
                    p.slash_bps,
                    "its output agreed with a result the clear majority rejected",
                ));
                self.record_failure(key.job, *member);
            }
            events.extend(self.reopen(
                key,
                now,
                "a clear majority of the council rejected the result".into(),
            ));
        }
        events
    }

    /// Takes the market fee on `paid` out of a job's escrow into the rewards pool.
    fn collect_fee(&mut self, job: Hash, paid: Amount) -> Amount {
        let fee = Amount(mul_div(
            paid.0,
            u128::from(self.params.market_fee_bps),
            10_000,
        ));
        let fee = self.take_from_escrow(job, fee);
        self.set_pool(Amount(self.rewards_pool.0.saturating_add(fee.0)));
        fee
    }

    /// Adds `escalation_seats` council seats (up to `largest`), drawn at the next block; the
    /// reveals so far stand. Members who never revealed lose their seats, drawn again too.
    /// The new members' outputs are keyed by the new round, so an id revealed earlier is worth
    /// nothing to them, and everyone judges everyone's output again.
    fn enlarge(
        &mut self,
        key: TaskKey,
        mut t: Task,
        largest: u8,
        now: u64,
        why: String,
    ) -> Vec<Event> {
        let silent: Vec<Address> = t
            .council
            .iter()
            .filter(|c| !t.revealed(c))
            .copied()
            .collect();
        for member in &silent {
            self.adjust_active(member, -1);
        }
        t.council.retain(|c| !silent.contains(c));
        t.commits.retain(|c| !silent.contains(&c.provider));
        t.excluded.extend(silent.iter().copied());
        t.round += 1;
        t.seats = t
            .seats
            .saturating_add(self.params.escalation_seats)
            .min(largest);
        t.seats_to_draw = t.seats - t.council.len() as u8;
        t.phase = Phase::Committing;
        t.phase_started_ms = now;
        t.deadline_ms = now;
        t.note = format!("council enlarged to {} seats: {why}", t.seats);
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CouncilEnlarged {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            seats: t.seats,
            reason: why,
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// No clear majority, and the council cannot grow further. Which it is decides what
    /// happens:
    /// - nobody's run could be compared with the executor's (all silent): the task reopens,
    ///   nobody is paid;
    /// - runs that agree with each other disagree with the executor's: the result is
    ///   contested, not nondeterministic. The task reopens unpaid and the executor gets a
    ///   failure on the job (a liar cannot buy the "nondeterministic" verdict with one
    ///   colluding member);
    /// - the executor's run agrees with most of the runs that were revealed, and only silent
    ///   seats kept that short: the task reopens (the silent paid already);
    /// - otherwise the runs agree with nobody: the program is judged nondeterministic.
    fn unresolved(
        &mut self,
        key: TaskKey,
        t: Task,
        job: &Job,
        now: u64,
        why: String,
    ) -> Vec<Event> {
        let Some(executor) = t.executor else {
            return self.reopen(key, now, why);
        };
        let (parties, adjacent) = agreeing_pairs(&t);
        let m = parties.len();
        let e = parties.iter().position(|a| *a == executor);
        if m <= 1 || e.is_none() {
            return self.reopen(key, now, format!("no run could be compared: {why}"));
        }
        let e = e.unwrap_or(0);
        let with_e = adjacent[e] | (1 << e);
        // Two runs agree with each other, and not both with the executor's.
        let contested = (0..m).any(|i| {
            i != e
                && (0..m).any(|j| {
                    j != e
                        && adjacent[i] & (1 << j) != 0
                        && (with_e & (1 << i) == 0 || with_e & (1 << j) == 0)
                })
        });
        if contested {
            self.record_failure(key.job, executor);
            return self.reopen(
                key,
                now,
                format!("runs that agree with each other disagree with the executor's: {why}"),
            );
        }
        // The largest group with the executor: a largest group among it and its neighbours.
        let around: Vec<u32> = (0..m)
            .map(|i| {
                if with_e & (1 << i) != 0 {
                    adjacent[i] & with_e
                } else {
                    0
                }
            })
            .collect();
        let with_executor = largest_groups(&around).0.max(1) as usize;
        if with_executor >= 2 && 3 * with_executor >= 2 * m {
            return self.reopen(
                key,
                now,
                format!("the revealed runs agree, but silent seats kept them short of a clear majority: {why}"),
            );
        }
        self.judge_nondeterministic(key, t, job, now, why)
    }

    /// The runs of even the enlarged council agree with no clear majority: the program is
    /// nondeterministic (or its requester's equivalence too strict). Nobody is slashed: an
    /// honest run cannot be told from a lie without a majority to compare with. The requester
    /// pays for what it asked for: the executor's run (its time capped by the median of the
    /// others'), and each council member whose output somebody else confirmed (a member who
    /// did not run the program, whose output nobody confirms, earns nothing). The task fails.
    fn judge_nondeterministic(
        &mut self,
        key: TaskKey,
        mut t: Task,
        job: &Job,
        now: u64,
        why: String,
    ) -> Vec<Event> {
        let _ = now;
        let Some(executor) = t.executor else {
            return Vec::new();
        };
        let deadline_s = job
            .prescription
            .instructions
            .task_deadline_ms
            .div_ceil(1000);
        let others: Vec<Address> = t
            .reveals
            .iter()
            .map(|r| r.provider)
            .filter(|a| *a != executor)
            .collect();
        let claimed = t
            .reveals
            .iter()
            .find(|r| r.provider == executor)
            .map_or(0, |r| r.seconds);
        let seconds = claimed
            .min(median_seconds(&t, &others).unwrap_or(u64::MAX))
            .min(deadline_s);
        let paid = pay_for(job, t.price, seconds);
        let share = Amount(mul_div(
            paid.0,
            u128::from(self.params.council_share_bps),
            10_000,
        ));
        let confirmed = confirmed_by_someone(&t);
        let mut total = paid.0;
        self.pay_from_escrow(key.job, executor, paid);
        self.add_earnings(&executor, paid);
        for member in others.iter().filter(|m| confirmed.contains(m)) {
            self.pay_from_escrow(key.job, *member, share);
            self.add_earnings(member, share);
            total += share.0;
        }
        self.collect_fee(key.job, Amount(total));
        for member in t.assigned() {
            self.adjust_active(member, -1);
        }
        let reason = format!(
            "judged nondeterministic: {why}, even after enlarging the council; nobody was slashed and the runs were paid"
        );
        t.phase = Phase::Failed;
        t.note = reason.clone();
        self.open_tasks.remove(&key);
        let attempt = t.attempt;
        self.tasks.insert(key, t);
        if let Some(mut j) = self.jobs.get(&key.job).cloned() {
            j.closed += 1;
            self.jobs.insert(key.job, j);
        }
        let mut events = vec![
            Event::RunsDisagreed {
                job: key.job,
                task: key.index,
                attempt,
                paid: Amount(total),
                reason: why,
            },
            Event::TaskFailed {
                job: key.job,
                task: key.index,
                reason,
            },
        ];
        events.extend(self.finish_if_done(key.job));
        events
    }

    /// Fails a task the job's bound (`give_up_at_ms`) caught still waiting; the escrow it
    /// held returns with the job's refund.
    fn give_up(&mut self, key: TaskKey, mut t: Task, why: String) -> Vec<Event> {
        let reason = format!("gave up at the job's time bound (halting.give_up_after_s): {why}");
        for member in t.assigned() {
            self.adjust_active(member, -1);
        }
        t.phase = Phase::Failed;
        t.note = reason.clone();
        t.bids.clear();
        self.open_tasks.remove(&key);
        self.tasks.insert(key, t);
        if let Some(mut j) = self.jobs.get(&key.job).cloned() {
            j.closed += 1;
            self.jobs.insert(key.job, j);
        }
        let mut events = vec![Event::TaskFailed {
            job: key.job,
            task: key.index,
            reason,
        }];
        events.extend(self.finish_if_done(key.job));
        events
    }

    /// Sends a task back to auction as a new attempt, or fails it after `max_attempts`.
    fn reopen(&mut self, key: TaskKey, now: u64, reason: String) -> Vec<Event> {
        let (Some(mut t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let assigned: Vec<Address> = t.assigned().copied().collect();
        for member in &assigned {
            self.adjust_active(member, -1);
        }
        t.attempt += 1;
        for r in std::mem::take(&mut t.reveals) {
            if !t.earlier_outputs.contains(&r.output) {
                t.earlier_outputs.push(r.output);
            }
        }
        t.bids.clear();
        t.executor = None;
        t.price = Amount::ZERO;
        t.council.clear();
        t.seats_to_draw = 0;
        t.excluded.clear();
        t.commits.clear();
        t.reveals.clear();
        t.judgements.clear();
        t.seats = job.prescription.instructions.council_size;
        t.round = 0;
        t.phase_started_ms = now;
        if now >= job.give_up_at_ms && !job.cancelled {
            self.tasks.insert(key, t.clone());
            return self.give_up(key, t, reason);
        }
        if t.attempt >= self.params.max_attempts || job.cancelled {
            t.phase = Phase::Failed;
            t.note = format!("failed after {} attempts: {reason}", t.attempt);
            self.open_tasks.remove(&key);
            self.tasks.insert(key, t);
            let mut j = job;
            j.closed += 1;
            self.jobs.insert(key.job, j);
            let mut events = vec![Event::TaskFailed {
                job: key.job,
                task: key.index,
                reason,
            }];
            events.extend(self.finish_if_done(key.job));
            return events;
        }
        t.phase = Phase::Bidding;
        t.deadline_ms = now.saturating_add(job.prescription.halting.deadline_ms);
        t.note = format!("reopened: {reason}");
        self.open_tasks.insert(key, t.deadline_ms);
        let attempt = t.attempt;
        self.tasks.insert(key, t);
        vec![Event::TaskReopened {
            job: key.job,
            task: key.index,
            attempt,
            reason,
        }]
    }

    fn finish_if_done(&mut self, id: Hash) -> Vec<Event> {
        let Some(mut job) = self.jobs.get(&id).cloned() else {
            return Vec::new();
        };
        if job.finished || job.settled + job.closed < job.tasks {
            return Vec::new();
        }
        let refund = job.escrow;
        job.escrow = Amount::ZERO;
        job.finished = true;
        self.credit(job.requester, refund);
        self.jobs.insert(id, job);
        self.finishing.push(id);
        vec![Event::JobFinished { job: id, refund }]
    }

    fn pay_from_escrow(&mut self, job_id: Hash, to: Address, amount: Amount) {
        let amount = self.take_from_escrow(job_id, amount);
        self.credit(to, amount);
    }

    /// Takes up to `amount` out of a job's escrow as spent and returns what was taken; the
    /// caller puts it somewhere. Escrow covers every task at its maximum cost, so this never
    /// clips; clipping keeps conservation if a rule ever changes.
    fn take_from_escrow(&mut self, job_id: Hash, amount: Amount) -> Amount {
        let Some(mut job) = self.jobs.get(&job_id).cloned() else {
            return Amount::ZERO;
        };
        let amount = amount.min(job.escrow);
        job.escrow = job.escrow.saturating_sub(amount);
        job.spent = Amount(job.spent.0.saturating_add(amount.0));
        self.jobs.insert(job_id, job);
        amount
    }

    /// What the rewards pool may pay now: all of it but what the emission schedule still
    /// locks.
    pub fn rewards_available(&self, now_ms: u64) -> Amount {
        self.rewards_pool
            .saturating_sub(self.params.emission_locked(now_ms))
    }

    fn credit(&mut self, to: Address, amount: Amount) {
        if amount.0 == 0 {
            return;
        }
        let mut account = self.account(&to);
        account.balance = Amount(account.balance.0.saturating_add(amount.0));
        self.accounts.insert(to, account);
    }

    /// Penalises a missed deadline. The first costs `timeout_slash_bps` of stake, each further
    /// miss in a row twice the one before; an executor that won the task by bidding and then
    /// did not commit or reveal its run pays never less than what the work would have paid
    /// ([`State::penalise_vanished`]); drawn council members, who chose nothing, pay the
    /// rate only; no miss takes more than half the stake. Vanishing again and again gets
    /// dearer, and never cheaper than doing the work (`VanishingBidder`).
    fn penalise_timeout(&mut self, key: TaskKey, provider: Address, reason: &str) -> Vec<Event> {
        self.penalise_miss(key, provider, reason, false)
    }

    /// An executor that won the task and did not commit or reveal its run.
    fn penalise_vanished(&mut self, key: TaskKey, executor: Address, reason: &str) -> Vec<Event> {
        self.penalise_miss(key, executor, reason, true)
    }

    fn penalise_miss(
        &mut self,
        key: TaskKey,
        provider: Address,
        reason: &str,
        floor: bool,
    ) -> Vec<Event> {
        let missed = self.providers.get(&provider).map_or(0, |p| p.missed);
        let bps = self
            .params
            .timeout_slash_bps
            .saturating_mul(1 << missed.min(16))
            .min(5_000);
        let account = self.account(&provider);
        let base = account.stake_locked.0 + account.unbonding_total().0;
        let by_rate = mul_div(base, u128::from(bps), 10_000);
        // The floor is for the executor, which chose the task by bidding; drawn council
        // members did not. Never more than half the stake for one miss.
        let work = if floor {
            self.work_value(key, &provider).0
        } else {
            0
        };
        let amount = self.take_stake_amount(&provider, by_rate.max(work).min(base / 2));
        self.set_pool(Amount(self.rewards_pool.0.saturating_add(amount.0)));
        if let Some(mut p) = self.providers.get(&provider).cloned() {
            p.missed = p.missed.saturating_add(1);
            self.providers.insert(provider, p);
        }
        self.record_failure(key.job, provider);
        let reason = if missed > 0 {
            format!("{reason} ({} in a row)", missed + 1)
        } else {
            reason.to_string()
        };
        vec![Event::Slashed {
            provider,
            amount,
            job: key.job,
            task: key.index,
            reason,
        }]
    }

    /// What the executor's part of a task would have paid it: its price for the whole
    /// deadline.
    fn work_value(&self, key: TaskKey, _executor: &Address) -> Amount {
        let (Some(t), Some(job)) = (self.tasks.get(&key), self.jobs.get(&key.job)) else {
            return Amount::ZERO;
        };
        let deadline_s = job
            .prescription
            .instructions
            .task_deadline_ms
            .div_ceil(1000);
        pay_for(job, t.price, deadline_s)
    }

    /// Takes `bps` of a provider's stake into the rewards pool.
    fn slash(&mut self, key: TaskKey, provider: Address, bps: u32, reason: &str) -> Vec<Event> {
        let amount = self.take_stake(&provider, bps);
        self.set_pool(Amount(self.rewards_pool.0.saturating_add(amount.0)));
        vec![Event::Slashed {
            provider,
            amount,
            job: key.job,
            task: key.index,
            reason: reason.to_string(),
        }]
    }

    /// Removes `bps` of locked plus unbonding stake (locked first, then the newest unbonding
    /// entries) and returns how much; the caller puts it somewhere.
    fn take_stake(&mut self, provider: &Address, bps: u32) -> Amount {
        let account = self.account(provider);
        let base = account.stake_locked.0 + account.unbonding_total().0;
        self.take_stake_amount(provider, mul_div(base, u128::from(bps.min(10_000)), 10_000))
    }

    /// Removes up to `want` of locked plus unbonding stake (locked first) and returns how
    /// much.
    fn take_stake_amount(&mut self, provider: &Address, want: u128) -> Amount {
        let mut account = self.account(provider);
        let base = account.stake_locked.0 + account.unbonding_total().0;
        let mut want = want.min(base);
        if want == 0 {
            return Amount::ZERO;
        }
        let total = want;
        let from_locked = want.min(account.stake_locked.0);
        account.stake_locked = Amount(account.stake_locked.0 - from_locked);
        want -= from_locked;
        for entry in account.unbonding.iter_mut().rev() {
            let take = want.min(entry.amount.0);
            entry.amount = Amount(entry.amount.0 - take);
            want -= take;
        }
        account.unbonding.retain(|u| u.amount.0 > 0);
        self.accounts.insert(*provider, account);
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.slashed = Amount(p.slashed.0.saturating_add(total));
            self.providers.insert(*provider, p);
        }
        Amount(total)
    }

    fn record_success(&mut self, provider: &Address) {
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.missed = 0;
            p.streak = p.streak.saturating_add(1);
            p.validated += 1;
            self.providers.insert(*provider, p);
        }
    }

    fn record_failure(&mut self, job_id: Hash, provider: Address) {
        if let Some(mut p) = self.providers.get(&provider).cloned() {
            p.streak = 0;
            p.failed += 1;
            self.providers.insert(provider, p);
        }
        if let Some(mut job) = self.jobs.get(&job_id).cloned() {
            job.add_failure(provider);
            self.jobs.insert(job_id, job);
        }
    }

    fn add_earnings(&mut self, provider: &Address, amount: Amount) {
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.earned = Amount(p.earned.0.saturating_add(amount.0));
            self.providers.insert(*provider, p);
        }
    }
}

/// Checks a prescription's shape against the chain's parameters; errors name the field.
pub fn validate_prescription(p: &Prescription, params: &crate::Params) -> Result<(), TxError> {
    let bad =
        |field: &'static str, problem: String| Err(TxError::BadPrescription { field, problem });
    let i = &p.instructions;
    if p.program.command.trim().is_empty() {
        return bad("program.command", "must name a command".into());
    }
    if p.data.len() > params.max_inputs_per_job as usize {
        return bad(
            "data.inputs",
            format!("at most {} inputs", params.max_inputs_per_job),
        );
    }
    for (n, input) in p.data.iter().enumerate() {
        if p.data[..n].iter().any(|d| d.cid == input.cid) {
            return bad("data.inputs", format!("{} is named twice", input.cid));
        }
    }
    if i.items == 0 {
        return bad("instructions.items", "must be at least 1".into());
    }
    if i.chunk == 0 {
        return bad("instructions.chunk", "must be at least 1".into());
    }
    if i.task_count() > u64::from(params.max_tasks_per_job) {
        return bad(
            "instructions.chunk",
            format!(
                "{} tasks exceed the limit of {}; use a larger chunk",
                i.task_count(),
                params.max_tasks_per_job
            ),
        );
    }
    if i.task_deadline_ms == 0 || i.task_deadline_ms > params.max_task_deadline_ms {
        return bad(
            "instructions.task_deadline_ms",
            format!(
                "must be positive and at most {} s",
                params.max_task_deadline_ms / 1000
            ),
        );
    }
    if i.council_size > params.max_council_size {
        return bad(
            "instructions.council_size",
            format!("at most {}", params.max_council_size),
        );
    }
    if i.council_size % 2 == 0 && i.council_size != 0 {
        return bad(
            "instructions.council_size",
            "must be 0 or odd, so a majority always exists".into(),
        );
    }
    if p.payment.max_price().0 == 0 || p.payment.max_price() > params.max_price {
        return bad(
            "payment.max_price",
            format!("must be positive and at most {} GRID", params.max_price),
        );
    }
    if p.halting.deadline_ms == 0 || p.halting.deadline_ms > params.max_auction_window_ms {
        return bad(
            "halting.deadline_ms",
            format!(
                "must be positive and at most {} s",
                params.max_auction_window_ms / 1000
            ),
        );
    }
    if p.halting.reserve_price.is_some_and(|r| r.0 == 0) {
        return bad(
            "halting.reserve_price",
            "must be positive when given".into(),
        );
    }
    if p.halting.give_up_ms > params.max_give_up_ms {
        return bad(
            "halting.give_up_ms",
            format!(
                "is at most {} s (give_up_after_s in a job file; 0 takes the default, {} s)",
                params.max_give_up_ms / 1000,
                params.default_give_up_ms / 1000
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(i: u8, stake: u128) -> Candidate {
        Candidate {
            stake,
            providers: vec![Address([i; 20])],
        }
    }

    /// How often one of `favoured` is drawn for the first seat, over 4,000 seeds.
    fn first_seat_share(owners: &[Candidate], favoured: &[Address]) -> f64 {
        let hits = (0..4_000u32)
            .filter(|i| {
                let drawn = draw_by_stake(&i.to_le_bytes(), owners.to_vec(), 1).unwrap();
                favoured.contains(&drawn[0])
            })
            .count();
        hits as f64 / 4_000.0
    }

    /// A seat costs stake: an owner with half the eligible stake gets the first seat about
    /// half the time, and the same stake spread over nine Sybil owners gets it no more often.
    #[test]
    fn council_seats_follow_stake_and_sybil_owners_gain_nothing() {
        let honest: Vec<Candidate> = (10..19).map(|i| owner(i, 100)).collect();
        let mut one = honest.clone();
        one.push(owner(1, 900));
        let whole = first_seat_share(&one, &[Address([1; 20])]);
        let mut split = honest.clone();
        split.extend((20..29).map(|i| owner(i, 100)));
        let sybils: Vec<Address> = (20..29).map(|i| Address([i; 20])).collect();
        let spread = first_seat_share(&split, &sybils);
        assert!((0.46..0.54).contains(&whole), "{whole}");
        assert!((0.46..0.54).contains(&spread), "{spread}");
        // Without enough owners there is no draw; a full draw seats distinct owners.
        assert!(draw_by_stake(b"s", honest.clone(), 10).is_none());
        let all = draw_by_stake(b"s", honest.clone(), 9).unwrap();
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 9);
    }
}
