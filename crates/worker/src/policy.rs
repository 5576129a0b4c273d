//! The pricing policy: whether to bid on a task and at what price, or why not.

use gridwork_types::{Amount, Hardware, Payment, Prescription};

/// How a provider prices its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingPolicy {
    /// The price asked per second of run time; fixed-price tasks are priced at this times
    /// the task's deadline in seconds.
    pub price_per_task_second: Amount,
    /// Tasks run or checked at once; no bids beyond it.
    pub capacity: u32,
    /// The most one transaction may pay in fees. Steps go at the chain's minimum fee; when
    /// the node's mempool is full of cheaper transactions a step goes again at the fee the
    /// node names, up to this ([`DEFAULT_MAX_FEE`] unless the provider says otherwise).
    pub max_fee: Amount,
    /// Whether tasks may have the network when their job asks for it (`program.network`);
    /// without, such jobs are declined, saying so.
    pub allow_network: bool,
    /// How much cheaper, in percent, a task is when its job's image is loaded here already
    /// (no pull, no load, a sooner start): [`DEFAULT_CACHED_DISCOUNT_PCT`] unless the provider
    /// says otherwise; 0 prices both alike.
    pub cached_discount_pct: u8,
    /// Whether a process task can be held to its job's memory here (a control group the
    /// worker may make, `crate::cgroup`); without, jobs that set `min_memory_mib` and bring
    /// no image (whose containers are held to it by their engine) are declined, saying so: a
    /// run held to it elsewhere could end otherwise, and its council would out-vote this one.
    pub hold_memory: bool,
}

/// The default [`PricingPolicy::cached_discount_pct`]: 10%.
pub const DEFAULT_CACHED_DISCOUNT_PCT: u8 = 10;

/// The default [`PricingPolicy::max_fee`]: 0.01 GRID. To keep a worker's step out of a full
/// mempool, a spammer must pay more than this on every transaction it keeps there, and
/// pays it for each one a block takes.
pub const DEFAULT_MAX_FEE: Amount = Amount(gridwork_types::GRID / 100);

/// The policy's answer for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bid at this price.
    Bid(Amount),
    /// Do not bid, for this reason (posted to the node so `job status` can show it).
    Decline(String),
    /// Do not bid now: at capacity (not worth a decline; it passes).
    Busy,
}

impl PricingPolicy {
    /// Why this worker cannot run `p` as every other worker would: its memory, which it
    /// cannot hold a process run to.
    pub fn unheld(&self, p: &Prescription) -> Option<String> {
        let memory = p.instructions.requirements.min_memory_mib;
        (!self.hold_memory && memory > 0 && !p.program.brings_image()).then(|| {
            format!(
                "memory: the job holds each run to {memory} MiB (requirements.min_memory_mib), which this worker cannot: it may make no control group (see `gridwork probe`)"
            )
        })
    }

    /// Decides on a task of `p` with `active` tasks in progress; `cached`: the job's image is
    /// loaded here already.
    pub fn decide(
        &self,
        p: &Prescription,
        hardware: &Hardware,
        active: u32,
        cached: bool,
    ) -> Decision {
        if p.program.network && !self.allow_network {
            return Decision::Decline(
                "network: the job asks for the network; this provider does not allow tasks it (gridwork worker --allow-network)"
                    .into(),
            );
        }
        if let Some(reason) = p.instructions.requirements.unmet_by(hardware) {
            return Decision::Decline(format!("requirements: {reason}"));
        }
        if let Some(reason) = self.unheld(p) {
            return Decision::Decline(reason);
        }
        if let Err(reason) = p.program.image_for(hardware, &p.instructions.requirements) {
            return Decision::Decline(format!("environment: the job {reason}"));
        }
        let price = match p.payment {
            Payment::PerTaskSecond { .. } => self.price_per_task_second,
            Payment::FixedPerTask { .. } => {
                // The whole run: a checkpointed one has a task deadline for each segment.
                let secs = p.whole_run_deadline_ms().div_ceil(1000);
                Amount(
                    self.price_per_task_second
                        .0
                        .saturating_mul(u128::from(secs)),
                )
            }
        };
        let price = if cached {
            let keep = 100 - u128::from(self.cached_discount_pct.min(100));
            // Never free: a bid's price is above 0.
            Amount((price.0.saturating_mul(keep) / 100).max(1))
        } else {
            price
        };
        let cap = p
            .halting
            .reserve_price
            .map_or(p.payment.max_price(), |r| r.min(p.payment.max_price()));
        if price > cap {
            return Decision::Decline(format!(
                "price: the job pays at most {cap} GRID, this provider asks {price} GRID"
            ));
        }
        if active >= self.capacity {
            return Decision::Busy;
        }
        Decision::Bid(price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_types::{Equivalence, Halting, Instructions, Program, Requirements};

    fn job(max_price: u128, min_vram: u64) -> Prescription {
        Prescription {
            data: vec![],
            program: Program {
                command: "x".into(),
                args: vec![],
                outputs: Vec::new(),
                image: None,
                network: false,
                vendor_images: Vec::new(),
            },
            instructions: Instructions {
                items: 1,
                chunk: 1,
                requirements: Requirements {
                    min_gpus: u32::from(min_vram > 0),
                    min_vram_mib: min_vram,
                    min_cpu_score: 0,
                    ..Default::default()
                },
                task_deadline_ms: 10_000,
                council_size: 0,
            },
            payment: Payment::PerTaskSecond {
                max_price: Amount(max_price),
            },
            equivalence: Equivalence::ExactHash {},
            halting: Halting {
                first_bids: 1,
                deadline_ms: 1,
                reserve_price: None,
                give_up_ms: 0,
            },
            segments: None,
        }
    }

    #[test]
    fn bids_declines_and_passes() {
        let policy = PricingPolicy {
            price_per_task_second: Amount(5),
            capacity: 1,
            max_fee: DEFAULT_MAX_FEE,
            allow_network: false,
            cached_discount_pct: 20,
            hold_memory: true,
        };
        let hw = Hardware::default();
        assert_eq!(
            policy.decide(&job(10, 0), &hw, 0, false),
            Decision::Bid(Amount(5))
        );
        assert!(
            matches!(policy.decide(&job(4, 0), &hw, 0, false), Decision::Decline(r) if r.contains("at most"))
        );
        assert!(
            matches!(policy.decide(&job(10, 8_000), &hw, 0, false), Decision::Decline(r) if r.starts_with("requirements: needs"))
        );
        assert_eq!(policy.decide(&job(10, 0), &hw, 1, false), Decision::Busy);
        let mut online = job(10, 0);
        online.program.network = true;
        assert!(
            matches!(policy.decide(&online, &hw, 0, false), Decision::Decline(r) if r.starts_with("network: the job asks for the network"))
        );
        let open = PricingPolicy {
            allow_network: true,
            ..policy
        };
        assert_eq!(
            open.decide(&online, &hw, 0, false),
            Decision::Bid(Amount(5))
        );
    }

    /// A worker that cannot hold a process run to the job's memory declines a job that sets
    /// it, saying why; one that brings an image (held by its engine), or sets none, it bids on.
    #[test]
    fn a_worker_that_cannot_hold_a_run_to_its_memory_declines_jobs_that_set_it() {
        let policy = PricingPolicy {
            price_per_task_second: Amount(5),
            capacity: 1,
            max_fee: DEFAULT_MAX_FEE,
            allow_network: false,
            cached_discount_pct: 0,
            hold_memory: false,
        };
        let hw = Hardware {
            memory_mib: 16_000,
            ..Hardware::default()
        };
        let mut held = job(10, 0);
        held.instructions.requirements.min_memory_mib = 1_024;
        assert!(
            matches!(policy.decide(&held, &hw, 0, false), Decision::Decline(r) if r.contains("1024 MiB") && r.contains("control group")),
            "{:?}",
            policy.decide(&held, &hw, 0, false)
        );
        assert_eq!(
            policy.decide(&job(10, 0), &hw, 0, false),
            Decision::Bid(Amount(5))
        );
        let mut imaged = held.clone();
        imaged.program.image = Some(gridwork_types::Hash([7; 32]));
        assert_eq!(policy.unheld(&imaged), None);
        let able = PricingPolicy {
            hold_memory: true,
            ..policy
        };
        assert_eq!(able.decide(&held, &hw, 0, false), Decision::Bid(Amount(5)));
    }

    /// A task whose image is loaded already is cheaper by the provider's discount, and may
    /// then fit under a cap the full price does not; a discount never makes a price 0.
    #[test]
    fn a_cached_image_makes_the_bid_cheaper() {
        let policy = PricingPolicy {
            price_per_task_second: Amount(100),
            capacity: 4,
            max_fee: DEFAULT_MAX_FEE,
            allow_network: false,
            cached_discount_pct: 20,
            hold_memory: true,
        };
        let hw = Hardware::default();
        assert_eq!(
            policy.decide(&job(1_000, 0), &hw, 0, true),
            Decision::Bid(Amount(80))
        );
        assert_eq!(
            policy.decide(&job(1_000, 0), &hw, 0, false),
            Decision::Bid(Amount(100))
        );
        assert_eq!(
            policy.decide(&job(90, 0), &hw, 0, true),
            Decision::Bid(Amount(80))
        );
        assert!(matches!(
            policy.decide(&job(90, 0), &hw, 0, false),
            Decision::Decline(_)
        ));
        let all = PricingPolicy {
            cached_discount_pct: 100,
            ..policy
        };
        assert_eq!(
            all.decide(&job(1_000, 0), &hw, 0, true),
            Decision::Bid(Amount(1))
        );
    }
}
