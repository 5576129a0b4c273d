//! The vocabulary of the batch market: hardware, requirements and the task prescription
//! T = {D, M, I, f, e, H}.
//!
//! Everything here is on the ledger, so it has a canonical encoding; the data itself (D) and
//! the outputs are off the ledger, named by content ids (BLAKE3 hashes).

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::hash::Hash;
use crate::{codec_enum, codec_struct};

/// A GPU maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// NVIDIA.
    Nvidia,
    /// AMD.
    Amd,
    /// Intel.
    Intel,
    /// Apple silicon.
    Apple,
}

codec_enum!(GpuVendor, "gpu vendor" {
    0 => Nvidia {},
    1 => Amd {},
    2 => Intel {},
    3 => Apple {},
});

impl std::fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
            GpuVendor::Intel => "intel",
            GpuVendor::Apple => "apple",
        })
    }
}

/// One GPU of a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Gpu {
    /// Maker.
    pub vendor: GpuVendor,
    /// Model name as the driver reports it.
    pub model: String,
    /// Memory in MiB.
    pub vram_mib: u64,
}

codec_struct!(Gpu {
    vendor: GpuVendor,
    model: String,
    vram_mib: u64
});

/// What a provider's machine offers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hardware {
    /// GPUs (possibly none).
    pub gpus: Vec<Gpu>,
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
}

codec_struct!(Hardware { gpus: Vec<Gpu>, cpu_cores: u32, memory_mib: u64 });

/// What a task needs of the machine that runs or checks it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Requirements {
    /// GPUs of this maker only (any maker when absent).
    pub gpu_vendor: Option<GpuVendor>,
    /// At least this many (matching) GPUs.
    pub min_gpus: u32,
    /// Each counted GPU has at least this much memory, in MiB.
    pub min_vram_mib: u64,
    /// At least this many CPU cores.
    pub min_cpu_cores: u32,
    /// At least this much memory, in MiB.
    pub min_memory_mib: u64,
}

codec_struct!(Requirements {
    gpu_vendor: Option<GpuVendor>,
    min_gpus: u32,
    min_vram_mib: u64,
    min_cpu_cores: u32,
    min_memory_mib: u64,
});

impl Requirements {
    /// Why `hardware` does not meet these requirements, or `None` if it does.
    pub fn unmet_by(&self, hardware: &Hardware) -> Option<String> {
        let matching = hardware
            .gpus
            .iter()
            .filter(|g| {
                self.gpu_vendor.is_none_or(|v| v == g.vendor) && g.vram_mib >= self.min_vram_mib
            })
            .count() as u32;
        if matching < self.min_gpus {
            let vendor = self.gpu_vendor.map_or("any".to_string(), |v| v.to_string());
            return Some(format!(
                "needs {} {vendor} GPU(s) with {} MiB or more each; has {matching}",
                self.min_gpus, self.min_vram_mib
            ));
        }
        if hardware.cpu_cores < self.min_cpu_cores {
            return Some(format!(
                "needs {} CPU cores; has {}",
                self.min_cpu_cores, hardware.cpu_cores
            ));
        }
        if hardware.memory_mib < self.min_memory_mib {
            return Some(format!(
                "needs {} MiB of memory; has {}",
                self.min_memory_mib, hardware.memory_mib
            ));
        }
        None
    }
}

/// M: the program each task runs. Task `i` gets its item range in its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The command.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
}

codec_struct!(Program { command: String, args: Vec<String> });

/// I: how the job splits into tasks and what each task needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Instructions {
    /// Items in the job (frames, shards, steps).
    pub items: u64,
    /// Items per task; the last task may hold fewer.
    pub chunk: u64,
    /// Hardware each executor and council member must have.
    #[serde(default)]
    pub requirements: Requirements,
    /// Time an executor has from assignment to its commitment, in ms.
    pub task_deadline_ms: u64,
    /// Council members who re-execute and vote (0: trust the executor; otherwise odd).
    pub council_size: u8,
}

codec_struct!(Instructions {
    items: u64,
    chunk: u64,
    requirements: Requirements,
    task_deadline_ms: u64,
    council_size: u8,
});

impl Instructions {
    /// The number of tasks: items divided by chunk, rounded up.
    pub fn task_count(&self) -> u64 {
        if self.chunk == 0 {
            return 0;
        }
        self.items.div_ceil(self.chunk)
    }

    /// The items of task `index`: `[start, end)`.
    pub fn task_items(&self, index: u32) -> (u64, u64) {
        let start = u64::from(index).saturating_mul(self.chunk).min(self.items);
        (start, start.saturating_add(self.chunk).min(self.items))
    }
}

/// f: what a task pays its executor (council members get a share on top, see the protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Payment {
    /// The winning bid's price per second of run time, bids capped at `max_price`; run time
    /// is capped at the task deadline.
    PerTaskSecond {
        /// Highest price per task-second the requester accepts.
        max_price: Amount,
    },
    /// The winning bid's price per task, bids capped at `max_price`.
    FixedPerTask {
        /// Highest price per task the requester accepts.
        max_price: Amount,
    },
}

codec_enum!(Payment, "payment function" {
    0 => PerTaskSecond { max_price: Amount },
    1 => FixedPerTask { max_price: Amount },
});

impl Payment {
    /// The highest bid allowed.
    pub fn max_price(&self) -> Amount {
        match self {
            Payment::PerTaskSecond { max_price } | Payment::FixedPerTask { max_price } => {
                *max_price
            }
        }
    }
}

/// e: when a council member's result counts as equal to the executor's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Equivalence {
    /// The output trees hash the same (the ledger checks the votes itself).
    ExactHash {},
    /// Number files agree within an absolute or relative tolerance (in parts per billion);
    /// council members judge and vote.
    NumericTolerance {
        /// Absolute tolerance, in units of 10^-9.
        abs_ppb: u64,
        /// Relative tolerance, in parts per billion.
        rel_ppb: u64,
    },
}

codec_enum!(Equivalence, "equivalence function" {
    0 => ExactHash {},
    1 => NumericTolerance { abs_ppb: u64, rel_ppb: u64 },
});

/// H: when the auction of a task closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Halting {
    /// Close as soon as this many bids are in (0: only the deadline closes it).
    pub first_bids: u32,
    /// Close this long after the task opened, if there is at least one bid, in ms.
    pub deadline_ms: u64,
    /// Bids above this price are refused (none: the payment function's cap).
    pub reserve_price: Option<Amount>,
    /// How long after submission the job gives up on tasks it could not place or agree on:
    /// they fail and their escrow returns, with the reason in `job status` (0: the network's
    /// default, `Params::default_give_up_ms`).
    #[serde(default)]
    pub give_up_ms: u64,
}

codec_struct!(Halting { first_bids: u32, deadline_ms: u64, reserve_price: Option<Amount>, give_up_ms: u64 });

/// One input tree of a job: its content id and the requester's claim to hold its key.
///
/// `claim` is `DataKey::input_claim` (in `gridwork-transfer`) of the tree for the job's requester: a keyed hash only a holder of the tree's data key can make,
/// bound to the requester's address. The node hands the key to a task's executor and council
/// only when the claim checks out, so naming somebody else's (public) content id in a job
/// yields nothing, and copying somebody else's claim fails because it names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DataInput {
    /// The tree's content id.
    pub cid: Hash,
    /// The requester's proof that it holds the tree's key.
    pub claim: Hash,
}

codec_struct!(DataInput {
    cid: Hash,
    claim: Hash
});

/// T = {D, M, I, f, e, H}: everything the network needs to run a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Prescription {
    /// D: the input data.
    pub data: Vec<DataInput>,
    /// M: the program.
    pub program: Program,
    /// I: the instructions.
    pub instructions: Instructions,
    /// f: the payment function.
    pub payment: Payment,
    /// e: the equivalence function.
    pub equivalence: Equivalence,
    /// H: the halting conditions of each task's auction.
    pub halting: Halting,
}

codec_struct!(Prescription {
    data: Vec<DataInput>,
    program: Program,
    instructions: Instructions,
    payment: Payment,
    equivalence: Equivalence,
    halting: Halting,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decode, Encode};

    fn gpu(vendor: GpuVendor, vram_mib: u64) -> Gpu {
        Gpu {
            vendor,
            model: "x".into(),
            vram_mib,
        }
    }

    #[test]
    fn requirements_name_what_is_missing() {
        let req = Requirements {
            gpu_vendor: Some(GpuVendor::Nvidia),
            min_gpus: 1,
            min_vram_mib: 16_000,
            ..Default::default()
        };
        let small = Hardware {
            gpus: vec![gpu(GpuVendor::Nvidia, 8_000)],
            cpu_cores: 8,
            memory_mib: 32_000,
        };
        assert!(req.unmet_by(&small).unwrap().contains("16000 MiB"));
        let amd = Hardware {
            gpus: vec![gpu(GpuVendor::Amd, 24_000)],
            cpu_cores: 8,
            memory_mib: 32_000,
        };
        assert!(req.unmet_by(&amd).is_some());
        let big = Hardware {
            gpus: vec![gpu(GpuVendor::Nvidia, 24_000)],
            cpu_cores: 8,
            memory_mib: 32_000,
        };
        assert_eq!(req.unmet_by(&big), None);
        assert_eq!(Requirements::default().unmet_by(&Hardware::default()), None);
    }

    #[test]
    fn jobs_split_into_chunks() {
        let i = Instructions {
            items: 10,
            chunk: 4,
            requirements: Requirements::default(),
            task_deadline_ms: 1,
            council_size: 0,
        };
        assert_eq!(i.task_count(), 3);
        assert_eq!(i.task_items(2), (8, 10));
    }

    #[test]
    fn prescription_round_trips() {
        let p = Prescription {
            data: vec![DataInput {
                cid: Hash([1; 32]),
                claim: Hash([2; 32]),
            }],
            program: Program {
                command: "render".into(),
                args: vec!["--fast".into()],
            },
            instructions: Instructions {
                items: 10,
                chunk: 4,
                requirements: Requirements::default(),
                task_deadline_ms: 60_000,
                council_size: 3,
            },
            payment: Payment::PerTaskSecond {
                max_price: Amount(5),
            },
            equivalence: Equivalence::NumericTolerance {
                abs_ppb: 10,
                rel_ppb: 1000,
            },
            halting: Halting {
                first_bids: 3,
                deadline_ms: 2_000,
                reserve_price: None,
                give_up_ms: 0,
            },
        };
        assert_eq!(Prescription::from_bytes(&p.to_bytes()), Ok(p));
    }
}
