//! Judging the other parties' outputs under the job's equivalence (rounds other than an
//! exact-hash first round).

use super::*;

/// How long before the judging deadline a worker stops waiting for outputs it cannot fetch
/// and judges without them.
pub(super) const JUDGE_MARGIN_MS: u64 = 10_000;

impl Worker {
    /// Judges every other revealed output of the task against this worker's own and sends
    /// the judgement. Each party first lets all the others decrypt its output (members drawn
    /// after its run have no grant yet). An output this worker cannot fetch yet is tried
    /// again at the next pass, until the judging deadline is near; then it is judged as not
    /// equivalent (its owner kept it from the others).
    pub(super) async fn judge_all(
        &self,
        view: &JobView,
        t: &TaskView,
        r: TaskRef,
        mine: &RunResult,
    ) -> Result<(), WorkerError> {
        let lazy = self.cfg.behavior.is_lazy() && t.executor != Some(self.me);
        let segmented = view.prescription.segments.is_some();
        let executor = t.executor == Some(self.me);
        if segmented && executor {
            // Every member has committed to its replays: the checkpoints they end at now.
            self.share_checkpoints(view, t, r, true).await?;
        } else if !lazy && !lock(&self.judging).contains(&("shared", r, t.round)) {
            let outputs = if segmented {
                self.task_dir(r).join(super::segments::REPLAY)
            } else {
                sandbox::layout(&self.task_dir(r)).1
            };
            let key = output_key(view, r, mine.round, &outputs)?;
            let mut everyone = vec![view.requester];
            everyone.extend(t.executor);
            everyone.extend(t.council.iter().copied());
            self.share_output(&mine.output, &key, &everyone).await?;
            lock(&self.judging).insert(("shared", r, t.round));
        }
        let mut equivalent = Vec::new();
        let mut waiting = Vec::new();
        for (who, theirs) in t.revealed.iter().filter(|(p, _)| *p != self.me) {
            if lazy {
                equivalent.push(*who);
                continue;
            }
            // A huge or slow output must not make this worker miss the deadline.
            let budget = t
                .deadline_ms
                .saturating_sub(now_ms())
                .saturating_sub(JUDGE_MARGIN_MS / 2);
            let verdict = tokio::time::timeout(
                Duration::from_millis(budget),
                self.judge(view, t, r, mine, who, theirs),
            )
            .await;
            match verdict {
                Ok(Ok(true)) => equivalent.push(*who),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::info!(error = %e, job = %view.id, task = r.1, party = %who, "cannot judge an output yet");
                    waiting.push(*who);
                }
                Err(_) => {
                    tracing::warn!(job = %view.id, task = r.1, party = %who, "judging an output took too long; judged as not equivalent");
                }
            }
        }
        if !waiting.is_empty() && now_ms().saturating_add(JUDGE_MARGIN_MS) < t.deadline_ms {
            return Ok(());
        }
        if !self.mark("judge", r, t.round).await {
            return Ok(());
        }
        let kind = TxKind::Judge {
            job: view.id,
            task: t.index,
            attempt: t.attempt,
            round: t.round,
            equivalent,
        };
        let sent = self.send(kind).await;
        self.sent_as("judge", r, t.round, &sent, true);
        sent?;
        Ok(())
    }

    /// This worker's verdict on another party's output: the same content id, or equivalent
    /// under the job's function when compared on the plaintext. In a checkpointed task
    /// what is compared is the replays: a member's replay tree, and the executor's checkpoints
    /// at the ends of the drawn segments laid out the same way.
    pub(super) async fn judge(
        &self,
        view: &JobView,
        t: &TaskView,
        r: TaskRef,
        mine: &RunResult,
        holder: &Address,
        theirs: &Hash,
    ) -> Result<bool, WorkerError> {
        let e = &view.prescription.equivalence;
        let segmented = view.prescription.segments.is_some();
        if mine.output == *theirs {
            return Ok(true);
        }
        if let Some(v) = lock(&self.verdicts).get(&(r, *theirs)) {
            return Ok(*v);
        }
        let dir = self.task_dir(r);
        let their_dir = dir.join(format!("judged-{theirs}"));
        if their_dir.exists() {
            std::fs::remove_dir_all(&their_dir).map_err(|source| WorkerError::Io {
                path: their_dir.display().to_string(),
                source,
            })?;
        }
        // The executor's checkpoints at the ends of the drawn segments, for a member.
        let their_checkpoints = segmented && t.executor == Some(*holder);
        let mut missing = Vec::new();
        if their_checkpoints {
            missing.extend(
                t.replay
                    .iter()
                    .filter_map(|j| t.checkpoints.get(*j as usize).copied()),
            );
        } else {
            missing.push(*theirs);
        }
        for cid in &missing {
            if self.client.granted_key(cid, &self.cfg.key).await.is_err() {
                // Every honest run pushes (and pins) its outputs before committing to them:
                // one the node does not hold was never produced, and no grant will come.
                if self.client.pin_view(cid).await?.is_none() {
                    lock(&self.verdicts).insert((r, *theirs), false);
                    return Ok(false);
                }
            }
        }
        if their_checkpoints {
            self.pull_checkpoints(t, &their_dir).await?;
        } else {
            let key = self.client.granted_key(theirs, &self.cfg.key).await?;
            self.pull(theirs, &key, &[*holder], &their_dir).await?;
        }
        let mine = if segmented {
            self.judged_tree(t, r)?
        } else {
            sandbox::layout(&dir).1
        };
        // Decoding another party's frames or tensors takes a while: off the runtime's threads,
        // so the worker's other steps (its commits and reveals) keep their deadlines.
        let (theirs_dir, e_owned) = (their_dir.clone(), e.clone());
        let verdict = tokio::task::spawn_blocking(move || {
            gridwork_verify::equivalent(&e_owned, &mine, &theirs_dir)
        })
        .await
        .map_err(|err| WorkerError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(err.to_string()),
        })?
        .map_err(|err| WorkerError::Io {
            path: dir.display().to_string(),
            source: std::io::Error::other(err.to_string()),
        })?;
        let _ = std::fs::remove_dir_all(&their_dir);
        let same = verdict.is_same();
        lock(&self.verdicts).insert((r, *theirs), same);
        Ok(same)
    }
}
