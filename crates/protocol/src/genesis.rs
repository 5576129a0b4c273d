//! Genesis: the chain id, the fixed total supply, who holds it, and the protocol parameters.

use gridwork_types::{Address, Amount, Keypair, GRID};
use serde::{Deserialize, Serialize};

use crate::error::GenesisError;

/// Protocol parameters, fixed at genesis (governance will change them later). Every field
/// has a default, so a genesis file names only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The market fee, in basis points of what a settled task pays its executor and council:
    /// taken from the job's escrow into the rewards pool.
    pub market_fee_bps: u32,
    /// The proof-of-compute reward, in basis points of what a settled task pays its executor,
    /// paid from the rewards pool to the executor when at least one council member checked
    /// and agreed. Below `market_fee_bps` (genesis refuses otherwise): a task pays the pool
    /// more in fee than its reward takes out, so farming rewards with one's own jobs never pays.
    pub reward_bps: u32,
    /// Emission schedule of the rewards pool: `emission_total` of the genesis pool is locked
    /// at `emission_start_ms` and released linearly until `emission_start_ms +
    /// emission_period_ms` (GPU HUB: 120 months); rewards never take locked tokens. What
    /// flows into the pool (fees, slashes) is available at once.
    pub emission_start_ms: u64,
    /// How much of the genesis pool the schedule releases (zero: nothing is locked).
    pub emission_total: Amount,
    /// How long the release takes, in ms.
    pub emission_period_ms: u64,
    /// The most tasks one job may have.
    pub max_tasks_per_job: u32,
    /// The most input trees one job may name.
    pub max_inputs_per_job: u32,
    /// The largest council a job may ask for; enlargements (`max_escalations`) never take a
    /// council past it.
    pub max_council_size: u8,
    /// The longest task deadline (`instructions.task_deadline_ms`) a job may ask for.
    pub max_task_deadline_ms: u64,
    /// The longest auction window (`halting.deadline_ms`) a job may ask for.
    pub max_auction_window_ms: u64,
    /// The highest price (`payment.max_price`, per task or per task-second) a job may offer.
    pub max_price: Amount,
    /// A deadline found due this long after it passed means the chain was down (the producer
    /// makes a block at each deadline): nobody could act, so it does not fire.
    pub stall_after_ms: u64,
    /// What a deadline missed during a stall is moved to: this long after the first block
    /// back, so workers see the chain again before anyone is penalised.
    pub outage_grace_ms: u64,
    /// Time the parties of a task have to judge each other's revealed outputs (equivalences
    /// other than exact hash, and enlarged councils), in ms.
    pub judge_window_ms: u64,
    /// How many times a task's council is enlarged when its runs reach no clear majority,
    /// before the program is judged nondeterministic.
    pub max_escalations: u8,
    /// Seats added to a council at each enlargement.
    pub escalation_seats: u8,
    /// How long a job may wait for its tasks to be placed and agreed when its requester names
    /// no bound (`halting.give_up_after_s`), in ms; after it, waiting tasks fail and the
    /// escrow returns.
    pub default_give_up_ms: u64,
    /// The longest bound a requester may name.
    pub max_give_up_ms: u64,
    /// Paid into the rewards pool, not refunded, for each task and each input a job adds
    /// to the ledger's state (on top of the deposit): state has a price.
    pub state_fee_per_entry: Amount,
}

/// 120 months of 30.4375 days (ten Julian years), in ms.
pub const EMISSION_PERIOD_120_MONTHS_MS: u64 = 120 * 2_629_800_000;

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
            market_fee_bps: 500,
            reward_bps: 250,
            emission_start_ms: 0,
            emission_total: Amount::ZERO,
            emission_period_ms: EMISSION_PERIOD_120_MONTHS_MS,
            max_tasks_per_job: 10_000,
            max_inputs_per_job: 64,
            max_council_size: 9,
            max_task_deadline_ms: 7 * 24 * 3600 * 1000,
            max_auction_window_ms: 24 * 3600 * 1000,
            max_price: Amount::grid(1_000),
            stall_after_ms: 10_000,
            outage_grace_ms: 60_000,
            judge_window_ms: 60_000,
            max_escalations: 1,
            escalation_seats: 2,
            default_give_up_ms: 24 * 3600 * 1000,
            max_give_up_ms: 30 * 24 * 3600 * 1000,
            state_fee_per_entry: Amount(GRID / 1_000),
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
    market_fee_bps: u32,
    reward_bps: u32,
    emission_start_ms: u64,
    emission_total: Amount,
    emission_period_ms: u64,
    max_tasks_per_job: u32,
    max_inputs_per_job: u32,
    max_council_size: u8,
    max_task_deadline_ms: u64,
    max_auction_window_ms: u64,
    max_price: Amount,
    stall_after_ms: u64,
    outage_grace_ms: u64,
    judge_window_ms: u64,
    max_escalations: u8,
    escalation_seats: u8,
    default_give_up_ms: u64,
    max_give_up_ms: u64,
    state_fee_per_entry: Amount,
});

impl Params {
    /// Checks the parameters against each other; errors name the field.
    pub fn validate(&self, rewards_pool: Amount) -> Result<(), GenesisError> {
        let bad = |field: &'static str, problem: &'static str| {
            Err(GenesisError::BadParams { field, problem })
        };
        for (field, bps) in [
            ("council_share_bps", self.council_share_bps),
            ("slash_bps", self.slash_bps),
            ("timeout_slash_bps", self.timeout_slash_bps),
            ("market_fee_bps", self.market_fee_bps),
        ] {
            if bps > 10_000 {
                return bad(field, "is in basis points: at most 10000");
            }
        }
        if self.reward_bps > 0 && self.reward_bps >= self.market_fee_bps {
            return bad(
                "reward_bps",
                "must be below market_fee_bps (or zero), or a party could farm rewards with its own jobs",
            );
        }
        if self.emission_total > rewards_pool {
            return bad("emission_total", "cannot exceed the rewards pool");
        }
        if self.emission_total.0 > 0 && self.emission_period_ms == 0 {
            return bad(
                "emission_period_ms",
                "must be positive when emission_total is",
            );
        }
        if self.max_task_deadline_ms == 0
            || self.max_auction_window_ms == 0
            || self.max_price.0 == 0
        {
            return bad("max_*", "bounds must be positive");
        }
        if self.max_council_size > 15 {
            return bad(
                "max_council_size",
                "is at most 15 (the runs of a task are compared all against all)",
            );
        }
        if self.judge_window_ms == 0 {
            return bad("judge_window_ms", "must be positive");
        }
        if self.default_give_up_ms == 0 || self.default_give_up_ms > self.max_give_up_ms {
            return bad(
                "default_give_up_ms",
                "must be positive and at most max_give_up_ms",
            );
        }
        Ok(())
    }

    /// The state fee of a job (`state_fee_per_entry` for each task and each input, and for a
    /// job in checkpointed segments one more per task and attempt for each 32 checkpoints its
    /// executors bind: a reopened task keeps them, to refuse them again), paid with its
    /// submission; `None` on overflow.
    pub fn state_fee(&self, p: &gridwork_types::Prescription) -> Option<Amount> {
        let tasks = p.instructions.task_count();
        let checkpoints = p
            .segments
            .map_or(0, |s| u64::from(s.count.div_ceil(32)))
            .checked_mul(tasks)?
            .checked_mul(u64::from(self.max_attempts.max(1)))?;
        let entries = tasks
            .checked_add(p.data.len() as u64)?
            .checked_add(checkpoints)?;
        self.state_fee_per_entry
            .0
            .checked_mul(u128::from(entries))
            .map(Amount)
    }

    /// What of the schedule's `emission_total` is still locked at block time `now_ms`.
    pub fn emission_locked(&self, now_ms: u64) -> Amount {
        if self.emission_total.0 == 0 {
            return Amount::ZERO;
        }
        let elapsed = now_ms.saturating_sub(self.emission_start_ms);
        if elapsed >= self.emission_period_ms {
            return Amount::ZERO;
        }
        let left = u128::from(self.emission_period_ms - elapsed);
        let total = self.emission_total.0;
        let period = u128::from(self.emission_period_ms);
        // total * left / period without overflow (total < 2^128, left <= period < 2^64).
        Amount((total / period) * left + (total % period) * left / period)
    }
}

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
        self.params.validate(self.rewards_pool)?;
        // Every token of the genesis pool is released by the schedule, from genesis on: a
        // genesis file that left the schedule out would hand the whole pool to the first
        // rewards.
        if self.params.emission_total != self.rewards_pool {
            return Err(GenesisError::BadParams {
                field: "emission_total",
                problem: "must equal rewards_pool: the whole genesis pool is released over emission_period_ms (GPU HUB: 120 months)",
            });
        }
        if self.rewards_pool.0 > 0 && self.params.emission_start_ms < self.timestamp_ms {
            return Err(GenesisError::BadParams {
                field: "emission_start_ms",
                problem:
                    "must not be before the genesis timestamp (the release would start in the past)",
            });
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

    /// A development genesis: one billion GRID, 30% in the rewards pool (released over
    /// `params.emission_period_ms` from `timestamp_ms`), `accounts` funded dev accounts (keys from [`dev_keypair`]); the last one's allocation vests over ten minutes
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
        // The whole pool is released over the schedule from block 0.
        let params = Params {
            emission_start_ms: timestamp_ms,
            emission_total: Amount(pool),
            ..params
        };
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

    /// The pool releases its emission linearly over the period: all locked at the start,
    /// half at the middle, nothing after; never more released than the schedule says.
    #[test]
    fn emission_is_released_linearly_over_the_period() {
        let g = Genesis::dev("dev", 1_000, 2, Params::default());
        let p = &g.params;
        let total = g.rewards_pool;
        assert_eq!(p.emission_total, total);
        assert_eq!(p.emission_locked(0), total, "before the start");
        assert_eq!(p.emission_locked(1_000), total);
        let half = 1_000 + p.emission_period_ms / 2;
        assert_eq!(p.emission_locked(half), Amount(total.0 / 2));
        assert_eq!(
            p.emission_locked(1_000 + p.emission_period_ms),
            Amount::ZERO
        );
        let mut last = total;
        for month in 0..=120u64 {
            let locked = p.emission_locked(1_000 + month * 2_629_800_000);
            assert!(locked <= last);
            let released = total.0 - locked.0;
            assert!(released <= total.0 / 120 * u128::from(month) + u128::from(month));
            last = locked;
        }
    }

    #[test]
    fn params_that_would_let_rewards_be_farmed_are_refused() {
        let bad = |params: Params| Genesis::dev("dev", 0, 2, params).validate();
        let e = bad(Params {
            reward_bps: 500,
            market_fee_bps: 500,
            ..Params::default()
        });
        assert!(
            matches!(
                e,
                Err(GenesisError::BadParams {
                    field: "reward_bps",
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(matches!(
            bad(Params {
                market_fee_bps: 10_001,
                ..Params::default()
            }),
            Err(GenesisError::BadParams { .. })
        ));
        let mut g = Genesis::dev("dev", 0, 2, Params::default());
        g.params.emission_total = Amount(g.rewards_pool.0 + 1);
        assert!(matches!(
            g.validate(),
            Err(GenesisError::BadParams {
                field: "emission_total",
                ..
            })
        ));
        // A genesis file that leaves the schedule out (emission_total 0) is refused, and so
        // is a schedule that started before genesis.
        let mut g = Genesis::dev("dev", 5_000, 2, Params::default());
        g.params.emission_total = Amount::ZERO;
        assert!(matches!(
            g.validate(),
            Err(GenesisError::BadParams {
                field: "emission_total",
                ..
            })
        ));
        let mut g = Genesis::dev("dev", 5_000, 2, Params::default());
        g.params.emission_start_ms = 0;
        assert!(matches!(
            g.validate(),
            Err(GenesisError::BadParams {
                field: "emission_start_ms",
                ..
            })
        ));
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
