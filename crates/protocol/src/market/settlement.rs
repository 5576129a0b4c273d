//! Settlement: paying, slashing, reopening and failing tasks, escrow and the rewards pool.

use gridwork_types::{Address, Amount, Hash, Payment};

use crate::receipt::Event;
use crate::state::State;

use super::*;

/// What the executor of a task of `job` earns at `price` for `seconds` of run time.
fn pay_for(job: &Job, price: Amount, seconds: u64) -> Amount {
    match job.prescription.payment {
        Payment::PerTaskSecond { .. } => Amount(price.0.saturating_mul(u128::from(seconds))),
        Payment::FixedPerTask { .. } => price,
    }
}

/// What one run of a task pays: the one payment formula of the market.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pay {
    /// The run time paid for.
    pub(super) seconds: u64,
    /// The executor's pay.
    pub(super) executor: Amount,
    /// Each council member's share (`council_share_bps` of the executor's pay).
    pub(super) share: Amount,
}

/// The pay of task `t` of `job` when its executor claims `claimed` seconds: the claim, never
/// more than the median of what `checkers` reported for their own runs nor than the deadline,
/// at the winning price.
pub(super) fn task_pay(
    job: &Job,
    t: &Task,
    claimed: u64,
    checkers: &[Address],
    params: &crate::Params,
) -> Pay {
    // The whole run's deadline (checkpointed: a task deadline for each segment it ran).
    let deadline_s = match t.checkpoints.len() as u32 {
        0 => job.prescription.whole_run_deadline_ms(),
        ran => job.prescription.run_deadline_ms(ran),
    }
    .div_ceil(1000);
    // Checkers of a checkpointed task replayed some of the segments its executor ran: their
    // run time stands for that share of the executor's.
    let checked = median_seconds(t, checkers).map(|m| {
        if t.replay.is_empty() {
            return m;
        }
        m.saturating_mul(t.checkpoints.len() as u64)
            .checked_div(t.replay.len() as u64)
            .unwrap_or(u64::MAX)
    });
    let seconds = claimed.min(checked.unwrap_or(u64::MAX)).min(deadline_s);
    let executor = pay_for(job, t.price, seconds);
    let share = Amount(mul_div(
        executor.0,
        u128::from(params.council_share_bps),
        10_000,
    ));
    Pay {
        seconds,
        executor,
        share,
    }
}

impl State {
    /// Decides a task from its reveals and judgements (see [`agreement`]): against a clear
    /// majority the minority is slashed; without one the council is enlarged, and when even
    /// the enlarged council's runs agree with no clear majority the program is judged
    /// nondeterministic.
    pub(super) fn tally(&mut self, key: TaskKey, now: u64) -> Vec<Event> {
        let (Some(t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let Some(executor) = t.executor else {
            return Vec::new();
        };
        let Some(exec_reveal) = t.reveals.iter().find(|r| r.provider == executor).cloned() else {
            return Vec::new();
        };
        let outcome = agreement(&t, executor);
        let (accepted, majority) = match outcome {
            Agreement::Unchecked => (true, Vec::new()),
            Agreement::Accept(majority) => (true, majority),
            Agreement::Reject(majority) => (false, majority),
            Agreement::Split(why) => {
                let largest =
                    largest_council(job.prescription.instructions.council_size, &self.params);
                if t.round < self.params.max_escalations && t.seats < largest {
                    return self.enlarge(key, t, largest, now, why);
                }
                return self.unresolved(key, t, &job, now, why);
            }
        };
        // Everyone who revealed (and, in a judged round, judged: the silent paid for their
        // silence) and is not in the clear majority disagreed with it.
        let judged_round = t.phase == Phase::Judging;
        let minority: Vec<Address> = t
            .reveals
            .iter()
            .map(|r| r.provider)
            .filter(|a| *a != executor && !majority.contains(a))
            .filter(|a| !judged_round || t.judged(a))
            .collect();
        let mut events = Vec::new();
        let p = self.params.clone();
        if accepted {
            // The run time paid for is the executor's claim, but never more than the median
            // of what the agreeing council members measured for their own runs.
            let Pay {
                seconds,
                executor: paid,
                share,
            } = task_pay(&job, &t, exec_reveal.seconds, &majority, &p);
            let council_paid = Amount(share.0 * majority.len() as u128);
            self.pay_from_escrow(key.job, executor, paid);
            for member in &majority {
                self.pay_from_escrow(key.job, *member, share);
                self.record_success(member);
            }
            for member in &minority {
                events.extend(self.slash(
                    key,
                    *member,
                    p.slash_bps,
                    "its output disagreed with the clear majority, which accepted the result",
                ));
                self.record_failure(key.job, *member);
            }
            self.record_success(&executor);
            events.extend(self.check_score(&job, &t, executor, &majority));
            // The market fee goes from escrow to the pool; the reward comes out of the pool,
            // only for work a council member checked, and is smaller than the fee: a party
            // that is requester, executor and council at once pays the pool more than it gets.
            let fee = self.collect_fee(key.job, Amount(paid.0.saturating_add(council_paid.0)));
            let reward = if majority.is_empty() {
                Amount::ZERO
            } else {
                let wanted = mul_div(paid.0, u128::from(p.reward_bps), 10_000);
                Amount(wanted.min(self.rewards_available(now).0))
            };
            self.set_pool(self.rewards_pool.saturating_sub(reward));
            self.credit(executor, reward);
            self.add_earnings(&executor, Amount(paid.0 + reward.0));
            for member in &majority {
                self.add_earnings(member, share);
            }
            for member in t.assigned() {
                self.adjust_active(member, -1);
            }
            let mut t = t;
            t.phase = Phase::Settled;
            t.result = Some(exec_reveal.output);
            t.ended = Some(exec_reveal.ended);
            t.paid = Amount(paid.0.saturating_add(council_paid.0));
            t.note = TaskNote::Settled {};
            self.open_tasks.remove(&key);
            events.push(Event::TaskSettled {
                job: key.job,
                task: key.index,
                attempt: t.attempt,
                executor,
                output: exec_reveal.output,
                ended: exec_reveal.ended,
                paid,
                council_paid,
            });
            events.push(Event::ProofOfCompute {
                job: key.job,
                task: key.index,
                attempt: t.attempt,
                executor,
                council: majority.clone(),
                output: exec_reveal.output,
                seconds,
                cost: Amount(paid.0 + council_paid.0),
                fee,
                reward,
            });
            self.tasks.insert(key, t);
            if let Some(mut j) = self.jobs.get(&key.job).cloned() {
                j.settled += 1;
                self.jobs.insert(key.job, j);
            }
            events.extend(self.finish_if_done(key.job));
        } else {
            let slashed = self.take_stake(&executor, p.slash_bps);
            events.push(Event::Slashed {
                provider: executor,
                amount: slashed,
                job: key.job,
                task: key.index,
                reason: "a clear majority of the council's runs disagreed with its result".into(),
            });
            self.record_failure(key.job, executor);
            // The majority that caught it is paid its usual share out of the slash.
            let share = task_pay(&job, &t, exec_reveal.seconds, &[], &p).share.0;
            let mut left = slashed.0;
            for member in &majority {
                let pay = share.min(left);
                left -= pay;
                self.credit(*member, Amount(pay));
                self.add_earnings(member, Amount(pay));
                self.record_success(member);
            }
            self.set_pool(Amount(self.rewards_pool.0.saturating_add(left)));
            for member in &minority {
                events.extend(self.slash(
                    key,
                    *member,
                    p.slash_bps,
                    "its output agreed with a result the clear majority rejected",
                ));
                self.record_failure(key.job, *member);
            }
            events.extend(self.reopen(key, now, Reason::Rejected {}));
        }
        events
    }

    /// Takes the market fee on `paid` out of a job's escrow into the rewards pool.
    pub(super) fn collect_fee(&mut self, job: Hash, paid: Amount) -> Amount {
        let fee = Amount(mul_div(
            paid.0,
            u128::from(self.params.market_fee_bps),
            10_000,
        ));
        let fee = self.take_from_escrow(job, fee);
        self.set_pool(Amount(self.rewards_pool.0.saturating_add(fee.0)));
        fee
    }

    /// The runs of even the enlarged council agree with no clear majority: the program is
    /// nondeterministic (or its requester's equivalence too strict). Nobody is slashed: an
    /// honest run cannot be told from a lie without a majority to compare with. The requester
    /// pays for what it asked for: the executor's run (its time capped by the median of the
    /// others'), and each council member whose output somebody else confirmed (a member who
    /// did not run the program, whose output nobody confirms, earns nothing). The task fails.
    pub(super) fn judge_nondeterministic(
        &mut self,
        key: TaskKey,
        mut t: Task,
        job: &Job,
        now: u64,
        why: Undecided,
    ) -> Vec<Event> {
        let _ = now;
        let Some(executor) = t.executor else {
            return Vec::new();
        };
        let others: Vec<Address> = t
            .reveals
            .iter()
            .map(|r| r.provider)
            .filter(|a| *a != executor)
            .collect();
        let claimed = t
            .reveals
            .iter()
            .find(|r| r.provider == executor)
            .map_or(0, |r| r.seconds);
        let Pay {
            executor: paid,
            share,
            ..
        } = task_pay(job, &t, claimed, &others, &self.params);
        let confirmed = confirmed_by_someone(&t);
        let mut total = paid.0;
        self.pay_from_escrow(key.job, executor, paid);
        self.add_earnings(&executor, paid);
        for member in others.iter().filter(|m| confirmed.contains(m)) {
            self.pay_from_escrow(key.job, *member, share);
            self.add_earnings(member, share);
            total += share.0;
        }
        self.collect_fee(key.job, Amount(total));
        for member in t.assigned() {
            self.adjust_active(member, -1);
        }
        t.phase = Phase::Failed;
        t.paid = Amount(total);
        t.note = TaskNote::Nondeterministic { why };
        let reason = t.note.to_string();
        self.open_tasks.remove(&key);
        let attempt = t.attempt;
        self.tasks.insert(key, t);
        if let Some(mut j) = self.jobs.get(&key.job).cloned() {
            j.closed += 1;
            self.jobs.insert(key.job, j);
        }
        let mut events = vec![
            Event::RunsDisagreed {
                job: key.job,
                task: key.index,
                attempt,
                paid: Amount(total),
                reason: why.to_string(),
            },
            Event::TaskFailed {
                job: key.job,
                task: key.index,
                reason,
            },
        ];
        events.extend(self.finish_if_done(key.job));
        events
    }

    /// Fails a task the job's bound (`give_up_at_ms`) caught still waiting; the escrow it
    /// held returns with the job's refund.
    pub(super) fn give_up(&mut self, key: TaskKey, mut t: Task, why: Reason) -> Vec<Event> {
        for member in t.assigned() {
            self.adjust_active(member, -1);
        }
        t.phase = Phase::Failed;
        t.note = TaskNote::GaveUp { why };
        let reason = t.note.to_string();
        t.bids.clear();
        self.open_tasks.remove(&key);
        self.tasks.insert(key, t);
        if let Some(mut j) = self.jobs.get(&key.job).cloned() {
            j.closed += 1;
            self.jobs.insert(key.job, j);
        }
        let mut events = vec![Event::TaskFailed {
            job: key.job,
            task: key.index,
            reason,
        }];
        events.extend(self.finish_if_done(key.job));
        events
    }

    /// Sends a task back to auction as a new attempt, or fails it after `max_attempts`.
    pub(super) fn reopen(&mut self, key: TaskKey, now: u64, why: Reason) -> Vec<Event> {
        let (Some(mut t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let assigned: Vec<Address> = t.assigned().copied().collect();
        for member in &assigned {
            self.adjust_active(member, -1);
        }
        t.attempt += 1;
        // Checkpoints bound in this attempt are copies in any later one, as outputs are.
        let bound = std::mem::take(&mut t.checkpoints);
        for output in t.reveals.drain(..).map(|r| r.output).chain(bound) {
            if !t.earlier_outputs.contains(&output) {
                t.earlier_outputs.push(output);
            }
        }
        t.bids.clear();
        t.executor = None;
        t.price = Amount::ZERO;
        t.council.clear();
        t.seats_to_draw = 0;
        t.excluded.clear();
        t.commits.clear();
        t.reveals.clear();
        t.judgements.clear();
        t.replay.clear();
        t.run_failed = false;
        t.executor_elapsed_ms = 0;
        t.seats = job.prescription.instructions.council_size;
        t.round = 0;
        t.phase_started_ms = now;
        if now >= job.give_up_at_ms && !job.cancelled {
            self.tasks.insert(key, t.clone());
            return self.give_up(key, t, why);
        }
        if t.attempt >= self.params.max_attempts || job.cancelled {
            t.phase = Phase::Failed;
            t.note = TaskNote::Failed {
                attempts: t.attempt,
                why,
            };
            self.open_tasks.remove(&key);
            self.tasks.insert(key, t);
            let mut j = job;
            j.closed += 1;
            self.jobs.insert(key.job, j);
            let mut events = vec![Event::TaskFailed {
                job: key.job,
                task: key.index,
                reason: why.to_string(),
            }];
            events.extend(self.finish_if_done(key.job));
            return events;
        }
        t.phase = Phase::Bidding;
        t.deadline_ms = now.saturating_add(job.prescription.halting.deadline_ms);
        t.note = TaskNote::Reopened { why };
        self.open_tasks.insert(key, t.deadline_ms);
        let attempt = t.attempt;
        self.tasks.insert(key, t);
        vec![Event::TaskReopened {
            job: key.job,
            task: key.index,
            attempt,
            reason: why.to_string(),
        }]
    }

    pub(super) fn finish_if_done(&mut self, id: Hash) -> Vec<Event> {
        let Some(mut job) = self.jobs.get(&id).cloned() else {
            return Vec::new();
        };
        if job.finished || job.settled + job.closed < job.tasks {
            return Vec::new();
        }
        let refund = job.escrow;
        job.escrow = Amount::ZERO;
        job.finished = true;
        self.credit(job.requester, refund);
        self.jobs.insert(id, job);
        self.finishing.push(id);
        vec![Event::JobFinished { job: id, refund }]
    }

    pub(super) fn pay_from_escrow(&mut self, job_id: Hash, to: Address, amount: Amount) {
        let amount = self.take_from_escrow(job_id, amount);
        self.credit(to, amount);
    }

    /// Takes up to `amount` out of a job's escrow as spent and returns what was taken; the
    /// caller puts it somewhere. Escrow covers every task at its maximum cost, so this never
    /// clips; clipping keeps conservation if a rule ever changes.
    pub(super) fn take_from_escrow(&mut self, job_id: Hash, amount: Amount) -> Amount {
        let Some(mut job) = self.jobs.get(&job_id).cloned() else {
            return Amount::ZERO;
        };
        let amount = amount.min(job.escrow);
        job.escrow = job.escrow.saturating_sub(amount);
        job.spent = Amount(job.spent.0.saturating_add(amount.0));
        self.jobs.insert(job_id, job);
        amount
    }

    /// What the rewards pool may pay now: all of it but what the emission schedule still
    /// locks.
    pub fn rewards_available(&self, now_ms: u64) -> Amount {
        self.rewards_pool
            .saturating_sub(self.params.emission_locked(now_ms))
    }

    pub(super) fn credit(&mut self, to: Address, amount: Amount) {
        if amount.0 == 0 {
            return;
        }
        let mut account = self.account(&to);
        account.balance = Amount(account.balance.0.saturating_add(amount.0));
        self.accounts.insert(to, account);
    }

    /// Penalises a missed deadline. The first costs `timeout_slash_bps` of stake, each further
    /// miss in a row twice the one before; an executor that won the task by bidding and then
    /// did not commit or reveal its run pays never less than what the work would have paid
    /// ([`State::penalise_vanished`]); drawn council members, who chose nothing, pay the
    /// rate only; no miss takes more than half the stake. Vanishing again and again gets
    /// dearer, and never cheaper than doing the work (`VanishingBidder`).
    pub(super) fn penalise_timeout(
        &mut self,
        key: TaskKey,
        provider: Address,
        reason: &str,
    ) -> Vec<Event> {
        self.penalise_miss(key, provider, reason, false)
    }

    /// An executor that won the task and did not commit or reveal its run.
    pub(super) fn penalise_vanished(
        &mut self,
        key: TaskKey,
        executor: Address,
        reason: &str,
    ) -> Vec<Event> {
        self.penalise_miss(key, executor, reason, true)
    }

    pub(super) fn penalise_miss(
        &mut self,
        key: TaskKey,
        provider: Address,
        reason: &str,
        floor: bool,
    ) -> Vec<Event> {
        let missed = self.providers.get(&provider).map_or(0, |p| p.missed);
        let bps = self
            .params
            .timeout_slash_bps
            .saturating_mul(1 << missed.min(16))
            .min(5_000);
        let account = self.account(&provider);
        let base = account.stake_locked.0 + account.unbonding_total().0;
        let by_rate = mul_div(base, u128::from(bps), 10_000);
        // The floor is for the executor, which chose the task by bidding; drawn council
        // members did not. Never more than half the stake for one miss.
        let work = if floor {
            self.work_value(key, &provider).0
        } else {
            0
        };
        let amount = self.take_stake_amount(&provider, by_rate.max(work).min(base / 2));
        self.set_pool(Amount(self.rewards_pool.0.saturating_add(amount.0)));
        if let Some(mut p) = self.providers.get(&provider).cloned() {
            p.missed = p.missed.saturating_add(1);
            self.providers.insert(provider, p);
        }
        self.record_failure(key.job, provider);
        let reason = if missed > 0 {
            format!("{reason} ({} in a row)", missed + 1)
        } else {
            reason.to_string()
        };
        vec![Event::Slashed {
            provider,
            amount,
            job: key.job,
            task: key.index,
            reason,
        }]
    }

    /// What the executor's part of a task would have paid it: its price for the whole
    /// deadline.
    pub(super) fn work_value(&self, key: TaskKey, _executor: &Address) -> Amount {
        let (Some(t), Some(job)) = (self.tasks.get(&key), self.jobs.get(&key.job)) else {
            return Amount::ZERO;
        };
        task_pay(job, t, u64::MAX, &[], &self.params).executor
    }

    /// The spot check of a score, for a job that requires one (the requester relies on it;
    /// its program is CPU-bound) and no GPUs (whose time the CPU score does not measure). The
    /// accepted run of `executor` took what the ledger saw (auction close to its commitment:
    /// it can only lengthen that); each agreeing member with a score predicts what a machine of
    /// the executor's declared score would take (its own time, scaled by the two scores, and
    /// for a checkpointed run by the segments run over those replayed). Members sat on the
    /// council only with the job's score or more, and nobody changes a score while it works,
    /// so no member's tiny score (nor an executor's dropped one) steers it. An executor slower
    /// than [`SCORE_SLACK`] times the median prediction gets a strike, [`SCORE_STRIKES`] in a
    /// row take its score; one within the slack clears them. The members' times are their own
    /// claims: it takes a majority of the council to move the median.
    pub(super) fn check_score(
        &mut self,
        job: &Job,
        t: &Task,
        executor: Address,
        majority: &[Address],
    ) -> Vec<Event> {
        let claimed = self
            .providers
            .get(&executor)
            .map_or(0, |p| p.hardware.cpu_score);
        let requirements = &job.prescription.instructions.requirements;
        if claimed == 0 || requirements.min_cpu_score == 0 || requirements.min_gpus > 0 {
            return Vec::new();
        }
        let seconds = t.executor_elapsed_ms.div_ceil(1000);
        let (ran, replayed) = match t.replay.len() {
            0 => (1, 1),
            n => (t.checkpoints.len() as u128, n as u128),
        };
        let mut predicted: Vec<u128> = t
            .reveals
            .iter()
            .filter(|r| majority.contains(&r.provider))
            .filter_map(|r| {
                let score = self.providers.get(&r.provider)?.hardware.cpu_score;
                (score > 0).then(|| {
                    u128::from(r.seconds) * u128::from(score) * ran
                        / (u128::from(claimed) * replayed)
                })
            })
            .collect();
        if predicted.is_empty() {
            return Vec::new();
        }
        predicted.sort_unstable();
        let median = predicted[predicted.len() / 2];
        if median < u128::from(SCORE_CHECK_MIN_S) {
            return Vec::new();
        }
        let Some(mut p) = self.providers.get(&executor).cloned() else {
            return Vec::new();
        };
        if u128::from(seconds) <= u128::from(SCORE_SLACK) * median {
            if p.score_strikes > 0 {
                p.score_strikes = 0;
                self.providers.insert(executor, p);
            }
            return Vec::new();
        }
        p.score_strikes = p.score_strikes.saturating_add(1);
        if p.score_strikes < SCORE_STRIKES {
            self.providers.insert(executor, p);
            return Vec::new();
        }
        p.hardware.cpu_score = 0;
        p.score_lost = true;
        self.providers.insert(executor, p);
        vec![Event::ScoreLost {
            provider: executor,
            claimed,
            seconds,
            predicted: u64::try_from(median).unwrap_or(u64::MAX),
        }]
    }

    /// Takes `bps` of a provider's stake into the rewards pool.
    pub(super) fn slash(
        &mut self,
        key: TaskKey,
        provider: Address,
        bps: u32,
        reason: &str,
    ) -> Vec<Event> {
        let amount = self.take_stake(&provider, bps);
        self.set_pool(Amount(self.rewards_pool.0.saturating_add(amount.0)));
        vec![Event::Slashed {
            provider,
            amount,
            job: key.job,
            task: key.index,
            reason: reason.to_string(),
        }]
    }

    /// Removes `bps` of locked plus unbonding stake (locked first, then the newest unbonding
    /// entries) and returns how much; the caller puts it somewhere.
    pub(super) fn take_stake(&mut self, provider: &Address, bps: u32) -> Amount {
        let account = self.account(provider);
        let base = account.stake_locked.0 + account.unbonding_total().0;
        self.take_stake_amount(provider, mul_div(base, u128::from(bps.min(10_000)), 10_000))
    }

    /// Removes up to `want` of locked plus unbonding stake (locked first) and returns how
    /// much.
    pub(super) fn take_stake_amount(&mut self, provider: &Address, want: u128) -> Amount {
        let mut account = self.account(provider);
        let base = account.stake_locked.0 + account.unbonding_total().0;
        let mut want = want.min(base);
        if want == 0 {
            return Amount::ZERO;
        }
        let total = want;
        let from_locked = want.min(account.stake_locked.0);
        account.stake_locked = Amount(account.stake_locked.0 - from_locked);
        want -= from_locked;
        for entry in account.unbonding.iter_mut().rev() {
            let take = want.min(entry.amount.0);
            entry.amount = Amount(entry.amount.0 - take);
            want -= take;
        }
        account.unbonding.retain(|u| u.amount.0 > 0);
        self.accounts.insert(*provider, account);
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.slashed = Amount(p.slashed.0.saturating_add(total));
            self.providers.insert(*provider, p);
        }
        Amount(total)
    }
}
