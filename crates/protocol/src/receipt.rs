//! Receipts and events: what a transaction did, for clients and the event stream.

use gridwork_types::{
    Address, Amount, Decode, DecodeError, Encode, Hash, Reader, RunEnd, StreamPrice,
};
use serde::{Deserialize, Serialize};

/// Something a transaction changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Balance moved between accounts.
    Transfer {
        /// Sender.
        from: Address,
        /// Recipient.
        to: Address,
        /// Amount.
        amount: Amount,
    },
    /// Stake locked in the vault.
    StakeLocked {
        /// Account.
        account: Address,
        /// Amount.
        amount: Amount,
    },
    /// Stake began unbonding.
    StakeUnbonding {
        /// Account.
        account: Address,
        /// Amount.
        amount: Amount,
        /// When it can be withdrawn.
        matures_at_ms: u64,
    },
    /// Matured stake returned to the balance.
    StakeWithdrawn {
        /// Account.
        account: Address,
        /// Amount.
        amount: Amount,
    },
    /// A provider registered or updated its hardware.
    ProviderRegistered {
        /// The provider.
        provider: Address,
    },
    /// A provider's worker reported in.
    Heartbeat {
        /// The provider.
        provider: Address,
    },
    /// A provider published (or withdrew) where its worker serves chunks peer to peer.
    PeerAnnounced {
        /// The provider.
        provider: Address,
    },
    /// A job was published and its tasks opened for bids.
    JobSubmitted {
        /// Job id.
        job: Hash,
        /// Who pays.
        requester: Address,
        /// Number of tasks.
        tasks: u32,
        /// Escrow locked.
        deposit: Amount,
    },
    /// A provider bid for a task.
    BidPlaced {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Bidder.
        provider: Address,
        /// Price.
        price: Amount,
    },
    /// A task's auction closed: executor and council chosen.
    AuctionClosed {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Winner.
        executor: Address,
        /// Winning price.
        price: Amount,
        /// Council drawn.
        council: Vec<Address>,
    },
    /// A task's council was drawn (all of it after an auction, or the seats of silent
    /// members).
    CouncilDrawn {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// The council now.
        council: Vec<Address>,
    },
    /// Council members who missed the commit deadline lost their seats, drawn again at the
    /// next block.
    CouncilRedrawn {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// The silent members replaced.
        replaced: Vec<Address>,
        /// The council now.
        council: Vec<Address>,
    },
    /// A task's deadline passed while the chain was down; it moved to `until_ms`.
    DeadlineDeferred {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// The new deadline.
        until_ms: u64,
    },
    /// A result commitment was recorded.
    Committed {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Who committed.
        provider: Address,
    },
    /// A commitment was opened.
    Revealed {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Who revealed.
        provider: Address,
        /// Output content id.
        output: Hash,
    },
    /// A party sent its judgement of the other revealed outputs.
    Judged {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Who judged.
        provider: Address,
        /// Whom it found equivalent to itself.
        equivalent: Vec<Address>,
    },
    /// The runs of a task reached no clear majority: more council seats are drawn, as a
    /// volunteer grid issues more replicas, before anyone is slashed.
    CouncilEnlarged {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// The seats the council has now (drawn at the next block).
        seats: u8,
        /// What the runs looked like.
        reason: String,
    },
    /// The executor of a checkpointed task bound itself to its checkpoints.
    CheckpointsBound {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// The executor.
        provider: Address,
        /// How many (one per segment).
        count: u32,
    },
    /// The segments a checkpointed task's council replays were drawn.
    ReplayDrawn {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// The segments, ascending (0 is the first).
        segments: Vec<u32>,
    },
    /// A provider's runs were far slower than its declared CPU score claims: the ledger keeps
    /// its score at 0.
    ScoreLost {
        /// The provider.
        provider: Address,
        /// The score it declared.
        claimed: u32,
        /// Its run time, in seconds.
        seconds: u64,
        /// What the council's runs predicted for a machine of its score, in seconds.
        predicted: u64,
    },
    /// Even the enlarged council's runs agreed with no clear majority: the program is judged
    /// nondeterministic. Nobody is slashed; the requester pays for the runs and the task fails.
    RunsDisagreed {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Paid out of escrow for the runs.
        paid: Amount,
        /// What the runs looked like.
        reason: String,
    },
    /// The sender's side applied (its nonce and fee are spent) but the market refused the
    /// action: another transaction in this block or an earlier one got there first (the job
    /// was cancelled, the auction closed, the same bid or commitment was already made). The
    /// transaction is in the block and did nothing else.
    TxFailed {
        /// Who sent it.
        sender: Address,
        /// The stable code of the refusal (as the API's error codes: `wrong_phase`, ...).
        code: String,
        /// What went wrong.
        reason: String,
    },
    /// A task's result was accepted and paid.
    TaskSettled {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Executor.
        executor: Address,
        /// Accepted output.
        output: Hash,
        /// How the accepted runs ended (a failure the council reproduced is paid as work).
        ended: RunEnd,
        /// Paid to the executor.
        paid: Amount,
        /// Paid to the council in all.
        council_paid: Amount,
    },
    /// Stake was taken from a provider.
    Slashed {
        /// The provider.
        provider: Address,
        /// How much.
        amount: Amount,
        /// Job.
        job: Hash,
        /// Task.
        task: u32,
        /// Why.
        reason: String,
    },
    /// A task went back to auction.
    TaskReopened {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// The new attempt.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// A task gave up after too many attempts.
    TaskFailed {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Why.
        reason: String,
    },
    /// Every task is settled or failed; the unspent escrow went back.
    JobFinished {
        /// Job id.
        job: Hash,
        /// Refunded to the requester.
        refund: Amount,
    },
    /// The requester cancelled; unspent escrow of tasks not running went back.
    JobCancelled {
        /// Job id.
        job: Hash,
        /// Refunded now.
        refund: Amount,
    },
    /// The record of validated work, with the reward paid from the node-rewards pool.
    ProofOfCompute {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Executor.
        executor: Address,
        /// Council that validated it.
        council: Vec<Address>,
        /// Output content id.
        output: Hash,
        /// Validated run time.
        seconds: u64,
        /// What the requester paid for it (executor and council).
        cost: Amount,
        /// The market fee the requester paid into the rewards pool on top.
        fee: Amount,
        /// Reward from the pool to the executor.
        reward: Amount,
    },
    /// A service was published.
    ServiceCreated {
        /// The service id.
        service: Hash,
        /// Who pays for it.
        requester: Address,
        /// Its escrow.
        deposit: Amount,
    },
    /// A service's escrow grew.
    ServiceFunded {
        /// The service id.
        service: Hash,
        /// How much was added.
        amount: Amount,
    },
    /// A provider subscribed to a service.
    Subscribed {
        /// The service id.
        service: Hash,
        /// The provider.
        provider: Address,
        /// Its price per response.
        price: StreamPrice,
    },
    /// A provider stopped serving a service: it left, was dropped, or was slashed.
    Unsubscribed {
        /// The service id.
        service: Hash,
        /// The provider.
        provider: Address,
        /// Why.
        reason: String,
    },
    /// Seats of a service's council were drawn from its subscribers.
    ServiceCouncil {
        /// The service id.
        service: Hash,
        /// The council now.
        council: Vec<Address>,
    },
    /// A service went up, down, closing or closed.
    ServiceStatus {
        /// The service id.
        service: Hash,
        /// The status now (`up`, `down`, `closing`, `closed`).
        status: String,
        /// Why, for people.
        reason: String,
    },
    /// A member was paid for the responses its latest receipt acknowledges.
    StreamSettled {
        /// The service id.
        service: Hash,
        /// The member.
        provider: Address,
        /// Paid now, from escrow.
        amount: Amount,
        /// The market fee on it, from escrow into the rewards pool.
        fee: Amount,
        /// Responses acknowledged so far.
        responses: u64,
    },
    /// Members answered a request differently and the ledger decided.
    ResponsesDisputed {
        /// The service id.
        service: Hash,
        /// The request.
        request: Hash,
        /// The response more than half the council signed.
        majority: Hash,
        /// The members slashed (outvoted, or two different answers signed).
        slashed: Vec<Address>,
    },
    /// A member's stake was taken for what it did on a service.
    ServiceSlashed {
        /// The service id.
        service: Hash,
        /// The member.
        provider: Address,
        /// How much (into the rewards pool).
        amount: Amount,
        /// Why.
        reason: String,
    },
    /// A closed service returned the rest of its escrow.
    ServiceClosed {
        /// The service id.
        service: Hash,
        /// Refunded to the requester.
        refund: Amount,
    },
    /// A service's gateway said where it listens.
    GatewayAnnounced {
        /// The service id.
        service: Hash,
        /// Its URL.
        url: String,
    },
}

gridwork_types::codec_enum!(Event, "event" {
    0 => Transfer { from: Address, to: Address, amount: Amount },
    1 => StakeLocked { account: Address, amount: Amount },
    2 => StakeUnbonding { account: Address, amount: Amount, matures_at_ms: u64 },
    3 => StakeWithdrawn { account: Address, amount: Amount },
    4 => ProviderRegistered { provider: Address },
    5 => JobSubmitted { job: Hash, requester: Address, tasks: u32, deposit: Amount },
    6 => BidPlaced { job: Hash, task: u32, provider: Address, price: Amount },
    7 => AuctionClosed { job: Hash, task: u32, attempt: u32, executor: Address, price: Amount, council: Vec<Address> },
    8 => Committed { job: Hash, task: u32, attempt: u32, provider: Address },
    9 => Revealed { job: Hash, task: u32, attempt: u32, provider: Address, output: Hash },
    10 => TaskSettled { job: Hash, task: u32, attempt: u32, executor: Address, output: Hash, ended: RunEnd, paid: Amount, council_paid: Amount },
    11 => Slashed { provider: Address, amount: Amount, job: Hash, task: u32, reason: String },
    12 => TaskReopened { job: Hash, task: u32, attempt: u32, reason: String },
    13 => TaskFailed { job: Hash, task: u32, reason: String },
    14 => JobFinished { job: Hash, refund: Amount },
    15 => ProofOfCompute { job: Hash, task: u32, attempt: u32, executor: Address, council: Vec<Address>, output: Hash, seconds: u64, cost: Amount, fee: Amount, reward: Amount },
    16 => JobCancelled { job: Hash, refund: Amount },
    17 => Heartbeat { provider: Address },
    18 => PeerAnnounced { provider: Address },
    19 => CouncilRedrawn { job: Hash, task: u32, attempt: u32, replaced: Vec<Address>, council: Vec<Address> },
    20 => DeadlineDeferred { job: Hash, task: u32, until_ms: u64 },
    21 => CouncilDrawn { job: Hash, task: u32, attempt: u32, council: Vec<Address> },
    22 => Judged { job: Hash, task: u32, attempt: u32, provider: Address, equivalent: Vec<Address> },
    23 => CouncilEnlarged { job: Hash, task: u32, attempt: u32, seats: u8, reason: String },
    24 => RunsDisagreed { job: Hash, task: u32, attempt: u32, paid: Amount, reason: String },
    25 => TxFailed { sender: Address, code: String, reason: String },
    26 => CheckpointsBound { job: Hash, task: u32, attempt: u32, provider: Address, count: u32 },
    27 => ReplayDrawn { job: Hash, task: u32, attempt: u32, segments: Vec<u32> },
    28 => ScoreLost { provider: Address, claimed: u32, seconds: u64, predicted: u64 },
    29 => ServiceCreated { service: Hash, requester: Address, deposit: Amount },
    30 => ServiceFunded { service: Hash, amount: Amount },
    31 => Subscribed { service: Hash, provider: Address, price: StreamPrice },
    32 => Unsubscribed { service: Hash, provider: Address, reason: String },
    33 => ServiceCouncil { service: Hash, council: Vec<Address> },
    34 => ServiceStatus { service: Hash, status: String, reason: String },
    35 => StreamSettled { service: Hash, provider: Address, amount: Amount, fee: Amount, responses: u64 },
    36 => ResponsesDisputed { service: Hash, request: Hash, majority: Hash, slashed: Vec<Address> },
    37 => ServiceSlashed { service: Hash, provider: Address, amount: Amount, reason: String },
    38 => ServiceClosed { service: Hash, refund: Amount },
    39 => GatewayAnnounced { service: Hash, url: String },
});

/// The outcome of one applied transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    /// The transaction hash.
    pub tx_hash: Hash,
    /// Height of the block that holds it.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// Fee paid to the rewards pool.
    pub fee: Amount,
    /// What it changed.
    pub events: Vec<Event>,
}

impl Receipt {
    /// The market's refusal, when the transaction paid its fee and nonce but did nothing
    /// else ([`Event::TxFailed`]): its code and reason.
    pub fn failure(&self) -> Option<(&str, &str)> {
        self.events.iter().find_map(|e| match e {
            Event::TxFailed { code, reason, .. } => Some((code.as_str(), reason.as_str())),
            _ => None,
        })
    }
}

impl Encode for Receipt {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tx_hash.encode(out);
        self.height.encode(out);
        self.index.encode(out);
        self.fee.encode(out);
        self.events.encode(out);
    }
}

impl Decode for Receipt {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Receipt {
            tx_hash: Hash::decode(r)?,
            height: u64::decode(r)?,
            index: u32::decode(r)?,
            fee: Amount::decode(r)?,
            events: Vec::decode(r)?,
        })
    }
}
