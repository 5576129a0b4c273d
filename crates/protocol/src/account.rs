//! Accounts: balance, nonce, vesting and the staking vault.

use gridwork_types::{Amount, Decode, DecodeError, Encode, PublicKey, Reader};
use serde::{Deserialize, Serialize};

/// A vesting schedule on part of an account's balance: nothing is released before `cliff_ms`,
/// then the released share grows linearly from `start_ms` to `end_ms`, by block time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vesting {
    /// The amount under the schedule.
    pub total: Amount,
    /// Linear release starts counting here (ms since the Unix epoch).
    pub start_ms: u64,
    /// Nothing is released before this time.
    pub cliff_ms: u64,
    /// Everything is released from this time on.
    pub end_ms: u64,
}

impl Vesting {
    /// The released part at block time `now_ms`: 0 before the cliff, `total` from the end,
    /// `floor(total * (now - start) / (end - start))` between. Never decreases with time.
    pub fn released(&self, now_ms: u64) -> Amount {
        if now_ms < self.cliff_ms {
            return Amount::ZERO;
        }
        if now_ms >= self.end_ms {
            return self.total;
        }
        let elapsed = u128::from(now_ms.saturating_sub(self.start_ms));
        let span = u128::from(self.end_ms - self.start_ms);
        // floor(t*e/s) = (t/s)*e + floor((t%s)*e/s); both products fit a u128 because
        // e <= s < 2^64 and t%s < 2^64.
        let t = self.total.0;
        Amount((t / span) * elapsed + (t % span) * elapsed / span)
    }

    /// The part still locked at `now_ms`.
    pub fn locked(&self, now_ms: u64) -> Amount {
        self.total.saturating_sub(self.released(now_ms))
    }
}

/// Stake on its way out of the vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unbonding {
    /// How much.
    pub amount: Amount,
    /// Block time from which it can be withdrawn.
    pub matures_at_ms: u64,
}

/// One account's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    /// Tokens held, including any still vesting.
    pub balance: Amount,
    /// The nonce the next transaction must carry.
    pub nonce: u64,
    /// Vesting on part of the balance, from genesis.
    pub vesting: Option<Vesting>,
    /// Stake locked in the vault (what the market will require of providers).
    pub stake_locked: Amount,
    /// Stake unbonding, oldest first.
    pub unbonding: Vec<Unbonding>,
    /// The account's public key, known once it has sent a transaction (so others can wrap
    /// data keys for it by address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
}

impl Account {
    /// Balance that can be spent at `now_ms`: the balance less what is still vesting.
    pub fn spendable(&self, now_ms: u64) -> Amount {
        let locked = self
            .vesting
            .as_ref()
            .map_or(Amount::ZERO, |v| v.locked(now_ms));
        self.balance.saturating_sub(locked)
    }

    /// Sum of all unbonding entries.
    pub fn unbonding_total(&self) -> Amount {
        Amount(self.unbonding.iter().map(|u| u.amount.0).sum())
    }

    /// Everything the account owns, in any form.
    pub fn total(&self) -> u128 {
        self.balance.0 + self.stake_locked.0 + self.unbonding_total().0
    }
}

impl Encode for Vesting {
    fn encode(&self, out: &mut Vec<u8>) {
        self.total.encode(out);
        self.start_ms.encode(out);
        self.cliff_ms.encode(out);
        self.end_ms.encode(out);
    }
}

impl Decode for Vesting {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Vesting {
            total: Amount::decode(r)?,
            start_ms: u64::decode(r)?,
            cliff_ms: u64::decode(r)?,
            end_ms: u64::decode(r)?,
        })
    }
}

impl Encode for Unbonding {
    fn encode(&self, out: &mut Vec<u8>) {
        self.amount.encode(out);
        self.matures_at_ms.encode(out);
    }
}

impl Decode for Unbonding {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Unbonding {
            amount: Amount::decode(r)?,
            matures_at_ms: u64::decode(r)?,
        })
    }
}

impl Encode for Account {
    fn encode(&self, out: &mut Vec<u8>) {
        self.balance.encode(out);
        self.nonce.encode(out);
        self.vesting.encode(out);
        self.stake_locked.encode(out);
        self.unbonding.encode(out);
        self.public_key.encode(out);
    }
}

impl Decode for Account {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Account {
            balance: Amount::decode(r)?,
            nonce: u64::decode(r)?,
            vesting: Option::decode(r)?,
            stake_locked: Amount::decode(r)?,
            unbonding: Vec::decode(r)?,
            public_key: Option::decode(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schedule() -> impl Strategy<Value = Vesting> {
        (any::<u128>(), 0u64..1 << 40, 0u64..1 << 40, 1u64..1 << 40).prop_map(
            |(total, start, cliff_off, len)| {
                let cliff = start + cliff_off % len;
                Vesting {
                    total: Amount(total),
                    start_ms: start,
                    cliff_ms: cliff,
                    end_ms: start + len,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn vesting_never_releases_more_than_allocated_and_all_at_the_end(
            v in schedule(), a in any::<u64>(), b in any::<u64>()
        ) {
            let (early, late) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(v.released(early) <= v.released(late), "release must not decrease");
            prop_assert!(v.released(late) <= v.total);
            prop_assert_eq!(v.released(v.end_ms), v.total);
            prop_assert_eq!(v.released(u64::MAX), v.total);
            if v.cliff_ms > 0 {
                prop_assert_eq!(v.released(v.cliff_ms - 1), Amount::ZERO);
            }
        }
    }

    #[test]
    fn vesting_is_linear_after_the_cliff() {
        let v = Vesting {
            total: Amount(1000),
            start_ms: 0,
            cliff_ms: 250,
            end_ms: 1000,
        };
        assert_eq!(v.released(249), Amount::ZERO);
        assert_eq!(v.released(250), Amount(250));
        assert_eq!(v.released(500), Amount(500));
        assert_eq!(v.locked(500), Amount(500));
    }

    #[test]
    fn account_round_trips_through_encoding() {
        let a = Account {
            balance: Amount(5),
            nonce: 2,
            vesting: Some(Vesting {
                total: Amount(3),
                start_ms: 1,
                cliff_ms: 2,
                end_ms: 3,
            }),
            stake_locked: Amount(7),
            unbonding: vec![Unbonding {
                amount: Amount(1),
                matures_at_ms: 9,
            }],
            public_key: Some(gridwork_types::Keypair::from_seed([4; 32]).public()),
        };
        assert_eq!(Account::from_bytes(&a.to_bytes()), Ok(a));
    }
}
