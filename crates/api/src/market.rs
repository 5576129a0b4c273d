//! The market on the wire: jobs, tasks, declines, providers, task logs and pages of jobs.

use gridwork_protocol::{Phase, PoolStatus, ServiceStatus};
use gridwork_types::{
    Address, Amount, Hardware, Hash, PeerAddr, Prescription, PublicKey, RunEnd, ServiceSpec,
    StreamPrice,
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use crate::openapi::{ItemRange, RevealPair};

/// Where a job stands (`GET /v1/jobs/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Some tasks are still open.
    Open,
    /// Every task settled or failed, and the escrow left was refunded.
    Finished,
    /// Cancelled by the requester.
    Cancelled,
}

impl JobStatus {
    /// The name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Open => "open",
            JobStatus::Finished => "finished",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `GET /v1/jobs/{id}`: a job and each of its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    /// The job id.
    pub id: Hash,
    /// Who pays.
    pub requester: Address,
    /// Open, finished or cancelled.
    pub status: JobStatus,
    /// What it runs.
    pub prescription: Prescription,
    /// Escrow still held.
    pub escrow: Amount,
    /// Paid out so far.
    pub spent: Amount,
    /// The most one task can cost.
    pub max_task_cost: Amount,
    /// Tasks settled.
    pub settled: u32,
    /// Tasks failed or cancelled.
    pub closed: u32,
    /// Every task.
    pub tasks: Vec<TaskView>,
    /// Why providers declined to bid, newest last (reported by workers, not on the ledger).
    #[serde(default)]
    pub declines: Vec<Decline>,
}

/// A bid on a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BidView {
    /// The bidder.
    pub provider: Address,
    /// Its price.
    pub price: Amount,
    /// The bidder says it has the job's image loaded already, so its run starts sooner (a
    /// claim; the auction does not depend on it).
    pub cached: bool,
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView {
    /// Index.
    pub index: u32,
    /// Where it stands.
    pub phase: Phase,
    /// Attempt (0 first).
    pub attempt: u32,
    /// Items `[start, end)`.
    #[cfg_attr(feature = "openapi", schema(value_type = ItemRange))]
    pub items: (u64, u64),
    /// Bids of this attempt, in the order they came.
    pub bids: Vec<BidView>,
    /// The executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<Address>,
    /// The winning price.
    pub price: Amount,
    /// The council.
    pub council: Vec<Address>,
    /// Who committed.
    pub committed: Vec<Address>,
    /// Reveals: `[who, output]` pairs.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<RevealPair>))]
    pub revealed: Vec<(Address, Hash)>,
    /// Who sent its judgement of the others' outputs in the current round (phase `judging`).
    #[serde(default)]
    pub judged: Vec<Address>,
    /// 0, or how many times the council was enlarged because its runs disagreed.
    #[serde(default)]
    pub round: u8,
    /// The accepted output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Hash>,
    /// How the runs of the accepted output ended: `exit` with code 0 is a success; any
    /// other end is a failure the council reproduced, paid as work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<RunEnd>,
    /// What the executor and council were paid for the runs that closed the task, before
    /// the market fee.
    #[serde(default)]
    pub paid: Amount,
    /// When the current phase times out (block time, ms).
    pub deadline_ms: u64,
    /// Why it waits.
    pub note: String,
    /// A checkpointed job's task: the checkpoints its executor bound, one per segment (the
    /// last is its output).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<Hash>,
    /// A checkpointed job's task: the segments its council replays (0 is the first), drawn
    /// after the checkpoints were bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replay: Vec<u32>,
    /// A checkpointed job's task: the executor's run failed in its last bound segment, the
    /// one the council replays.
    #[serde(default)]
    pub run_failed: bool,
}

/// A worker's reason for not bidding on a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decline {
    /// The provider.
    pub provider: Address,
    /// Why.
    pub reason: String,
    /// When the provider signed it (ms since the epoch).
    #[serde(default)]
    pub time_ms: u64,
}

/// `POST /v1/jobs/{id}/declines`: a provider says why it will not bid, signed by its key
/// over [`decline_message`] (the node's key, the job, the time, the reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PostDecline {
    /// Hex of the provider's public key.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub public_key: String,
    /// Why.
    pub reason: String,
    /// When it was signed (ms since the epoch), within
    /// [`SIGNATURE_WINDOW_MS`](crate::SIGNATURE_WINDOW_MS) of the node's clock.
    pub time_ms: u64,
    /// Hex of the signature.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{128}$"))]
    pub signature: String,
}

/// `GET /v1/providers/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderView {
    /// The provider.
    pub address: Address,
    /// The party it works for (itself unless an owner approved it).
    pub owner: Address,
    /// Offline, busy or available.
    pub status: PoolStatus,
    /// What its machine offers.
    pub hardware: Hardware,
    /// Stake locked.
    pub stake_locked: Amount,
    /// Validated results in a row.
    pub streak: u32,
    /// Results accepted and majority votes.
    pub validated: u64,
    /// Rejected results, minority votes, missed deadlines.
    pub failed: u64,
    /// Earned so far, rewards included.
    pub earned: Amount,
    /// Stake taken so far.
    pub slashed: Amount,
    /// Tasks in progress.
    pub active: u32,
    /// Last heartbeat (block time, ms).
    pub last_heartbeat_ms: u64,
    /// Where its worker serves chunks peer to peer (`gridwork worker --p2p`).
    #[serde(default)]
    pub peer: Option<PeerAddr>,
    /// A council's spot check found its runs far slower than its declared CPU score: its
    /// score is 0 on the ledger from then on (`hardware.cpu_score`).
    #[serde(default)]
    pub score_lost: bool,
}

/// `GET /v1/providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderList {
    /// By address, in address order, at most a page of them.
    pub providers: Vec<ProviderView>,
    /// Where the next page starts (`?after=` this); none on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Address>,
}

/// What a provider signs to say why it will not bid on `job`, for the node whose key is
/// `node` at `time_ms`: a decline is off the ledger, so it names the node it is for and when
/// (within [`SIGNATURE_WINDOW_MS`](crate::SIGNATURE_WINDOW_MS) of the node's clock), or it
/// could be replayed to another node or over a newer reason.
pub fn decline_message(node: &PublicKey, job: &Hash, reason: &str, time_ms: u64) -> Vec<u8> {
    let mut m = b"gridwork/decline/v2".to_vec();
    m.extend_from_slice(&node.to_bytes());
    m.extend_from_slice(job.as_bytes());
    m.extend_from_slice(&time_ms.to_le_bytes());
    m.extend_from_slice(reason.as_bytes());
    m
}

/// Which output of a task's program a log holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// `POST /v1/jobs/{id}/tasks/{task}/logs`: an executor or council member appends what its
/// run printed, signed by its key over [`log_message`]. `offset` is where `data` starts in
/// the node's copy: a repeat of bytes the node has is accepted once, a gap is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PostLog {
    /// The attempt the run belongs to.
    pub attempt: u32,
    /// Which output.
    pub stream: LogStream,
    /// Byte offset of `data` in the log.
    pub offset: u64,
    /// Text (UTF-8; invalid bytes replaced by the worker).
    pub data: String,
    /// Hex of the provider's public key.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub public_key: String,
    /// Hex of the signature.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{128}$"))]
    pub signature: String,
}

/// The answer to a log append: the log's size now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogAppended {
    /// Bytes the node holds for this log.
    pub size: u64,
}

/// `GET /v1/jobs/{id}/tasks/{task}/logs`: part of one run's log, from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskLog {
    /// The job.
    pub job: Hash,
    /// Task index.
    pub task: u32,
    /// The attempt.
    pub attempt: u32,
    /// Whose run.
    pub provider: Address,
    /// Which output.
    pub stream: LogStream,
    /// Where `data` starts.
    pub offset: u64,
    /// The text from `offset` (at most 1 MiB per answer).
    pub data: String,
    /// Bytes the node holds for this log.
    pub size: u64,
}

/// The message a log append's signature covers.
pub fn log_message(
    job: &Hash,
    task: u32,
    attempt: u32,
    stream: LogStream,
    offset: u64,
    data: &str,
) -> Vec<u8> {
    let mut m = b"gridwork/log/v1".to_vec();
    m.extend_from_slice(job.as_bytes());
    m.extend_from_slice(&task.to_le_bytes());
    m.extend_from_slice(&attempt.to_le_bytes());
    m.push(stream as u8);
    m.extend_from_slice(&offset.to_le_bytes());
    m.extend_from_slice(data.as_bytes());
    m
}

/// `GET /v1/jobs`: the jobs still open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    /// Ids of jobs neither finished nor cancelled, in id order, at most a page of them.
    pub open: Vec<Hash>,
    /// Where the next page starts (`?after=` this); none on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Hash>,
}

/// `GET /v1/services/{id}`: a service (stream task), its council and what it paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceView {
    /// The service id.
    pub id: Hash,
    /// Who pays.
    pub requester: Address,
    /// Forming, up, down, closing or closed.
    pub status: ServiceStatus,
    /// When the status began (block time, ms).
    pub since_ms: u64,
    /// Time down since it first came up, the current stretch included (ms).
    pub downtime_ms: u64,
    /// What it serves, checked and paid how.
    pub spec: ServiceSpec,
    /// Escrow still held.
    pub escrow: Amount,
    /// The escrow that keeps it up: `max_unsettled` for every seat, with the market fee.
    pub reserve: Amount,
    /// Paid to members so far (without the market fee).
    pub paid: Amount,
    /// Providers offering to serve it.
    pub subscribers: Vec<SubscriberView>,
    /// Its council now.
    pub council: Vec<Address>,
    /// Every member that ever sat, with what it was paid.
    pub members: Vec<MemberView>,
    /// Providers slashed on it, barred from it.
    pub barred: Vec<Address>,
    /// Disputes decided.
    pub disputes: u32,
    /// When a closing service returns the rest of its escrow (0 while open).
    pub closes_at_ms: u64,
    /// Where its gateway listens (members fetch requests there); empty until announced.
    pub gateway_url: String,
    /// Its last finished status periods (up to 16), oldest first; the current one is
    /// `status` since `since_ms`.
    #[serde(default)]
    pub periods: Vec<PeriodView>,
}

/// A finished stretch of one status of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodView {
    /// The status it held.
    pub status: ServiceStatus,
    /// Block time it began (ms).
    pub from_ms: u64,
    /// Block time it ended (ms).
    pub to_ms: u64,
}

/// A provider's offer to serve a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriberView {
    /// The provider.
    pub provider: Address,
    /// Its price.
    pub price: StreamPrice,
    /// When it subscribed.
    pub since_ms: u64,
}

/// What a member of a service was paid so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    /// The member.
    pub provider: Address,
    /// Responses its latest settled receipt acknowledged.
    pub responses: u64,
    /// Bytes they came to.
    pub units: u64,
    /// Paid so far.
    pub paid: Amount,
}

/// `GET /v1/services`: the services not closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceList {
    /// Ids of services not closed, in id order, at most a page of them.
    pub open: Vec<Hash>,
    /// Where the next page starts (`?after=` this); none on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Hash>,
}

/// The most entries one page of a list answers (`?limit=`; also its default).
pub const MAX_PAGE: usize = 1000;
