//! What happens at block time without a transaction: auctions that close, seats drawn,
//! commitments, reveals and judgements that are late.

use gridwork_types::Address;

use crate::receipt::Event;
use crate::state::State;

use super::*;

impl State {
    /// Runs the transitions due at block time `now`: auction deadlines, missed commitments,
    /// missed reveals. Called at the start of every block, before its transactions.
    pub(crate) fn run_deadlines(&mut self, now: u64) -> Vec<Event> {
        let due: Vec<(TaskKey, u64)> = self
            .open_tasks
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, d)| (*k, *d))
            .collect();
        // A deadline that passed long before this block passed while the chain was down
        // (the producer makes a block at every deadline): nobody could commit, reveal or
        // bid, so nobody is penalised for it. It moves to a grace period after this block.
        let (stalled, due): (Vec<_>, Vec<_>) = due
            .into_iter()
            .partition(|(_, d)| now - d > self.params.stall_after_ms);
        let mut events = Vec::new();
        for (key, _) in stalled {
            let until = now.saturating_add(self.params.outage_grace_ms);
            self.open_tasks.insert(key, until);
            if let Some(mut t) = self.tasks.get(&key).cloned() {
                t.deadline_ms = until;
                self.tasks.insert(key, t);
            }
            events.push(Event::DeadlineDeferred {
                job: key.job,
                task: key.index,
                until_ms: until,
            });
        }
        let due: Vec<TaskKey> = due.into_iter().map(|(k, _)| k).collect();
        for key in due {
            let Some(t) = self.tasks.get(&key).cloned() else {
                self.open_tasks.remove(&key);
                continue;
            };
            match t.phase {
                Phase::Bidding => {
                    let give_up_at = self.jobs.get(&key.job).map_or(0, |j| j.give_up_at_ms);
                    if now >= give_up_at {
                        let why = if t.bids.is_empty() {
                            Reason::NoBids {}
                        } else {
                            t.note.waiting_reason()
                        };
                        events.extend(self.give_up(key, t, why));
                    } else if t.bids.is_empty() {
                        // No block is needed until someone bids (the first bid closes it) or
                        // the job's bound passes.
                        let mut t = t;
                        t.note = TaskNote::NoBidsYet {};
                        self.open_tasks.insert(key, give_up_at);
                        self.tasks.insert(key, t);
                    } else {
                        events.extend(self.close_auction(key, now));
                    }
                }
                Phase::Committing if t.seats_to_draw > 0 || t.replay_due() => {
                    let mut t = t;
                    if t.replay_due() {
                        events.extend(self.draw_replay(key, t, now));
                        match self.tasks.get(&key) {
                            Some(drawn) => t = drawn.clone(),
                            None => continue,
                        }
                    }
                    if t.seats_to_draw > 0 {
                        events.extend(self.draw_seats(key, t, now));
                    }
                }
                Phase::Committing => {
                    let executor = t.executor.unwrap_or(Address([0; 20]));
                    // The executor of a checkpointed task also binds its checkpoints, or its
                    // council has nothing to replay.
                    let unbound = t.checkpoints.is_empty()
                        && self
                            .jobs
                            .get(&key.job)
                            .is_some_and(|j| j.prescription.segments.is_some());
                    if t.committed(&executor).is_none() || unbound {
                        events.extend(self.penalise_vanished(
                            key,
                            executor,
                            "missed the commit deadline",
                        ));
                        events.extend(self.reopen(key, now, Reason::ExecutorMissedCommit {}));
                    } else {
                        let silent: Vec<Address> = t
                            .council
                            .iter()
                            .filter(|c| t.committed(c).is_none())
                            .copied()
                            .collect();
                        for member in &silent {
                            events.extend(self.penalise_timeout(
                                key,
                                *member,
                                "missed the commit deadline",
                            ));
                        }
                        // A silent seat is never just dropped (an empty council would let the
                        // result through unchecked): it is drawn again, or the task reopens.
                        events.extend(self.redraw_silent(key, t, &silent, now));
                    }
                }
                Phase::Revealing => {
                    let executor = t.executor.unwrap_or(Address([0; 20]));
                    if !t.revealed(&executor) && !t.replay.is_empty() {
                        // It bound its checkpoints and saw which segments are replayed: walking
                        // away costs what being caught would.
                        events.extend(self.slash(
                            key,
                            executor,
                            self.params.slash_bps,
                            "bound its checkpoints, saw the segments drawn for replay and did not reveal",
                        ));
                        self.record_failure(key.job, executor);
                        events.extend(self.reopen(key, now, Reason::ExecutorDidNotReveal {}));
                    } else if !t.revealed(&executor) {
                        events.extend(self.penalise_vanished(
                            key,
                            executor,
                            "missed the reveal deadline",
                        ));
                        events.extend(self.reopen(key, now, Reason::ExecutorDidNotReveal {}));
                    } else {
                        let silent: Vec<Address> = t
                            .council
                            .iter()
                            .filter(|c| !t.revealed(c))
                            .copied()
                            .collect();
                        for member in &silent {
                            events.extend(self.penalise_timeout(
                                key,
                                *member,
                                "missed the reveal deadline",
                            ));
                        }
                        events.extend(self.after_reveals(key, now));
                    }
                }
                Phase::Judging => {
                    let silent: Vec<Address> = t
                        .reveals
                        .iter()
                        .filter(|r| !t.judged(&r.provider))
                        .map(|r| r.provider)
                        .collect();
                    for who in &silent {
                        events.extend(self.penalise_timeout(
                            key,
                            *who,
                            "missed the judging deadline",
                        ));
                    }
                    events.extend(self.tally(key, now));
                }
                Phase::Settled | Phase::Failed | Phase::Cancelled => {
                    self.open_tasks.remove(&key);
                }
            }
        }
        events.extend(self.run_service_deadlines(now));
        events
    }
}
