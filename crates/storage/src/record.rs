//! The records the store keeps, with their encodings.

use gridwork_protocol::{Params, Receipt};
use gridwork_types::{Amount, Decode, DecodeError, Encode, Hash, Reader, SignedTx};

/// The facts of a chain fixed at genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMeta {
    /// The chain id.
    pub chain_id: String,
    /// Protocol parameters.
    pub params: Params,
    /// The fixed total supply.
    pub total_supply: Amount,
    /// Hash of the genesis block.
    pub genesis_hash: Hash,
}

impl Encode for ChainMeta {
    fn encode(&self, out: &mut Vec<u8>) {
        self.chain_id.encode(out);
        self.params.encode(out);
        self.total_supply.encode(out);
        self.genesis_hash.encode(out);
    }
}

impl Decode for ChainMeta {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ChainMeta {
            chain_id: String::decode(r)?,
            params: Params::decode(r)?,
            total_supply: Amount::decode(r)?,
            genesis_hash: Hash::decode(r)?,
        })
    }
}

/// A committed transaction and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRecord {
    /// The transaction.
    pub tx: SignedTx,
    /// Its receipt (which names the block height and index).
    pub receipt: Receipt,
}

impl Encode for TxRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        self.tx.encode(out);
        self.receipt.encode(out);
    }
}

impl Decode for TxRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TxRecord {
            tx: SignedTx::decode(r)?,
            receipt: Receipt::decode(r)?,
        })
    }
}

/// A block as stored: the header and its transaction hashes.
pub(crate) struct StoredBlock {
    pub(crate) header: gridwork_types::Header,
    pub(crate) tx_hashes: Vec<Hash>,
    pub(crate) events: Vec<gridwork_protocol::Event>,
}

impl Encode for StoredBlock {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        self.tx_hashes.encode(out);
        self.events.encode(out);
    }
}

impl Decode for StoredBlock {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(StoredBlock {
            header: gridwork_types::Header::decode(r)?,
            tx_hashes: Vec::decode(r)?,
            events: Vec::decode(r)?,
        })
    }
}
