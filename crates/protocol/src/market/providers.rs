//! Providers: `RegisterProvider`, `Heartbeat`, `AnnouncePeer`, and their records (streak,
//! failures, earnings).

use gridwork_types::{Address, Amount, Hardware, Hash, PeerAddr};

use crate::account::Account;
use crate::error::TxError;
use crate::receipt::Event;
use crate::state::State;

use super::*;

impl State {
    /// `RegisterProvider`: an owner's approval, if any, must be for this worker on this
    /// chain, and the stake (this transaction's sender side applied) must reach the minimum.
    pub(super) fn check_register(
        &self,
        sender: Address,
        sender_account: &Account,
        hardware: &Hardware,
        owner: Option<&gridwork_types::OwnerApproval>,
    ) -> Result<(), TxError> {
        hardware
            .check()
            .map_err(|problem| TxError::BadHardware { problem })?;
        if let Some(approval) = owner {
            approval
                .verify(&self.chain_id, &sender)
                .map_err(|_| TxError::BadOwnerApproval { worker: sender })?;
        }
        if sender_account.stake_locked < self.params.min_provider_stake {
            return Err(TxError::StakeTooLow {
                required: self.params.min_provider_stake,
                locked: sender_account.stake_locked,
            });
        }
        Ok(())
    }

    pub(super) fn apply_register(
        &mut self,
        sender: Address,
        hardware: &Hardware,
        owner: Option<&gridwork_types::OwnerApproval>,
        now: u64,
    ) -> Vec<Event> {
        let owner = owner.map_or(sender, |o| o.owner_address());
        let mut hardware = hardware.clone();
        let provider = match self.providers.get(&sender) {
            Some(existing) => {
                // A score the councils' spot checks took is not declared back, and a score
                // does not change under the tasks it would be checked on.
                if existing.score_lost {
                    hardware.cpu_score = 0;
                } else if existing.active > 0 {
                    hardware.cpu_score = existing.hardware.cpu_score;
                }
                // Nor do its GPUs change under its tasks: they decide which build of a job
                // it runs and so which providers check it (a provider that won as one build
                // must not move itself beside a council of its own choosing).
                if existing.active > 0 {
                    hardware.gpus = existing.hardware.gpus.clone();
                }
                Provider {
                    owner,
                    hardware,
                    last_heartbeat_ms: now,
                    ..existing.clone()
                }
            }
            None => Provider {
                owner,
                hardware,
                registered_ms: now,
                last_heartbeat_ms: now,
                streak: 0,
                validated: 0,
                failed: 0,
                slashed: Amount::ZERO,
                earned: Amount::ZERO,
                active: 0,
                peer: None,
                missed: 0,
                score_strikes: 0,
                score_lost: false,
            },
        };
        self.providers.insert(sender, provider);
        vec![Event::ProviderRegistered { provider: sender }]
    }

    /// `Heartbeat` (and the first check of `AnnouncePeer`): only a registered provider.
    pub(super) fn check_provider(&self, sender: Address) -> Result<&Provider, TxError> {
        self.providers
            .get(&sender)
            .ok_or(TxError::NotAProvider { address: sender })
    }

    pub(super) fn apply_heartbeat(&mut self, sender: Address, now: u64) -> Vec<Event> {
        if let Some(mut provider) = self.providers.get(&sender).cloned() {
            provider.last_heartbeat_ms = now;
            self.providers.insert(sender, provider);
        }
        vec![Event::Heartbeat { provider: sender }]
    }

    /// `AnnouncePeer`: a registered provider, and addresses that parse.
    pub(super) fn check_announce(&self, sender: Address, peer: &PeerAddr) -> Result<(), TxError> {
        self.check_provider(sender)?;
        peer.sockets()
            .map_err(|address| TxError::BadPeerAddress { address })?;
        Ok(())
    }

    pub(super) fn apply_announce(&mut self, sender: Address, peer: &PeerAddr) -> Vec<Event> {
        if let Some(mut provider) = self.providers.get(&sender).cloned() {
            provider.peer = (!peer.addrs.is_empty()).then(|| peer.clone());
            self.providers.insert(sender, provider);
        }
        vec![Event::PeerAnnounced { provider: sender }]
    }

    pub(super) fn record_success(&mut self, provider: &Address) {
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.missed = 0;
            p.streak = p.streak.saturating_add(1);
            p.validated += 1;
            self.providers.insert(*provider, p);
        }
    }

    pub(super) fn record_failure(&mut self, job_id: Hash, provider: Address) {
        if let Some(mut p) = self.providers.get(&provider).cloned() {
            p.streak = 0;
            p.failed += 1;
            self.providers.insert(provider, p);
        }
        if let Some(mut job) = self.jobs.get(&job_id).cloned() {
            job.add_failure(provider);
            self.jobs.insert(job_id, job);
        }
    }

    pub(super) fn add_earnings(&mut self, provider: &Address, amount: Amount) {
        if let Some(mut p) = self.providers.get(provider).cloned() {
            p.earned = Amount(p.earned.0.saturating_add(amount.0));
            self.providers.insert(*provider, p);
        }
    }
}
