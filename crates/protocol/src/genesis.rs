//! Genesis: the chain id, the fixed total supply, who holds it, and the protocol parameters.

use gridwork_types::{Address, Amount, Keypair, GRID};
use serde::{Deserialize, Serialize};

use crate::error::GenesisError;

/// Protocol parameters, fixed at genesis (governance will change them later). Every field
/// has a default, so a genesis file names only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// How long unbonding stake waits before it can be withdrawn, in block-time ms.
    pub unbonding_period_ms: u64,
    /// The smallest fee a transaction may pay (may be zero).
    pub min_fee: Amount,
    /// The most unbonding entries one account may have at once.
    pub max_unbondings: u32,
    /// Stake a provider must have locked to register, bid and sit on councils.
    pub min_provider_stake: Amount,
    /// A provider without a heartbeat for this long is offline (not drawn for councils).
    pub heartbeat_timeout_ms: u64,
    /// Time to reveal after the last commitment of a task, in ms.
    pub reveal_window_ms: u64,
    /// Each council member in the majority earns this share of the executor's pay, in basis
    /// points (1/10,000).
    pub council_share_bps: u32,
    /// Share of stake taken for a result the council rejects (or a vote against the
    /// majority), in basis points.
    pub slash_bps: u32,
    /// Share of stake taken for a missed deadline, in basis points.
    pub timeout_slash_bps: u32,
    /// Attempts per task before it fails for good.
    pub max_attempts: u32,
    /// Failures on one job after which a provider may no longer bid on it.
    pub max_job_failures: u32,
    /// Proof-of-compute reward per validated task-second, paid from the node-rewards pool
    /// while it lasts.
    pub reward_per_task_second: Amount,
    /// The most tasks one job may have.
    pub max_tasks_per_job: u32,
    /// The largest council a job may ask for.
    pub max_council_size: u8,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            unbonding_period_ms: 7 * 24 * 3600 * 1000,
            min_fee: Amount::ZERO,
            max_unbondings: 16,
            min_provider_stake: Amount::grid(100),
            heartbeat_timeout_ms: 60_000,
            reveal_window_ms: 30_000,
            council_share_bps: 1_000,
            slash_bps: 1_000,
            timeout_slash_bps: 100,
            max_attempts: 5,
            max_job_failures: 2,
            reward_per_task_second: Amount(GRID / 1_000),
            max_tasks_per_job: 10_000,
            max_council_size: 9,
        }
    }
}

gridwork_types::codec_struct!(Params {
    unbonding_period_ms: u64,
    min_fee: Amount,
    max_unbondings: u32,
    min_provider_stake: Amount,
    heartbeat_timeout_ms: u64,
    reveal_window_ms: u64,
    council_share_bps: u32,
    slash_bps: u32,
    timeout_slash_bps: u32,
    max_attempts: u32,
    max_job_failures: u32,
    reward_per_task_second: Amount,
    max_tasks_per_job: u32,
    max_council_size: u8,
});

/// A vesting schedule in a genesis allocation (times in ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VestingSchedule {
    /// Linear release counts from here.
    pub start_ms: u64,
    /// Nothing is released before this.
    pub cliff_ms: u64,
    /// All is released from here.
    pub end_ms: u64,
}

/// Tokens given to one address at genesis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// The holder.
    pub address: Address,
    /// Base units.
    pub amount: Amount,
    /// If set, the whole amount vests on this schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vesting: Option<VestingSchedule>,
}

/// The genesis of a chain. Amounts are strings of base units (10^18 per GRID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Names the chain; signatures cover it, so transactions cannot replay across chains.
    pub chain_id: String,
    /// Block time of the genesis block.
    pub timestamp_ms: u64,
    /// The fixed total supply.
    pub total_supply: Amount,
    /// The protocol-owned node-rewards pool (proof-of-compute rewards are paid from it).
    pub rewards_pool: Amount,
    /// Protocol parameters.
    #[serde(default)]
    pub params: Params,
    /// Initial holders.
    pub allocations: Vec<Allocation>,
}

impl Genesis {
    /// Checks the supply adds up, addresses are unique and schedules are ordered.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.is_empty() || self.chain_id.len() > 64 {
            return Err(GenesisError::BadChainId);
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut allocated: u128 = 0;
        for a in &self.allocations {
            if !seen.insert(a.address) {
                return Err(GenesisError::DuplicateAllocation { address: a.address });
            }
            if let Some(v) = &a.vesting {
                if !(v.start_ms <= v.cliff_ms && v.cliff_ms <= v.end_ms && v.start_ms < v.end_ms) {
                    return Err(GenesisError::BadVesting { address: a.address });
                }
            }
            allocated = allocated
                .checked_add(a.amount.0)
                .ok_or(GenesisError::Overflow)?;
        }
        let total = allocated
            .checked_add(self.rewards_pool.0)
            .ok_or(GenesisError::Overflow)?;
        if total != self.total_supply.0 {
            return Err(GenesisError::SupplyMismatch {
                allocated,
                pool: self.rewards_pool,
                supply: self.total_supply,
            });
        }
        Ok(())
    }

    /// A development genesis: one billion GRID, 30% in the rewards pool, `accounts` funded dev
    /// accounts (keys from [`dev_keypair`]); the last one's allocation vests over ten minutes
    /// after a one-minute cliff, so vesting can be seen working.
    pub fn dev(chain_id: &str, timestamp_ms: u64, accounts: u32, params: Params) -> Genesis {
        let supply = 1_000_000_000 * GRID;
        let pool = 300_000_000 * GRID;
        let each = 1_000_000 * GRID;
        let accounts = accounts.max(1);
        let mut allocations: Vec<Allocation> = (0..accounts)
            .map(|i| Allocation {
                address: dev_keypair(i).address(),
                amount: Amount(each),
                vesting: None,
            })
            .collect();
        if accounts > 1 {
            if let Some(last) = allocations.last_mut() {
                last.vesting = Some(VestingSchedule {
                    start_ms: timestamp_ms,
                    cliff_ms: timestamp_ms + 60_000,
                    end_ms: timestamp_ms + 600_000,
                });
            }
        }
        // dev0 also holds the remainder, as the faucet of a dev chain.
        allocations[0].amount = Amount(supply - pool - each * u128::from(accounts - 1));
        Genesis {
            chain_id: chain_id.to_string(),
            timestamp_ms,
            total_supply: Amount(supply),
            rewards_pool: Amount(pool),
            params,
            allocations,
        }
    }
}

/// The well-known key of dev account `index`: the seed is BLAKE3("gridwork-dev-key" || index).
/// Public knowledge: for dev chains and tests only.
pub fn dev_keypair(index: u32) -> Keypair {
    let mut h = blake3::Hasher::new();
    h.update(b"gridwork-dev-key");
    h.update(&index.to_le_bytes());
    Keypair::from_seed(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_genesis_is_valid() {
        assert_eq!(
            Genesis::dev("dev", 0, 4, Params::default()).validate(),
            Ok(())
        );
        assert_eq!(
            Genesis::dev("dev", 0, 1, Params::default()).validate(),
            Ok(())
        );
    }

    #[test]
    fn rejects_allocations_that_do_not_sum_to_supply() {
        let mut g = Genesis::dev("dev", 0, 2, Params::default());
        g.allocations[1].amount = Amount(g.allocations[1].amount.0 + 1);
        assert!(matches!(
            g.validate(),
            Err(GenesisError::SupplyMismatch { .. })
        ));
    }

    #[test]
    fn rejects_duplicate_and_misordered_vesting() {
        let mut g = Genesis::dev("dev", 0, 2, Params::default());
        g.allocations[1].vesting = Some(VestingSchedule {
            start_ms: 5,
            cliff_ms: 4,
            end_ms: 9,
        });
        assert!(matches!(g.validate(), Err(GenesisError::BadVesting { .. })));
        let mut g = Genesis::dev("dev", 0, 2, Params::default());
        g.allocations[1].address = g.allocations[0].address;
        assert!(matches!(
            g.validate(),
            Err(GenesisError::DuplicateAllocation { .. })
        ));
    }
}
