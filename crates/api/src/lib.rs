//! The JSON documents of the node's REST API (`/v1/...`), shared by the node that serves them
//! and the client that reads them.
//!
//! Amounts are strings of base units; hashes are lowercase hex; addresses are bech32.
//! Transactions travel as hex of their canonical encoding ([`SubmitTx`]) so that what a
//! client signed is exactly what the node verifies.
#![deny(missing_docs, unreachable_pub)]

pub mod exposition;
pub mod frames;
#[cfg(feature = "openapi")]
mod openapi;
#[cfg(feature = "openapi")]
use openapi::{BidPair, ItemRange, RevealPair};

/// The header that signs a data-plane write (chunk uploads, pins, key grants):
/// `<public key hex>.<time ms>.<signature hex>` over [`signed_request_message`]. A node takes
/// such writes only from ledger accounts that hold funds or stake.
pub const SIGNATURE_HEADER: &str = "gridwork-signature";

/// The header that carries the digest a signed request signs (hex, see
/// [`signed_request_message`]), so a node checks the signer before it reads a byte of the
/// body, then checks the body against the digest.
pub const DIGEST_HEADER: &str = "gridwork-digest";

/// How far a signed request's time may be from the node's clock.
pub const SIGNATURE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// What a data-plane write signs: `"gridwork data request v2\n" || node key [32] || method ||
/// "\n" || path || "\n" || time_ms u64 LE || digest`, where `node` is the key of the node the
/// request is for (`node_key` in `GET /v1/chain`: a request signed for one node is refused
/// by every other) and `digest` is BLAKE3 of the chunk ids the request uploads (each chunk is
/// checked against its id) or else of its body. The digest also travels in [`DIGEST_HEADER`].
pub fn signed_request_message(
    node: &PublicKey,
    method: &str,
    path: &str,
    time_ms: u64,
    digest: &Hash,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(96 + method.len() + path.len());
    m.extend_from_slice(b"gridwork data request v2\n");
    m.extend_from_slice(&node.to_bytes());
    m.extend_from_slice(method.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(path.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(&time_ms.to_le_bytes());
    m.extend_from_slice(digest.as_bytes());
    m
}

/// The value of [`SIGNATURE_HEADER`] for a request `key` signs for `node` at `time_ms`:
/// `public key "." time_ms "." hex signature` over [`signed_request_message`].
pub fn signature_header(
    key: &gridwork_types::Keypair,
    node: &PublicKey,
    method: &str,
    path: &str,
    time_ms: u64,
    digest: &Hash,
) -> String {
    let message = signed_request_message(node, method, path, time_ms, digest);
    format!(
        "{}.{time_ms}.{}",
        key.public(),
        hex::encode(key.sign(&message).to_bytes())
    )
}

/// The header that carries a request's proof that it holds a tree's data key (hex of
/// `DataKey::holder_proof` for the node's key), on `PUT /v1/trees/{cid}/pin` and `POST /v1/trees/{cid}/keys`.
pub const KEY_PROOF_HEADER: &str = "gridwork-key-proof";

use gridwork_protocol::{Account, Event, Params, Receipt, Unbonding, Vesting};
pub use gridwork_protocol::{Phase, PoolStatus};
use gridwork_types::{
    Address, Amount, Hardware, Hash, Header, PeerAddr, Prescription, PublicKey, SignedTx, TxKind,
};
use serde::{Deserialize, Serialize};

/// An error body: a stable machine code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The parts of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, snake_case (for example `insufficient_balance`, `nonce_replayed`).
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

/// Whether the node serves (`GET /health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Stopped producing blocks; the health answer says why.
    Halted,
}

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

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Serving, or halted (then `reason` says why).
    pub status: HealthStatus,
    /// Head height.
    pub height: u64,
    /// Why the node halted, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/chain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainInfo {
    /// The chain id transactions are signed for.
    pub chain_id: String,
    /// Hash of block 0.
    pub genesis_hash: Hash,
    /// Head height.
    pub height: u64,
    /// Head hash.
    pub head_hash: Hash,
    /// Head block time.
    pub head_time_ms: u64,
    /// The fixed total supply.
    pub total_supply: Amount,
    /// The undistributed node-rewards pool.
    pub rewards_pool: Amount,
    /// Protocol parameters.
    pub params: Params,
    /// Transactions waiting in the mempool.
    pub mempool: usize,
    /// The node's key: grant it an input's data key and it passes the key on to the
    /// executor and council of each task when the auction closes.
    pub node_key: PublicKey,
    /// Where the node serves its chunks peer to peer (`gridwork node --p2p-listen`), if it
    /// does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_peer: Option<PeerAddr>,
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
            TxKind::Bid { job, task, price } => TxKindView::Bid {
                job: *job,
                task: *task,
                price: *price,
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
    /// Bids of this attempt: `[bidder, price]` pairs.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<BidPair>))]
    pub bids: Vec<(Address, Amount)>,
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
    /// When the current phase times out (block time, ms).
    pub deadline_ms: u64,
    /// Why it waits.
    pub note: String,
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
    /// When it was signed (ms since the epoch), within [`SIGNATURE_WINDOW_MS`] of the node's
    /// clock.
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
/// (within [`SIGNATURE_WINDOW_MS`] of the node's clock), or it could be replayed to another
/// node or over a newer reason.
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

/// The most entries one page of a list answers (`?limit=`; also its default).
pub const MAX_PAGE: usize = 1000;

/// `POST /v1/chunks/missing` and `POST /v1/chunks/fetch`: chunk ids asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChunkIds {
    /// Chunk ids.
    pub ids: Vec<Hash>,
}

/// The answer to `POST /v1/chunks/missing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MissingChunks {
    /// The ids the node does not hold, in the order asked.
    pub missing: Vec<Hash>,
}

/// The answer to `POST /v1/chunks`: how many chunks of the upload the node stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunksStored {
    /// Chunks stored (frames that carried a chunk).
    pub stored: u64,
}

/// The answer to `PUT /v1/trees/{cid}/pin` and `PUT /v1/trees/{cid}/pin-from/{base}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PinAnswer {
    /// The tree pinned.
    pub cid: Hash,
    /// Until when the node keeps it (ms since the epoch).
    pub until_ms: u64,
    /// Bytes of pinned trees the node charges the signer, this one included.
    pub account_pinned_bytes: u64,
    /// The signer's quota of pinned bytes (none: no limit).
    pub account_quota_bytes: Option<u64>,
}

/// A data key wrapped for one recipient (see docs/data-plane.md): the wire form is the data
/// plane's own.
pub use gridwork_transfer::WrappedKey as KeyGrant;

/// `GET /v1/accounts/{address}/storage`: what the node stores for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageView {
    /// Bytes of pinned trees charged to the account (it pinned them last).
    pub pinned_bytes: u64,
    /// Bytes of its uploads no pin names yet (kept for the upload grace period).
    pub pending_bytes: u64,
    /// The most it may keep (none: no limit but the node's store).
    pub quota_bytes: Option<u64>,
    /// What an account must hold (balance and stake together) for the node to store its
    /// uploads: each quota costs this much locked up, so free Sybil accounts get none.
    #[serde(default)]
    pub min_funds: Amount,
}

/// `GET /v1/trees/{cid}/pin`: what a node keeps of a pinned tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PinView {
    /// Until when it is kept (ms since the epoch); past it, the next collection drops it.
    pub until_ms: u64,
    /// Distinct chunks the pin lists.
    pub chunks: u64,
    /// Their `chunk_set_digest` (docs/data-plane.md): a client that knows the set checks it
    /// without fetching it.
    pub chunk_set: Hash,
    /// `proof_lock` of the tree's holder proof for this node: a recipient checks that a key
    /// granted to it is the tree's (`proof_lock(key.holder_proof(cid, node_key)) == lock`)
    /// before using it, so a wrong key planted by a holder is skipped. Knowing the lock does
    /// not let anyone make the proof. Absent for pins of the oldest format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Hash>,
}

/// `GET /v1/trees/{cid}/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyGrants {
    /// The grants, one per recipient.
    pub keys: Vec<KeyGrant>,
}
