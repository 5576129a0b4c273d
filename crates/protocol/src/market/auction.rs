//! Auctions and council draws: `Bid`, closing an auction, drawing (and redrawing) the seats.

use gridwork_types::{Address, Amount, Encode, Hash};

use crate::account::Account;
use crate::error::TxError;
use crate::receipt::Event;
use crate::state::State;

use super::*;

/// The providers of one owner that may sit on a council, and the owner's weight.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    /// The locked stake of these providers together.
    stake: u128,
    providers: Vec<Address>,
}

/// How many of a task's best-ranked bids an auction's close tries, in rank order, for one
/// beside which a council can be drawn (each try counts the eligible providers once).
const WINNER_TRIES: usize = 8;

impl Candidate {
    /// An owner with no providers yet.
    pub(super) fn empty() -> Candidate {
        Candidate {
            stake: 0,
            providers: Vec::new(),
        }
    }

    /// Adds one of the owner's providers and its locked stake.
    pub(super) fn add(&mut self, provider: Address, stake: u128) {
        self.stake = self.stake.saturating_add(stake);
        self.providers.push(provider);
    }
}

/// Draws `seats` owners without replacement, each with probability proportional to its
/// stake, and one provider of each (the one whose hash with the seed is lowest). A party gains
/// no seats by spreading its stake over many owners: its chance is its share of the stake.
/// `None` when fewer than `seats` owners are eligible.
pub(super) fn draw_by_stake(
    seed: &[u8],
    mut owners: Vec<Candidate>,
    seats: usize,
) -> Option<Vec<Address>> {
    if owners.len() < seats {
        return None;
    }
    let mut drawn = Vec::with_capacity(seats);
    for seat in 0..seats {
        let total: u128 = owners.iter().map(|c| c.stake).sum();
        let mut h = blake3::Hasher::new();
        h.update(b"gridwork council draw v2");
        h.update(seed);
        h.update(&(seat as u32).to_le_bytes());
        let digest = h.finalize();
        let bytes: [u8; 16] = digest.as_bytes()[..16].try_into().ok()?;
        // Stakes are far below 2^128 / 2^64, so the modulo bias is negligible.
        let mut ticket = u128::from_le_bytes(bytes) % total.max(1);
        let index = owners
            .iter()
            .position(|c| {
                if ticket < c.stake {
                    true
                } else {
                    ticket -= c.stake;
                    false
                }
            })
            .unwrap_or(0);
        let owner = owners.remove(index);
        let provider = owner.providers.iter().min_by_key(|a| {
            let mut h = blake3::Hasher::new();
            h.update(seed);
            h.update(&a.0);
            *h.finalize().as_bytes()
        })?;
        drawn.push(*provider);
    }
    Some(drawn)
}

impl State {
    pub(super) fn check_bid(
        &self,
        sender: Address,
        account: &Account,
        (job_id, index): (Hash, u32),
        (price, cached): (Amount, bool),
        now: u64,
    ) -> Result<(), TxError> {
        let p = &self.params;
        let provider = self
            .providers
            .get(&sender)
            .ok_or(TxError::NotAProvider { address: sender })?;
        if account.stake_locked < p.min_provider_stake {
            return Err(TxError::StakeTooLow {
                required: p.min_provider_stake,
                locked: account.stake_locked,
            });
        }
        let job = self
            .jobs
            .get(&job_id)
            .ok_or(TxError::UnknownJob { job: job_id })?;
        let task = self
            .tasks
            .get(&TaskKey { job: job_id, index })
            .ok_or(TxError::UnknownTask {
                job: job_id,
                task: index,
            })?;
        if task.phase != Phase::Bidding {
            return Err(TxError::WrongPhase {
                job: job_id,
                task: index,
                phase: task.phase,
            });
        }
        if job.requester == sender {
            return Err(TxError::OwnJob);
        }
        let requirements = &job.prescription.instructions.requirements;
        if let Some(reason) = requirements.unmet_by(&provider.hardware).or_else(|| {
            job.prescription
                .program
                .image_for(&provider.hardware, requirements)
                .err()
        }) {
            return Err(TxError::HardwareUnfit { reason });
        }
        if job.failures_of(&sender) >= p.max_job_failures {
            return Err(TxError::Blocklisted { job: job_id });
        }
        let h = &job.prescription.halting;
        let cap = h
            .reserve_price
            .map_or(job.prescription.payment.max_price(), |r| {
                r.min(job.prescription.payment.max_price())
            });
        if price > cap || price.0 == 0 {
            return Err(TxError::BadPrice { price, max: cap });
        }
        if cached && !job.prescription.program.brings_image() {
            return Err(TxError::CachedWithoutImage { job: job_id });
        }
        if task.bids.iter().any(|b| b.provider == sender) {
            return Err(TxError::AlreadyDone {
                what: "bid on this task",
            });
        }
        if provider.status(now, p.heartbeat_timeout_ms) == PoolStatus::Offline {
            return Err(TxError::ProviderOffline {
                address: sender,
                last_heartbeat_ms: provider.last_heartbeat_ms,
            });
        }
        Ok(())
    }

    /// A bid is recorded; the auction closes when the job's first bids are in or its
    /// window has passed.
    pub(super) fn apply_bid(
        &mut self,
        sender: Address,
        (job, task): (Hash, u32),
        (price, cached): (Amount, bool),
        now: u64,
    ) -> Vec<Event> {
        let key = TaskKey { job, index: task };
        let mut events = vec![Event::BidPlaced {
            job,
            task,
            provider: sender,
            price,
        }];
        if let Some(mut t) = self.tasks.get(&key).cloned() {
            t.bids.push(BidRecord {
                provider: sender,
                price,
                cached,
            });
            t.note = TaskNote::Bids {
                count: t.bids.len() as u32,
            };
            let first = self
                .jobs
                .get(&job)
                .map_or(0, |j| j.prescription.halting.first_bids);
            let enough = (first > 0 && t.bids.len() as u32 >= first) || now >= t.deadline_ms;
            self.tasks.insert(key, t);
            if enough {
                events.extend(self.close_auction(key, now));
            }
        }
        events
    }

    pub(super) fn extend_auction(
        &mut self,
        key: TaskKey,
        mut t: Task,
        now: u64,
        note: TaskNote,
    ) -> Vec<Event> {
        let (window, give_up_at) = self.jobs.get(&key.job).map_or((1, 0), |j| {
            (j.prescription.halting.deadline_ms.max(1), j.give_up_at_ms)
        });
        if now >= give_up_at {
            return self.give_up(key, t, note.waiting_reason());
        }
        t.deadline_ms = now.saturating_add(window).min(give_up_at);
        t.note = note;
        self.open_tasks.insert(key, t.deadline_ms);
        self.tasks.insert(key, t);
        Vec::new()
    }

    /// Chooses the executor and draws the council; if no council can be formed the auction
    /// stays open and the note says why. The executor is the best-ranked of the first
    /// [`WINNER_TRIES`] bids beside which a council can be drawn: a cheap bid from a provider
    /// no council can form around (the only one of its build, one owner holding all of it)
    /// cannot hold a task's auction open until its job gives up.
    pub(super) fn close_auction(&mut self, key: TaskKey, now: u64) -> Vec<Event> {
        let (Some(mut t), Some(job)) = (
            self.tasks.get(&key).cloned(),
            self.jobs.get(&key.job).cloned(),
        ) else {
            return Vec::new();
        };
        let weight = |a: &Address| {
            10_000 + 500 * u128::from(self.providers.get(a).map_or(0, |p| p.streak.min(10)))
        };
        let mut ranked: Vec<(usize, &BidRecord)> = t.bids.iter().enumerate().collect();
        ranked.sort_by(|(i, a), (j, b)| {
            let ea = mul_div(a.price.0, 10_000, weight(&a.provider));
            let eb = mul_div(b.price.0, 10_000, weight(&b.provider));
            ea.cmp(&eb).then(a.price.cmp(&b.price)).then(i.cmp(j))
        });
        if ranked.is_empty() {
            return Vec::new();
        }
        let size = usize::from(job.prescription.instructions.council_size);
        let mut best_available = None;
        let mut chosen = None;
        for (_, bid) in ranked.iter().take(WINNER_TRIES) {
            let available = self.council_candidates(&job, bid.provider, now, &[]).len();
            if available >= size {
                chosen = Some((*bid).clone());
                break;
            }
            best_available.get_or_insert(available);
        }
        let Some(winner) = chosen else {
            let note = TaskNote::WaitingForCouncil {
                needed: size as u32,
                available: best_available.unwrap_or(0) as u32,
            };
            return self.extend_auction(key, t, now, note);
        };
        self.adjust_active(&winner.provider, 1);
        t.phase = Phase::Committing;
        t.executor = Some(winner.provider);
        t.price = winner.price;
        t.council = Vec::new();
        t.seats = size as u8;
        t.seats_to_draw = size as u8;
        t.phase_started_ms = now;
        // The council is drawn at the next block, from this block's hash (see `draw_seats`):
        // nobody sending the closing bid, or the block before it, can know it.
        t.deadline_ms = if size > 0 {
            now
        } else {
            now.saturating_add(job.prescription.instructions.task_deadline_ms)
        };
        t.note = if size > 0 {
            TaskNote::CouncilDrawnNext {}
        } else {
            TaskNote::Running {}
        };
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::AuctionClosed {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            executor: winner.provider,
            price: winner.price,
            council: Vec::new(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// Fills a task's empty council seats, at the first block after they were opened (by the
    /// auction's close or by silent members): the seed is the hash of the block that opened
    /// them (this block's parent), which nobody knew when sending the transactions that went
    /// into it. Without enough eligible providers the task reopens (nobody is at fault).
    pub(super) fn draw_seats(&mut self, key: TaskKey, mut t: Task, now: u64) -> Vec<Event> {
        let Some(job) = self.jobs.get(&key.job).cloned() else {
            return Vec::new();
        };
        let Some(executor) = t.executor else {
            return Vec::new();
        };
        let seats = usize::from(t.seats_to_draw);
        let mut seated = t.council.clone();
        seated.extend(t.excluded.iter().copied());
        let candidates = self.council_candidates(&job, executor, now, &seated);
        let mut seed = self.draw_seed(key, t.attempt);
        (t.council.len() as u32).encode(&mut seed);
        let Some(drawn) = draw_by_stake(&seed, candidates, seats) else {
            if t.round > 0 {
                // Enlarging failed: decide with the runs revealed so far.
                self.tasks.insert(key, t.clone());
                return self.unresolved(key, t, &job, now, Undecided::CannotEnlarge {});
            }
            self.tasks.insert(key, t);
            return self.reopen(key, now, Reason::CouncilUnfilled {});
        };
        for member in &drawn {
            self.adjust_active(member, 1);
        }
        t.council.extend(drawn.iter().copied());
        t.seats_to_draw = 0;
        // The whole run (checkpointed: every segment of it), or once the segments to replay
        // are drawn, the replays of a member drawn in place of a silent one.
        let run = match t.replay.len() as u32 {
            0 => job.prescription.whole_run_deadline_ms(),
            replays => job.prescription.run_deadline_ms(replays),
        };
        t.deadline_ms = now.saturating_add(run);
        t.note = TaskNote::Running {};
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CouncilDrawn {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            council: t.council.clone(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    /// The seed of a draw for attempt `attempt` of task `key` at this block: the hash of the
    /// block before it (which nobody knew when sending the transactions that went into it),
    /// the task and the attempt.
    pub(super) fn draw_seed(&self, key: TaskKey, attempt: u32) -> Vec<u8> {
        let mut seed = Vec::with_capacity(80);
        self.head_hash.encode(&mut seed);
        key.encode(&mut seed);
        attempt.encode(&mut seed);
        seed
    }

    /// Who may sit on a council for `job` besides `executor` and the `seated`: online,
    /// staked providers that meet the requirements and are not blocklisted, of owners other
    /// than the executor's, the requester's and the seated members', that run the same image
    /// as the executor (a job with an image per GPU maker is compared build against like
    /// build: a requester whose builds differ cannot make honest runs disagree). Grouped by owner: each
    /// owner's providers in address order, with the owner's stake (the locked stake of those
    /// providers) as its weight in the draw. In owner order.
    pub(super) fn council_candidates(
        &self,
        job: &Job,
        executor: Address,
        now: u64,
        seated: &[Address],
    ) -> Vec<Candidate> {
        let p = &self.params;
        let owner_of = |a: &Address| self.providers.get(a).map_or(*a, |p| p.owner);
        let mut barred: Vec<Address> = seated.iter().map(owner_of).collect();
        barred.extend([owner_of(&executor), job.requester, owner_of(&job.requester)]);
        let mut by_owner: std::collections::BTreeMap<Address, Candidate> = Default::default();
        let requirements = &job.prescription.instructions.requirements;
        // Parsed once per draw, not once per provider.
        let needs = requirements.software_needs();
        let program = &job.prescription.program;
        let image_of = |hardware| program.image_for(hardware, requirements).ok().flatten();
        let executor_image = self
            .providers
            .get(&executor)
            .and_then(|e| image_of(&e.hardware));
        for (a, prov) in self.providers.iter() {
            let stake = self
                .accounts
                .get(a)
                .map_or(Amount::ZERO, |acct| acct.stake_locked);
            let eligible = *a != executor
                && *a != job.requester
                && !seated.contains(a)
                && !barred.contains(&prov.owner)
                && prov.status(now, p.heartbeat_timeout_ms) != PoolStatus::Offline
                && stake >= p.min_provider_stake
                && requirements.met_by(&needs, &prov.hardware)
                && program.image_for(&prov.hardware, requirements).is_ok()
                && image_of(&prov.hardware) == executor_image
                && job.failures_of(a) < p.max_job_failures;
            if eligible {
                by_owner
                    .entry(prov.owner)
                    .or_insert_with(Candidate::empty)
                    .add(*a, stake.0);
            }
        }
        by_owner.into_values().collect()
    }

    /// Opens the seats of council members who missed the commit deadline, to be drawn at
    /// the next block (`draw_seats`, which reopens the task if too few providers are left);
    /// the new members get a full task deadline, and the executor's commitment stands.
    pub(super) fn redraw_silent(
        &mut self,
        key: TaskKey,
        mut t: Task,
        silent: &[Address],
        now: u64,
    ) -> Vec<Event> {
        for member in silent {
            self.adjust_active(member, -1);
        }
        t.council.retain(|c| !silent.contains(c));
        t.commits.retain(|c| !silent.contains(&c.provider));
        t.excluded.extend(silent.iter().copied());
        t.seats_to_draw = silent.len() as u8;
        t.deadline_ms = now;
        t.note = TaskNote::SilentToReplace {
            count: silent.len() as u32,
        };
        self.open_tasks.insert(key, t.deadline_ms);
        let event = Event::CouncilRedrawn {
            job: key.job,
            task: key.index,
            attempt: t.attempt,
            replaced: silent.to_vec(),
            council: t.council.clone(),
        };
        self.tasks.insert(key, t);
        vec![event]
    }

    pub(super) fn adjust_active(&mut self, provider: &Address, delta: i32) {
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.active = p.active.saturating_add_signed(delta);
            self.providers.insert(*provider, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(i: u8, stake: u128) -> Candidate {
        Candidate {
            stake,
            providers: vec![Address([i; 20])],
        }
    }

    /// How often one of `favoured` is drawn for the first seat, over 4,000 seeds.
    fn first_seat_share(owners: &[Candidate], favoured: &[Address]) -> f64 {
        let hits = (0..4_000u32)
            .filter(|i| {
                let drawn = draw_by_stake(&i.to_le_bytes(), owners.to_vec(), 1).unwrap();
                favoured.contains(&drawn[0])
            })
            .count();
        hits as f64 / 4_000.0
    }

    /// A seat costs stake: an owner with half the eligible stake gets the first seat about
    /// half the time, and the same stake spread over nine Sybil owners gets it no more often.
    #[test]
    fn council_seats_follow_stake_and_sybil_owners_gain_nothing() {
        let honest: Vec<Candidate> = (10..19).map(|i| owner(i, 100)).collect();
        let mut one = honest.clone();
        one.push(owner(1, 900));
        let whole = first_seat_share(&one, &[Address([1; 20])]);
        let mut split = honest.clone();
        split.extend((20..29).map(|i| owner(i, 100)));
        let sybils: Vec<Address> = (20..29).map(|i| Address([i; 20])).collect();
        let spread = first_seat_share(&split, &sybils);
        assert!((0.46..0.54).contains(&whole), "{whole}");
        assert!((0.46..0.54).contains(&spread), "{spread}");
        // Without enough owners there is no draw; a full draw seats distinct owners.
        assert!(draw_by_stake(b"s", honest.clone(), 10).is_none());
        let all = draw_by_stake(b"s", honest.clone(), 9).unwrap();
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 9);
    }
}
