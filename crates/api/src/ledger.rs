//! The ledger on the wire: transactions submitted and shown, their status, accounts and blocks.

use gridwork_protocol::{Account, Event, Receipt, Unbonding, Vesting};
use gridwork_types::{
    Address, Amount, Hardware, Hash, Header, PeerAddr, Prescription, PublicKey, ServiceSpec,
    SignedResponse, SignedTx, StreamJudgement, StreamPrice, StreamReceipt, StreamResponse, TxKind,
};
use serde::{Deserialize, Serialize};

/// Where a transaction is (`GET /v1/txs/{hash}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// Admitted to the mempool, not yet in a block.
    Pending,
    /// In a durable block.
    Committed,
    /// In a durable block, but the market refused its action: it spent its fee and nonce and
    /// did nothing else (its receipt's `tx_failed` event says why).
    Failed,
}

impl TxState {
    /// The name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Committed => "committed",
            TxState::Failed => "failed",
        }
    }
}

/// `POST /v1/txs`: a signed transaction, hex of its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitTx {
    /// Hex of the canonical bytes.
    #[cfg_attr(feature = "openapi", schema(pattern = "^\\s*([0-9a-fA-F]{2})*\\s*$"))]
    pub tx: String,
}

impl SubmitTx {
    /// Wraps a signed transaction.
    pub fn new(tx: &SignedTx) -> Self {
        use gridwork_types::Encode;
        SubmitTx {
            tx: hex::encode(tx.to_bytes()),
        }
    }
}

/// The answer to a submission: accepted into the mempool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submitted {
    /// The transaction hash.
    pub hash: Hash,
}

/// A transaction, readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxView {
    /// Sender address.
    pub from: Address,
    /// Sender public key (hex).
    pub public_key: String,
    /// Nonce.
    pub nonce: u64,
    /// Fee.
    pub fee: Amount,
    /// What it does.
    pub kind: TxKindView,
}

/// A transaction kind, readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxKindView {
    /// A transfer.
    Transfer {
        /// Recipient.
        to: Address,
        /// Amount.
        amount: Amount,
    },
    /// Lock stake.
    StakeLock {
        /// Amount.
        amount: Amount,
    },
    /// Unbond stake.
    StakeUnbond {
        /// Amount.
        amount: Amount,
    },
    /// Withdraw matured stake.
    StakeWithdraw,
    /// Register as a provider.
    RegisterProvider {
        /// The hardware offered.
        hardware: Hardware,
        /// The owner that approved this worker, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<Address>,
    },
    /// A worker's heartbeat.
    Heartbeat,
    /// Publishes where the sender's worker serves chunks peer to peer.
    AnnouncePeer {
        /// Endpoint key and addresses.
        peer: PeerAddr,
    },
    /// Publish a job.
    SubmitJob {
        /// What to run.
        prescription: Prescription,
        /// Escrow.
        deposit: Amount,
    },
    /// Cancel a job.
    CancelJob {
        /// Job id.
        job: Hash,
    },
    /// Bid for a task.
    Bid {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Price.
        price: Amount,
        /// The bidder says it has the job's image loaded already.
        cached: bool,
    },
    /// Commit to a result.
    Commit {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// The commitment.
        commitment: Hash,
    },
    /// Open a commitment.
    Reveal {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Output content id.
        output: Hash,
        /// Run time in seconds.
        seconds: u64,
    },
    /// Name the other parties whose outputs are equivalent to the sender's.
    Judge {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// Round of the attempt.
        round: u8,
        /// The parties named.
        equivalent: Vec<Address>,
    },
    /// Bind the checkpoints of a checkpointed run.
    Checkpoints {
        /// Job id.
        job: Hash,
        /// Task index.
        task: u32,
        /// Attempt.
        attempt: u32,
        /// One content id per segment that ran, in order.
        checkpoints: Vec<Hash>,
        /// The last named segment failed.
        failed: bool,
    },
    /// Publish a service (a stream task).
    CreateService {
        /// What to serve, checked and paid how.
        spec: ServiceSpec,
        /// Escrow.
        deposit: Amount,
    },
    /// Add to a service's escrow.
    FundService {
        /// Service id.
        service: Hash,
        /// How much.
        amount: Amount,
    },
    /// End a service.
    CloseService {
        /// Service id.
        service: Hash,
    },
    /// Offer to serve a service.
    Subscribe {
        /// Service id.
        service: Hash,
        /// The price per response.
        price: StreamPrice,
    },
    /// Stop serving a service.
    Unsubscribe {
        /// Service id.
        service: Hash,
    },
    /// Drop a council member of a service.
    DropMember {
        /// Service id.
        service: Hash,
        /// The member.
        member: Address,
    },
    /// Pay members what the gateway's receipts acknowledge.
    SettleStream {
        /// The receipts (their signatures checked by the ledger).
        receipts: Vec<StreamReceipt>,
    },
    /// Say where a service's gateway listens.
    AnnounceGateway {
        /// Service id.
        service: Hash,
        /// Its URL.
        url: String,
    },
    /// Members' signed responses to one request that differ.
    DisputeResponses {
        /// Service id.
        service: Hash,
        /// Each signer and what it answered.
        responses: Vec<SignedResponseView>,
    },
    /// Members' signed responses to one request and their judgements of each other's.
    JudgeResponses {
        /// Service id.
        service: Hash,
        /// Each signer and what it answered.
        responses: Vec<SignedResponseView>,
        /// Each judge and what it judged.
        judgements: Vec<SignedJudgementView>,
    },
}

/// One member's signed judgement, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedJudgementView {
    /// The judging member.
    pub judge: Address,
    /// What it judged.
    pub judgement: StreamJudgement,
}

/// One member's signed response, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedResponseView {
    /// The member.
    pub provider: Address,
    /// What it answered.
    pub response: StreamResponse,
}

fn response_views(responses: &[SignedResponse]) -> Vec<SignedResponseView> {
    responses
        .iter()
        .map(|r| SignedResponseView {
            provider: r.provider.address(),
            response: r.response.clone(),
        })
        .collect()
}

impl From<&SignedTx> for TxView {
    fn from(s: &SignedTx) -> Self {
        let kind = match &s.tx.kind {
            TxKind::Transfer { to, amount } => TxKindView::Transfer {
                to: *to,
                amount: *amount,
            },
            TxKind::StakeLock { amount } => TxKindView::StakeLock { amount: *amount },
            TxKind::StakeUnbond { amount } => TxKindView::StakeUnbond { amount: *amount },
            TxKind::StakeWithdraw => TxKindView::StakeWithdraw,
            TxKind::RegisterProvider { hardware, owner } => TxKindView::RegisterProvider {
                hardware: hardware.clone(),
                owner: owner.map(|o| o.owner_address()),
            },
            TxKind::Heartbeat => TxKindView::Heartbeat,
            TxKind::AnnouncePeer { peer } => TxKindView::AnnouncePeer { peer: peer.clone() },
            TxKind::SubmitJob {
                prescription,
                deposit,
            } => TxKindView::SubmitJob {
                prescription: prescription.clone(),
                deposit: *deposit,
            },
            TxKind::CancelJob { job } => TxKindView::CancelJob { job: *job },
            TxKind::Bid {
                job,
                task,
                price,
                cached,
            } => TxKindView::Bid {
                job: *job,
                task: *task,
                price: *price,
                cached: *cached,
            },
            TxKind::Commit {
                job,
                task,
                attempt,
                commitment,
            } => TxKindView::Commit {
                job: *job,
                task: *task,
                attempt: *attempt,
                commitment: *commitment,
            },
            TxKind::Reveal {
                job,
                task,
                attempt,
                output,
                seconds,
                ..
            } => TxKindView::Reveal {
                job: *job,
                task: *task,
                attempt: *attempt,
                output: *output,
                seconds: *seconds,
            },
            TxKind::Judge {
                job,
                task,
                attempt,
                round,
                equivalent,
            } => TxKindView::Judge {
                job: *job,
                task: *task,
                attempt: *attempt,
                round: *round,
                equivalent: equivalent.clone(),
            },
            TxKind::Checkpoints {
                job,
                task,
                attempt,
                checkpoints,
                failed,
            } => TxKindView::Checkpoints {
                job: *job,
                task: *task,
                attempt: *attempt,
                checkpoints: checkpoints.clone(),
                failed: *failed,
            },
            TxKind::CreateService { spec, deposit } => TxKindView::CreateService {
                spec: spec.clone(),
                deposit: *deposit,
            },
            TxKind::FundService { service, amount } => TxKindView::FundService {
                service: *service,
                amount: *amount,
            },
            TxKind::CloseService { service } => TxKindView::CloseService { service: *service },
            TxKind::Subscribe { service, price } => TxKindView::Subscribe {
                service: *service,
                price: *price,
            },
            TxKind::Unsubscribe { service } => TxKindView::Unsubscribe { service: *service },
            TxKind::DropMember { service, member } => TxKindView::DropMember {
                service: *service,
                member: *member,
            },
            TxKind::SettleStream { receipts } => TxKindView::SettleStream {
                receipts: receipts.iter().map(|r| r.receipt.clone()).collect(),
            },
            TxKind::AnnounceGateway { service, url } => TxKindView::AnnounceGateway {
                service: *service,
                url: url.clone(),
            },
            TxKind::DisputeResponses { service, responses } => TxKindView::DisputeResponses {
                service: *service,
                responses: response_views(responses),
            },
            TxKind::JudgeResponses {
                service,
                responses,
                judgements,
            } => TxKindView::JudgeResponses {
                service: *service,
                responses: response_views(responses),
                judgements: judgements
                    .iter()
                    .map(|j| SignedJudgementView {
                        judge: j.judge.address(),
                        judgement: j.judgement.clone(),
                    })
                    .collect(),
            },
        };
        TxView {
            from: s.tx.sender(),
            public_key: hex::encode(s.tx.from.to_bytes()),
            nonce: s.tx.nonce,
            fee: s.tx.fee,
            kind,
        }
    }
}

/// `GET /v1/txs/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxStatus {
    /// The hash.
    pub hash: Hash,
    /// In the mempool, in a durable block, or in one but refused by the market.
    pub status: TxState,
    /// The transaction.
    pub tx: TxView,
    /// The receipt, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
}

/// `GET /v1/accounts/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    /// The address.
    pub address: Address,
    /// Balance, including anything still vesting.
    pub balance: Amount,
    /// What can be spent now (balance less still-vesting tokens).
    pub spendable: Amount,
    /// Next nonce in committed state.
    pub nonce: u64,
    /// Next nonce counting transactions waiting in the mempool: sign with this one.
    pub next_nonce: u64,
    /// Stake locked in the vault.
    pub stake_locked: Amount,
    /// Sum of unbonding entries.
    pub unbonding_total: Amount,
    /// Unbonding entries, oldest first.
    pub unbonding: Vec<Unbonding>,
    /// Tokens held in job escrow (the market fills this in).
    pub escrow: Amount,
    /// Vesting schedule, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vesting: Option<Vesting>,
    /// Still-vesting amount now.
    pub vesting_locked: Amount,
    /// The account's public key, once it has sent a transaction (for wrapping data keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
}

impl AccountView {
    /// The view of `account` at block time `now_ms`.
    pub fn new(address: Address, account: &Account, now_ms: u64, next_nonce: u64) -> Self {
        AccountView {
            address,
            balance: account.balance,
            spendable: account.spendable(now_ms),
            nonce: account.nonce,
            next_nonce,
            stake_locked: account.stake_locked,
            unbonding_total: account.unbonding_total(),
            unbonding: account.unbonding.clone(),
            escrow: Amount::ZERO,
            vesting: account.vesting.clone(),
            vesting_locked: account
                .vesting
                .as_ref()
                .map_or(Amount::ZERO, |v| v.locked(now_ms)),
            public_key: account.public_key,
        }
    }
}

/// A block header with its hash and transaction hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockView {
    /// The block hash.
    pub hash: Hash,
    /// Height.
    pub height: u64,
    /// Parent hash.
    pub parent: Hash,
    /// Block time.
    pub timestamp_ms: u64,
    /// Proposer.
    pub proposer: Address,
    /// Transaction root.
    pub tx_root: Hash,
    /// State root after the block.
    pub state_root: Hash,
    /// Transaction count.
    pub tx_count: u32,
    /// Transaction hashes, in order (omitted in lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txs: Option<Vec<Hash>>,
}

impl BlockView {
    /// The view of a header.
    pub fn new(header: &Header, txs: Option<Vec<Hash>>) -> Self {
        BlockView {
            hash: header.hash(),
            height: header.height,
            parent: header.parent,
            timestamp_ms: header.timestamp_ms,
            proposer: header.proposer,
            tx_root: header.tx_root,
            state_root: header.state_root,
            tx_count: header.tx_count,
            txs,
        }
    }
}

/// `GET /v1/blocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockList {
    /// Newest first.
    pub blocks: Vec<BlockView>,
}

/// One message on the event stream (`GET /v1/events`, server-sent events named `block`):
/// a committed block, what the block itself triggered, and its receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockEvent {
    /// The block.
    pub block: BlockView,
    /// Transitions the block triggered before its transactions (auction deadlines, missed
    /// deadlines, settlements after a reveal window).
    #[serde(default)]
    pub events: Vec<Event>,
    /// One per transaction.
    pub receipts: Vec<Receipt>,
}
