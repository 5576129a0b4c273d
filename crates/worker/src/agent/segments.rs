//! Checkpointed runs (training): the executor runs every segment and keeps each segment's
//! checkpoint as a tree of its own; a council member replays the segments the ledger drew
//! from the executor's checkpoints. The ledger's side is in
//! `crates/protocol/src/market/replay.rs`.
//!
//! Each segment is one run of the job's program with `GRIDWORK_SEGMENT` (from 0) and
//! `GRIDWORK_SEGMENTS`; past the first it finds the checkpoint it starts from in
//! `$GRIDWORK_CHECKPOINT`, and it leaves the next in `$GRIDWORK_OUTPUTS`. Between segments the
//! worker removes everything the segment left in `run/` but the inputs, so a segment depends
//! on its checkpoint and the inputs alone, on the executor as in a replay.
//!
//! In the task's directory, beside `run/` (out of the program's reach):
//! - `checkpoints/<k>/`: the executor's checkpoint `k` (from 1), what segment `k - 1` left;
//! - `replay/<k>/`: a member's replay of segment `k - 1`; `replay/` is its output;
//! - `compare/<k>/`: the executor's checkpoints at the ends of the drawn segments, laid out
//!   as a member's replay, which is what the executor judges the replays against.
//!
//! Keys: each checkpoint is sealed under a convergent key of its own ([`checkpoint_key`]),
//! so the executor can hand a member the checkpoint a replay starts from without the one it
//! ends at. It shares the last (its output) with the requester at once, the starting ones with
//! the council once the replay is drawn (but that of a segment following a drawn one, which
//! is the end of that one: the member starts it from its own replay), and the ending ones at
//! judging, when every member has committed to its own.

use super::execute::outcome_of;
use super::*;

/// Where the executor keeps its checkpoints, in a task's directory.
const CHECKPOINTS: &str = "checkpoints";
/// Where a member keeps its replays (its output), in a task's directory.
pub(super) const REPLAY: &str = "replay";
/// Where the executor lays out what it judges replays against, in a task's directory.
const COMPARE: &str = "compare";

/// The key checkpoint `k` (from 1) of run `r` is sealed under: convergent over the job, task,
/// attempt and `k`, and the checkpoint's plaintext digest. Its own context, so a member's
/// replay (sealed as an output of its round) never has the id of the executor's checkpoint.
pub(super) fn checkpoint_key(
    r: TaskRef,
    k: u32,
    dir: &std::path::Path,
) -> Result<DataKey, WorkerError> {
    let digest = tree_digest(dir)?;
    let mut context = b"gridwork checkpoint v1".to_vec();
    context.extend_from_slice(r.0.as_bytes());
    context.extend_from_slice(&r.1.to_le_bytes());
    context.extend_from_slice(&r.2.to_le_bytes());
    context.extend_from_slice(&k.to_le_bytes());
    Ok(DataKey::convergent(&context, &digest))
}

/// Copies the tree at `from` (a real directory: a link there is refused) to `to`: files and
/// directories, and links that point down into the tree; other links, and anything else, are
/// left out (a checkpoint pulled from an executor may carry them).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    if !std::fs::symlink_metadata(from)?.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            from.display()
        )));
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            if link.to_str().is_some_and(super::execute::points_down) {
                std::os::unix::fs::symlink(link, &target)?;
            }
        }
    }
    Ok(())
}

/// Readies the run directory for a segment: everything the segment before left in it gone
/// but the inputs (the program's home is there too, and a replay on another worker starts
/// without it), its outputs and `tmp/` empty, and the checkpoint it starts from (a copy: the
/// program may write there) in place, or none for segment 0. Nothing a program left is
/// followed: a link is removed as a link.
fn ready_segment(dir: &std::path::Path, start: Option<&std::path::Path>) -> std::io::Result<()> {
    let outputs = sandbox::layout(dir).1;
    let run = outputs.parent().unwrap_or(dir);
    for entry in std::fs::read_dir(run)? {
        let entry = entry?;
        if entry.file_name() == "inputs" && entry.file_type()?.is_dir() {
            continue;
        }
        if entry.file_type()?.is_dir() {
            super::execute::make_removable(&entry.path());
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    std::fs::create_dir_all(run.join("outputs"))?;
    std::fs::create_dir_all(run.join("tmp"))?;
    if let Some(start) = start {
        copy_tree(start, &run.join(sandbox::CHECKPOINT_DIR))?;
    }
    Ok(())
}

/// How long one segment may run: the task deadline (each segment's, on the executor and in a
/// replay alike, so a segment that times out on one does on the other), less the margin every
/// run keeps, but never past what is left of `total` since `started`. Never under half a
/// second (a run given no time times out, a result like any other).
fn segment_limit(view: &JobView, total: Duration, started: Instant) -> Duration {
    let per = run_limit(view.prescription.instructions.task_deadline_ms, 0);
    per.min(total.saturating_sub(started.elapsed()))
        .max(Duration::from_millis(500))
}

impl Worker {
    /// The executor's run of a task in `count` checkpointed segments: every segment in turn,
    /// each checkpoint pushed as its own tree, the result the last (see the module docs).
    /// It stops at a segment that fails and binds the checkpoints up to it.
    pub(super) async fn execute_segments(
        &self,
        view: &JobView,
        r: TaskRef,
        items: (u64, u64),
        limit: Duration,
        count: u32,
    ) -> Result<RunOutcome, WorkerError> {
        let (prepared, keep) = self.prepare_keeping(view, r, limit, CHECKPOINTS).await?;
        let dir = &prepared.dir;
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        let outputs = sandbox::layout(dir).1;
        let started = Instant::now();
        let (mut seconds, mut ended) = (0u64, RunEnd::SUCCESS);
        for j in 0..count {
            let start = (j > 0).then(|| keep.join(j.to_string()));
            ready_segment(dir, start.as_deref()).map_err(io)?;
            let to = keep.join((j + 1).to_string());
            let ran = match start.as_deref() {
                // `SkippingTrainer`: past the first segment, no training at all: each
                // checkpoint is the one before it.
                Some(start) if self.cfg.behavior.skips_steps() => {
                    copy_tree(start, &outputs).map_err(io)?;
                    std::fs::rename(&outputs, &to).map_err(io)?;
                    super::execute::Ran {
                        ended: RunEnd::SUCCESS,
                        seconds: 1,
                    }
                }
                _ => {
                    let segment = (items, j, count, started);
                    self.run_segment(view, r, &prepared, segment, &to, true)
                        .await?
                }
            };
            seconds = seconds.saturating_add(ran.seconds);
            if !ran.ended.is_success() {
                ended = ran.ended;
                break;
            }
        }
        let reached = std::fs::read_dir(&keep).map_err(io)?.count() as u32;
        let mut checkpoints = Vec::with_capacity(reached as usize);
        for k in 1..=reached {
            let path = keep.join(k.to_string());
            let key = checkpoint_key(r, k, &path)?;
            let cid = self.push_sealed(r, &path, &key).await?;
            if k == reached {
                // The result: the requester may read it at once.
                self.share_output(&cid, &key, &[view.requester]).await?;
            }
            checkpoints.push(cid);
        }
        let Some(output) = checkpoints.last().copied() else {
            return Err(io(std::io::Error::other("no segment ran")));
        };
        self.save_result(
            r,
            &RunResult {
                checkpoints,
                failed: !ended.is_success(),
                ..RunResult::new(output, seconds.max(1), ended, 0)
            },
        )?;
        tracing::info!(job = %view.id, task = r.1, %ended, seconds, segments = reached, "task ran in checkpointed segments");
        Ok(outcome_of(ended))
    }

    /// A council member's replay of the drawn `segments` of `t`, each from the executor's
    /// checkpoint before it; the replays, as `replay/<k>`, are its output. A checkpoint the
    /// executor never shares ends the replay as not started (the executor kept the council
    /// from its run), once half the time left for the replay when its fetch began has
    /// passed.
    pub(super) async fn execute_replay(
        &self,
        view: &JobView,
        r: TaskRef,
        t: &TaskView,
        limit: Duration,
        count: u32,
    ) -> Result<RunOutcome, WorkerError> {
        let (prepared, replay) = self.prepare_keeping(view, r, limit, REPLAY).await?;
        let dir = &prepared.dir;
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        let started = Instant::now();
        let (mut seconds, mut ended) = (0u64, RunEnd::SUCCESS);
        let staging = dir.join("staging-checkpoint");
        for &j in &t.replay {
            let start = if j == 0 {
                None
            } else if t.replay.contains(&(j - 1)) {
                // It follows a drawn segment: from this member's own replay of that one (the
                // executor shares no checkpoint that ends a drawn segment before the commits).
                Some(replay.join(j.to_string()))
            } else {
                // The executor's checkpoint: one it never shares, or shares so that it cannot
                // be pulled or read, keeps the council from its run; once half the time is
                // spent the replay ends as not started, which counts against the executor.
                // Half of what is left of the replay's time, from when this fetch starts (a
                // long segment before it leaves a pull its own patience).
                let patience = prepared.deadline.saturating_sub(started.elapsed()) / 2;
                let fetching = Instant::now();
                let mut tries = 0u32;
                loop {
                    match self.fetch_start(t, j, &staging, dir).await {
                        Ok(()) => break Some(staging.clone()),
                        Err(e) if fetching.elapsed() < patience => {
                            tries += 1;
                            if tries % 20 == 1 {
                                tracing::info!(error = %e, job = %view.id, task = r.1, segment = j, "the checkpoint this replay starts from is not here yet");
                            }
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, job = %view.id, task = r.1, segment = j, "the executor's checkpoint this replay starts from never came; the replay did not start");
                            break None;
                        }
                    }
                }
            };
            if j > 0 && start.is_none() {
                ended = RunEnd::NotStarted {};
                break;
            }
            // A fetched checkpoint is in place already (readying it is part of fetching it).
            if j == 0 || t.replay.contains(&(j - 1)) {
                ready_segment(dir, start.as_deref()).map_err(io)?;
            }
            let segment = (t.items, j, count, started);
            let to = replay.join((j + 1).to_string());
            let ran = self
                .run_segment(view, r, &prepared, segment, &to, false)
                .await?;
            seconds = seconds.saturating_add(ran.seconds);
            if !ran.ended.is_success() {
                ended = ran.ended;
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
        let output = self.push_output(view, r, t.round, &replay).await?;
        self.save_result(r, &RunResult::new(output, seconds.max(1), ended, t.round))?;
        tracing::info!(job = %view.id, task = r.1, %ended, seconds, segments = ?t.replay, "segments replayed");
        Ok(outcome_of(ended))
    }

    /// A prepared run ([`Worker::prepare`]) and the directory `name` beside its `run/` where
    /// what its segments leave is kept.
    async fn prepare_keeping(
        &self,
        view: &JobView,
        r: TaskRef,
        limit: Duration,
        name: &str,
    ) -> Result<(super::execute::Prepared, std::path::PathBuf), WorkerError> {
        let prepared = self.prepare(view, r, limit).await?;
        let kept = prepared.dir.join(name);
        std::fs::create_dir_all(&kept).map_err(|source| WorkerError::Io {
            path: kept.display().to_string(),
            source,
        })?;
        Ok((prepared, kept))
    }

    /// Runs segment `j` of `count` (of the task's `items`; the run started at `started`) in
    /// the readied run directory, within its deadline, and moves what it left to `to`.
    async fn run_segment(
        &self,
        view: &JobView,
        r: TaskRef,
        prepared: &super::execute::Prepared,
        (items, j, count, started): ((u64, u64), u32, u32, Instant),
        to: &std::path::Path,
        as_executor: bool,
    ) -> Result<super::execute::Ran, WorkerError> {
        let env = TaskEnv {
            job: view.id.to_string(),
            task: r.1,
            items,
            segment: Some((j, count)),
            limits: crate::cgroup::RunLimits::of(&view.prescription.instructions.requirements),
        };
        let deadline = segment_limit(view, prepared.deadline, started);
        let ran = self
            .run_program(view, r, prepared, &env, deadline, as_executor)
            .await?;
        let outputs = sandbox::layout(&prepared.dir).1;
        std::fs::rename(&outputs, to).map_err(|source| WorkerError::Io {
            path: outputs.display().to_string(),
            source,
        })?;
        Ok(ran)
    }

    /// Pulls the executor's checkpoint `j` (where segment `j` starts) and readies the run
    /// directory with it.
    async fn fetch_start(
        &self,
        t: &TaskView,
        j: u32,
        staging: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<(), WorkerError> {
        let io = |source| WorkerError::Io {
            path: staging.display().to_string(),
            source,
        };
        let cid = t.checkpoints.get(j as usize - 1).ok_or_else(|| {
            io(std::io::Error::other(
                "the executor bound no such checkpoint",
            ))
        })?;
        let key = self.client.granted_key(cid, &self.cfg.key).await?;
        if std::fs::symlink_metadata(staging).is_ok() {
            super::execute::make_removable(staging);
            std::fs::remove_dir_all(staging).map_err(io)?;
        }
        let holders: Vec<Address> = t.executor.into_iter().collect();
        self.pull(cid, &key, &holders, staging).await?;
        ready_segment(dir, Some(staging)).map_err(io)
    }

    /// The executor lets the council read the checkpoints the drawn segments start from
    /// (`ends`: false) or end at (`ends`: true, at judging, with the requester too). Each
    /// recipient once per task.
    pub(super) async fn share_checkpoints(
        &self,
        view: &JobView,
        t: &TaskView,
        r: TaskRef,
        ends: bool,
    ) -> Result<(), WorkerError> {
        let Some(mine) = self.result(r) else {
            return Ok(());
        };
        let keep = self.task_dir(r).join(CHECKPOINTS);
        let mut recipients: Vec<Address> = t.council.clone();
        if ends {
            recipients.push(view.requester);
        }
        for &j in &t.replay {
            // Before the commits only the starts of runs of drawn segments: the start of one
            // that follows a drawn segment is that segment's end.
            if !ends && j > 0 && t.replay.contains(&(j - 1)) {
                continue;
            }
            let k = if ends { j + 1 } else { j };
            let Some(cid) = k
                .checked_sub(1)
                .and_then(|i| mine.checkpoints.get(i as usize))
            else {
                continue;
            };
            let fresh: Vec<Address> = {
                let shared = lock(&self.shared_checkpoints);
                recipients
                    .iter()
                    .filter(|a| !shared.contains(&(r, k, **a)))
                    .copied()
                    .collect()
            };
            if fresh.is_empty() {
                continue;
            }
            let key = checkpoint_key(r, k, &keep.join(k.to_string()))?;
            self.share_output(cid, &key, &fresh).await?;
            lock(&self.shared_checkpoints).extend(fresh.iter().map(|a| (r, k, *a)));
        }
        Ok(())
    }

    /// The tree this party's output is judged as in a checkpointed task: a member's replays,
    /// or the executor's checkpoints at the ends of the drawn segments, laid out the same
    /// way (`compare/<k>`, made once).
    pub(super) fn judged_tree(
        &self,
        t: &TaskView,
        r: TaskRef,
    ) -> Result<std::path::PathBuf, WorkerError> {
        let dir = self.task_dir(r);
        if t.executor != Some(self.me) {
            return Ok(dir.join(REPLAY));
        }
        // Laid out once for the attempt (the drawn segments stand through its rounds), not
        // once for every party judged: built aside, then moved into place whole.
        let compare = dir.join(COMPARE);
        if compare.is_dir() {
            return Ok(compare);
        }
        let partial = dir.join(format!("{COMPARE}.partial"));
        let io = |source| WorkerError::Io {
            path: partial.display().to_string(),
            source,
        };
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io)?;
        }
        std::fs::create_dir_all(&partial).map_err(io)?;
        for &j in &t.replay {
            let k = (j + 1).to_string();
            let kept = dir.join(CHECKPOINTS).join(&k);
            if kept.exists() {
                copy_tree(&kept, &partial.join(&k)).map_err(io)?;
            }
        }
        std::fs::rename(&partial, &compare).map_err(io)?;
        Ok(compare)
    }

    /// Pulls the executor's checkpoints at the ends of the drawn segments into `into/<k>`,
    /// laid out as a replay, to judge its run against this member's replays. Fails while the
    /// executor has not shared one (the next pass tries again).
    pub(super) async fn pull_checkpoints(
        &self,
        t: &TaskView,
        into: &std::path::Path,
    ) -> Result<(), WorkerError> {
        let holders: Vec<Address> = t.executor.into_iter().collect();
        for &j in &t.replay {
            let Some(cid) = t.checkpoints.get(j as usize) else {
                continue;
            };
            let key = self.client.granted_key(cid, &self.cfg.key).await?;
            self.pull(cid, &key, &holders, &into.join((j + 1).to_string()))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a segment left in the run directory is gone before the next, but the inputs;
    /// links it planted are removed as links, and nothing they point at is touched or copied.
    #[test]
    fn a_segment_starts_clean_and_no_link_a_program_left_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (inputs, outputs) = sandbox::layout(dir.path());
        let run = outputs.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&inputs).unwrap();
        std::fs::write(inputs.join("data.csv"), "1,2\n").unwrap();
        // The worker's own files, which a program cannot reach but may point at.
        let hidden = dir.path().join("hidden");
        std::fs::create_dir_all(hidden.join("keys")).unwrap();
        std::fs::write(hidden.join("keys/secret"), "key").unwrap();
        // What a segment left: a cache in its home, links where the next one's directories go.
        std::fs::create_dir_all(run.join("cache")).unwrap();
        std::fs::write(run.join("cache/state"), "smuggled").unwrap();
        std::os::unix::fs::symlink(&hidden, run.join("tmp")).unwrap();
        std::os::unix::fs::symlink(&hidden, run.join(sandbox::CHECKPOINT_DIR)).unwrap();
        std::os::unix::fs::symlink(&hidden, &outputs).unwrap();
        // The checkpoint it starts from, with a link that points out and one that points down.
        let start = dir.path().join("start");
        std::fs::create_dir_all(&start).unwrap();
        std::fs::write(start.join("w.npy"), "weights").unwrap();
        std::os::unix::fs::symlink(&hidden, start.join("out")).unwrap();
        std::os::unix::fs::symlink("w.npy", start.join("latest")).unwrap();

        ready_segment(dir.path(), Some(&start)).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint", "inputs", "outputs", "tmp"]);
        assert!(std::fs::symlink_metadata(&outputs).unwrap().is_dir());
        assert_eq!(std::fs::read_dir(&outputs).unwrap().count(), 0);
        let checkpoint = run.join(sandbox::CHECKPOINT_DIR);
        assert_eq!(
            std::fs::read_to_string(checkpoint.join("w.npy")).unwrap(),
            "weights"
        );
        assert_eq!(
            std::fs::read_link(checkpoint.join("latest")).unwrap(),
            std::path::Path::new("w.npy")
        );
        assert!(std::fs::symlink_metadata(checkpoint.join("out")).is_err());
        assert_eq!(
            std::fs::read_to_string(inputs.join("data.csv")).unwrap(),
            "1,2\n"
        );
        assert_eq!(
            std::fs::read_to_string(hidden.join("keys/secret")).unwrap(),
            "key"
        );
        // A start that is itself a link is refused, not followed.
        std::os::unix::fs::symlink(&hidden, dir.path().join("start-link")).unwrap();
        assert!(ready_segment(dir.path(), Some(&dir.path().join("start-link"))).is_err());
    }
}
