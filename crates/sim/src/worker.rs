//! What a simulated worker does at each step, by its behaviour: heartbeats, bids, runs, commits,
//! reveals and judging.

use gridwork_api::{JobStatus, JobView, Phase, TaskView};
use gridwork_types::{commitment, Address, Hash, RunEnd, TxKind};

use super::{
    drawn, Behavior, Sim, Step, TaskRef, HEARTBEAT_EVERY_MS, PRICE, RESEND_AFTER_MS, SEGMENTS,
};

impl Sim {
    /// Every worker's turn: heartbeats, then each open task's next steps. Returns the jobs
    /// still open.
    pub(super) fn act(&mut self, now: u64) -> usize {
        for i in 0..self.workers.len() {
            if self.alive(i, now) && now - self.workers[i].last_heartbeat >= HEARTBEAT_EVERY_MS {
                self.workers[i].last_heartbeat = now;
                self.send(i, TxKind::Heartbeat, now);
            }
        }
        let mut open = 0;
        for j in 0..self.jobs.len() {
            let id = self.jobs[j];
            let Some(view) = gridwork_node::api::views::job_on(&self.node, &id) else {
                continue;
            };
            if view.status != JobStatus::Open {
                continue;
            }
            open += 1;
            for t in &view.tasks {
                self.step(&view, t, now);
            }
        }
        open
    }

    pub(super) fn due(&self, i: usize, step: Step, r: TaskRef, now: u64) -> bool {
        self.alive(i, now)
            && self.workers[i]
                .sent
                .get(&(step, r))
                .is_none_or(|at| now - at >= RESEND_AFTER_MS)
    }

    pub(super) fn mark(&mut self, i: usize, step: Step, r: TaskRef, now: u64) {
        self.workers[i].sent.insert((step, r), now);
    }

    /// The output a worker's run of `r` has: honest runs of one task, attempt and round agree.
    /// In a checkpointed task an honest member's replay is a tree of its own
    /// ([`honest_replay`]), equivalent to the executor's checkpoints.
    fn output(&self, i: usize, r: TaskRef, executor: bool, segmented: bool) -> Hash {
        let (job, task, attempt, round) = r;
        let w = &self.workers[i];
        let forged = match w.behavior {
            Behavior::Liar => executor,
            Behavior::Lazy => !executor,
            Behavior::Honest | Behavior::Vanishing => false,
        };
        if !forged {
            return match (segmented, executor) {
                (true, false) => honest_replay(r),
                _ => honest_output(r),
            };
        }
        let mut h = blake3::Hasher::new();
        h.update(b"made up");
        h.update(&w.address.0);
        h.update(job.as_bytes());
        h.update(&task.to_le_bytes());
        h.update(&attempt.to_le_bytes());
        h.update(&[round]);
        Hash(*h.finalize().as_bytes())
    }

    /// Whether `output`, revealed for task `r` in this or an earlier round, is an honest run's:
    /// what judging on the plaintext finds equivalent (content ids differ by round, as a real
    /// output's do by the key it is sealed under, the result does not).
    fn is_honest(r: TaskRef, output: &Hash) -> bool {
        let (job, task, attempt, round) = r;
        (0..=round).any(|k| {
            let r = (job, task, attempt, k);
            honest_output(r) == *output || honest_replay(r) == *output
        })
    }

    /// A value drawn from the seed for `purpose` of worker `i`'s run of `r`.
    fn drawn_for_run(&self, purpose: &[u8], i: usize, r: TaskRef) -> u64 {
        let (job, task, attempt, round) = r;
        drawn(
            self.cfg.seed,
            &[
                purpose,
                &self.workers[i].address.0,
                job.as_bytes(),
                &task.to_le_bytes(),
                &attempt.to_le_bytes(),
                &[round],
            ],
        )
    }

    fn salt(&self, i: usize, r: TaskRef) -> Hash {
        Hash::of(&self.drawn_for_run(b"salt", i, r).to_le_bytes())
    }

    fn run_ms(&self, i: usize, r: TaskRef) -> u64 {
        1_000 + self.drawn_for_run(b"run", i, r) % self.cfg.max_run_ms.saturating_sub(1_000).max(1)
    }

    fn step(&mut self, view: &JobView, t: &TaskView, now: u64) {
        let r: TaskRef = (view.id, t.index, t.attempt, t.round);
        match t.phase {
            Phase::Bidding => {
                if t.bids.len() as u32 >= self.cfg.bids_per_task {
                    return;
                }
                // Bidders drawn by the seed for this task and attempt, among the living.
                let n = self.workers.len() as u64;
                let first = drawn(
                    self.cfg.seed,
                    &[
                        b"bidders",
                        view.id.as_bytes(),
                        &t.index.to_le_bytes(),
                        &t.attempt.to_le_bytes(),
                    ],
                ) % n;
                let mut wanted = self.cfg.bids_per_task as usize;
                for k in 0..n {
                    let i = ((first + k * 7919) % n) as usize;
                    if wanted == 0 {
                        break;
                    }
                    if !self.alive(i, now) {
                        continue;
                    }
                    wanted -= 1;
                    let address = self.workers[i].address;
                    if t.bids.iter().any(|b| b.provider == address)
                        || !self.due(i, Step::Bid, r, now)
                    {
                        continue;
                    }
                    self.mark(i, Step::Bid, r, now);
                    self.send(
                        i,
                        TxKind::Bid {
                            job: view.id,
                            task: t.index,
                            price: PRICE,
                            cached: false,
                        },
                        now,
                    );
                }
            }
            Phase::Committing => {
                let segmented = view.prescription.segments.is_some();
                for who in t.executor.iter().chain(t.council.iter()) {
                    let Some(&i) = self.by_address.get(who) else {
                        continue;
                    };
                    let executor = t.executor == Some(*who);
                    // An executor of a checkpointed task binds its checkpoints once its
                    // commitment is in a block (the ledger refuses them before).
                    if segmented
                        && executor
                        && t.committed.contains(who)
                        && t.checkpoints.is_empty()
                        && self.due(i, Step::Checkpoints, r, now)
                    {
                        let output = self.output(i, r, executor, segmented);
                        // Its checkpoints, the last its output.
                        let mut checkpoints: Vec<Hash> = (1..SEGMENTS)
                            .map(|k| {
                                let mut h = blake3::Hasher::new();
                                h.update(b"checkpoint");
                                h.update(&k.to_le_bytes());
                                h.update(output.as_bytes());
                                Hash(*h.finalize().as_bytes())
                            })
                            .collect();
                        checkpoints.push(output);
                        self.mark(i, Step::Checkpoints, r, now);
                        self.send(
                            i,
                            TxKind::Checkpoints {
                                job: view.id,
                                task: t.index,
                                attempt: t.attempt,
                                checkpoints,
                                failed: false,
                            },
                            now,
                        );
                        continue;
                    }
                    if t.committed.contains(who)
                        || (executor && self.workers[i].behavior == Behavior::Vanishing)
                        || !self.due(i, Step::Commit, r, now)
                    {
                        continue;
                    }
                    // A member of a checkpointed task replays what is drawn once the
                    // executor has bound its checkpoints.
                    if segmented && !executor && t.replay.is_empty() {
                        continue;
                    }
                    let started = *self.workers[i].started.entry(r).or_insert(now);
                    let lazy = !executor && self.workers[i].behavior == Behavior::Lazy;
                    if !lazy && now < started + self.run_ms(i, r) {
                        continue;
                    }
                    let output = self.output(i, r, executor, segmented);
                    let salt = self.salt(i, r);
                    self.mark(i, Step::Commit, r, now);
                    self.send(
                        i,
                        TxKind::Commit {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            commitment: commitment(&output, &RunEnd::SUCCESS, &salt, who),
                        },
                        now,
                    );
                }
            }
            Phase::Revealing => {
                let executor_revealed = t.revealed.iter().any(|(p, _)| Some(*p) == t.executor);
                for who in t.executor.iter().chain(t.council.iter()) {
                    let Some(&i) = self.by_address.get(who) else {
                        continue;
                    };
                    let executor = t.executor == Some(*who);
                    if !t.committed.contains(who)
                        || t.revealed.iter().any(|(p, _)| p == who)
                        || (!executor && !executor_revealed)
                        || !self.due(i, Step::Reveal, r, now)
                    {
                        continue;
                    }
                    let segmented = view.prescription.segments.is_some();
                    let output = self.output(i, r, executor, segmented);
                    let salt = self.salt(i, r);
                    self.mark(i, Step::Reveal, r, now);
                    self.send(
                        i,
                        TxKind::Reveal {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            output,
                            salt,
                            seconds: self.run_ms(i, r) / 1_000,
                            ended: RunEnd::SUCCESS,
                        },
                        now,
                    );
                }
            }
            Phase::Judging => {
                for (who, mine) in &t.revealed {
                    let Some(&i) = self.by_address.get(who) else {
                        continue;
                    };
                    if t.judged.contains(who) || !self.due(i, Step::Judge, r, now) {
                        continue;
                    }
                    // Honest parties compare results, not ids: an honest run of an earlier
                    // round is equivalent to theirs. A lazy member names everyone.
                    let lazy = self.workers[i].behavior == Behavior::Lazy;
                    let honest = Self::is_honest(r, mine);
                    let equivalent: Vec<Address> = t
                        .revealed
                        .iter()
                        .filter(|(p, out)| {
                            p != who && (lazy || out == mine || (honest && Self::is_honest(r, out)))
                        })
                        .map(|(p, _)| *p)
                        .collect();
                    self.mark(i, Step::Judge, r, now);
                    self.send(
                        i,
                        TxKind::Judge {
                            job: view.id,
                            task: t.index,
                            attempt: t.attempt,
                            round: t.round,
                            equivalent,
                        },
                        now,
                    );
                }
            }
            Phase::Settled | Phase::Failed | Phase::Cancelled => {}
        }
    }
}

/// The content id of an honest council member's replay of checkpointed task `r`: a tree
/// sealed under its round's key, never the executor's checkpoint, equivalent to it.
fn honest_replay(r: TaskRef) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"the replay");
    h.update(honest_output(r).as_bytes());
    Hash(*h.finalize().as_bytes())
}

/// The content id of an honest run of task `r` (job, task, attempt, round): honest runs of
/// one round agree.
fn honest_output(r: TaskRef) -> Hash {
    let (job, task, attempt, round) = r;
    let mut h = blake3::Hasher::new();
    h.update(b"the result");
    h.update(job.as_bytes());
    h.update(&task.to_le_bytes());
    h.update(&attempt.to_le_bytes());
    h.update(&[round]);
    Hash(*h.finalize().as_bytes())
}
