//! Receipts and events: what a transaction did, for clients and the event stream.

use gridwork_types::{Address, Amount, Decode, DecodeError, Encode, Hash, Reader};
use serde::{Deserialize, Serialize};

/// Something a transaction changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Encode for Event {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Event::Transfer { from, to, amount } => {
                out.push(0);
                from.encode(out);
                to.encode(out);
                amount.encode(out);
            }
            Event::StakeLocked { account, amount } => {
                out.push(1);
                account.encode(out);
                amount.encode(out);
            }
            Event::StakeUnbonding {
                account,
                amount,
                matures_at_ms,
            } => {
                out.push(2);
                account.encode(out);
                amount.encode(out);
                matures_at_ms.encode(out);
            }
            Event::StakeWithdrawn { account, amount } => {
                out.push(3);
                account.encode(out);
                amount.encode(out);
            }
        }
    }
}

impl Decode for Event {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match u8::decode(r)? {
            0 => Event::Transfer {
                from: Address::decode(r)?,
                to: Address::decode(r)?,
                amount: Amount::decode(r)?,
            },
            1 => Event::StakeLocked {
                account: Address::decode(r)?,
                amount: Amount::decode(r)?,
            },
            2 => Event::StakeUnbonding {
                account: Address::decode(r)?,
                amount: Amount::decode(r)?,
                matures_at_ms: u64::decode(r)?,
            },
            3 => Event::StakeWithdrawn {
                account: Address::decode(r)?,
                amount: Amount::decode(r)?,
            },
            tag => return Err(DecodeError::UnknownTag { what: "event", tag }),
        })
    }
}

/// The outcome of one applied transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
