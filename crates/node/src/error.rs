//! Why the node could not start or serve, and why it refused a transaction.

use gridwork_protocol::{GenesisError, TxError};
use gridwork_storage::StorageError;
use gridwork_transfer::StoreError as ChunkStoreError;
use gridwork_types::{Address, DecodeError, Hash};

use crate::logs::LogError;
use crate::mempool::MempoolError;

/// Why the node could not start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The genesis is invalid.
    #[error("invalid genesis: {0}")]
    Genesis(#[from] GenesisError),
    /// A new data directory and no genesis to start it from.
    #[error("{data_dir} holds no chain yet; start with `--dev` or give a genesis file (`--genesis FILE`)")]
    NoGenesis {
        /// The data directory.
        data_dir: String,
    },
    /// The given genesis is not the stored chain's.
    #[error("the genesis file describes chain {given}, but {data_dir} holds chain {stored}; use another --data-dir")]
    GenesisMismatch {
        /// Data directory.
        data_dir: String,
        /// Stored genesis hash.
        stored: Hash,
        /// Given genesis hash.
        given: Hash,
    },
    /// A genesis or data directory file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The stored state does not add up to the total supply.
    #[error("the stored ledger holds {held} base units but the supply is {supply}: the data directory is damaged")]
    Damaged {
        /// The fixed total supply.
        supply: u128,
        /// What the accounts and the pool hold.
        held: u128,
    },
    /// The data plane's chunk store failed or refused.
    #[error(transparent)]
    Chunks(#[from] ChunkStoreError),
    /// The node keeps no chunk store.
    #[error("this node keeps no chunk store")]
    NoChunkStore,
    /// The chunk store is full even after garbage collection.
    #[error("the node's chunk store is full: {used} of {quota} bytes hold trees pinned within the last {retention_days} days, chunks of open jobs and uploads in progress; the operator can raise chunk_quota_bytes or shorten chunk_retention_secs")]
    StoreFull {
        /// Bytes used.
        used: u64,
        /// The quota.
        quota: u64,
        /// Retention of pinned trees, in days.
        retention_days: u64,
    },
    /// A pin would take an account past its quota of pinned bytes.
    #[error("{account} keeps {used} bytes on this node (pinned trees and uploads not yet pinned) and needs {needed} more, past its quota of {quota}; let older trees expire (a tree is kept {retention_days} days from its last push) or ask the operator to raise chunk_account_quota_bytes")]
    AccountQuota {
        /// The account.
        account: Address,
        /// Bytes it keeps pinned now (not counting this tree).
        used: u64,
        /// Bytes this tree needs.
        needed: u64,
        /// The quota.
        quota: u64,
        /// Retention of pinned trees, in days.
        retention_days: u64,
    },
    /// A read of something only certain parties may read.
    #[error(
        "{reader} may not read {what}: only the job's requester, the task's executor and its \
         council may (sign with the right --key)"
    )]
    NotPermitted {
        /// Who asked.
        reader: Address,
        /// What.
        what: String,
    },
    /// A pin named chunks the node lacks.
    #[error("cannot pin tree {cid}: the node lacks {missing} of its {total} chunks (first {first}); push the tree again")]
    TreeIncomplete {
        /// The tree.
        cid: Hash,
        /// Chunks missing.
        missing: usize,
        /// Chunks named.
        total: usize,
        /// The first missing.
        first: Hash,
    },
    /// Too many key grants on one tree, or for one recipient of it.
    #[error("a tree holds at most 256 key grants, and at most 4 different ones for one recipient (sharing the same key again is always fine)")]
    TooManyGrants,
    /// A request to pin a tree or share its key that does not prove it holds the key.
    #[error("only a holder of tree {cid}'s data key may {what}: the request's key proof does not match the one its first pin set (a client sends it in the gridwork-key-proof header)")]
    NotKeyHolder {
        /// The tree.
        cid: Hash,
        /// What was asked.
        what: &'static str,
    },
    /// Key grants for a tree no push pinned.
    #[error(
        "tree {cid} is not pinned on this node: push it (a push pins it) before sharing its key"
    )]
    TreeNotPinned {
        /// The tree.
        cid: Hash,
    },
    /// A pin from a base tree that this node does not keep.
    #[error("tree {base} is not pinned on this node (never pushed here, or collected): pin tree {cid} with the full list of its chunks")]
    PinBaseGone {
        /// The tree pinned.
        cid: Hash,
        /// The base named.
        base: Hash,
    },
    /// A pin from a base tree whose result is not the set of chunks the pinner expected.
    #[error("the chunks of tree {base}'s pin with the changes sent are not the set the pinner expects for tree {cid} (a pin of {base} changed since): pin tree {cid} with the full list of its chunks")]
    PinSetMismatch {
        /// The tree pinned.
        cid: Hash,
        /// The base named.
        base: Hash,
    },
    /// A provider-only request from an account that is not a registered provider.
    #[error("{address} is not a registered provider: only providers post reasons for not bidding (run `gridwork worker`, which registers)")]
    NotAProvider {
        /// The sender.
        address: Address,
    },
    /// Something asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: String,
    },
    /// A signed request whose signature does not verify.
    #[error("the {what} is not signed by the provider's key")]
    BadSignature {
        /// What was signed.
        what: &'static str,
    },
    /// A provider posted for a task run it has no part in.
    #[error(
        "{provider} is not the executor or a council member of attempt {attempt} of task {task}"
    )]
    NotAssigned {
        /// The provider.
        provider: Address,
        /// The task.
        task: u32,
        /// The attempt named.
        attempt: u32,
    },
    /// A task log refused an append or failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The node halted after a failed commit.
    #[error("the node halted: {reason}; restart it to resume from the last durable block")]
    Halted {
        /// Why.
        reason: String,
    },
}

/// Why a submitted transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdmitError {
    /// Not hex of a canonical transaction.
    #[error("transaction bytes do not decode: {0}")]
    Malformed(String),
    /// Too big.
    #[error("transaction is {size} bytes; the limit is {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The ledger or mempool refused it.
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    /// The node is halted.
    #[error("the node halted ({reason}) and accepts no transactions until restarted")]
    Halted {
        /// Why.
        reason: String,
    },
    /// A job names an input whose key the requester did not prove to hold, or that was never
    /// shared with this node (so no executor could read it).
    #[error("the job's input {cid} cannot be handed to its workers: {why}; submit with `gridwork job submit`, which shares each input's key with the node and proves the requester holds it")]
    InputNotHeld {
        /// The input tree.
        cid: Hash,
        /// What is missing.
        why: &'static str,
    },
}

impl From<DecodeError> for AdmitError {
    fn from(e: DecodeError) -> Self {
        AdmitError::Malformed(e.to_string())
    }
}

impl From<TxError> for AdmitError {
    fn from(e: TxError) -> Self {
        AdmitError::Mempool(MempoolError::Invalid(e))
    }
}
