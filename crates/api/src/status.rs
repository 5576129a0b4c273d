//! Errors, health and the chain's summary: what any client reads first.

use gridwork_protocol::Params;
use gridwork_types::{Amount, Hash, PeerAddr, PublicKey};
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
    /// With `mempool_underpriced`: the fee that has the transaction admitted now (it takes
    /// the place of cheaper ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_fee: Option<Amount>,
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
