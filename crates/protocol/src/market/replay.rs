//! Checkpointed runs (training): the executor's `Checkpoints`, and the draw of the segments
//! its council replays.
//!
//! A job with [`Segments`](gridwork_types::Segments) runs each task as `count` segments,
//! each ending in a checkpoint. The council is drawn when the auction closes, as for any
//! job, but its members cannot start: what they replay is not known yet. The executor runs
//! the whole task, then binds itself to every checkpoint (`Checkpoints`, one content id per
//! segment, the last one its output). At the next block the ledger draws `replayed`
//! segments from the hash of the block that bound them (this block's parent), so the
//! executor cannot choose which of its checkpoints are checked, and nobody knew the draw
//! before the checkpoints were bound. Every member then replays the drawn segments from
//! the executor's checkpoint before each (segment 0 from the task's inputs) and commits to
//! the checkpoints it reached; from there it is an ordinary task: commit, reveal, and every
//! party judges the others (always on the plaintext: a replay's tree is never the
//! executor's output), so the members' runs agree with each other as in any task and with
//! the executor's when the checkpoints they reached are equivalent to its own.
//!
//! The executor commits (its output and how the run ended) before it binds, so the draw
//! cannot change what it reveals; an executor that bound its checkpoints and then does not
//! reveal is slashed as if its result were rejected (it saw the draw: walking away must cost
//! what being caught costs). Checkpoints bound in an earlier attempt are refused in a later
//! one, so a task reopened cannot be offered the same checkpoints for a luckier draw.
//!
//! A run that fails stops at the failing segment: the executor binds the checkpoints up to
//! it (what it left last) with `failed` (its revealed end must say so, and a run bound whole
//! must have succeeded), and the council replays the failing segment, to see it fail the same
//! way, with segments drawn among those before it as for any run (the checkpoint it failed
//! from is one of theirs). A failure is a result, as in any task.
//!
//! When two drawn segments follow each other, members replay the second from their own
//! replay of the first: the executor shares only the starts of runs of drawn segments, never
//! a checkpoint that ends a drawn segment before the members commit.
//!
//! All members replay the same segments, so each drawn segment is checked by the whole
//! council and decided by its majority: one member alone on a segment could neither be
//! outvoted when it lies nor confirmed when it is right.

use gridwork_types::Hash;

use crate::error::TxError;
use crate::receipt::Event;
use crate::state::State;

use super::*;

/// Draws `replayed` distinct segments of `count` from `seed`, in ascending order.
pub(super) fn draw_segments(seed: &[u8], count: u32, replayed: u32) -> Vec<u32> {
    let mut left: Vec<u32> = (0..count).collect();
    let mut drawn = Vec::with_capacity(replayed as usize);
    for i in 0..replayed.min(count) {
        let mut h = blake3::Hasher::new();
        h.update(b"gridwork replay draw v1");
        h.update(seed);
        h.update(&i.to_le_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest.as_bytes()[..8]);
        // At most 256 segments: the modulo bias is negligible.
        let at = (u64::from_le_bytes(bytes) % left.len() as u64) as usize;
        drawn.push(left.swap_remove(at));
    }
    drawn.sort_unstable();
    drawn
}

impl State {
    /// `Checkpoints`: by the executor of a task of a checkpointed job, once per attempt,
    /// while it commits: one distinct content id per segment, none revealed in an earlier
    /// attempt.
    pub(super) fn check_checkpoints(
        &self,
        sender: Address,
        key: TaskKey,
        attempt: u32,
        checkpoints: &[Hash],
        failed: bool,
    ) -> Result<(), TxError> {
        let TaskKey { job, index: task } = key;
        let segments = self
            .jobs
            .get(&job)
            .ok_or(TxError::UnknownJob { job })?
            .prescription
            .segments
            .ok_or(TxError::NotCheckpointed { job })?;
        let t = self.live_task(job, task, attempt, Phase::Committing)?;
        if t.executor != Some(sender) {
            return Err(TxError::NotAssigned { job, task });
        }
        if !t.checkpoints.is_empty() {
            return Err(TxError::AlreadyDone {
                what: "bound its checkpoints",
            });
        }
        let bad = |reason: String| Err(TxError::BadCheckpoints { reason });
        // Its commitment (output and how the run ended) binds the run before anything is
        // drawn, so what the draw shows cannot change what it reveals.
        if t.committed(&sender).is_none() {
            return bad(
                "commit to the run's output first; the checkpoints follow the commitment".into(),
            );
        }
        let n = checkpoints.len();
        if !failed && n != segments.count as usize {
            return bad(format!(
                "names {n} checkpoints; the job's runs have {} segments, one checkpoint each (a run that stopped at a failed segment says `failed`)",
                segments.count
            ));
        }
        if failed && (n == 0 || n > segments.count as usize) {
            return bad(format!(
                "names {n} checkpoints for a failed run; one for each segment up to the failed one, 1 to {}",
                segments.count
            ));
        }
        for (i, c) in checkpoints.iter().enumerate() {
            if let Some(first) = checkpoints[..i].iter().position(|d| d == c) {
                return bad(format!(
                    "checkpoint {} is checkpoint {} again ({c}); each segment's checkpoint is a tree of its own",
                    i + 1,
                    first + 1
                ));
            }
            if t.earlier_outputs.contains(c) {
                return Err(TxError::CopiedResult { output: *c });
            }
        }
        Ok(())
    }

    /// The checkpoints are bound; the segments to replay are drawn at the next block.
    pub(super) fn apply_checkpoints(
        &mut self,
        sender: Address,
        key: TaskKey,
        checkpoints: &[Hash],
        failed: bool,
        now: u64,
    ) -> Vec<Event> {
        let Some(mut t) = self.tasks.get(&key).cloned() else {
            return Vec::new();
        };
        t.checkpoints = checkpoints.to_vec();
        t.run_failed = failed;
        t.deadline_ms = now;
        t.note = TaskNote::ReplayDrawnNext {};
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CheckpointsBound {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            provider: sender,
            count: checkpoints.len() as u32,
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// Draws the segments the council replays, at the first block after the checkpoints
    /// were bound: the seed is that block's hash (this block's parent), which the executor
    /// could not know when it sent them. The members get the task deadline for each segment
    /// they replay from here, as the executor had for it.
    pub(super) fn draw_replay(&mut self, key: TaskKey, mut t: Task, now: u64) -> Vec<Event> {
        let Some(job) = self.jobs.get(&key.job) else {
            return Vec::new();
        };
        let Some(segments) = job.prescription.segments else {
            return Vec::new();
        };
        let seed = self.draw_seed(key, t.attempt);
        // A failed run: the failing segment, and segments drawn among those before it as for
        // any run (the checkpoint it failed from is one of theirs).
        let bound = t.checkpoints.len() as u32;
        t.replay = if t.run_failed {
            let last = bound.saturating_sub(1);
            let mut drawn = draw_segments(&seed, last, segments.replayed.min(last));
            drawn.push(last);
            drawn
        } else {
            draw_segments(&seed, segments.count, segments.replayed)
        };
        // A task deadline for each replayed segment, as the executor had.
        let deadline = job.prescription.run_deadline_ms(t.replay.len() as u32);
        t.deadline_ms = now.saturating_add(deadline);
        t.note = TaskNote::Replaying {};
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::ReplayDrawn {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            segments: t.replay.clone(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_takes_distinct_segments_in_order_and_covers_every_segment_over_seeds() {
        let mut seen = [0u32; 10];
        for s in 0u32..400 {
            let drawn = draw_segments(&s.to_le_bytes(), 10, 3);
            assert_eq!(drawn.len(), 3);
            assert!(drawn.windows(2).all(|w| w[0] < w[1]), "{drawn:?}");
            for d in drawn {
                seen[d as usize] += 1;
            }
        }
        // 1,200 draws over 10 segments: about 120 each.
        assert!(seen.iter().all(|n| (70..=170).contains(n)), "{seen:?}");
        assert_eq!(draw_segments(b"x", 4, 9), vec![0, 1, 2, 3]);
    }
}
