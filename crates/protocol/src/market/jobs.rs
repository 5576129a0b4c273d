//! Jobs: `SubmitJob` and `CancelJob`.

use gridwork_types::{Address, Amount, Hash, Prescription};

use crate::error::TxError;
use crate::receipt::Event;
use crate::state::State;

use super::*;

impl State {
    /// `SubmitJob`: a valid prescription, and a deposit that covers every task at its
    /// largest cost.
    pub(super) fn check_submit(
        &self,
        prescription: &Prescription,
        deposit: Amount,
    ) -> Result<(), TxError> {
        let p = &self.params;
        validate_prescription(prescription, p)?;
        let tasks = prescription.instructions.task_count();
        let per_task = max_task_cost(prescription, p).ok_or(TxError::Overflow)?;
        let required = per_task
            .0
            .checked_mul(u128::from(tasks))
            .ok_or(TxError::Overflow)?;
        if deposit.0 < required {
            return Err(TxError::DepositTooLow {
                required: Amount(required),
                deposit,
            });
        }
        Ok(())
    }

    pub(super) fn submit_job(
        &mut self,
        requester: Address,
        id: Hash,
        p: &Prescription,
        deposit: Amount,
        now: u64,
    ) -> Vec<Event> {
        let tasks = p.instructions.task_count() as u32;
        let max_task_cost = max_task_cost(p, &self.params).unwrap_or(Amount::ZERO);
        self.jobs.insert(
            id,
            Job {
                requester,
                prescription: p.clone(),
                escrow: deposit,
                max_task_cost,
                tasks,
                settled: 0,
                closed: 0,
                spent: Amount::ZERO,
                cancelled: false,
                finished: false,
                failures: Vec::new(),
                submitted_ms: now,
                give_up_at_ms: now.saturating_add(if p.halting.give_up_ms == 0 {
                    self.params.default_give_up_ms
                } else {
                    p.halting.give_up_ms
                }),
            },
        );
        let deadline = now.saturating_add(p.halting.deadline_ms);
        for index in 0..tasks {
            let key = TaskKey { job: id, index };
            self.tasks.insert(
                key,
                Task {
                    phase: Phase::Bidding,
                    attempt: 0,
                    phase_started_ms: now,
                    deadline_ms: deadline,
                    bids: Vec::new(),
                    executor: None,
                    price: Amount::ZERO,
                    council: Vec::new(),
                    commits: Vec::new(),
                    reveals: Vec::new(),
                    result: None,
                    ended: None,
                    paid: Amount::ZERO,
                    note: TaskNote::OpenForBids {},
                    earlier_outputs: Vec::new(),
                    seats_to_draw: 0,
                    excluded: Vec::new(),
                    seats: p.instructions.council_size,
                    round: 0,
                    judgements: Vec::new(),
                    checkpoints: Vec::new(),
                    replay: Vec::new(),
                    run_failed: false,
                    executor_elapsed_ms: 0,
                },
            );
            self.open_tasks.insert(key, deadline);
        }
        vec![Event::JobSubmitted {
            job: id,
            requester,
            tasks,
            deposit,
        }]
    }

    /// `CancelJob`: by its requester, while it is open.
    pub(super) fn check_cancel(&self, sender: Address, job: Hash) -> Result<(), TxError> {
        let j = self.jobs.get(&job).ok_or(TxError::UnknownJob { job })?;
        if j.requester != sender {
            return Err(TxError::NotRequester { job });
        }
        if j.cancelled || j.finished {
            return Err(TxError::JobClosed { job });
        }
        Ok(())
    }

    pub(super) fn cancel_job(&mut self, id: Hash) -> Vec<Event> {
        let Some(mut job) = self.jobs.get(&id).cloned() else {
            return Vec::new();
        };
        let keys: Vec<(TaskKey, Task)> = self.tasks_of(&id).map(|(k, t)| (*k, t.clone())).collect();
        let mut running = 0u128;
        for (key, mut t) in keys {
            match t.phase {
                Phase::Bidding => {
                    t.phase = Phase::Cancelled;
                    t.note = TaskNote::Cancelled {};
                    job.closed += 1;
                    self.open_tasks.remove(&key);
                    self.tasks.insert(key, t);
                }
                Phase::Committing | Phase::Revealing | Phase::Judging => running += 1,
                Phase::Settled | Phase::Failed | Phase::Cancelled => {}
            }
        }
        job.cancelled = true;
        let keep = Amount(
            job.max_task_cost
                .0
                .saturating_mul(running)
                .min(job.escrow.0),
        );
        let refund = job.escrow.saturating_sub(keep);
        job.escrow = keep;
        self.credit(job.requester, refund);
        let mut events = vec![Event::JobCancelled { job: id, refund }];
        self.jobs.insert(id, job);
        events.extend(self.finish_if_done(id));
        events
    }
}
