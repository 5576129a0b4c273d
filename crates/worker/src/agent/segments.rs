//! Checkpointed runs (training): the executor runs every segment and keeps each segment's
//! checkpoint as a tree of its own; a council member replays the segments the ledger drew
//! from the executor's checkpoints. The ledger's side is in
//! `crates/protocol/src/market/replay.rs`.
//!
//! Each segment is one run of the job's program with `GRIDWORK_SEGMENT` (from 0) and
//! `GRIDWORK_SEGMENTS`; past the first it finds the checkpoint it starts from in
//! `$GRIDWORK_CHECKPOINT`, and it leaves the next in `$GRIDWORK_OUTPUTS`. Between segments the
//! worker empties the outputs and the run's `tmp/`, so a segment depends on its checkpoint
//! and the inputs alone, on the executor as in a replay.
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
//! the council once the replay is drawn, and the ending ones at judging, when every member
//! has committed to its own.

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

/// Copies the tree at `from` to `to` (files and directories; links that point down are
/// kept as links, others were dropped from the outputs already).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
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
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        }
    }
    Ok(())
}

/// Readies the run directory for a segment: its outputs and `tmp/` empty, and the checkpoint
/// it starts from (a copy: the program may write there) in place, or none for segment 0.
fn ready_segment(dir: &std::path::Path, start: Option<&std::path::Path>) -> std::io::Result<()> {
    let outputs = sandbox::layout(dir).1;
    let run = outputs.parent().unwrap_or(dir);
    for sub in ["outputs", "tmp", sandbox::CHECKPOINT_DIR] {
        let path = run.join(sub);
        if path.exists() {
            super::execute::make_removable(&path);
            std::fs::remove_dir_all(&path)?;
        }
    }
    std::fs::create_dir_all(run.join("outputs"))?;
    std::fs::create_dir_all(run.join("tmp"))?;
    if let Some(start) = start {
        copy_tree(start, &run.join(sandbox::CHECKPOINT_DIR))?;
    }
    Ok(())
}

/// The time left of `total` since `started`, never under half a second (a run given no time
/// times out, a result like any other).
fn left(total: Duration, started: Instant) -> Duration {
    total
        .saturating_sub(started.elapsed())
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
        let prepared = self.prepare(view, r, limit).await?;
        let dir = &prepared.dir;
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        let keep = dir.join(CHECKPOINTS);
        std::fs::create_dir_all(&keep).map_err(io)?;
        let outputs = sandbox::layout(dir).1;
        let started = Instant::now();
        let (mut seconds, mut ended) = (0u64, RunEnd::SUCCESS);
        for j in 0..count {
            let start = (j > 0).then(|| keep.join(j.to_string()));
            ready_segment(dir, start.as_deref()).map_err(io)?;
            let env = TaskEnv {
                job: view.id.to_string(),
                task: r.1,
                items,
                segment: Some((j, count)),
            };
            let ran = match start.as_deref() {
                // `SkippingTrainer`: past the first segment, no training at all: each
                // checkpoint is the one before it.
                Some(start) if self.cfg.behavior.skips_steps() => {
                    copy_tree(start, &outputs).map_err(io)?;
                    super::execute::Ran {
                        ended: RunEnd::SUCCESS,
                        seconds: 1,
                    }
                }
                _ => {
                    let deadline = left(prepared.deadline, started);
                    self.run_program(view, r, &prepared, &env, deadline, true)
                        .await?
                }
            };
            seconds = seconds.saturating_add(ran.seconds);
            std::fs::rename(&outputs, keep.join((j + 1).to_string())).map_err(io)?;
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
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        self.save_result(
            r,
            &RunResult {
                output,
                salt: Hash(salt),
                seconds: seconds.max(1),
                ended,
                round: 0,
                checkpoints,
                failed: !ended.is_success(),
            },
        )?;
        tracing::info!(job = %view.id, task = r.1, %ended, seconds, segments = reached, "task ran in checkpointed segments");
        Ok(outcome_of(ended))
    }

    /// A council member's replay of the drawn `segments` of `t`, each from the executor's
    /// checkpoint before it; the replays, as `replay/<k>`, are its output. A checkpoint the
    /// executor never shares ends the replay as not started (the executor kept the council
    /// from its run), once half the time left for the replay has passed.
    pub(super) async fn execute_replay(
        &self,
        view: &JobView,
        r: TaskRef,
        t: &TaskView,
        limit: Duration,
        count: u32,
    ) -> Result<RunOutcome, WorkerError> {
        let prepared = self.prepare(view, r, limit).await?;
        let dir = &prepared.dir;
        let io = |source| WorkerError::Io {
            path: dir.display().to_string(),
            source,
        };
        let replay = dir.join(REPLAY);
        std::fs::create_dir_all(&replay).map_err(io)?;
        let outputs = sandbox::layout(dir).1;
        let started = Instant::now();
        let patience = prepared.deadline / 2;
        let (mut seconds, mut ended) = (0u64, RunEnd::SUCCESS);
        let staging = dir.join("staging-checkpoint");
        for &j in &t.replay {
            let start = match j {
                0 => None,
                _ => {
                    let Some(cid) = t.checkpoints.get(j as usize - 1) else {
                        ended = RunEnd::NotStarted {};
                        break;
                    };
                    let key = loop {
                        match self.client.granted_key(cid, &self.cfg.key).await {
                            Ok(key) => break Some(key),
                            Err(_) if started.elapsed() < patience => {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, job = %view.id, task = r.1, segment = j, "the executor never shared the checkpoint this replay starts from");
                                break None;
                            }
                        }
                    };
                    let Some(key) = key else {
                        ended = RunEnd::NotStarted {};
                        break;
                    };
                    if staging.exists() {
                        std::fs::remove_dir_all(&staging).map_err(io)?;
                    }
                    let holders: Vec<Address> = t.executor.into_iter().collect();
                    self.pull(cid, &key, &holders, &staging).await?;
                    Some(staging.clone())
                }
            };
            ready_segment(dir, start.as_deref()).map_err(io)?;
            let env = TaskEnv {
                job: view.id.to_string(),
                task: r.1,
                items: t.items,
                segment: Some((j, count)),
            };
            let deadline = left(prepared.deadline, started);
            let ran = self
                .run_program(view, r, &prepared, &env, deadline, false)
                .await?;
            seconds = seconds.saturating_add(ran.seconds);
            std::fs::rename(&outputs, replay.join((j + 1).to_string())).map_err(io)?;
            if !ran.ended.is_success() {
                ended = ran.ended;
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
        let output = self.push_output(view, r, t.round, &replay).await?;
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        self.save_result(
            r,
            &RunResult {
                output,
                salt: Hash(salt),
                seconds: seconds.max(1),
                ended,
                round: t.round,
                checkpoints: Vec::new(),
                failed: false,
            },
        )?;
        tracing::info!(job = %view.id, task = r.1, %ended, seconds, segments = ?t.replay, "segments replayed");
        Ok(outcome_of(ended))
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
        let compare = dir.join(COMPARE);
        let io = |source| WorkerError::Io {
            path: compare.display().to_string(),
            source,
        };
        if compare.exists() {
            std::fs::remove_dir_all(&compare).map_err(io)?;
        }
        std::fs::create_dir_all(&compare).map_err(io)?;
        for &j in &t.replay {
            let k = (j + 1).to_string();
            let kept = dir.join(CHECKPOINTS).join(&k);
            if kept.exists() {
                copy_tree(&kept, &compare.join(&k)).map_err(io)?;
            }
        }
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
