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
        if !lazy && !lock(&self.judging).contains(&("shared", r, t.round)) {
            let outputs = sandbox::layout(&self.task_dir(r)).1;
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
                self.judge(&view.prescription.equivalence, r, mine, who, theirs),
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
    /// under the job's function when compared on the plaintext.
    pub(super) async fn judge(
        &self,
        e: &Equivalence,
        r: TaskRef,
        mine: &RunResult,
        holder: &Address,
        theirs: &Hash,
    ) -> Result<bool, WorkerError> {
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
        let key = match self.client.granted_key(theirs, &self.cfg.key).await {
            Ok(key) => key,
            Err(e) => {
                // Every honest run pushes (and pins) its output before committing to it: an
                // output the node does not hold was never produced, and no grant will come.
                if self.client.pin_view(theirs).await?.is_none() {
                    lock(&self.verdicts).insert((r, *theirs), false);
                    return Ok(false);
                }
                return Err(e.into());
            }
        };
        self.pull(theirs, &key, &[*holder], &their_dir).await?;
        // Decoding another party's frames or tensors takes a while: off the runtime's threads,
        // so the worker's other steps (its commits and reveals) keep their deadlines.
        let (mine, theirs_dir, e_owned) = (sandbox::layout(&dir).1, their_dir.clone(), e.clone());
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
