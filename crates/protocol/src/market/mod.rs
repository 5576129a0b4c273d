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
//! A job in checkpointed segments (training) adds one step to `Committing`: its council is
//! drawn as usual but waits; the executor binds its checkpoints (`Checkpoints`), the segments
//! to replay are drawn at the next block, and only then do the members run (the replays)
//! and commit. An executor that has not bound its checkpoints by the commit deadline missed
//! it. Its runs are always judged, and the executor's output is its last checkpoint (the
//! module docs of `replay.rs`).
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
//! - **Scores.** A provider declares its CPU score (`Hardware::cpu_score`, the standard
//!   benchmark), which it cannot change while it works on tasks; jobs may require one. When a
//!   task of a job that requires a score (and no GPUs) is accepted, the executor's run time
//!   as the ledger saw it (auction close to commitment) is checked against the agreeing
//!   council members': a member of score `s` that took `S` seconds predicts `S * s / score`
//!   for the executor; an executor slower than [`SCORE_SLACK`] times the median prediction
//!   (of at least [`SCORE_CHECK_MIN_S`] seconds) gets a strike, one within it clears them, and
//!   [`SCORE_STRIKES`] in a row take its score for good ([`State::check_score`]).
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
//!
//! # Where each part lives
//!
//! One handler per transaction kind, its check beside its apply ([`State::check_market`] and
//! [`State::execute_market`] only dispatch): providers (`providers.rs`), jobs (`jobs.rs`),
//! auctions and council draws (`auction.rs`), commit, reveal and judge and the comparison of
//! runs (`council.rs`), checkpoints and the draw of the segments to replay (`replay.rs`), paying, slashing and reopening (`settlement.rs`), and what block time
//! does on its own (`deadlines.rs`).

mod auction;
mod council;
mod deadlines;
mod jobs;
mod note;
mod providers;
mod replay;
mod services;
mod settlement;

pub use services::{
    validate_service, MemberPay, Service, ServiceStatus, StatusPeriod, Subscription,
    LEAVER_DISPUTE_MS, MAX_GATEWAY_URL, MAX_MEMBERS_EVER, MAX_PERIODS, MAX_SUBSCRIBERS,
    SETTLE_WINDOW_MS,
};

use council::{agreement, confirmed_by_someone, median_seconds, Agreement};
pub use note::{Reason, TaskNote, Undecided};

use gridwork_types::{Address, Amount, Hardware, Hash, Payment, PeerAddr, Prescription, RunEnd};
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
    /// Spot checks in a row that found its runs far slower than its declared CPU score
    /// (reset by one that did not); at [`SCORE_STRIKES`] it loses the score.
    pub score_strikes: u8,
    /// The councils' spot checks found its runs far slower than its declared CPU score
    /// [`SCORE_STRIKES`] times in a row: the ledger keeps its score at 0 from then on,
    /// whatever it declares.
    pub score_lost: bool,
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
    score_strikes: u8,
    score_lost: bool,
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
    /// Whether the bidder said it has the job's image loaded already (see `TxKind::Bid`).
    pub cached: bool,
}

gridwork_types::codec_struct!(BidRecord {
    provider: Address,
    price: Amount,
    cached: bool
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
    /// How its run ended.
    pub ended: RunEnd,
    /// The round of the attempt it was revealed in.
    pub round: u8,
}

gridwork_types::codec_struct!(RevealRecord {
    provider: Address,
    output: Hash,
    seconds: u64,
    ended: RunEnd,
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
    /// How the runs of the accepted output ended, once settled.
    pub ended: Option<RunEnd>,
    /// What the executor and council were paid from escrow for the runs that closed the
    /// task (the accepted attempt, or the disagreeing runs of a nondeterministic one),
    /// before the market fee.
    pub paid: Amount,
    /// Why the task waits, for people (`job status`).
    pub note: TaskNote,
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
    /// A checkpointed job's task: the checkpoints the executor of this attempt bound itself
    /// to, one per segment (`Checkpoints`).
    pub checkpoints: Vec<Hash>,
    /// A checkpointed job's task: the segments its council replays, drawn after the
    /// checkpoints were bound, ascending.
    pub replay: Vec<u32>,
    /// A checkpointed job's task: the executor's run failed in its last bound segment, the
    /// one its council replays.
    pub run_failed: bool,
    /// The executor's run time as the ledger saw it: from the auction's close to its
    /// commitment, in ms (0 until it commits). What the score check judges.
    pub executor_elapsed_ms: u64,
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
    ended: Option<RunEnd>,
    paid: Amount,
    note: TaskNote,
    earlier_outputs: Vec<Hash>,
    seats_to_draw: u8,
    excluded: Vec<Address>,
    seats: u8,
    round: u8,
    judgements: Vec<JudgeRecord>,
    checkpoints: Vec<Hash>,
    replay: Vec<u32>,
    run_failed: bool,
    executor_elapsed_ms: u64,
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

    /// A checkpointed task whose executor bound its checkpoints and whose replay is not
    /// drawn yet.
    fn replay_due(&self) -> bool {
        !self.checkpoints.is_empty() && self.replay.is_empty()
    }

    /// Whether `who` judged in the current round.
    fn judged(&self, who: &Address) -> bool {
        self.judgements
            .iter()
            .any(|j| j.provider == *who && j.round == self.round)
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

/// How many times slower than its councils predict an executor's run may be before it loses
/// its declared score: room for a busy machine, a cold cache and whole-second run times.
pub const SCORE_SLACK: u64 = 3;
/// The shortest predicted run the score check judges, in seconds: shorter ones are mostly
/// start-up and transfers.
pub const SCORE_CHECK_MIN_S: u64 = 10;
/// Failed spot checks in a row that take a provider's score.
pub const SCORE_STRIKES: u8 = 3;

/// `a * b / c` without overflow for the sizes the ledger meets (c > 0).
pub(super) fn mul_div(a: u128, b: u128, c: u128) -> u128 {
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
            .checked_mul(u128::from(p.whole_run_deadline_ms().div_ceil(1000)))?,
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
        let tasks = self.open_tasks.iter().map(|(_, d)| *d);
        let services = self.due_services.iter().map(|(_, d)| *d);
        tasks.chain(services).min()
    }

    /// Checks the market side of a transaction against the committed market state and the
    /// sender's account with this transaction's own side applied. One handler per kind, its
    /// check beside its apply in the module of its part of the market.
    pub(crate) fn check_market(
        &self,
        kind: &gridwork_types::TxKind,
        sender: Address,
        sender_account: &Account,
        now: u64,
    ) -> Result<(), TxError> {
        use gridwork_types::TxKind as K;
        match kind {
            K::RegisterProvider { hardware, owner } => {
                self.check_register(sender, sender_account, hardware, owner.as_ref())
            }
            K::Heartbeat => self.check_provider(sender).map(|_| ()),
            K::AnnouncePeer { peer } => self.check_announce(sender, peer),
            K::SubmitJob {
                prescription,
                deposit,
            } => self.check_submit(prescription, *deposit),
            K::CancelJob { job } => self.check_cancel(sender, *job),
            K::Bid {
                job,
                task,
                price,
                cached,
            } => self.check_bid(
                sender,
                sender_account,
                (*job, *task),
                (*price, *cached),
                now,
            ),
            K::Commit {
                job, task, attempt, ..
            } => self.check_commit(sender, *job, *task, *attempt),
            K::Reveal {
                job,
                task,
                attempt,
                output,
                salt,
                ended,
                ..
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                self.check_reveal(sender, key, *attempt, output, ended, salt)
            }
            K::Judge {
                job,
                task,
                attempt,
                round,
                equivalent,
            } => self.check_judge(sender, *job, *task, *attempt, *round, equivalent),
            K::Checkpoints {
                job,
                task,
                attempt,
                checkpoints,
                failed,
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                self.check_checkpoints(sender, key, *attempt, checkpoints, *failed)
            }
            K::CreateService { spec, deposit } => self.check_create_service(spec, *deposit),
            K::FundService { service, amount } => {
                self.check_fund_service(sender, *service, *amount)
            }
            K::CloseService { service } => self.check_close_service(sender, *service),
            K::Subscribe { service, price } => {
                self.check_subscribe(sender, sender_account, *service, price, now)
            }
            K::Unsubscribe { service } => self.check_unsubscribe(sender, *service),
            K::DropMember { service, member } => self.check_drop_member(sender, *service, *member),
            K::SettleStream { receipts } => self.check_settle(receipts),
            K::DisputeResponses { service, responses } => {
                self.check_dispute(*service, responses, now)
            }
            K::AnnounceGateway { service, url } => {
                self.check_announce_gateway(sender, *service, url)
            }
            K::JudgeResponses {
                service,
                responses,
                judgements,
            } => self.check_judge_responses(*service, responses, judgements, now),
            K::StakeUnbond { .. } => self.check_unbond(sender, sender_account),
            K::Transfer { .. } | K::StakeLock { .. } | K::StakeWithdraw => Ok(()),
        }
    }

    /// `StakeUnbond` (its own side applied in `sender_account`): a provider working on tasks
    /// or sitting on a service's council keeps the minimum stake locked, so whatever it signs
    /// there can still be slashed (a review found two members that unbonded and withdrew
    /// everything kept their seats and outvoted an honest one at no risk).
    fn check_unbond(&self, sender: Address, sender_account: &Account) -> Result<(), TxError> {
        let min = self.params.min_provider_stake;
        match self.providers.get(&sender) {
            Some(p) if p.active > 0 && sender_account.stake_locked < min => {
                Err(TxError::StakeInUse {
                    active: p.active,
                    min,
                    left: sender_account.stake_locked,
                })
            }
            _ => Ok(()),
        }
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
                self.apply_register(sender, hardware, owner.as_ref(), now)
            }
            K::AnnouncePeer { peer } => self.apply_announce(sender, peer),
            K::Heartbeat => self.apply_heartbeat(sender, now),
            K::SubmitJob {
                prescription,
                deposit,
            } => self.submit_job(sender, tx_hash, prescription, *deposit, now),
            K::CancelJob { job } => self.cancel_job(*job),
            K::Bid {
                job,
                task,
                price,
                cached,
            } => self.apply_bid(sender, (*job, *task), (*price, *cached), now),
            K::Commit {
                job,
                task,
                commitment,
                ..
            } => self.apply_commit(sender, *job, *task, *commitment, now),
            K::Reveal {
                job,
                task,
                output,
                seconds,
                ended,
                ..
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                self.apply_reveal(sender, key, *output, *ended, *seconds, now)
            }
            K::Judge {
                job,
                task,
                equivalent,
                ..
            } => self.apply_judge(sender, *job, *task, equivalent, now),
            K::Checkpoints {
                job,
                task,
                checkpoints,
                failed,
                ..
            } => {
                let key = TaskKey {
                    job: *job,
                    index: *task,
                };
                self.apply_checkpoints(sender, key, checkpoints, *failed, now)
            }
            K::CreateService { spec, deposit } => {
                self.apply_create_service(sender, tx_hash, spec, *deposit, now)
            }
            K::FundService { service, amount } => self.apply_fund_service(*service, *amount, now),
            K::CloseService { service } => self.apply_close_service(*service, now),
            K::Subscribe { service, price } => self.apply_subscribe(sender, *service, *price, now),
            K::Unsubscribe { service } => self.apply_unsubscribe(sender, *service, now),
            K::DropMember { service, member } => self.apply_drop_member(*service, *member, now),
            K::SettleStream { receipts } => self.apply_settle(receipts, now),
            K::DisputeResponses { service, responses } => {
                self.apply_dispute(*service, responses, now)
            }
            K::AnnounceGateway { service, url } => self.apply_announce_gateway(*service, url),
            K::JudgeResponses {
                service,
                responses,
                judgements,
            } => self.apply_judge_responses(*service, responses, judgements, now),
            K::Transfer { .. } | K::StakeLock { .. } | K::StakeUnbond { .. } | K::StakeWithdraw => {
                Vec::new()
            }
        }
    }
}

/// Where a program's checks point in their errors: the fields of a job file or a service's.
pub(crate) struct ProgramFields {
    /// The software a program needs.
    pub(crate) software: &'static str,
    /// The memory a run needs.
    pub(crate) memory: &'static str,
    /// The inputs.
    pub(crate) inputs: &'static str,
}

/// Checks a program, its inputs and the software it needs, as a job's or a service's: the
/// field at fault and what is wrong.
pub(crate) fn validate_program(
    program: &gridwork_types::Program,
    data: &[gridwork_types::DataInput],
    requirements: &gridwork_types::Requirements,
    params: &crate::Params,
    fields: &ProgramFields,
) -> Result<(), (&'static str, String)> {
    let bad = |field: &'static str, problem: String| Err((field, problem));
    if program.command.trim().is_empty() {
        return bad("program.command", "must name a command".into());
    }
    if program.command.trim() != program.command {
        return bad(
            "program.command",
            format!(
                "`{}` has spaces around it; write the command alone, its arguments in program.args",
                program.command
            ),
        );
    }
    if program.outputs.len() > gridwork_types::MAX_REQUIRED_OUTPUTS {
        return bad(
            "program.outputs",
            format!(
                "at most {} required outputs",
                gridwork_types::MAX_REQUIRED_OUTPUTS
            ),
        );
    }
    for pattern in &program.outputs {
        gridwork_types::check_output_pattern(pattern).or_else(|e| bad("program.outputs", e))?;
    }
    let software = &requirements.software;
    let requires = |name: &str| gridwork_types::requires_software(software, name);
    gridwork_types::check_command(program).or_else(|e| bad("program.command", e))?;
    if let Some(name) = gridwork_types::command_program(program) {
        if !requires(name) {
            return bad(
                "program.command",
                format!(
                    "runs `{name}`, which {} must name, so only providers that have it run or check it", fields.software
                ),
            );
        }
    }
    if program.network && !requires(gridwork_types::NETWORK_SOFTWARE) {
        return bad(
            "program.network",
            format!(
                "needs `{}` in {}, so only providers that allow tasks the network take it",
                gridwork_types::NETWORK_SOFTWARE,
                fields.software
            ),
        );
    }
    let mut makers = Vec::new();
    for v in &program.vendor_images {
        if makers.contains(&v.vendor) {
            return bad(
                "program.vendor_images",
                format!("names two images for {} GPUs; keep one", v.vendor),
            );
        }
        makers.push(v.vendor);
        if v.vendor == gridwork_types::GpuVendor::Apple {
            return bad(
                "program.vendor_images",
                "names an image for apple GPUs, which no container reaches; name nvidia, amd or intel builds, and `cpu` for the rest".into(),
            );
        }
        if requirements.gpu_vendor.is_some_and(|g| g != v.vendor) {
            return bad(
                "program.vendor_images",
                format!(
                    "names an image for {} GPUs, but the job needs {} GPUs: no worker would run it; drop it or the GPU maker required",
                    v.vendor,
                    requirements.gpu_vendor.map_or(String::new(), |g| g.to_string())
                ),
            );
        }
    }
    for image in program.images() {
        let field = if Some(image) == program.image {
            "program.image"
        } else {
            "program.vendor_images"
        };
        if !data.iter().any(|d| d.cid == image) {
            return bad(
                field,
                format!(
                    "{image} is not among the inputs, so no worker could decrypt it; list it in {}",
                    fields.inputs
                ),
            );
        }
        if !requires(gridwork_types::CONTAINER_SOFTWARE) {
            return bad(
                field,
                format!(
                    "needs `{}` in {}, so only workers that run containers take it",
                    gridwork_types::CONTAINER_SOFTWARE,
                    fields.software
                ),
            );
        }
        if requirements.min_memory_mib == 0 {
            // Each worker's own limit would end a run near it on one worker and not another.
            return bad(
                fields.memory,
                "must be set for a job that names an image: it is the container's memory on every worker, so runs end alike".into(),
            );
        }
    }
    if software.len() > gridwork_types::MAX_SOFTWARE_NEEDS {
        return bad(
            fields.software,
            format!("at most {} programs", gridwork_types::MAX_SOFTWARE_NEEDS),
        );
    }
    for need in software {
        if let Err(e) = gridwork_types::SoftwareNeed::parse(need) {
            return bad(fields.software, format!("`{need}` {e}"));
        }
    }
    if data.len() > params.max_inputs_per_job as usize {
        return bad(
            fields.inputs,
            format!("at most {} inputs", params.max_inputs_per_job),
        );
    }
    for (n, input) in data.iter().enumerate() {
        if data[..n].iter().any(|d| d.cid == input.cid) {
            return bad(fields.inputs, format!("{} is named twice", input.cid));
        }
        if let Err(e) = gridwork_types::check_input_name(&input.name) {
            return bad(fields.inputs, e);
        }
        if !input.name.is_empty() && data[..n].iter().any(|d| d.name == input.name) {
            return bad(
                fields.inputs,
                format!(
                    "two inputs would both land as $GRIDWORK_INPUTS/{}; give them different names",
                    input.name
                ),
            );
        }
    }
    Ok(())
}

/// Checks a prescription's shape against the chain's parameters; errors name the field.
pub fn validate_prescription(p: &Prescription, params: &crate::Params) -> Result<(), TxError> {
    let bad =
        |field: &'static str, problem: String| Err(TxError::BadPrescription { field, problem });
    let i = &p.instructions;
    validate_program(
        &p.program,
        &p.data,
        &i.requirements,
        params,
        &ProgramFields {
            software: "instructions.requirements.software",
            memory: "instructions.requirements.min_memory_mib",
            inputs: "data.inputs",
        },
    )
    .or_else(|(field, problem)| bad(field, problem))?;
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
    if let Some(s) = p.segments {
        if !(2..=gridwork_types::MAX_SEGMENTS).contains(&s.count) {
            return bad(
                "segments.count",
                format!(
                    "is {}; a checkpointed run has 2 to {} segments",
                    s.count,
                    gridwork_types::MAX_SEGMENTS
                ),
            );
        }
        if s.replayed == 0 || s.replayed > s.count {
            return bad(
                "segments.replayed",
                format!(
                    "is {}; the council replays 1 to {} (segments.count) segments",
                    s.replayed, s.count
                ),
            );
        }
        if i.council_size == 0 {
            return bad(
                "instructions.council_size",
                "is 0, but checkpointed segments are checked by a council replaying them; set it to 1 or more (odd)".into(),
            );
        }
    }
    if let Some(problem) = equivalence_problem(&p.equivalence) {
        return bad("equivalence.min_psnr_db", problem);
    }
    Ok(())
}

/// What is wrong with an equivalence's parameters (a job's or a service's), if anything.
fn equivalence_problem(e: &gridwork_types::Equivalence) -> Option<String> {
    use gridwork_types::{MAX_IMAGE_PSNR_MDB, MIN_IMAGE_PSNR_MDB};
    match *e {
        gridwork_types::Equivalence::Image { min_psnr_mdb, .. }
            if !(MIN_IMAGE_PSNR_MDB..=MAX_IMAGE_PSNR_MDB).contains(&min_psnr_mdb) =>
        {
            Some(format!(
                "is {} dB; at least {} (below it a council cannot tell a forged frame from a rendered one) and at most {} (beyond it use exact_hash)",
                f64::from(min_psnr_mdb) / 1e3,
                MIN_IMAGE_PSNR_MDB / 1000,
                MAX_IMAGE_PSNR_MDB / 1000
            ))
        }
        _ => None,
    }
}
