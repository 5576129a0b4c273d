//! The vocabulary of the batch market: hardware, requirements and the task prescription
//! T = {D, M, I, f, e, H}.
//!
//! Everything here is on the ledger, so it has a canonical encoding; the data itself (D) and
//! the outputs are off the ledger, named by content ids (BLAKE3 hashes).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::encoding::Decode;
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
    /// Programs installed for tasks, with their versions (what the worker found when it
    /// started, and what its provider declared). Jobs that require software are run and
    /// checked only by providers that list it.
    #[serde(default)]
    pub software: Vec<Software>,
    /// The CPUs' score on the standard benchmark (`gridwork probe --bench`: millions of
    /// multiply-adds a second over every core), 0 when not measured. Declared by the
    /// provider, spot-checked by councils against the run times of tasks: a provider whose
    /// runs are far slower than its score claims loses it on the ledger.
    #[serde(default)]
    pub cpu_score: u32,
}

codec_struct!(Hardware {
    gpus: Vec<Gpu>,
    cpu_cores: u32,
    memory_mib: u64,
    software: Vec<Software>,
    cpu_score: u32
});

impl Hardware {
    /// The most GPUs and the most programs one provider may list.
    pub const MAX_LISTED: usize = 64;

    /// Checks what a provider registers: at most [`Hardware::MAX_LISTED`] GPUs and programs,
    /// program names as requirements write them, versions of at most
    /// [`MAX_SOFTWARE_TEXT`] bytes, each program once.
    pub fn check(&self) -> Result<(), String> {
        if self.gpus.len() > Hardware::MAX_LISTED {
            return Err(format!(
                "lists {} GPUs; at most {}",
                self.gpus.len(),
                Hardware::MAX_LISTED
            ));
        }
        if self.software.len() > Hardware::MAX_LISTED {
            return Err(format!(
                "lists {} programs; at most {}",
                self.software.len(),
                Hardware::MAX_LISTED
            ));
        }
        for (n, s) in self.software.iter().enumerate() {
            check_software_name(&s.name).map_err(|e| format!("software: {e}"))?;
            if s.version.len() > MAX_SOFTWARE_TEXT || s.version.chars().any(char::is_control) {
                return Err(format!(
                    "software: {} has a version of {} bytes or with control characters; at most {MAX_SOFTWARE_TEXT} printable bytes",
                    s.name,
                    s.version.len()
                ));
            }
            if self.software[..n].iter().any(|o| o.name == s.name) {
                return Err(format!("software: {} is listed twice", s.name));
            }
        }
        Ok(())
    }
}

/// A program a provider offers to tasks, by name and version (`"4.0.2"`; empty when the
/// version is unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Software {
    /// The program's name as a task calls it (`blender`, `python3`).
    pub name: String,
    /// Its version, dotted numbers first (`"4.0.2"`), or empty when unknown.
    pub version: String,
}

codec_struct!(Software {
    name: String,
    version: String
});

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
    /// Programs that must be installed, each `name` or `name >= version`
    /// (`"blender >= 4.0"`, `"python3"`); see [`SoftwareNeed`].
    pub software: Vec<String>,
    /// At least this CPU score ([`Hardware::cpu_score`], as the ledger keeps it: a score a
    /// provider lost counts as 0).
    pub min_cpu_score: u32,
}

codec_struct!(Requirements {
    gpu_vendor: Option<GpuVendor>,
    min_gpus: u32,
    min_vram_mib: u64,
    min_cpu_cores: u32,
    min_memory_mib: u64,
    software: Vec<String>,
    min_cpu_score: u32,
});

impl Requirements {
    /// Why `hardware` does not meet these requirements, or `None` if it does.
    pub fn unmet_by(&self, hardware: &Hardware) -> Option<String> {
        let matching = self.matching_gpus(hardware);
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
        if hardware.cpu_score < self.min_cpu_score {
            return Some(format!(
                "needs a CPU score of {}; has {} (`gridwork probe --bench` measures it)",
                self.min_cpu_score, hardware.cpu_score
            ));
        }
        for text in &self.software {
            let Ok(need) = SoftwareNeed::parse(text) else {
                return Some(format!(
                    "needs `{text}`, which is not a software requirement"
                ));
            };
            if let Some(reason) = need.unmet_by(&hardware.software) {
                return Some(reason);
            }
        }
        None
    }

    /// How many of `hardware`'s GPUs are of the wanted maker, with the wanted memory.
    fn matching_gpus(&self, hardware: &Hardware) -> u32 {
        hardware
            .gpus
            .iter()
            .filter(|g| {
                self.gpu_vendor.is_none_or(|v| v == g.vendor) && g.vram_mib >= self.min_vram_mib
            })
            .count() as u32
    }

    /// The software needs, parsed (those that do not parse are left out: the ledger refuses
    /// such a job at submission).
    pub fn software_needs(&self) -> Vec<SoftwareNeed> {
        self.software
            .iter()
            .filter_map(|s| SoftwareNeed::parse(s).ok())
            .collect()
    }

    /// Whether `hardware` meets these requirements, with the software needs parsed once
    /// ([`Requirements::software_needs`]): what a council draw asks of every provider, with
    /// no text built. Agrees with [`Requirements::unmet_by`].
    pub fn met_by(&self, needs: &[SoftwareNeed], hardware: &Hardware) -> bool {
        self.matching_gpus(hardware) >= self.min_gpus
            && hardware.cpu_cores >= self.min_cpu_cores
            && hardware.memory_mib >= self.min_memory_mib
            && hardware.cpu_score >= self.min_cpu_score
            && needs.iter().all(|n| n.met_by(&hardware.software))
    }
}

/// The most programs one job may require, and the longest requirement.
pub const MAX_SOFTWARE_NEEDS: usize = 16;
/// The longest software requirement or name, in bytes.
pub const MAX_SOFTWARE_TEXT: usize = 64;

/// One software requirement: a program's name and, optionally, the lowest version that will
/// do. Written `name` or `name >= version`; names are letters, digits and `._+-`, versions
/// dotted numbers (`4`, `4.0`, `3.11.2`). Versions compare number by number, missing
/// numbers as 0, and a provider's version is read up to its first character that is neither
/// digit nor dot (`4.0.2-beta` is 4.0.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftwareNeed {
    /// The program.
    pub name: String,
    /// The lowest version that will do, as numbers.
    pub at_least: Option<Vec<u64>>,
}

impl SoftwareNeed {
    /// Reads `name` or `name >= version`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<SoftwareNeed, String> {
        if text.len() > MAX_SOFTWARE_TEXT {
            return Err(format!(
                "is {} bytes; at most {MAX_SOFTWARE_TEXT}",
                text.len()
            ));
        }
        let (name, version) = match text.split_once(">=") {
            Some((name, version)) => (name.trim(), Some(version.trim())),
            None => (text.trim(), None),
        };
        check_software_name(name)?;
        let at_least = match version {
            None => None,
            Some(v) => Some(parse_version(v).ok_or_else(|| {
                format!("has version `{v}`; write dotted numbers, as in `{name} >= 4.0`")
            })?),
        };
        Ok(SoftwareNeed {
            name: name.to_string(),
            at_least,
        })
    }

    /// Whether one of `offered` meets this need.
    pub fn met_by(&self, offered: &[Software]) -> bool {
        let Some(have) = offered.iter().find(|s| s.name == self.name) else {
            return false;
        };
        match &self.at_least {
            None => true,
            Some(at_least) => version_prefix(&have.version)
                .is_some_and(|v| compare_versions(&v, at_least).is_ge()),
        }
    }

    /// Why none of `offered` meets this need, or `None` when one does.
    pub fn unmet_by(&self, offered: &[Software]) -> Option<String> {
        let Some(have) = offered.iter().find(|s| s.name == self.name) else {
            return Some(format!("needs {}; not installed", self.describe()));
        };
        let Some(at_least) = &self.at_least else {
            return None;
        };
        match version_prefix(&have.version) {
            Some(v) if compare_versions(&v, at_least).is_ge() => None,
            _ => Some(format!(
                "needs {}; has {} {}",
                self.describe(),
                have.name,
                if have.version.is_empty() {
                    "of unknown version"
                } else {
                    &have.version
                }
            )),
        }
    }

    fn describe(&self) -> String {
        match &self.at_least {
            None => self.name.clone(),
            Some(v) => {
                let v: Vec<String> = v.iter().map(u64::to_string).collect();
                format!("{} >= {}", self.name, v.join("."))
            }
        }
    }
}

/// Whether the software requirements `software` name `program` (with or without a
/// version): how the ledger and job files tell a job that requires a capability such as
/// [`CONTAINER_SOFTWARE`] or [`NETWORK_SOFTWARE`].
pub fn requires_software(software: &[String], program: &str) -> bool {
    software
        .iter()
        .any(|s| SoftwareNeed::parse(s).is_ok_and(|n| n.name == program))
}

/// The installed program a process job's command runs, by the name providers list it under:
/// the command itself when it is a bare name (`python3`, looked up on the tasks' `PATH`).
/// `None` for a job that brings its image (the image has its command) and for the job's own
/// file among its inputs (`inputs/run.sh`). A process job must require it
/// (`validate_prescription`), so that only providers that have it are drawn to check the job:
/// one without it would fail the run with 127 and be outvoted, or outvote an executor that has
/// it.
pub fn command_program(program: &Program) -> Option<&str> {
    if program.brings_image() || program.command.contains('/') {
        return None;
    }
    Some(program.command.as_str())
}

/// Checks what a process job's command may be: an installed program by its bare name (found
/// on the tasks' `PATH` alike on every worker, `python3`), or the job's own file by its path
/// among the inputs (`inputs/run.sh`, no `.` or `..` parts). Not an absolute path: the same
/// name lies at different paths on different hosts (`/usr/local/bin/python3` on some), or is
/// unreachable on some (`/root/...` for a worker that is not root), and honest runs would
/// end differently.
pub fn check_command(program: &Program) -> Result<(), String> {
    if program.brings_image() {
        return Ok(());
    }
    let command = program.command.as_str();
    if !command.contains('/') {
        return check_software_name(command).map_err(|e| {
            format!("`{command}` {e}: name an installed program (`python3`) or the job's own file (`inputs/run.sh`)")
        });
    }
    let own = command.strip_prefix("inputs/").is_some_and(|rest| {
        rest.split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
    });
    if own {
        return Ok(());
    }
    Err(format!(
        "`{command}` is a path outside the job's inputs: name an installed program by its name alone (`python3`, found on the tasks' PATH on every worker), or the job's own file as `inputs/<path>`"
    ))
}

/// Checks a program name as requirements and providers write it.
pub fn check_software_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("names no program".into());
    }
    if name.len() > MAX_SOFTWARE_TEXT {
        return Err(format!(
            "has a name of {} bytes; at most {MAX_SOFTWARE_TEXT}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+-".contains(*c)))
    {
        return Err(format!(
            "has `{c}` in the name `{name}`; names are letters, digits and `._+-`"
        ));
    }
    Ok(())
}

/// Dotted numbers, all of them (`4.0.2`).
fn parse_version(text: &str) -> Option<Vec<u64>> {
    if text.is_empty() || text.split('.').count() > 8 {
        return None;
    }
    text.split('.')
        .map(|n| match n.bytes().all(|b| b.is_ascii_digit()) {
            true => n.parse().ok(),
            false => None,
        })
        .collect()
}

/// The dotted numbers a version starts with (`4.0.2-beta` reads as 4.0.2).
fn version_prefix(text: &str) -> Option<Vec<u64>> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    parse_version(text[..end].trim_end_matches('.'))
}

fn compare_versions(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
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
    /// Outputs every run must leave, as paths or `*` patterns relative to the outputs
    /// directory (`"frames/*.png"`). A run that exits 0 without one ends as
    /// [`RunEnd::MissingOutput`], which is a failure.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The environment to run in: the content id of a container image (a `docker save`
    /// archive pushed through the data plane), which must also be one of the job's inputs so
    /// its key reaches the workers. Only workers with a container executor run or check such
    /// a job (it requires the software `docker`). None: the worker's own system. Beside
    /// [`Program::vendor_images`], the image of workers whose GPUs have none of their own (the
    /// CPU build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Hash>,
    /// The run may open network connections. Only providers that allow it (they register
    /// the software `network`, [`NETWORK_SOFTWARE`]) run or check such a job, and its
    /// results are only as reproducible as what it fetches. False: no network.
    #[serde(default)]
    pub network: bool,
    /// Images built for one GPU maker each (a CUDA build for NVIDIA, a ROCm build for AMD):
    /// a worker runs the one for the maker of its GPUs ([`Program::image_for`]), else
    /// [`Program::image`]. Each must be among the job's inputs too; at most one a maker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vendor_images: Vec<VendorImage>,
}

codec_struct!(Program {
    command: String,
    args: Vec<String>,
    outputs: Vec<String>,
    image: Option<Hash>,
    network: bool,
    vendor_images: Vec<VendorImage>
});

/// A container image built for one GPU maker's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VendorImage {
    /// The GPU maker whose workers run it.
    pub vendor: GpuVendor,
    /// The image's content id.
    pub image: Hash,
}

codec_struct!(VendorImage {
    vendor: GpuVendor,
    image: Hash
});

impl Program {
    /// Whether the program runs in a container image (one for every worker, or one per GPU
    /// maker).
    pub fn brings_image(&self) -> bool {
        self.image.is_some() || !self.vendor_images.is_empty()
    }

    /// Every image the program names: the common one, then each maker's.
    pub fn images(&self) -> impl Iterator<Item = Hash> + '_ {
        self.image
            .into_iter()
            .chain(self.vendor_images.iter().map(|v| v.image))
    }

    /// The image a worker with `hardware` runs a task needing `requirements` in: the image of
    /// the maker of its GPUs that meet them (at least `min_gpus`, and one), else the common
    /// image; `Ok(None)` for a program without images; an error naming the makers when the
    /// worker has none of them and there is no common image. Ledger and workers ask the same
    /// question, so only workers that have an image to run bid or are drawn.
    pub fn image_for(
        &self,
        hardware: &Hardware,
        requirements: &Requirements,
    ) -> Result<Option<Hash>, String> {
        let fits = |vendor: GpuVendor| {
            let gpus = hardware
                .gpus
                .iter()
                .filter(|g| g.vendor == vendor && g.vram_mib >= requirements.min_vram_mib)
                .count() as u32;
            gpus >= requirements.min_gpus.max(1)
        };
        if let Some(v) = self.vendor_images.iter().find(|v| fits(v.vendor)) {
            return Ok(Some(v.image));
        }
        if self.image.is_some() || self.vendor_images.is_empty() {
            return Ok(self.image);
        }
        let makers: Vec<String> = self
            .vendor_images
            .iter()
            .map(|v| v.vendor.to_string())
            .collect();
        Err(format!(
            "brings images for {} GPUs only and none for others; has no such GPU",
            makers.join(", ")
        ))
    }
}

/// The software a job that asks for the network requires: a worker whose provider allows
/// tasks the network (`gridwork worker --allow-network`) registers it.
pub const NETWORK_SOFTWARE: &str = "network";

/// The software a job with a container image requires: a worker with a container executor
/// registers it, with the engine's version.
pub const CONTAINER_SOFTWARE: &str = "docker";

/// The most outputs one program may require.
pub const MAX_REQUIRED_OUTPUTS: usize = 16;

/// Checks a required output as [`Program::outputs`] writes it: a relative path of at most
/// 256 bytes, `/`-separated, with no empty, `.` or `..` part and no control characters;
/// `*` in a part matches any run of characters but `/`.
pub fn check_output_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > 256 {
        return Err(format!(
            "`{pattern}` is {} bytes; write a path of 1 to 256 bytes",
            pattern.len()
        ));
    }
    if pattern.chars().any(char::is_control) {
        return Err(format!(
            "`{}` has control characters",
            pattern.escape_debug()
        ));
    }
    if pattern.starts_with('/') {
        return Err(format!(
            "`{pattern}` is absolute; write it relative to the outputs directory ($GRIDWORK_OUTPUTS)"
        ));
    }
    if pattern
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "`{pattern}` has an empty, `.` or `..` part; write a plain relative path"
        ));
    }
    Ok(())
}

/// Whether the relative path `path` (`/`-separated) matches the required output `pattern`
/// (see [`check_output_pattern`]).
pub fn output_matches(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = pattern.split('/').collect();
    let names: Vec<&str> = path.split('/').collect();
    parts.len() == names.len() && parts.iter().zip(&names).all(|(p, n)| part_matches(p, n))
}

/// `*` matches any run of characters within one path part.
fn part_matches(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How a run of the program ended. Each party reveals its own with its output, bound into
/// its commitment, and two runs agree only when they ended the same way: a result the
/// network accepts says how it ended, for the requester to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RunEnd {
    /// The program exited with this code (0: success).
    Exit {
        /// The exit code.
        code: u8,
    },
    /// A signal ended the program (a crash, or the memory limit).
    Signal {
        /// The signal's number.
        signal: u8,
    },
    /// The program ran past the task's deadline and was ended.
    Timeout {},
    /// The program exited 0 without leaving the required output `program.outputs[index]`.
    MissingOutput {
        /// Which required output is missing.
        index: u32,
    },
    /// The program could not start for a reason of the job's own: its image is not a
    /// single untagged image archive, is too large, or its engine refused to load it, create
    /// or start its container (a command the image lacks, say).
    NotStarted {},
    /// The kernel ended a process of the run for using more memory than the job's
    /// `requirements.min_memory_mib`, which every worker holds a run to, and the run failed.
    OutOfMemory {},
}

codec_enum!(RunEnd, "run end" {
    0 => Exit { code: u8 },
    1 => Signal { signal: u8 },
    2 => Timeout {},
    3 => MissingOutput { index: u32 },
    4 => NotStarted {},
    5 => OutOfMemory {},
});

impl RunEnd {
    /// The run a successful program makes.
    pub const SUCCESS: RunEnd = RunEnd::Exit { code: 0 };

    /// Whether the program did what was asked of it.
    pub fn is_success(&self) -> bool {
        *self == RunEnd::SUCCESS
    }
}

impl fmt::Display for RunEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunEnd::Exit { code: 0 } => write!(f, "exit 0 (success)"),
            RunEnd::Exit { code: 127 } => write!(f, "exit 127 (command not found?)"),
            RunEnd::Exit { code: 126 } => write!(f, "exit 126 (command not executable?)"),
            RunEnd::Exit { code } => write!(f, "exit {code}"),
            RunEnd::Signal { signal } => write!(f, "killed by signal {signal}"),
            RunEnd::Timeout {} => write!(f, "timed out"),
            RunEnd::MissingOutput { index } => {
                write!(f, "exit 0 without required output #{index}")
            }
            RunEnd::NotStarted {} => write!(f, "could not start (its image or command)"),
            RunEnd::OutOfMemory {} => {
                write!(f, "out of memory (more than the job's min_memory_mib)")
            }
        }
    }
}

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
    /// Time an executor has from assignment to its commitment, in ms; for a run in
    /// checkpointed segments, each segment's ([`Prescription::run_deadline_ms`]).
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
    /// Images (PNG files) agree by their pixels, never their metadata (a renderer stamps
    /// dates and paths there): the same size and channels, every sample within `max_diff`
    /// levels of 255 (of full scale, for 16-bit images too), and the whole image at least
    /// `min_psnr_mdb` thousandths of a decibel of peak signal-to-noise ratio. Other files
    /// agree byte for byte. Council members judge and vote.
    Image {
        /// The lowest peak signal-to-noise ratio, in millidecibels (40 dB: 40_000).
        min_psnr_mdb: u32,
        /// The largest difference of one sample, in levels of 255.
        max_diff: u8,
    },
}

/// The weakest image equivalence a job may ask for: below 20 dB two images are visibly
/// different, and a council could not tell a forged frame from a rendered one.
pub const MIN_IMAGE_PSNR_MDB: u32 = 20_000;
/// The strictest: beyond 150 dB only identical images agree (which `ExactHash` says better).
pub const MAX_IMAGE_PSNR_MDB: u32 = 150_000;

codec_enum!(Equivalence, "equivalence function" {
    0 => ExactHash {},
    1 => NumericTolerance { abs_ppb: u64, rel_ppb: u64 },
    2 => Image { min_psnr_mdb: u32, max_diff: u8 },
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DataInput {
    /// The tree's content id.
    pub cid: Hash,
    /// The requester's proof that it holds the tree's key.
    pub claim: Hash,
    /// Where the tree lands in a run: the directory `$GRIDWORK_INPUTS/<name>`, or, when
    /// empty, `$GRIDWORK_INPUTS` itself (a single file keeps its own name there). One path
    /// part; no two inputs of a job share a name ([`check_input_name`]).
    #[serde(default)]
    pub name: String,
}

codec_struct!(DataInput {
    cid: Hash,
    claim: Hash,
    name: String
});

/// Checks an input's name as [`DataInput::name`] writes it: empty, or one path part of at
/// most 255 bytes that is not `.` or `..` and has no `/` nor control characters.
pub fn check_input_name(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("`{name}` is {} bytes; at most 255", name.len()));
    }
    if name == "." || name == ".." || name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not a plain name; write one directory name, without `/`",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// The most segments a checkpointed run has ([`Segments::count`]): the executor commits to
/// one checkpoint of each, in one transaction.
pub const MAX_SEGMENTS: u32 = 256;

/// A run in checkpointed segments (training): each task runs the program once per segment,
/// the first from the task's inputs and each later one from the checkpoint the one before
/// left, and the executor commits to every checkpoint before anyone checks it. After that the
/// ledger draws `replayed` segments, and every council member replays each of them from the
/// executor's checkpoint before it and compares the checkpoint it reaches with the
/// executor's, so checking a run costs `replayed / count` of it per member, not all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Segments {
    /// Segments in each task's run, 2 to [`MAX_SEGMENTS`].
    pub count: u32,
    /// Segments every council member replays, 1 to `count`.
    pub replayed: u32,
}

codec_struct!(Segments {
    count: u32,
    replayed: u32
});

impl Segments {
    /// The chance that a replay catches a run whose checkpoints are wrong in `faked` of its
    /// segments (an executor that skipped their steps): one minus the chance that none of
    /// the replayed segments is a faked one, drawn without replacement.
    pub fn catch_probability(&self, faked: u32) -> f64 {
        let (n, d, f) = (
            self.count,
            self.replayed.min(self.count),
            faked.min(self.count),
        );
        let mut missed = 1.0;
        for i in 0..d {
            missed *= f64::from(n - f).max(0.0) - f64::from(i);
            missed /= f64::from(n - i);
            if missed <= 0.0 {
                return 1.0;
            }
        }
        1.0 - missed
    }
}

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
    /// Each task's run in checkpointed segments, of which the council replays a few
    /// (training); none: the council runs each task whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Segments>,
}

impl Prescription {
    /// The encoding's version, its first byte. A later layout takes the next number and
    /// decodes this one's bytes with its new fields at their defaults, so jobs already on
    /// a chain read back the same.
    pub const VERSION: u8 = 1;

    /// The version of a prescription with [`Segments`]: version 1's fields, then the
    /// segments. One without segments is written as version 1, so each prescription has one
    /// encoding.
    pub const VERSION_SEGMENTS: u8 = 2;

    /// How long `segments` segments of a task's run may take: the task deadline, which for a
    /// run in checkpointed segments is each segment's, so a replay of a segment has the time
    /// the executor had for it (and a segment that times out does so on replay too).
    pub fn run_deadline_ms(&self, segments: u32) -> u64 {
        match self.segments {
            Some(_) => self
                .instructions
                .task_deadline_ms
                .saturating_mul(u64::from(segments)),
            None => self.instructions.task_deadline_ms,
        }
    }

    /// How long the executor's whole run of a task may take ([`Prescription::run_deadline_ms`]
    /// of all its segments).
    pub fn whole_run_deadline_ms(&self) -> u64 {
        self.run_deadline_ms(self.segments.map_or(1, |s| s.count))
    }
}

impl crate::Encode for Prescription {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self.segments {
            None => Prescription::VERSION,
            Some(_) => Prescription::VERSION_SEGMENTS,
        });
        self.data.encode(out);
        self.program.encode(out);
        self.instructions.encode(out);
        self.payment.encode(out);
        self.equivalence.encode(out);
        self.halting.encode(out);
        if let Some(s) = &self.segments {
            s.encode(out);
        }
    }
}

impl crate::Decode for Prescription {
    fn decode(r: &mut crate::Reader<'_>) -> Result<Self, crate::DecodeError> {
        match u8::decode(r)? {
            version @ (Prescription::VERSION | Prescription::VERSION_SEGMENTS) => {
                Ok(Prescription {
                    data: Decode::decode(r)?,
                    program: Decode::decode(r)?,
                    instructions: Decode::decode(r)?,
                    payment: Decode::decode(r)?,
                    equivalence: Decode::decode(r)?,
                    halting: Decode::decode(r)?,
                    segments: match version {
                        Prescription::VERSION_SEGMENTS => Some(Decode::decode(r)?),
                        _ => None,
                    },
                })
            }
            tag => Err(crate::DecodeError::UnknownTag {
                what: "prescription version (a newer node's job?)",
                tag,
            }),
        }
    }
}

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

    /// A worker runs the image of its GPUs' maker, else the common image; without either it
    /// has nothing to run, and the error names the makers. GPUs too small for the job, or
    /// fewer than it needs, do not count.
    #[test]
    fn a_worker_runs_the_image_of_its_gpus_maker_else_the_common_one() {
        let box_of = |gpus: Vec<Gpu>| Hardware {
            gpus,
            cpu_cores: 8,
            memory_mib: 32_000,
            software: Vec::new(),
            cpu_score: 0,
        };
        let (common, cuda, rocm) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        let mut program = Program {
            command: "train".into(),
            args: vec![],
            outputs: vec![],
            image: Some(common),
            network: false,
            vendor_images: vec![
                VendorImage {
                    vendor: GpuVendor::Nvidia,
                    image: cuda,
                },
                VendorImage {
                    vendor: GpuVendor::Amd,
                    image: rocm,
                },
            ],
        };
        let any = Requirements {
            min_vram_mib: 16_000,
            ..Default::default()
        };
        let nvidia = box_of(vec![gpu(GpuVendor::Nvidia, 24_000)]);
        let amd = box_of(vec![gpu(GpuVendor::Amd, 24_000)]);
        let small_amd = box_of(vec![gpu(GpuVendor::Amd, 8_000)]);
        let none = box_of(vec![]);
        assert_eq!(program.image_for(&nvidia, &any), Ok(Some(cuda)));
        assert_eq!(program.image_for(&amd, &any), Ok(Some(rocm)));
        assert_eq!(program.image_for(&small_amd, &any), Ok(Some(common)));
        assert_eq!(program.image_for(&none, &any), Ok(Some(common)));
        let two = Requirements {
            min_gpus: 2,
            ..any.clone()
        };
        assert_eq!(program.image_for(&nvidia, &two), Ok(Some(common)));
        assert_eq!(program.images().collect::<Vec<_>>(), [common, cuda, rocm]);
        program.image = None;
        let err = program.image_for(&none, &any).unwrap_err();
        assert!(err.contains("nvidia, amd"), "{err}");
        assert!(program.brings_image());
        program.vendor_images.clear();
        assert_eq!(program.image_for(&none, &any), Ok(None));
        assert!(!program.brings_image());
        // The encoding keeps the makers' images.
        let with = Program {
            vendor_images: vec![VendorImage {
                vendor: GpuVendor::Intel,
                image: rocm,
            }],
            ..program
        };
        assert_eq!(Program::from_bytes(&with.to_bytes()).unwrap(), with);
    }

    #[test]
    fn requirements_name_what_is_missing() {
        let req = Requirements {
            gpu_vendor: Some(GpuVendor::Nvidia),
            min_gpus: 1,
            min_vram_mib: 16_000,
            min_cpu_score: 0,
            ..Default::default()
        };
        let small = Hardware {
            gpus: vec![gpu(GpuVendor::Nvidia, 8_000)],
            cpu_cores: 8,
            memory_mib: 32_000,
            software: Vec::new(),
            cpu_score: 0,
        };
        assert!(req.unmet_by(&small).unwrap().contains("16000 MiB"));
        let amd = Hardware {
            gpus: vec![gpu(GpuVendor::Amd, 24_000)],
            cpu_cores: 8,
            memory_mib: 32_000,
            software: Vec::new(),
            cpu_score: 0,
        };
        assert!(req.unmet_by(&amd).is_some());
        let big = Hardware {
            gpus: vec![gpu(GpuVendor::Nvidia, 24_000)],
            cpu_cores: 8,
            memory_mib: 32_000,
            software: Vec::new(),
            cpu_score: 0,
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
                name: String::new(),
            }],
            program: Program {
                command: "render".into(),
                args: vec!["--fast".into()],
                outputs: Vec::new(),
                image: None,
                network: false,
                vendor_images: Vec::new(),
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
            segments: None,
        };
        let bytes = p.to_bytes();
        assert_eq!(bytes[0], Prescription::VERSION);
        assert_eq!(Prescription::from_bytes(&bytes), Ok(p.clone()));
        // With segments: version 2, version 1's bytes and the segments after them.
        let trained = Prescription {
            segments: Some(Segments {
                count: 16,
                replayed: 2,
            }),
            ..p
        };
        let v2 = trained.to_bytes();
        assert_eq!(v2[0], Prescription::VERSION_SEGMENTS);
        assert_eq!(v2[1..bytes.len()], bytes[1..]);
        assert_eq!(Prescription::from_bytes(&v2), Ok(trained));
        // Version 2 without its segments is cut short, not read as version 1.
        let mut cut = bytes.clone();
        cut[0] = Prescription::VERSION_SEGMENTS;
        assert!(Prescription::from_bytes(&cut).is_err());
        // A layout this version does not know is named, not misread.
        let mut newer = bytes.clone();
        newer[0] = Prescription::VERSION_SEGMENTS + 1;
        assert!(matches!(
            Prescription::from_bytes(&newer),
            Err(crate::DecodeError::UnknownTag { tag, .. }) if tag == Prescription::VERSION_SEGMENTS + 1
        ));
    }

    #[test]
    fn a_replay_catches_a_faked_segment_with_the_chance_the_draw_gives() {
        let s = |count, replayed| Segments { count, replayed };
        // One replayed segment of ten: a trainer faking one segment is caught one time in ten.
        assert!((s(10, 1).catch_probability(1) - 0.1).abs() < 1e-12);
        // Two of ten: 1 - (9/10)(8/9) = 0.2.
        assert!((s(10, 2).catch_probability(1) - 0.2).abs() < 1e-12);
        // Faking 10% of 100 segments with 3 replayed: 1 - (90/100)(89/99)(88/98).
        let p = 1.0 - (90.0 / 100.0) * (89.0 / 99.0) * (88.0 / 98.0);
        assert!((s(100, 3).catch_probability(10) - p).abs() < 1e-12);
        assert_eq!(s(10, 3).catch_probability(0), 0.0);
        assert_eq!(s(10, 3).catch_probability(8), 1.0);
        assert_eq!(s(4, 4).catch_probability(1), 1.0);
    }

    fn offered(list: &[(&str, &str)]) -> Vec<Software> {
        list.iter()
            .map(|(name, version)| Software {
                name: (*name).into(),
                version: (*version).into(),
            })
            .collect()
    }

    #[test]
    fn software_needs_compare_versions_number_by_number() {
        let need = SoftwareNeed::parse("blender >= 4.0").unwrap();
        assert_eq!(need.at_least, Some(vec![4, 0]));
        assert_eq!(need.unmet_by(&offered(&[("blender", "4.0")])), None);
        assert_eq!(need.unmet_by(&offered(&[("blender", "4.10.1")])), None);
        assert_eq!(need.unmet_by(&offered(&[("blender", "4.0.2-beta")])), None);
        assert_eq!(
            need.unmet_by(&offered(&[("blender", "3.99")])).as_deref(),
            Some("needs blender >= 4.0; has blender 3.99")
        );
        assert_eq!(
            need.unmet_by(&offered(&[("blender", "")])).as_deref(),
            Some("needs blender >= 4.0; has blender of unknown version")
        );
        assert_eq!(
            need.unmet_by(&offered(&[("python3", "3.11")])).as_deref(),
            Some("needs blender >= 4.0; not installed")
        );
        let bare = SoftwareNeed::parse("python3").unwrap();
        assert_eq!(bare.unmet_by(&offered(&[("python3", "")])), None);
        for bad in [
            "",
            "blender >=",
            "blender >= 4.x",
            "two words",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(SoftwareNeed::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requirements_check_software_with_hardware() {
        let r = Requirements {
            software: vec!["ffmpeg".into()],
            min_cpu_score: 0,
            ..Requirements::default()
        };
        let mut hw = Hardware::default();
        assert_eq!(
            r.unmet_by(&hw).as_deref(),
            Some("needs ffmpeg; not installed")
        );
        hw.software = offered(&[("ffmpeg", "5.1.6")]);
        assert_eq!(r.unmet_by(&hw), None);
        assert_eq!(hw.check(), Ok(()));
        // The draw's check, with the needs parsed once, agrees with the one that explains.
        let versioned = Requirements {
            software: vec!["ffmpeg >= 5.2".into(), "python3".into()],
            min_cpu_cores: 2,
            min_cpu_score: 0,
            ..Requirements::default()
        };
        for (software, cores) in [
            (offered(&[("ffmpeg", "5.1.6"), ("python3", "3.11")]), 4),
            (offered(&[("ffmpeg", "6.0"), ("python3", "")]), 4),
            (offered(&[("ffmpeg", "6.0"), ("python3", "")]), 1),
            (offered(&[("ffmpeg", "6.0")]), 4),
        ] {
            let hw = Hardware {
                software,
                cpu_cores: cores,
                cpu_score: 0,
                ..Hardware::default()
            };
            assert_eq!(
                versioned.met_by(&versioned.software_needs(), &hw),
                versioned.unmet_by(&hw).is_none(),
                "{hw:?}"
            );
        }
        assert!(SoftwareNeed::parse("ffmpeg >= +5").is_err());
        hw.software.push(hw.software[0].clone());
        assert!(hw.check().unwrap_err().contains("listed twice"));
    }

    #[test]
    fn required_outputs_match_paths_part_by_part() {
        assert!(output_matches("frames/*.png", "frames/0001.png"));
        assert!(!output_matches("frames/*.png", "frames/0001.exr"));
        assert!(!output_matches("frames/*.png", "frames/sub/0001.png"));
        assert!(!output_matches("frames/*.png", "0001.png"));
        assert!(output_matches("*", "result.txt"));
        assert!(output_matches("a*b*c", "abc"));
        assert!(output_matches("a*b*c", "a-b-b-c"));
        assert!(!output_matches("a*b*c", "a-c"));
        assert!(output_matches("model.pt", "model.pt"));
        assert!(!output_matches("model.pt", "model.pth"));
        for bad in ["", "/abs", "a//b", "../x", "a/./b", "a\nb"] {
            assert!(check_output_pattern(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_output_pattern("frames/*.png"), Ok(()));
    }
}
