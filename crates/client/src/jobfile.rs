//! Job files: a prescription a person can read and write, in TOML.
//!
//! Amounts are decimal GRID ("0.01"), durations are seconds, tolerances are plain decimals;
//! the file becomes a [`Prescription`] in the ledger's units. Unknown keys are errors, so a
//! typo is reported with its name instead of silently ignored. See `docs/job.example.toml`.

use std::path::{Path, PathBuf};

use gridwork_types::{
    Amount, Equivalence, GpuVendor, Halting, Hash, Instructions, Payment, Prescription, Program,
    Requirements,
};
use serde::Deserialize;

/// Why a job file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML for a job (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A field with a bad value.
    #[error("{path}: `{field}` {problem}")]
    Field {
        /// The file.
        path: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    deposit: Option<String>,
    data: RawData,
    program: Option<RawProgram>,
    render: Option<crate::render::RawRender>,
    train: Option<crate::train::RawTrain>,
    /// A `[program]` run in checkpointed segments (what `[train]` writes itself).
    segments: Option<RawSegments>,
    instructions: RawInstructions,
    payment: RawPayment,
    equivalence: Option<RawEquivalence>,
    halting: RawHalting,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProgram {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    outputs: Vec<String>,
    /// `img:<64 hex>`, as `gridwork image push` prints it, or one per GPU maker:
    /// `{ cpu = "img:...", nvidia = "img:...", amd = "img:..." }`.
    image: Option<RawImage>,
    #[serde(default)]
    network: bool,
}

/// `[program] image`: one image for every worker, or one per GPU maker (`cpu` for workers
/// whose GPUs have none of their own).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawImage {
    One(String),
    PerMaker(std::collections::BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegments {
    count: u32,
    #[serde(default = "one")]
    replayed: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawData {
    #[serde(default)]
    pub(crate) inputs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstructions {
    items: Option<u64>,
    chunk: u64,
    task_deadline_s: u64,
    #[serde(default)]
    council_size: u8,
    #[serde(default)]
    requirements: RawRequirements,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequirements {
    gpu_vendor: Option<GpuVendor>,
    #[serde(default)]
    min_gpus: u32,
    #[serde(default)]
    min_vram_mib: u64,
    #[serde(default)]
    min_cpu_cores: u32,
    #[serde(default)]
    min_memory_mib: u64,
    #[serde(default)]
    software: Vec<String>,
    #[serde(default)]
    min_cpu_score: u32,
}

impl RawRequirements {
    pub(crate) fn into_requirements(self) -> Requirements {
        Requirements {
            gpu_vendor: self.gpu_vendor,
            min_gpus: self.min_gpus,
            min_vram_mib: self.min_vram_mib,
            min_cpu_cores: self.min_cpu_cores,
            min_memory_mib: self.min_memory_mib,
            software: self.software,
            min_cpu_score: self.min_cpu_score,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayment {
    kind: String,
    max_price: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEquivalence {
    kind: String,
    #[serde(default)]
    abs: f64,
    #[serde(default)]
    rel: f64,
    /// `image`: the lowest peak signal-to-noise ratio, in dB.
    min_psnr_db: Option<f64>,
    /// `image`: the largest difference of one sample, in levels of 255.
    max_pixel_diff: Option<u8>,
}

impl Default for RawEquivalence {
    fn default() -> Self {
        RawEquivalence {
            kind: "exact_hash".into(),
            abs: 0.0,
            rel: 0.0,
            min_psnr_db: None,
            max_pixel_diff: None,
        }
    }
}

/// The equivalence an `[equivalence]` table names (a job file's or a service file's); `name`
/// labels errors.
pub(crate) fn equivalence_of(raw: RawEquivalence, name: &str) -> Result<Equivalence, JobFileError> {
    let field = |field: &'static str, problem: String| JobFileError::Field {
        path: name.to_string(),
        field,
        problem,
    };
    let ppb = |f: &'static str, v: f64| -> Result<u64, JobFileError> {
        if !(v.is_finite() && (0.0..1e9).contains(&v)) {
            return Err(field(f, "must be a non-negative number below 1e9".into()));
        }
        // The ledger keeps tolerances in billionths: a bound it cannot keep is refused,
        // never rounded into another (1e-10 used to become 0, an exact comparison).
        let kept = (v * 1e9).round();
        if (kept - v * 1e9).abs() > 1e-6 * (v * 1e9).max(1.0) {
            let (down, up) = ((v * 1e9).floor(), (v * 1e9).ceil());
            let fix = if down == 0.0 {
                format!("use 0 for an exact comparison, or {:e}", up / 1e9)
            } else {
                format!("use {:e} or {:e}", down / 1e9, up / 1e9)
            };
            return Err(field(
                f,
                format!("{v:e} is not a whole number of billionths, which is what the ledger keeps: {fix}"),
            ));
        }
        Ok(kept as u64)
    };
    Ok(match raw.kind.as_str() {
        "exact_hash" => Equivalence::ExactHash {},
        "numeric_tolerance" => Equivalence::NumericTolerance {
            abs_ppb: ppb("equivalence.abs", raw.abs)?,
            rel_ppb: ppb("equivalence.rel", raw.rel)?,
        },
        "image" => {
            let db = raw.min_psnr_db.unwrap_or(DEFAULT_MIN_PSNR_DB);
            let (low, high) = (
                gridwork_types::MIN_IMAGE_PSNR_MDB / 1000,
                gridwork_types::MAX_IMAGE_PSNR_MDB / 1000,
            );
            if !(db.is_finite() && (f64::from(low)..=f64::from(high)).contains(&db)) {
                return Err(field(
                    "equivalence.min_psnr_db",
                    format!("is {db}; use {low} to {high} dB (40 tells renders of one frame apart from a changed one)"),
                ));
            }
            Equivalence::Image {
                min_psnr_mdb: (db * 1e3).round() as u32,
                max_diff: raw.max_pixel_diff.unwrap_or(DEFAULT_MAX_PIXEL_DIFF),
            }
        }
        other => {
            return Err(field(
                "equivalence.kind",
                format!("is `{other}`; use `exact_hash`, `numeric_tolerance` or `image`"),
            ))
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHalting {
    #[serde(default)]
    first_bids: u32,
    deadline_s: u64,
    reserve_price: Option<String>,
    #[serde(default)]
    give_up_after_s: u64,
}

/// An input of a job: a local path to upload, or a content id already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A file or directory (relative paths are relative to the job file).
    Path(PathBuf),
    /// A manifest's content id (`cid:<64 hex>`).
    Cid(Hash),
}

/// An input and where it lands in a run ([`gridwork_types::DataInput::name`]): a directory
/// `./scene` as `$GRIDWORK_INPUTS/scene/`, a file `./data.csv` as `$GRIDWORK_INPUTS/data.csv`
/// (name empty: a tree of one file keeps the file's name), a stored tree `NAME=cid:<hex>` as
/// `$GRIDWORK_INPUTS/NAME/` (`cid:<hex>` alone: under its 64-hex id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInput {
    /// What to upload or name.
    pub source: Input,
    /// Its directory under `$GRIDWORK_INPUTS`, or empty for a file.
    pub name: String,
}

/// The memory a job's container gets (`requirements.min_memory_mib`) when a job file that
/// names an image does not say: 2 GiB, on every worker alike.
pub(crate) const DEFAULT_CONTAINER_MEMORY_MIB: u64 = 2048;

/// `[equivalence] kind = "image"` without `min_psnr_db`: 40 dB, where renders of one frame on
/// different CPUs and builds land well above, and a changed object or light well below.
pub(crate) const DEFAULT_MIN_PSNR_DB: f64 = 40.0;
/// Without `max_pixel_diff`: 32 levels of 255, room for a stray sample of path-tracing noise
/// and too little for a changed colour.
pub(crate) const DEFAULT_MAX_PIXEL_DIFF: u8 = 32;

/// A parsed job file.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// The prescription, with `data` empty until the inputs are uploaded.
    pub prescription: Prescription,
    /// The inputs, in order, each with where it lands; no two land on the same path.
    pub inputs: Vec<JobInput>,
    /// The deposit, if the file sets one (otherwise the job's maximum cost).
    pub deposit: Option<Amount>,
}

impl JobFile {
    /// Reads and checks a job file.
    pub fn read(path: &Path) -> Result<JobFile, JobFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        JobFile::parse(&text, &path.display().to_string(), base)
    }

    /// Parses job-file text; `name` labels errors; relative input paths are joined to `base`.
    pub fn parse(text: &str, name: &str, base: &Path) -> Result<JobFile, JobFileError> {
        let raw: RawJob = toml::from_str(text).map_err(|e| JobFileError::Parse {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        let field = |field: &'static str, problem: String| JobFileError::Field {
            path: name.to_string(),
            field,
            problem,
        };
        let amount = |field: &'static str, s: &str| {
            Amount::parse_grid(s).map_err(|e| JobFileError::Field {
                path: name.to_string(),
                field,
                problem: e.to_string(),
            })
        };
        let max_price = amount("payment.max_price", &raw.payment.max_price)?;
        let payment = match raw.payment.kind.as_str() {
            "per_task_second" => Payment::PerTaskSecond { max_price },
            "fixed_per_task" => Payment::FixedPerTask { max_price },
            other => {
                return Err(field(
                    "payment.kind",
                    format!("is `{other}`; use `per_task_second` or `fixed_per_task`"),
                ))
            }
        };
        // A command (`[program]`), or a Blender scene (`[render]`) or a training script
        // (`[train]`) made into one.
        let mut inputs_listed = raw.data.inputs;
        // An input a template adds, unless it is listed already.
        let add_input = |listed: &mut Vec<String>, path: &str| {
            let resolved = |p: &str| {
                std::path::absolute(base.join(p))
                    .ok()
                    .map(|p| normalize(&p))
            };
            if !listed.iter().any(|i| resolved(i) == resolved(path)) {
                listed.push(path.to_string());
            }
        };
        let mut segments = raw.segments.map(|s| gridwork_types::Segments {
            count: s.count,
            replayed: s.replayed,
        });
        let one_template = || {
            field(
                "program",
                "a job file has one of [program] (a command), [render] (a Blender scene) or [train] (a training script)".into(),
            )
        };
        if segments.is_some() && raw.program.is_none() {
            return Err(field(
                "segments",
                "is for a [program]; [train] sets its segments from its steps".into(),
            ));
        }
        let (raw_program, items, default_equivalence) = match (raw.program, raw.render, raw.train)
        {
            (None, None, Some(train)) => {
                let script = base.join(&train.script);
                if !script.is_file() {
                    return Err(field(
                        "train.script",
                        format!("names `{}`, which is not a file", train.script),
                    ));
                }
                let script_file = script
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let plan = crate::train::plan(&train, &script_file)
                    .map_err(|(f, problem)| field(f, problem))?;
                add_input(&mut inputs_listed, &train.script);
                if let Some(dataset) = &train.dataset {
                    add_input(&mut inputs_listed, dataset);
                }
                segments = Some(plan.segments);
                let items = raw.instructions.items.unwrap_or(1);
                let program = RawProgram {
                    command: plan.program.command,
                    args: plan.program.args,
                    outputs: plan.program.outputs,
                    image: train.image,
                    network: false,
                };
                (program, items, Some(plan.equivalence))
            }
            (Some(program), None, None) => {
                let items = raw.instructions.items.ok_or_else(|| {
                    field(
                        "instructions.items",
                        "is missing: how many items the job has".into(),
                    )
                })?;
                (program, items, None)
            }
            (None, Some(render), None) => {
                let scene = base.join(&render.scene);
                if !scene.is_file() {
                    return Err(field(
                        "render.scene",
                        format!("names `{}`, which is not a file", render.scene),
                    ));
                }
                let scene_file = scene
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let plan = crate::render::plan(&render, &scene_file)
                    .map_err(|(f, problem)| field(f, problem))?;
                if let Some(items) = raw.instructions.items.filter(|&n| n != plan.items) {
                    return Err(field(
                        "instructions.items",
                        format!(
                            "is {items}, but a render has one item a frame ({}); leave it out",
                            plan.items
                        ),
                    ));
                }
                // The scene travels as an input, unless it is listed already.
                add_input(&mut inputs_listed, &render.scene);
                let program = RawProgram {
                    command: plan.program.command,
                    args: plan.program.args,
                    outputs: plan.program.outputs,
                    image: render.image,
                    network: false,
                };
                (program, plan.items, Some(plan.equivalence))
            }
            (None, None, None) => {
                return Err(field(
                    "program",
                    "is missing: give [program] (a command), [render] (a Blender scene) or [train] (a training script)".into(),
                ))
            }
            _ => return Err(one_template()),
        };
        let raw_equivalence = match (raw.equivalence, default_equivalence) {
            (None, Some(default)) => Err(default),
            (given, _) => Ok(given.unwrap_or_default()),
        };
        let equivalence = match raw_equivalence {
            Err(default) => default,
            Ok(raw_equivalence) => equivalence_of(raw_equivalence, name)?,
        };
        let reserve_price = match &raw.halting.reserve_price {
            Some(s) => Some(amount("halting.reserve_price", s)?),
            None => None,
        };
        let secs = |f: &'static str, s: u64| {
            s.checked_mul(1000)
                .ok_or_else(|| field(f, "is too large".into()))
        };
        let mut r = raw.instructions.requirements;
        let program = program_of(raw_program, &mut r, name)?;
        let images = distinct_images(&program);
        let prescription = Prescription {
            data: Vec::new(),
            program,
            instructions: Instructions {
                items,
                chunk: raw.instructions.chunk,
                requirements: r.into_requirements(),
                task_deadline_ms: secs(
                    "instructions.task_deadline_s",
                    raw.instructions.task_deadline_s,
                )?,
                council_size: raw.instructions.council_size,
            },
            payment,
            equivalence,
            halting: Halting {
                first_bids: raw.halting.first_bids,
                deadline_ms: secs("halting.deadline_s", raw.halting.deadline_s)?,
                reserve_price,
                give_up_ms: secs("halting.give_up_after_s", raw.halting.give_up_after_s)?,
            },
            segments,
        };
        let inputs = inputs_of(inputs_listed, &images, base, name, "data.inputs")?;
        let deposit = match &raw.deposit {
            Some(s) if s != "auto" => Some(amount("deposit", s)?),
            _ => None,
        };
        Ok(JobFile {
            prescription,
            inputs,
            deposit,
        })
    }
}

/// The program of a `[program]` table, and what it makes the job require: containers for an
/// image (and a container's memory, the same on every worker), the network, the command.
pub(crate) fn program_of(
    raw_program: RawProgram,
    r: &mut RawRequirements,
    name: &str,
) -> Result<Program, JobFileError> {
    let field = |field: &'static str, problem: String| JobFileError::Field {
        path: name.to_string(),
        field,
        problem,
    };
    let image_id = |text: &str| -> Result<Hash, JobFileError> {
        let hex = text.strip_prefix("img:").unwrap_or(text);
        hex.parse().map_err(|e: gridwork_types::HashError| {
            field(
                "program.image",
                format!("`{text}`: {e}; write the id `gridwork image push` printed, img:<64 hex>"),
            )
        })
    };
    let (image, vendor_images) = match &raw_program.image {
        None => (None, Vec::new()),
        Some(RawImage::One(text)) => (Some(image_id(text)?), Vec::new()),
        Some(RawImage::PerMaker(images)) => {
            let mut common = None;
            let mut vendor_images = Vec::new();
            for (maker, text) in images {
                let vendor = match maker.as_str() {
                    "cpu" => {
                        common = Some(image_id(text)?);
                        continue;
                    }
                    "nvidia" => GpuVendor::Nvidia,
                    "amd" => GpuVendor::Amd,
                    "intel" => GpuVendor::Intel,
                    other => {
                        return Err(field(
                            "program.image",
                            format!("names `{other}`; name each image by `cpu` (workers whose GPUs have no image of their own), `nvidia`, `amd` or `intel`"),
                        ))
                    }
                };
                vendor_images.push(gridwork_types::VendorImage {
                    vendor,
                    image: image_id(text)?,
                });
            }
            if common.is_none() && vendor_images.is_empty() {
                return Err(field(
                    "program.image",
                    "is an empty table; name an image, or one per GPU maker (`cpu`, `nvidia`, `amd`, `intel`)".into(),
                ));
            }
            (common, vendor_images)
        }
    };
    if image.is_some() || !vendor_images.is_empty() {
        // Only workers that run containers may take it.
        require(&mut r.software, gridwork_types::CONTAINER_SOFTWARE);
        // The container's memory, the same on every worker.
        if r.min_memory_mib == 0 {
            r.min_memory_mib = DEFAULT_CONTAINER_MEMORY_MIB;
        }
    }
    if raw_program.network {
        // Only providers that allow tasks the network may take it.
        require(&mut r.software, gridwork_types::NETWORK_SOFTWARE);
    }
    let program = Program {
        command: raw_program.command,
        args: raw_program.args,
        outputs: raw_program.outputs,
        image,
        network: raw_program.network,
        vendor_images,
    };
    if let Some(name) = gridwork_types::command_program(&program) {
        // Only providers that have the program may run or check it.
        if gridwork_types::check_software_name(name).is_ok() {
            require(&mut r.software, name);
        }
    }
    Ok(program)
}

/// The program's images, each once (one image may serve two makers), in the program's order.
pub(crate) fn distinct_images(program: &Program) -> Vec<Hash> {
    let mut images: Vec<Hash> = Vec::new();
    for image in program.images() {
        if !images.contains(&image) {
            images.push(image);
        }
    }
    images
}

/// The inputs listed (paths, `cid:<id>` or `NAME=cid:<id>`), each with where it lands under
/// `$GRIDWORK_INPUTS`, no two on one path, and the images last (their keys reach the workers
/// with the others). `what` names the field in errors.
pub(crate) fn inputs_of(
    inputs_listed: Vec<String>,
    images: &[Hash],
    base: &Path,
    name: &str,
    what: &'static str,
) -> Result<Vec<JobInput>, JobFileError> {
    let field = |field: &'static str, problem: String| JobFileError::Field {
        path: name.to_string(),
        field,
        problem,
    };
    let mut inputs: Vec<JobInput> = Vec::new();
    // Where each input lands under $GRIDWORK_INPUTS, and which input put it there.
    let mut landing: Vec<(String, String)> = Vec::new();
    for input in inputs_listed {
        let (named, stored) = match input.split_once("cid:") {
            Some((prefix, hex)) => match prefix.strip_suffix('=') {
                Some(name) => (Some(name.to_string()), Some(hex)),
                None if prefix.is_empty() => (None, Some(hex)),
                None => (None, None),
            },
            None => (None, None),
        };
        let (job_input, lands) = match stored {
            Some(hex) => {
                let cid: Hash = hex.parse().map_err(|e: gridwork_types::HashError| {
                    field(what, format!("`{input}`: {e}"))
                })?;
                let name = named.unwrap_or_else(|| cid.to_string());
                (
                    JobInput {
                        source: Input::Cid(cid),
                        name: name.clone(),
                    },
                    name,
                )
            }
            None => {
                let path = base.join(&input);
                let meta = std::fs::metadata(&path)
                    .map_err(|_| field(what, format!("names `{input}`, which does not exist")))?;
                let own = std::path::absolute(&path)
                    .ok()
                    .map(|p| normalize(&p))
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .ok_or_else(|| {
                        field(
                            what,
                            format!(
                                "`{input}` has no name to land under; name a directory or file"
                            ),
                        )
                    })?;
                let name = if meta.is_dir() {
                    own.clone()
                } else {
                    String::new()
                };
                (
                    JobInput {
                        source: Input::Path(path),
                        name,
                    },
                    own,
                )
            }
        };
        gridwork_types::check_input_name(&job_input.name)
            .map_err(|e| field(what, format!("`{input}`: {e}")))?;
        if let Some((_, other)) = landing.iter().find(|(l, _)| *l == lands) {
            return Err(field(
                what,
                format!(
                    "`{other}` and `{input}` would both land as $GRIDWORK_INPUTS/{lands}; \
                     rename one, put them in one directory, or write NAME=cid:<id>"
                ),
            ));
        }
        landing.push((lands, input.clone()));
        inputs.push(job_input);
    }
    for cid in images {
        // An image travels as an input (its key reaches the workers with the others); a
        // worker loads the one it runs rather than placing it under $GRIDWORK_INPUTS.
        inputs.push(JobInput {
            source: Input::Cid(*cid),
            name: String::new(),
        });
    }
    Ok(inputs)
}

/// Adds `program` to the software requirements unless they name it already.
fn require(software: &mut Vec<String>, program: &str) {
    if !gridwork_types::requires_software(software, program) {
        software.push(program.to_string());
    }
}

/// `path` without `.` and `..` parts (lexically: `/a/b/..` is `/a`), so `./data/.` is named
/// `data`.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[data]
inputs = []
[program]
command = "sh"
args = ["-c", "echo hi"]
[instructions]
items = 10
chunk = 3
task_deadline_s = 60
council_size = 1
[instructions.requirements]
gpu_vendor = "nvidia"
min_gpus = 1
[payment]
kind = "per_task_second"
max_price = "0.01"
[equivalence]
kind = "numeric_tolerance"
abs = 0.000001
rel = 0.0001
[halting]
first_bids = 2
deadline_s = 5
"#;

    #[test]
    fn parses_a_job_file_into_ledger_units() {
        let job = JobFile::parse(GOOD, "job.toml", Path::new(".")).unwrap();
        let p = &job.prescription;
        assert_eq!(p.instructions.task_count(), 4);
        assert_eq!(p.instructions.task_deadline_ms, 60_000);
        assert_eq!(
            p.payment,
            Payment::PerTaskSecond {
                max_price: Amount(10_000_000_000_000_000)
            }
        );
        assert_eq!(
            p.equivalence,
            Equivalence::NumericTolerance {
                abs_ppb: 1_000,
                rel_ppb: 100_000
            }
        );
        assert_eq!(p.halting.deadline_ms, 5_000);
    }

    /// The program a job runs is software it needs: added unless listed (the ledger refuses a
    /// process job without it), and not for the job's own script among its inputs.
    #[test]
    fn the_program_a_job_runs_is_among_its_required_software() {
        let software = |command: &str, listed: &str| {
            let text = GOOD
                .replace("command = \"sh\"", &format!("command = \"{command}\""))
                .replace(
                    "min_gpus = 1",
                    &format!("min_gpus = 1\nsoftware = [{listed}]"),
                );
            JobFile::parse(&text, "job.toml", Path::new("."))
                .unwrap()
                .prescription
                .instructions
                .requirements
                .software
        };
        assert_eq!(software("sh", ""), ["sh"]);
        assert_eq!(
            software("blender", "\"blender >= 4.0\""),
            ["blender >= 4.0"]
        );
        assert_eq!(software("python3", "\"ffmpeg\""), ["ffmpeg", "python3"]);
        assert!(software("inputs/run.sh", "").is_empty());
    }

    /// Tolerances are kept in billionths: one finer than that, or between two billionths,
    /// is refused naming what would do, never rounded into another (1e-10 used to become an
    /// exact comparison without a word).
    #[test]
    fn a_tolerance_the_ledger_cannot_keep_is_refused_not_rounded() {
        let with = |abs: &str| GOOD.replace("abs = 0.000001", &format!("abs = {abs}"));
        let err = JobFile::parse(&with("1e-10"), "job.toml", Path::new(".")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("equivalence.abs") && text.contains("use 0"),
            "{text}"
        );
        let err = JobFile::parse(&with("1.5e-9"), "job.toml", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("use 1e-9 or 2e-9"), "{err}");
        for (abs, ppb) in [
            ("0", 0),
            ("1e-9", 1),
            ("0.25", 250_000_000),
            ("3", 3_000_000_000),
        ] {
            let job = JobFile::parse(&with(abs), "job.toml", Path::new(".")).unwrap();
            assert!(
                matches!(job.prescription.equivalence, Equivalence::NumericTolerance { abs_ppb, .. } if abs_ppb == ppb),
                "{abs}"
            );
        }
    }

    /// `kind = "image"`: frames compared by pixels, 40 dB and 32 levels unless the file says
    /// otherwise; a ratio a council could not use is refused naming the range.
    #[test]
    fn image_equivalence_takes_a_ratio_and_a_pixel_bound() {
        let with = |lines: &str| {
            GOOD.replace(
                "kind = \"numeric_tolerance\"\nabs = 0.000001\nrel = 0.0001",
                &format!("kind = \"image\"\n{lines}"),
            )
        };
        let parse = |lines: &str| JobFile::parse(&with(lines), "job.toml", Path::new("."));
        assert_eq!(
            parse("").unwrap().prescription.equivalence,
            Equivalence::Image {
                min_psnr_mdb: 40_000,
                max_diff: 32
            }
        );
        assert_eq!(
            parse("min_psnr_db = 45.5\nmax_pixel_diff = 4")
                .unwrap()
                .prescription
                .equivalence,
            Equivalence::Image {
                min_psnr_mdb: 45_500,
                max_diff: 4
            }
        );
        for bad in ["min_psnr_db = 5", "min_psnr_db = 400", "min_psnr_db = nan"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("equivalence.min_psnr_db") && err.contains("20 to 150"),
                "{err}"
            );
        }
        assert!(parse("max_pixel_diff = 300").is_err());
    }

    /// The training example: its script is added to the inputs, one task of 8 segments of
    /// which 2 are replayed, checkpoints compared under numeric tolerance; `[segments]` is
    /// for a `[program]` of one's own, and a script that is not Python is refused.
    #[test]
    fn the_train_example_is_a_python_job_in_checkpointed_segments() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/train/job.toml");
        let job = JobFile::read(&path).unwrap();
        let p = &job.prescription;
        assert_eq!(p.instructions.task_count(), 1);
        assert_eq!(
            p.segments,
            Some(gridwork_types::Segments {
                count: 8,
                replayed: 2
            })
        );
        assert_eq!(p.program.command, "python3");
        assert_eq!(p.program.args, ["inputs/train.py", "--steps", "50"]);
        assert_eq!(
            p.equivalence,
            Equivalence::NumericTolerance {
                abs_ppb: 1_000,
                rel_ppb: 10_000
            }
        );
        assert!(
            matches!(&job.inputs[..], [JobInput { source: Input::Path(script), .. }] if script.ends_with("train.py"))
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let base = path.parent().unwrap();
        let both = format!("{text}\n[segments]\ncount = 4\n");
        let err = JobFile::parse(&both, "job.toml", base).unwrap_err();
        assert!(
            err.to_string().contains("`segments` is for a [program]"),
            "{err}"
        );
        let own = "[data]\n[program]\ncommand = \"inputs/run\"\n[segments]\ncount = 4\n\
                   [instructions]\nitems = 1\nchunk = 1\ntask_deadline_s = 60\ncouncil_size = 1\n\
                   [payment]\nkind = \"fixed_per_task\"\nmax_price = \"1\"\n[halting]\ndeadline_s = 5\n";
        let own = JobFile::parse(own, "job.toml", base).unwrap();
        assert_eq!(
            own.prescription.segments,
            Some(gridwork_types::Segments {
                count: 4,
                replayed: 1
            })
        );
        let shell = text.replace("./train.py", "./job.toml");
        let err = JobFile::parse(&shell, "job.toml", base).unwrap_err();
        assert!(err.to_string().contains("train.script"), "{err}");
    }

    /// The render example: its scene script is added to the inputs, one item a frame, frames
    /// compared by their pixels, and the program the template wrote needs Blender.
    #[test]
    fn the_render_example_is_a_blender_job_of_one_item_a_frame() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/render/job.toml");
        let job = JobFile::read(&path).unwrap();
        let p = &job.prescription;
        assert_eq!(
            (p.instructions.items, p.instructions.task_count()),
            (48, 12)
        );
        assert_eq!(p.program.command, "blender");
        assert_eq!(p.program.outputs, ["frames/*.png"]);
        assert_eq!(
            p.equivalence,
            Equivalence::Image {
                min_psnr_mdb: 40_000,
                max_diff: 32
            }
        );
        assert_eq!(p.instructions.requirements.software, ["blender >= 3.4"]);
        assert!(
            matches!(&job.inputs[..], [JobInput { source: Input::Path(scene), .. }] if scene.ends_with("make_scene.py"))
        );
        if let Ok(out) = std::env::var("GRIDWORK_RENDER_ARGS_TO") {
            std::fs::write(out, serde_json::to_string(&p.program.args).unwrap()).unwrap();
        }
        // Both [program] and [render], or neither, is refused; so is an item count that is not
        // the frame count.
        let text = std::fs::read_to_string(&path).unwrap();
        let base = path.parent().unwrap();
        let both = format!("{text}\n[program]\ncommand = \"sh\"\n");
        let err = JobFile::parse(&both, "job.toml", base).unwrap_err();
        assert!(err.to_string().contains("one of [program]"), "{err}");
        let items = text.replace("chunk = 4", "chunk = 4\nitems = 40");
        let err = JobFile::parse(&items, "job.toml", base).unwrap_err();
        assert!(err.to_string().contains("one item a frame (48)"), "{err}");
        let missing = text.replace("./make_scene.py", "./no-such-scene.py");
        let err = JobFile::parse(&missing, "job.toml", base).unwrap_err();
        assert!(err.to_string().contains("render.scene"), "{err}");
    }

    /// A job that names an image gets docker among its software, and its container's memory
    /// (2 GiB unless it says), the same on every worker.
    #[test]
    fn an_image_job_requires_docker_and_sets_its_containers_memory() {
        let image = format!("img:{}", "ab".repeat(32));
        let with = |memory: &str| {
            GOOD.replace(
                "command = \"sh\"",
                &format!("command = \"sh\"\nimage = \"{image}\""),
            )
            .replace("min_gpus = 1", &format!("min_gpus = 1\n{memory}"))
        };
        let r = JobFile::parse(&with(""), "job.toml", Path::new("."))
            .unwrap()
            .prescription
            .instructions
            .requirements;
        assert_eq!(
            (r.min_memory_mib, r.software),
            (2048, vec!["docker".to_string()])
        );
        let r = JobFile::parse(&with("min_memory_mib = 512"), "job.toml", Path::new("."))
            .unwrap()
            .prescription
            .instructions
            .requirements;
        assert_eq!(r.min_memory_mib, 512);
    }

    /// `image` may name one image per GPU maker (`cpu` for the rest): each becomes an input
    /// (so its key reaches the workers), the job requires docker, and a maker the file
    /// misspells is refused naming the makers it knows.
    #[test]
    fn an_image_per_gpu_maker_is_read_with_cpu_as_the_common_one() {
        let id = |c: &str| c.repeat(64);
        let with = |table: &str| {
            GOOD.replace(
                "command = \"sh\"",
                &format!("command = \"sh\"\nimage = {table}"),
            )
        };
        let job = JobFile::parse(
            &with(&format!(
                "{{ cpu = \"img:{}\", nvidia = \"img:{}\", amd = \"{}\" }}",
                id("a"),
                id("b"),
                id("c")
            )),
            "job.toml",
            Path::new("."),
        )
        .unwrap();
        let program = &job.prescription.program;
        let hash = |c: &str| id(c).parse::<Hash>().unwrap();
        assert_eq!(program.image, Some(hash("a")));
        assert_eq!(
            program
                .vendor_images
                .iter()
                .map(|v| (v.vendor, v.image))
                .collect::<Vec<_>>(),
            [(GpuVendor::Amd, hash("c")), (GpuVendor::Nvidia, hash("b"))]
        );
        let cids: Vec<Hash> = job
            .inputs
            .iter()
            .filter_map(|i| match i.source {
                Input::Cid(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(cids, [hash("a"), hash("c"), hash("b")]);
        assert!(job
            .prescription
            .instructions
            .requirements
            .software
            .contains(&"docker".to_string()));

        let err = JobFile::parse(
            &with(&format!("{{ nvidai = \"img:{}\" }}", id("b"))),
            "job.toml",
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("program.image") && err.contains("`nvidai`"),
            "{err}"
        );
        assert!(err.contains("`nvidia`, `amd`"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/job.example.toml");
        let job = JobFile::read(&path).unwrap();
        assert_eq!(job.prescription.instructions.task_count(), 3);
        assert_eq!(job.deposit, None);
    }

    #[test]
    fn names_the_bad_field() {
        let typo = GOOD.replace("chunk = 3", "chunks = 3");
        let err = JobFile::parse(&typo, "job.toml", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("chunks"), "{err}");
        let price = GOOD.replace("\"0.01\"", "\"cheap\"");
        let err = JobFile::parse(&price, "job.toml", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("payment.max_price"), "{err}");
        let kind = GOOD.replace("per_task_second", "per_hour");
        let err = JobFile::parse(&kind, "job.toml", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("payment.kind"), "{err}");
        let missing = GOOD.replace("inputs = []", "inputs = [\"./no-such-dir\"]");
        let err = JobFile::parse(&missing, "job.toml", Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("data.inputs"), "{err}");
    }

    /// Inputs keep their names under $GRIDWORK_INPUTS: directories as directories, files
    /// by their own name, stored trees under the name given. Two that would land on one path
    /// (`dir-a/same.txt` and `dir-b/same.txt`, which used to overwrite each other silently)
    /// are refused, naming both.
    #[test]
    fn inputs_keep_their_names_and_collisions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["dir-a", "dir-b", "scene"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("same.txt"), sub).unwrap();
        }
        let cid = "ab".repeat(32);
        let with = |inputs: &str| GOOD.replace("inputs = []", &format!("inputs = [{inputs}]"));
        let job = JobFile::parse(
            &with(&format!(
                r#""./scene", "dir-a/same.txt", "weights=cid:{cid}", "cid:{cid}x""#
            )),
            "job.toml",
            dir.path(),
        );
        assert!(
            job.unwrap_err().to_string().contains("cid:"),
            "a bad id is named"
        );
        let job = JobFile::parse(
            &with(&format!(
                r#""./scene/.", "dir-a/same.txt", "weights=cid:{cid}""#
            )),
            "job.toml",
            dir.path(),
        )
        .unwrap();
        let names: Vec<&str> = job.inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["scene", "", "weights"]);
        let err = JobFile::parse(
            &with(r#""dir-a/same.txt", "dir-b/same.txt""#),
            "job.toml",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`dir-a/same.txt` and `dir-b/same.txt` would both land as $GRIDWORK_INPUTS/same.txt"),
            "{err}"
        );
        let err = JobFile::parse(
            &with(&format!(r#""./scene", "scene=cid:{cid}""#)),
            "job.toml",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("both land as $GRIDWORK_INPUTS/scene"), "{err}");
    }
}
