//! Blocks: a header committing to the parent, the transactions and the resulting state.

use crate::address::Address;
use crate::encoding::{Decode, DecodeError, Encode, Reader};
use crate::hash::Hash;
use crate::tx::SignedTx;

/// A block header. Its hash is BLAKE3 of its canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 0 for genesis, then parent + 1.
    pub height: u64,
    /// Hash of the parent header ([`Hash::ZERO`] for genesis).
    pub parent: Hash,
    /// Block time in milliseconds since the Unix epoch; never decreases.
    pub timestamp_ms: u64,
    /// The proposer's address.
    pub proposer: Address,
    /// Number of transactions.
    pub tx_count: u32,
    /// [`tx_root`] of the transactions.
    pub tx_root: Hash,
    /// Root of the ledger state after applying this block.
    pub state_root: Hash,
}

impl Header {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }
}

impl Encode for Header {
    fn encode(&self, out: &mut Vec<u8>) {
        self.height.encode(out);
        self.parent.encode(out);
        self.timestamp_ms.encode(out);
        self.proposer.encode(out);
        self.tx_count.encode(out);
        self.tx_root.encode(out);
        self.state_root.encode(out);
    }
}

impl Decode for Header {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Header {
            height: u64::decode(r)?,
            parent: Hash::decode(r)?,
            timestamp_ms: u64::decode(r)?,
            proposer: Address::decode(r)?,
            tx_count: u32::decode(r)?,
            tx_root: Hash::decode(r)?,
            state_root: Hash::decode(r)?,
        })
    }
}

/// The commitment to a block's transactions: BLAKE3 over the concatenated transaction
/// hashes, in block order (the empty list hashes the empty string).
pub fn tx_root<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut h = blake3::Hasher::new();
    for hash in hashes {
        h.update(hash.as_bytes());
    }
    Hash(*h.finalize().as_bytes())
}

/// A header with its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// The transactions, in execution order.
    pub txs: Vec<SignedTx>,
}

impl Encode for Block {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        self.txs.encode(out);
    }
}

impl Decode for Block {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Block {
            header: Header::decode(r)?,
            txs: Vec::decode(r)?,
        })
    }
}
