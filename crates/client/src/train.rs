//! The training template: a job file's `[train]` section, a training script run in
//! checkpointed segments and checked by replays of a few of them.
//!
//! ```toml
//! [train]
//! script = "./train.py"      # run as `python3 inputs/train.py --steps K`, once a segment
//! steps = 400                # training steps of each task
//! checkpoint_every = 50      # steps a segment (it must divide `steps`): 8 segments
//! replayed = 2               # segments each council member replays (default 1)
//! # dataset = "./data"       # an input, as $GRIDWORK_INPUTS/<its name>
//! # image = "img:<id>"       # run in an image that has Python (workers with --executor docker)
//! ```
//!
//! Each task's run is `steps / checkpoint_every` segments, each with the job's task deadline
//! (`task_deadline_s` is a segment's: a replay of a segment gets the time the executor had, so a
//! segment that times out does on replay too). A segment is one run of the
//! script with `GRIDWORK_SEGMENT` (from 0) and `GRIDWORK_SEGMENTS`: it loads the checkpoint
//! in `$GRIDWORK_CHECKPOINT` (absent for segment 0, which starts from the inputs), trains
//! `checkpoint_every` steps and writes the next checkpoint to `$GRIDWORK_OUTPUTS`. A segment
//! must depend on its checkpoint and the inputs alone: a random generator's state goes in the
//! checkpoint, or is derived from the step number (what the example does), so a replay of a
//! segment on another worker starts where the executor's did.
//!
//! The executor binds every checkpoint before the ledger draws which segments the council
//! replays (`crates/protocol/src/market/replay.rs`); checkpoints are compared under numeric
//! tolerance (`.npy` and `.safetensors` element by element, text by its numbers) unless the
//! job file says otherwise. The result is the last checkpoint.

use gridwork_types::{Equivalence, Program, Segments};
use serde::Deserialize;

/// `[train]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrain {
    pub(crate) script: String,
    pub(crate) dataset: Option<String>,
    steps: u64,
    checkpoint_every: u64,
    #[serde(default = "one")]
    replayed: u32,
    pub(crate) image: Option<crate::jobfile::RawImage>,
}

fn one() -> u32 {
    1
}

/// Tolerances checkpoints get by default: an absolute billionth of a thousand and a relative
/// hundred-thousandth, room for the sums of another BLAS build and far too little for a
/// skipped step.
pub(crate) const DEFAULT_ABS_PPB: u64 = 1_000;
/// See [`DEFAULT_ABS_PPB`].
pub(crate) const DEFAULT_REL_PPB: u64 = 10_000;

/// What `[train]` makes of a job.
#[derive(Debug)]
pub(crate) struct TrainPlan {
    /// The program (its image is set by the caller).
    pub(crate) program: Program,
    /// The segments of each task's run.
    pub(crate) segments: Segments,
    /// How checkpoints are compared when the job file does not say.
    pub(crate) equivalence: Equivalence,
}

/// The program and segments of `raw`, whose script lands as `$GRIDWORK_INPUTS/<script_file>`;
/// errors name the field.
pub(crate) fn plan(raw: &RawTrain, script_file: &str) -> Result<TrainPlan, (&'static str, String)> {
    if raw.checkpoint_every == 0 || raw.steps == 0 {
        return Err((
            "train.checkpoint_every",
            "and train.steps must be at least 1".into(),
        ));
    }
    if raw.steps % raw.checkpoint_every != 0 {
        // The divisor of the steps nearest to what was asked, looked for nearby.
        let every = raw.checkpoint_every;
        let near = (1..=every.min(100_000))
            .flat_map(|d| [every - d, every.saturating_add(d)])
            .find(|&c| c > 0 && c < raw.steps && raw.steps % c == 0);
        let hint = near.map_or(String::new(), |c| format!("; the nearest that does is {c}"));
        return Err((
            "train.checkpoint_every",
            format!(
                "{every} does not divide train.steps ({}) into whole segments{hint}",
                raw.steps
            ),
        ));
    }
    let count = raw.steps / raw.checkpoint_every;
    let max = u64::from(gridwork_types::MAX_SEGMENTS);
    if !(2..=max).contains(&count) {
        return Err((
            "train.checkpoint_every",
            format!(
                "makes {count} segments of train.steps; a checked run has 2 to {max}: checkpoint more or less often"
            ),
        ));
    }
    let count = count as u32;
    if raw.replayed == 0 || raw.replayed > count {
        return Err((
            "train.replayed",
            format!("is {}; from 1 to the {count} segments", raw.replayed),
        ));
    }
    if !script_file.ends_with(".py") {
        return Err((
            "train.script",
            format!("`{script_file}` is not a Python script (.py)"),
        ));
    }
    Ok(TrainPlan {
        program: Program {
            command: "python3".into(),
            args: vec![
                format!("inputs/{script_file}"),
                "--steps".into(),
                raw.checkpoint_every.to_string(),
            ],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        segments: Segments {
            count,
            replayed: raw.replayed,
        },
        equivalence: Equivalence::NumericTolerance {
            abs_ppb: DEFAULT_ABS_PPB,
            rel_ppb: DEFAULT_REL_PPB,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(steps: u64, every: u64, replayed: u32) -> RawTrain {
        RawTrain {
            script: "train.py".into(),
            dataset: None,
            steps,
            checkpoint_every: every,
            replayed,
            image: None,
        }
    }

    #[test]
    fn a_training_is_its_steps_in_segments_the_script_run_once_a_segment() {
        let made = plan(&raw(400, 50, 2), "train.py").unwrap();
        assert_eq!(
            made.segments,
            Segments {
                count: 8,
                replayed: 2
            }
        );
        assert_eq!(made.program.command, "python3");
        assert_eq!(made.program.args, ["inputs/train.py", "--steps", "50"]);
        for (bad, field, says) in [
            (
                raw(400, 30, 1),
                "train.checkpoint_every",
                "nearest that does is 25",
            ),
            (raw(400, 400, 1), "train.checkpoint_every", "1 segments"),
            (raw(400, 1, 1), "train.checkpoint_every", "400 segments"),
            (raw(400, 50, 9), "train.replayed", "8 segments"),
            (raw(400, 0, 1), "train.checkpoint_every", "at least 1"),
        ] {
            let (f, problem) = plan(&bad, "train.py").unwrap_err();
            assert_eq!(f, field);
            assert!(problem.contains(says), "{problem}");
        }
        assert_eq!(
            plan(&raw(400, 50, 1), "train.sh").unwrap_err().0,
            "train.script"
        );
    }
}
