//! The data plane's JSON documents: chunk ids asked about and stored, pins, storage and key grants.

use gridwork_transfer::WrappedKey as KeyGrant;
use gridwork_types::{Amount, Hash};
use serde::{Deserialize, Serialize};

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
