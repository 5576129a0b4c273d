//! The council at work: `Commit`, `Reveal` and `Judge`, how runs are compared, and what an
//! undecided comparison leads to (a larger council, or the verdicts of `unresolved`).

use gridwork_types::{commitment, Address, Equivalence, Hash, RunEnd};

use crate::error::TxError;
use crate::receipt::Event;
use crate::state::State;

use super::*;

/// How a task's runs compare (see [`agreement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Agreement {
    /// No council: nothing to compare with (accepted, never rewarded).
    Unchecked,
    /// A clear majority agrees with the executor: the council members in it.
    Accept(Vec<Address>),
    /// A clear majority disagrees with the executor: its members.
    Reject(Vec<Address>),
    /// No clear majority either way, and why.
    Split(Undecided),
}

/// The parties who revealed in `t`, and for each a bit set of those whose output agrees with
/// its own: the same content id, or (in a judged round) named as equivalent: by both when
/// both judged, by the one that judged when the other stayed silent. A party's own claims
/// need the other side's confirmation, so a vote is bound to the output its sender committed
/// to before anyone revealed: a party that did not run the program has an output nobody
/// names. Judgements of the latest round judged count.
pub(super) fn agreeing_pairs(t: &Task) -> (Vec<Address>, Vec<u32>) {
    let parties: Vec<Address> = t.reveals.iter().map(|r| r.provider).take(32).collect();
    let round = t.judgements.iter().map(|j| j.round).max();
    let judgement = |a: &Address| {
        t.judgements
            .iter()
            .find(|j| j.provider == *a && Some(j.round) == round)
    };
    let names = |a: &Address, b: &Address| judgement(a).map(|j| j.equivalent.contains(b));
    let mut adjacent = vec![0u32; parties.len()];
    for i in 0..parties.len() {
        for j in 0..parties.len() {
            // Runs that ended differently never agree, whatever their outputs: the end
            // is part of the result the network accepts.
            let ended_alike = t.reveals[i].ended == t.reveals[j].ended;
            let same = t.reveals[i].output == t.reveals[j].output;
            let judged = match (
                names(&parties[i], &parties[j]),
                names(&parties[j], &parties[i]),
            ) {
                (Some(x), Some(y)) => x && y,
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => false,
            };
            if i != j && ended_alike && (same || judged) {
                adjacent[i] |= 1 << j;
            }
        }
    }
    // A checkpointed task: a member whose replay never started could not get the checkpoint
    // it starts from, which only the executor can give. It counts against the executor: with
    // every member that disagrees with it, and with the others that could not start, so an
    // executor cannot split its council by sharing with some members and not others.
    if !t.replay.is_empty() {
        let e = parties.iter().position(|a| Some(*a) == t.executor);
        let member = |i: usize| Some(i) != e;
        let not_started = |i: usize| member(i) && t.reveals[i].ended == (RunEnd::NotStarted {});
        let against = |i: usize, adjacent: &[u32]| match e {
            Some(e) => member(i) && adjacent[i] & (1 << e) == 0,
            None => member(i),
        };
        let before = adjacent.clone();
        for i in (0..parties.len()).filter(|i| not_started(*i)) {
            for j in (0..parties.len()).filter(|j| *j != i) {
                if not_started(j) || against(j, &before) {
                    adjacent[i] |= 1 << j;
                    adjacent[j] |= 1 << i;
                }
            }
        }
    }
    (parties, adjacent)
}

/// Every largest group of mutually agreeing parties (cliques of `adjacent`), as bit sets,
/// with their size. Bron-Kerbosch with pivoting over at most 16 parties.
pub(super) fn largest_groups(adjacent: &[u32]) -> (u32, Vec<u32>) {
    fn expand(r: u32, mut p: u32, mut x: u32, adj: &[u32], best: &mut (u32, Vec<u32>)) {
        if p == 0 && x == 0 {
            let size = r.count_ones();
            if size > best.0 {
                *best = (size, vec![r]);
            } else if size == best.0 {
                best.1.push(r);
            }
            return;
        }
        if r.count_ones() + p.count_ones() < best.0 {
            return;
        }
        let pivot = (p | x).trailing_zeros() as usize;
        let mut candidates = p & !adj[pivot];
        while candidates != 0 {
            let v = candidates.trailing_zeros() as usize;
            candidates &= candidates - 1;
            expand(r | (1 << v), p & adj[v], x & adj[v], adj, best);
            p &= !(1 << v);
            x |= 1 << v;
        }
    }
    let all = if adjacent.is_empty() {
        0
    } else {
        u32::MAX >> (32 - adjacent.len())
    };
    let mut best = (0, Vec::new());
    expand(0, all, 0, adjacent, &mut best);
    best
}

/// The largest groups of runs that all agree with each other, and whether one of them is a
/// clear majority: at least two runs, two thirds of the task's seats (executor and council,
/// silent seats included: silence is not assent), and more than half of the council's seats.
/// When every largest group is on the same side of the executor's result, that side wins;
/// when they differ, or none is that large, the runs are split.
pub(super) fn agreement(t: &Task, executor: Address) -> Agreement {
    if t.seats == 0 && t.council.is_empty() {
        return Agreement::Unchecked;
    }
    let (parties, adjacent) = agreeing_pairs(t);
    let m = parties.len();
    if m > 16 {
        return Agreement::Split(Undecided::TooManyRuns { runs: m as u32 });
    }
    let (best, groups) = largest_groups(&adjacent);
    let seats = usize::from(t.seats).max(t.council.len());
    let n = 1 + seats;
    let k = best as usize;
    let silent = n.saturating_sub(m);
    let e = parties
        .iter()
        .position(|a| *a == executor)
        .unwrap_or(usize::MAX);
    let with_executor = groups
        .iter()
        .filter(|g| e < m && *g & (1 << e) != 0)
        .count();
    let members_in_group = if with_executor > 0 { k - 1 } else { k };
    if k >= 2 && 3 * k >= 2 * n && 2 * members_in_group > seats {
        let members = |gs: &[u32]| -> Vec<Address> {
            let union = gs.iter().fold(0u32, |u, g| u | g);
            (0..m)
                .filter(|i| union & (1 << i) != 0 && *i != e)
                .map(|i| parties[i])
                .collect()
        };
        if with_executor == groups.len() {
            return Agreement::Accept(members(&groups));
        }
        if with_executor == 0 {
            return Agreement::Reject(members(&groups));
        }
        return Agreement::Split(Undecided::TwoGroups {
            group: k as u32,
            seats: n as u32,
        });
    }
    Agreement::Split(Undecided::NoClearMajority {
        largest: k as u32,
        seats: n as u32,
        silent: silent as u32,
    })
}

/// The parties whose output at least one other party's output agrees with.
pub(super) fn confirmed_by_someone(t: &Task) -> Vec<Address> {
    let (parties, adjacent) = agreeing_pairs(t);
    parties
        .into_iter()
        .zip(adjacent)
        .filter(|(_, a)| *a != 0)
        .map(|(p, _)| p)
        .collect()
}

/// The median run time reported by `who` in `t`, if any of them revealed.
pub(super) fn median_seconds(t: &Task, who: &[Address]) -> Option<u64> {
    let mut theirs: Vec<u64> = t
        .reveals
        .iter()
        .filter(|r| who.contains(&r.provider))
        .map(|r| r.seconds)
        .collect();
    theirs.sort_unstable();
    theirs.get(theirs.len() / 2).copied()
}

impl State {
    pub(super) fn live_task(
        &self,
        job: Hash,
        index: u32,
        attempt: u32,
        phase: Phase,
    ) -> Result<&Task, TxError> {
        let t = self
            .tasks
            .get(&TaskKey { job, index })
            .ok_or(TxError::UnknownTask { job, task: index })?;
        if t.attempt != attempt {
            return Err(TxError::WrongAttempt {
                current: t.attempt,
                got: attempt,
            });
        }
        if t.phase != phase {
            return Err(TxError::WrongPhase {
                job,
                task: index,
                phase: t.phase,
            });
        }
        Ok(t)
    }

    /// `Commit`: by someone assigned to the task who has not committed yet.
    pub(super) fn check_commit(
        &self,
        sender: Address,
        job: Hash,
        task: u32,
        attempt: u32,
    ) -> Result<(), TxError> {
        let t = self.live_task(job, task, attempt, Phase::Committing)?;
        if !t.assigned().any(|a| *a == sender) {
            return Err(TxError::NotAssigned { job, task });
        }
        if t.committed(&sender).is_some() {
            return Err(TxError::AlreadyDone { what: "committed" });
        }
        let segmented = self
            .jobs
            .get(&job)
            .is_some_and(|j| j.prescription.segments.is_some());
        if segmented && t.replay.is_empty() && t.executor != Some(sender) {
            return Err(TxError::ReplayNotDrawn { job, task });
        }
        Ok(())
    }

    /// A commitment is recorded; with every seat's in, reveals open.
    pub(super) fn apply_commit(
        &mut self,
        sender: Address,
        job: Hash,
        task: u32,
        commitment: Hash,
        now: u64,
    ) -> Vec<Event> {
        let key = TaskKey { job, index: task };
        let Some(mut t) = self.tasks.get(&key).cloned() else {
            return Vec::new();
        };
        t.commits.push(CommitRecord {
            provider: sender,
            commitment,
        });
        if t.executor == Some(sender) {
            // How long its run took as the ledger saw it: from the auction's close to this
            // commitment (an upper bound it can only lengthen, by committing late).
            t.executor_elapsed_ms = now.saturating_sub(t.phase_started_ms);
        }
        let events = vec![Event::Committed {
            job,
            task,
            attempt: t.attempt,
            provider: sender,
        }];
        let all = t.seats_to_draw == 0 && t.assigned().all(|a| t.committed(a).is_some());
        if all {
            t.phase = Phase::Revealing;
            t.phase_started_ms = now;
            t.deadline_ms = now.saturating_add(self.params.reveal_window_ms);
            t.note = TaskNote::Revealing {};
            self.open_tasks.insert(key, t.deadline_ms);
        }
        self.tasks.insert(key, t);
        events
    }

    /// `Reveal`: opens the sender's own commitment, after the executor's, with an output no
    /// earlier round or attempt revealed.
    pub(super) fn check_reveal(
        &self,
        sender: Address,
        key: TaskKey,
        attempt: u32,
        output: &Hash,
        ended: &RunEnd,
        salt: &Hash,
    ) -> Result<(), TxError> {
        let TaskKey { job, index: task } = key;
        let t = self.live_task(job, task, attempt, Phase::Revealing)?;
        let c = t
            .committed(&sender)
            .ok_or(TxError::NotAssigned { job, task })?;
        if t.revealed(&sender) {
            return Err(TxError::AlreadyDone { what: "revealed" });
        }
        if c.commitment != commitment(output, ended, salt, &sender) {
            return Err(TxError::RevealMismatch);
        }
        let earlier_round = t
            .reveals
            .iter()
            .any(|r| r.round < t.round && r.output == *output);
        if earlier_round || t.earlier_outputs.contains(output) {
            return Err(TxError::CopiedResult { output: *output });
        }
        let executor = t.executor.unwrap_or(sender);
        if sender != executor && !t.revealed(&executor) {
            return Err(TxError::ExecutorNotRevealed);
        }
        // A checkpointed task: the executor's output is the last checkpoint it bound, and a
        // member's replay is its own tree, never one of the executor's checkpoints.
        if let Some(last) = t.checkpoints.last() {
            if sender == executor && output != last {
                return Err(TxError::BadCheckpoints {
                    reason: format!(
                        "the executor's output {output} is not its last checkpoint {last}; a checkpointed run's result is where its last segment ended"
                    ),
                });
            }
            if sender == executor && t.run_failed == ended.is_success() {
                return Err(TxError::BadCheckpoints {
                    reason: format!(
                        "the run ended `{ended}`, but its checkpoints were bound as {}; a run bound whole succeeded, one bound as failed did not",
                        if t.run_failed { "a failed run's" } else { "a whole run's" }
                    ),
                });
            }
            if sender != executor && t.checkpoints.contains(output) {
                return Err(TxError::CopiedResult { output: *output });
            }
        }
        Ok(())
    }

    /// A reveal is recorded; with every commitment opened, the runs are compared.
    pub(super) fn apply_reveal(
        &mut self,
        sender: Address,
        key: TaskKey,
        output: Hash,
        ended: RunEnd,
        seconds: u64,
        now: u64,
    ) -> Vec<Event> {
        let TaskKey { job, index: task } = key;
        let Some(mut t) = self.tasks.get(&key).cloned() else {
            return Vec::new();
        };
        t.reveals.push(RevealRecord {
            provider: sender,
            output,
            seconds,
            ended,
            round: t.round,
        });
        let mut events = vec![Event::Revealed {
            job,
            task,
            attempt: t.attempt,
            provider: sender,
            output,
        }];
        let done = t.commits.iter().all(|c| t.revealed(&c.provider));
        self.tasks.insert(key, t);
        if done {
            events.extend(self.after_reveals(key, now));
        }
        events
    }

    /// `Judge`: by a party that revealed in this round, once, naming only others who
    /// revealed, each once.
    pub(super) fn check_judge(
        &self,
        sender: Address,
        job: Hash,
        task: u32,
        attempt: u32,
        round: u8,
        equivalent: &[Address],
    ) -> Result<(), TxError> {
        let t = self.live_task(job, task, attempt, Phase::Judging)?;
        if round != t.round {
            return Err(TxError::BadJudgement {
                reason: format!("it is for round {round}; the task is in round {}", t.round),
            });
        }
        if !t.revealed(&sender) {
            return Err(TxError::NotAssigned { job, task });
        }
        if t.judged(&sender) {
            return Err(TxError::AlreadyDone { what: "judged" });
        }
        for (i, who) in equivalent.iter().enumerate() {
            let reason = if *who == sender {
                Some(format!("names the sender {who}; name the others only"))
            } else if !t.revealed(who) {
                Some(format!(
                    "names {who}, which revealed no output in this attempt"
                ))
            } else if equivalent[..i].contains(who) {
                Some(format!("names {who} twice"))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(TxError::BadJudgement { reason });
            }
        }
        Ok(())
    }

    /// A judgement is recorded; with every revealed party's in, the task is tallied.
    pub(super) fn apply_judge(
        &mut self,
        sender: Address,
        job: Hash,
        task: u32,
        equivalent: &[Address],
        now: u64,
    ) -> Vec<Event> {
        let key = TaskKey { job, index: task };
        let Some(mut t) = self.tasks.get(&key).cloned() else {
            return Vec::new();
        };
        t.judgements.push(JudgeRecord {
            provider: sender,
            equivalent: equivalent.to_vec(),
            round: t.round,
        });
        let mut events = vec![Event::Judged {
            job,
            task,
            attempt: t.attempt,
            provider: sender,
            equivalent: equivalent.to_vec(),
        }];
        let done = t.reveals.iter().all(|r| t.judged(&r.provider));
        self.tasks.insert(key, t);
        if done {
            events.extend(self.tally(key, now));
        }
        events
    }

    /// After the reveals (all in, or the window closed): under exact-hash equivalence in the
    /// first round the revealed ids are the votes and the task is decided at once; otherwise
    /// the parties judge each other's outputs first.
    pub(super) fn after_reveals(&mut self, key: TaskKey, now: u64) -> Vec<Event> {
        let (Some(mut t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        // A replay's tree is never the executor's output: checkpointed runs are always judged.
        let by_id = matches!(job.prescription.equivalence, Equivalence::ExactHash {})
            && t.round == 0
            && job.prescription.segments.is_none();
        if t.council.is_empty() || by_id || t.reveals.len() < 2 {
            return self.tally(key, now);
        }
        t.phase = Phase::Judging;
        t.phase_started_ms = now;
        t.deadline_ms = now.saturating_add(self.params.judge_window_ms);
        t.note = TaskNote::Judging {};
        self.open_tasks.insert(key, t.deadline_ms);
        self.tasks.insert(key, t);
        Vec::new()
    }

    /// Adds `escalation_seats` council seats (up to `largest`), drawn at the next block; the
    /// reveals so far stand. Members who never revealed lose their seats, drawn again too.
    /// The new members' outputs are keyed by the new round, so an id revealed earlier is worth
    /// nothing to them, and everyone judges everyone's output again.
    pub(super) fn enlarge(
        &mut self,
        key: TaskKey,
        mut t: Task,
        largest: u8,
        now: u64,
        why: Undecided,
    ) -> Vec<Event> {
        let silent: Vec<Address> = t
            .council
            .iter()
            .filter(|c| !t.revealed(c))
            .copied()
            .collect();
        for member in &silent {
            self.adjust_active(member, -1);
        }
        t.council.retain(|c| !silent.contains(c));
        t.commits.retain(|c| !silent.contains(&c.provider));
        t.excluded.extend(silent.iter().copied());
        t.round += 1;
        t.seats = t
            .seats
            .saturating_add(self.params.escalation_seats)
            .min(largest);
        t.seats_to_draw = t.seats - t.council.len() as u8;
        t.phase = Phase::Committing;
        t.phase_started_ms = now;
        t.deadline_ms = now;
        t.note = TaskNote::Enlarged {
            seats: t.seats,
            why,
        };
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CouncilEnlarged {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            seats: t.seats,
            reason: why.to_string(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// No clear majority, and the council cannot grow further. Which it is decides what
    /// happens:
    /// - nobody's run could be compared with the executor's (all silent): the task reopens,
    ///   nobody is paid;
    /// - runs that agree with each other disagree with the executor's: the result is
    ///   contested, not nondeterministic. The task reopens unpaid and the executor gets a
    ///   failure on the job (a liar cannot buy the "nondeterministic" verdict with one
    ///   colluding member);
    /// - the executor's run agrees with most of the runs that were revealed, and only silent
    ///   seats kept that short: the task reopens (the silent paid already);
    /// - otherwise the runs agree with nobody: the program is judged nondeterministic.
    pub(super) fn unresolved(
        &mut self,
        key: TaskKey,
        t: Task,
        job: &Job,
        now: u64,
        why: Undecided,
    ) -> Vec<Event> {
        let Some(executor) = t.executor else {
            return self.reopen(key, now, Reason::NothingCompared { why });
        };
        let (parties, adjacent) = agreeing_pairs(&t);
        let m = parties.len();
        let e = parties.iter().position(|a| *a == executor);
        if m <= 1 || e.is_none() {
            return self.reopen(key, now, Reason::NothingCompared { why });
        }
        let e = e.unwrap_or(0);
        let with_e = adjacent[e] | (1 << e);
        // Two runs agree with each other, and not both with the executor's.
        let contested = (0..m).any(|i| {
            i != e
                && (0..m).any(|j| {
                    j != e
                        && adjacent[i] & (1 << j) != 0
                        && (with_e & (1 << i) == 0 || with_e & (1 << j) == 0)
                })
        });
        if contested {
            self.record_failure(key.job, executor);
            return self.reopen(key, now, Reason::AgainstExecutor { why });
        }
        // The largest group with the executor: a largest group among it and its neighbours.
        let around: Vec<u32> = (0..m)
            .map(|i| {
                if with_e & (1 << i) != 0 {
                    adjacent[i] & with_e
                } else {
                    0
                }
            })
            .collect();
        let with_executor = largest_groups(&around).0.max(1) as usize;
        if with_executor >= 2 && 3 * with_executor >= 2 * m {
            return self.reopen(key, now, Reason::SilenceKeptShort { why });
        }
        self.judge_nondeterministic(key, t, job, now, why)
    }
}
