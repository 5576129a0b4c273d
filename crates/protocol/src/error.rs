//! Why a transaction, block or genesis was refused.

use gridwork_types::{Address, Amount, Hash, KeyError};

/// Why a transaction cannot apply. Each names the fix where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The signature does not match the sender's key on this chain.
    #[error("bad signature: the transaction was not signed by the key of {sender} for this chain")]
    BadSignature {
        /// The claimed sender.
        sender: Address,
        /// The verification error.
        source: KeyError,
    },
    /// The nonce was already used.
    #[error("nonce {got} was already used by {sender} (replay); the next nonce is {expected}")]
    NonceReplayed {
        /// The sender.
        sender: Address,
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce skips ahead.
    #[error("nonce {got} is in the future for {sender}; the next nonce is {expected}")]
    NonceFuture {
        /// The sender.
        sender: Address,
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The fee is below the chain's minimum.
    #[error("fee {got} GRID is below the minimum fee {min} GRID")]
    FeeTooLow {
        /// The minimum.
        min: Amount,
        /// The fee offered.
        got: Amount,
    },
    /// Not enough spendable balance.
    #[error("insufficient balance: {sender} needs {needed} GRID but can spend {spendable} GRID")]
    InsufficientBalance {
        /// The sender.
        sender: Address,
        /// Amount plus fee.
        needed: Amount,
        /// Spendable balance (vesting tokens excluded).
        spendable: Amount,
    },
    /// A transfer or stake operation of zero.
    #[error("amount must be greater than zero")]
    ZeroAmount,
    /// Unbonding more than is locked.
    #[error("cannot unbond {requested} GRID: only {locked} GRID is locked")]
    UnbondExceedsLocked {
        /// Requested.
        requested: Amount,
        /// Locked.
        locked: Amount,
    },
    /// Too many unbonding entries at once.
    #[error("{max} unbondings are already in progress; withdraw matured ones or wait")]
    TooManyUnbondings {
        /// The limit.
        max: u32,
    },
    /// Withdraw with nothing matured.
    #[error("nothing to withdraw: {}", match .next_maturity_ms {
        Some(t) => format!("the next unbonding matures at block time {t} ms (now {now_ms} ms)"),
        None => "no stake is unbonding; run `stake unbond` first".to_string(),
    })]
    NothingToWithdraw {
        /// Block time at the check.
        now_ms: u64,
        /// When the earliest entry matures, if any.
        next_maturity_ms: Option<u64>,
    },
    /// An arithmetic overflow (amounts beyond the total supply).
    #[error("amount overflow")]
    Overflow,
    /// A provider at work may not unbond below the minimum stake.
    #[error("cannot unbond to {left} GRID locked: a provider working on {active} task(s) or service seat(s) keeps at least {min} GRID locked; unbond after they end (unsubscribe from services)")]
    StakeInUse {
        /// Tasks and seats it works on.
        active: u32,
        /// The minimum provider stake.
        min: Amount,
        /// What would stay locked.
        left: Amount,
    },
    /// No service open or closing has this id (one closed for good is archived: nothing
    /// more can be done with it).
    #[error(
        "no open or closing service {service} (a service closed for good takes no more transactions; `gridwork service status` shows it)"
    )]
    UnknownService {
        /// The id given.
        service: Hash,
    },
    /// A service's shape is invalid; names the field.
    #[error("invalid service: {field} {problem}")]
    BadService {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Only the service's requester (or, to drop a member, its gateway key) may do this.
    #[error("only the requester of service {service} may do this")]
    NotServiceRequester {
        /// The service.
        service: Hash,
    },
    /// The service is closing or closed.
    #[error("service {service} is closed; create a new one")]
    ServiceClosed {
        /// The service.
        service: Hash,
    },
    /// A subscription the ledger refuses: why, and what would do.
    #[error("cannot subscribe to service {service}: {problem}")]
    BadSubscription {
        /// The service.
        service: Hash,
        /// Why.
        problem: String,
    },
    /// The sender (or the member named) does not serve the service.
    #[error("{provider} is not {role} of service {service}")]
    NotServing {
        /// The service.
        service: Hash,
        /// Who.
        provider: Address,
        /// "a subscriber" or "a council member".
        role: &'static str,
    },
    /// A receipt the ledger cannot pay: why.
    #[error("receipt for {provider} on service {service}: {problem}")]
    BadReceipt {
        /// The service.
        service: Hash,
        /// The member it pays.
        provider: Address,
        /// Why it is refused.
        problem: String,
    },
    /// A dispute the ledger cannot decide: why, and what it needs.
    #[error("dispute on service {service}: {problem}")]
    BadDispute {
        /// The service.
        service: Hash,
        /// Why.
        problem: String,
    },
    /// Not enough stake locked for a provider.
    #[error("providers need {required} GRID locked in the vault; {locked} GRID is locked (run `stake lock`)")]
    StakeTooLow {
        /// The minimum.
        required: Amount,
        /// Locked now.
        locked: Amount,
    },
    /// The sender is not a registered provider.
    #[error("{address} is not a registered provider; register the worker first")]
    NotAProvider {
        /// The sender.
        address: Address,
    },
    /// The provider sent no heartbeat within the timeout: only providers seen alive bid.
    #[error("provider {address} is offline (last heartbeat at {last_heartbeat_ms} ms); run its worker so it sends heartbeats, then bid")]
    ProviderOffline {
        /// The sender.
        address: Address,
        /// Its last heartbeat, block time.
        last_heartbeat_ms: u64,
    },
    /// The owner approval in a registration is not the owner's signature over this worker's
    /// address on this chain.
    #[error("owner approval for {worker} does not verify: the owner must sign it for this worker address on this chain (`gridwork provider authorize`)")]
    BadOwnerApproval {
        /// The worker that registered.
        worker: Address,
    },
    /// A peer announcement lists an address that is not a usable `ip:port`, or too many.
    #[error("bad peer address `{address}`: list at most 4 addresses, each `ip:port` with a specific ip and a port other than 0 (the address other workers reach this one at)")]
    BadPeerAddress {
        /// The offending address (or the count).
        address: String,
    },
    /// A provider's registered hardware or software list is malformed or too long.
    #[error("bad hardware: {problem}")]
    BadHardware {
        /// What is wrong.
        problem: String,
    },
    /// A prescription field is wrong.
    #[error("invalid job: {field} {problem}")]
    BadPrescription {
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The deposit does not cover the job's maximum cost.
    #[error("deposit {deposit} GRID does not cover the job's maximum cost of {required} GRID")]
    DepositTooLow {
        /// What the job can cost at most.
        required: Amount,
        /// What was offered.
        deposit: Amount,
    },
    /// No such job open (finished jobs leave the ledger's state; `job status` still shows
    /// them).
    #[error("no open job {job}: it does not exist or has finished (`gridwork job status {job}` shows a finished job)")]
    UnknownJob {
        /// The id.
        job: Hash,
    },
    /// No such task.
    #[error("job {job} has no task {task}")]
    UnknownTask {
        /// The job.
        job: Hash,
        /// The index.
        task: u32,
    },
    /// Only the requester may do this.
    #[error("only the requester of job {job} may cancel it")]
    NotRequester {
        /// The job.
        job: Hash,
    },
    /// The job is already cancelled or finished.
    #[error("job {job} is already cancelled or finished")]
    JobClosed {
        /// The job.
        job: Hash,
    },
    /// The task is not in the phase this transaction needs.
    #[error("task {task} of job {job} is {phase}")]
    WrongPhase {
        /// The job.
        job: Hash,
        /// The task.
        task: u32,
        /// Its phase.
        phase: crate::market::Phase,
    },
    /// The transaction names an old or future attempt.
    #[error("the task is at attempt {current}, not {got}")]
    WrongAttempt {
        /// The current attempt.
        current: u32,
        /// The one named.
        got: u32,
    },
    /// The sender is neither executor nor council of the task.
    #[error("the sender is not assigned to task {task} of job {job}")]
    NotAssigned {
        /// The job.
        job: Hash,
        /// The task.
        task: u32,
    },
    /// Done already.
    #[error("already {what}")]
    AlreadyDone {
        /// What.
        what: &'static str,
    },
    /// The revealed output and salt do not match the commitment.
    #[error("the reveal does not match the commitment")]
    RevealMismatch,
    /// Council members reveal after the executor.
    #[error("the executor has not revealed yet; council members reveal after it")]
    ExecutorNotRevealed,
    /// An output revealed in an earlier attempt or round of the task, revealed again: a copy,
    /// not a run (honest runs of a new attempt or round produce a new content id: their key
    /// covers both).
    #[error("output {output} was revealed earlier for this task (an earlier attempt or round); a result must come from the sender's own run")]
    CopiedResult {
        /// The output named.
        output: Hash,
    },
    /// `Checkpoints` for a job whose runs are not in checkpointed segments.
    #[error("job {job} does not run in checkpointed segments; only a job with [segments] takes checkpoints")]
    NotCheckpointed {
        /// The job.
        job: Hash,
    },
    /// Checkpoints that cannot be the checkpoints of the task's run.
    #[error("bad checkpoints: {reason}")]
    BadCheckpoints {
        /// What is wrong with them.
        reason: String,
    },
    /// A council member of a checkpointed task commits before the segments to replay were
    /// drawn: it cannot have replayed them.
    #[error("the segments of task {task} of job {job} to replay are not drawn yet (the executor binds its checkpoints first); commit after replaying them")]
    ReplayNotDrawn {
        /// The job.
        job: Hash,
        /// The task.
        task: u32,
    },
    /// A judgement that names someone it cannot.
    #[error("bad judgement: {reason}")]
    BadJudgement {
        /// What is wrong with it.
        reason: String,
    },
    /// A requester cannot bid on its own job.
    #[error("a requester cannot bid on its own job")]
    OwnJob,
    /// The provider's hardware does not meet the task's requirements.
    #[error("hardware does not meet the task's requirements: {reason}")]
    HardwareUnfit {
        /// What is missing.
        reason: String,
    },
    /// The provider failed this job too often.
    #[error("blocklisted for job {job} after repeated failures")]
    Blocklisted {
        /// The job.
        job: Hash,
    },
    /// The price is zero or above the cap.
    #[error("bid price {price} GRID must be above 0 and at most {max} GRID")]
    BadPrice {
        /// The bid.
        price: Amount,
        /// The cap.
        max: Amount,
    },
    /// A bid says the job's image is cached, and the job names no image.
    #[error("the bid says job {job}'s image is cached, but the job names no image: bid with cached = false")]
    CachedWithoutImage {
        /// The job.
        job: Hash,
    },
}

impl TxError {
    /// The stable, snake_case code of this error: the API's error code at admission and the
    /// `code` of a [`crate::Event::TxFailed`] in a block.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadSignature { .. } => "bad_signature",
            Self::NonceReplayed { .. } => "nonce_replayed",
            Self::NonceFuture { .. } => "nonce_future",
            Self::FeeTooLow { .. } => "fee_too_low",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::ZeroAmount => "zero_amount",
            Self::UnbondExceedsLocked { .. } => "unbond_exceeds_locked",
            Self::TooManyUnbondings { .. } => "too_many_unbondings",
            Self::NothingToWithdraw { .. } => "nothing_to_withdraw",
            Self::StakeTooLow { .. } => "stake_too_low",
            Self::NotAProvider { .. } => "not_a_provider",
            Self::BadOwnerApproval { .. } => "bad_owner_approval",
            Self::BadPeerAddress { .. } => "bad_peer_address",
            Self::BadHardware { .. } => "bad_hardware",
            Self::BadPrescription { .. } => "bad_prescription",
            Self::DepositTooLow { .. } => "deposit_too_low",
            Self::UnknownJob { .. } => "unknown_job",
            Self::UnknownTask { .. } => "unknown_task",
            Self::NotRequester { .. } => "not_requester",
            Self::JobClosed { .. } => "job_closed",
            Self::WrongPhase { .. } => "wrong_phase",
            Self::WrongAttempt { .. } => "wrong_attempt",
            Self::NotAssigned { .. } => "not_assigned",
            Self::AlreadyDone { .. } => "already_done",
            Self::RevealMismatch => "reveal_mismatch",
            Self::CopiedResult { .. } => "copied_result",
            Self::BadJudgement { .. } => "bad_judgement",
            Self::NotCheckpointed { .. } => "not_checkpointed",
            Self::BadCheckpoints { .. } => "bad_checkpoints",
            Self::ReplayNotDrawn { .. } => "replay_not_drawn",
            Self::ProviderOffline { .. } => "provider_offline",
            Self::ExecutorNotRevealed => "executor_not_revealed",
            Self::OwnJob => "own_job",
            Self::HardwareUnfit { .. } => "hardware_unfit",
            Self::Blocklisted { .. } => "blocklisted",
            Self::BadPrice { .. } => "bad_price",
            Self::CachedWithoutImage { .. } => "cached_without_image",
            Self::Overflow => "invalid_transaction",
            Self::StakeInUse { .. } => "stake_in_use",
            Self::UnknownService { .. } => "unknown_service",
            Self::BadService { .. } => "bad_service",
            Self::NotServiceRequester { .. } => "not_service_requester",
            Self::ServiceClosed { .. } => "service_closed",
            Self::BadSubscription { .. } => "bad_subscription",
            Self::NotServing { .. } => "not_serving",
            Self::BadReceipt { .. } => "bad_receipt",
            Self::BadDispute { .. } => "bad_dispute",
        }
    }
}

/// Why a block was refused. A refused block leaves the state untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Not the next height.
    #[error("block height {got} does not follow the head {head}")]
    WrongHeight {
        /// Current head height.
        head: u64,
        /// The block's height.
        got: u64,
    },
    /// Parent hash differs from the head.
    #[error("block parent {got} is not the head {head}")]
    WrongParent {
        /// Current head hash.
        head: Hash,
        /// The block's parent.
        got: Hash,
    },
    /// Time went backwards.
    #[error("block time {got} ms is before the parent's {parent} ms")]
    TimeWentBackwards {
        /// Parent time.
        parent: u64,
        /// Block time.
        got: u64,
    },
    /// Header does not commit to these transactions.
    #[error("header does not match its transactions (count or root)")]
    TxRootMismatch,
    /// A transaction failed.
    #[error("transaction {index} is invalid: {error}")]
    InvalidTx {
        /// Position in the block.
        index: usize,
        /// Why.
        error: TxError,
    },
    /// The state root after execution differs from the header's.
    #[error("state root mismatch: header says {header}, execution gives {computed}")]
    StateRootMismatch {
        /// In the header.
        header: Hash,
        /// Computed.
        computed: Hash,
    },
}

/// Why a genesis was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// Allocations plus the rewards pool differ from the total supply.
    #[error(
        "allocations ({allocated} base units) plus the rewards pool ({pool}) must equal the total supply ({supply}); fix the amounts in the genesis file"
    )]
    SupplyMismatch {
        /// Sum of allocations.
        allocated: u128,
        /// Rewards pool.
        pool: Amount,
        /// Declared supply.
        supply: Amount,
    },
    /// The same address twice.
    #[error("address {address} is allocated twice; merge the allocations")]
    DuplicateAllocation {
        /// The address.
        address: Address,
    },
    /// A vesting schedule out of order.
    #[error("vesting for {address} must have start <= cliff <= end and start < end")]
    BadVesting {
        /// The address.
        address: Address,
    },
    /// An empty chain id.
    #[error("chain_id must be 1 to 64 characters")]
    BadChainId,
    /// Amounts overflow.
    #[error("allocations overflow a 128-bit amount")]
    Overflow,
    /// A parameter out of range or at odds with another.
    #[error("params.{field} {problem}; fix it in the genesis file")]
    BadParams {
        /// The parameter.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}
