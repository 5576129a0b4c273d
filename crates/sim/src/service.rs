//! A service beside the jobs (`SimConfig::service`): the requester publishes a model service
//! with a council of three; every worker subscribes; a simulated gateway (the requester's,
//! with a key of its own) sends a request a second to the council while it is up, counts what
//! each member answered in cumulative receipts, drops members that do not answer (dead or
//! vanishing) and disputes a lying member's answer with every member's signed response; the
//! members settle their receipts on the ledger at half of `max_unsettled`. Once every job is
//! done the gateway stops and the members settle everything they were acknowledged, so the
//! receipts, the escrow and the members' pay can be checked against each other.
//!
//! With `SimConfig::tolerant_service` the service compares answers within a tolerance:
//! honest members' answers differ in their bytes (each signs its own hash) yet agree, so the
//! gateway has the members judge a lying member's answer, each signing which answers it
//! finds equivalent to its own, and sends `JudgeResponses`.

use std::collections::{BTreeMap, VecDeque};

use gridwork_api::ServiceView;
use gridwork_types::{
    request_hash, Address, Amount, Equivalence, Hash, Keypair, Program, Requirements,
    ResponseMethod, ServiceSpec, SignedTx, StreamJudgement, StreamPrice, StreamReceipt,
    StreamResponse, Transaction, TxKind, GRID,
};

use super::{Behavior, Sim, Step, RESEND_AFTER_MS};

/// How often the gateway sends a request while the service is up.
const REQUEST_EVERY_MS: u64 = 1_000;
/// The council's size.
const COUNCIL: u8 = 3;
/// The tolerance of a tolerant service (a relative 1e-5).
const TOLERANCE: Equivalence = Equivalence::NumericTolerance {
    abs_ppb: 0,
    rel_ppb: 10_000,
};

/// The service's price: per response and per byte.
pub(super) const SERVICE_PRICE: StreamPrice = StreamPrice {
    per_response: Amount(GRID / 1_000),
    per_unit: Amount(GRID / 1_000_000),
};

/// The service and its gateway, as the requester runs them.
#[derive(Debug)]
pub(super) struct SimService {
    pub(super) id: Hash,
    gateway: Keypair,
    next_nonce: u64,
    /// The gateway's messages on their way to the node, in order.
    outbox: VecDeque<(u64, SignedTx)>,
    /// Requests sent so far.
    seq: u64,
    next_request_ms: u64,
    /// What each member served and was acknowledged, cumulative: responses, bytes, owed.
    served: BTreeMap<Address, (u64, u64, u128)>,
    /// Drops and disputes sent, and when, so nothing is sent twice while it travels.
    sent: BTreeMap<(u8, Address), u64>,
    /// Every job is done: no more requests, every member settles what it is owed.
    pub(super) draining: bool,
}

/// What the requester publishes: answers compared within a tolerance when `tolerant`.
pub(super) fn spec(gateway: &Keypair, tolerant: bool) -> ServiceSpec {
    ServiceSpec {
        program: Program {
            command: "inputs/serve".into(),
            args: vec![],
            outputs: Vec::new(),
            image: None,
            network: false,
            vendor_images: Vec::new(),
        },
        data: Vec::new(),
        requirements: Requirements::default(),
        method: ResponseMethod::Weighted { weight_bps: 5_000 },
        council_size: COUNCIL,
        max_price: SERVICE_PRICE,
        equivalence: if tolerant {
            TOLERANCE
        } else {
            Equivalence::ExactHash {}
        },
        max_response_ms: 30_000,
        response_ms_per_kib: 100,
        max_downtime_ms: 0,
        max_unsettled: Amount(GRID / 100),
        gateway: gateway.public(),
    }
}

impl SimService {
    /// The service created by transaction `id`, its gateway signing with `gateway`.
    pub(super) fn new(id: Hash, gateway: Keypair, now: u64) -> SimService {
        SimService {
            id,
            gateway,
            next_nonce: 0,
            outbox: VecDeque::new(),
            seq: 0,
            next_request_ms: now,
            served: BTreeMap::new(),
            sent: BTreeMap::new(),
            draining: false,
        }
    }

    /// Responses acknowledged, and what the receipts owe in all.
    pub(super) fn acknowledged(&self) -> (u64, u128) {
        self.served
            .values()
            .fold((0, 0), |(n, owed), s| (n + s.0, owed + s.2))
    }
}

impl Sim {
    /// The service as the ledger holds it.
    fn service_view(&self, id: &Hash) -> Option<ServiceView> {
        let (s, now, fee) = self.node.ledger().service(id)?;
        Some(gridwork_node::api::views::service(*id, s, now, fee))
    }

    /// The service's turn: subscriptions, the gateway's request, drops and disputes, the
    /// members' settlements. Returns whether it still has work (draining with pay owed to a
    /// living member).
    pub(super) fn serve(&mut self, now: u64) -> bool {
        let Some(id) = self.service.as_ref().map(|s| s.id) else {
            return false;
        };
        let Some(view) = self.service_view(&id) else {
            return false;
        };
        let key = (id, 0, 0, 0);
        // Subscription is open at all times: every worker not on it (nor barred) offers.
        if !self.service.as_ref().is_some_and(|s| s.draining) {
            for i in 0..self.workers.len() {
                let a = self.workers[i].address;
                let on = view.subscribers.iter().any(|s| s.provider == a)
                    || view.council.contains(&a)
                    || view.barred.contains(&a);
                if !on && self.due(i, Step::Subscribe, key, now) {
                    self.mark(i, Step::Subscribe, key, now);
                    let price = SERVICE_PRICE;
                    self.send(i, TxKind::Subscribe { service: id, price }, now);
                }
            }
            self.request(&view, now);
        }
        self.settle(&view, now)
    }

    /// The gateway's request, when one is due and the service is up: each member's answer,
    /// a drop for a member that does not answer, a dispute when a member's answer differs.
    fn request(&mut self, view: &ServiceView, now: u64) {
        let Some(service) = self.service.as_mut() else {
            return;
        };
        if view.status != gridwork_api::ServiceStatus::Up || now < service.next_request_ms {
            return;
        }
        service.next_request_ms = now + REQUEST_EVERY_MS;
        service.seq += 1;
        let (id, seq) = (service.id, service.seq);
        let request = request_hash(&id, seq, "POST", "/v1/completions", "", &seq.to_le_bytes());
        let units = 1 + super::drawn(self.cfg.seed, &[b"units", &seq.to_le_bytes()]) % 512;
        let honest = Hash::of(&[id.as_bytes().as_slice(), &seq.to_le_bytes()].concat());
        let tolerant = view.spec.equivalence == TOLERANCE;
        // Each answer, and whether it is the honest one (or, under a tolerance, within it).
        let mut answers = Vec::new();
        let mut agrees = Vec::new();
        let mut silent = Vec::new();
        for member in &view.council {
            let Some(&i) = self.by_address.get(member) else {
                continue;
            };
            let w = &self.workers[i];
            if !self.alive(i, now) || w.behavior == Behavior::Vanishing {
                silent.push(*member);
                continue;
            }
            let response = match w.behavior {
                Behavior::Liar => Hash::of(&[honest.as_bytes().as_slice(), &w.address.0].concat()),
                // Its own last digits: another hash, within the tolerance.
                _ if tolerant => {
                    Hash::of(&[honest.as_bytes().as_slice(), &w.address.0, b"within"].concat())
                }
                _ => honest,
            };
            agrees.push(w.behavior != Behavior::Liar);
            let signed = StreamResponse {
                service: id,
                request,
                response,
                units,
            }
            .sign(&self.chain_id, &w.key);
            answers.push((*member, signed));
        }
        let Some(service) = self.service.as_mut() else {
            return;
        };
        // Only the answers the most members gave are acknowledged (an answer that differs is
        // not served to the user); the others are disputed with every signed response.
        let agreeing = agrees.iter().filter(|a| **a).count();
        let disputed = agreeing < answers.len() && 2 * agreeing > usize::from(COUNCIL);
        for ((member, _), agrees) in answers.iter().zip(&agrees) {
            if *agrees {
                let owed = SERVICE_PRICE.of(units).map_or(0, |a| a.0);
                let s = service.served.entry(*member).or_default();
                *s = (s.0 + 1, s.1 + units, s.2 + owed);
            }
        }
        let mut to_send = Vec::new();
        for member in silent {
            if service
                .sent
                .get(&(0, member))
                .is_none_or(|at| now - at >= RESEND_AFTER_MS)
            {
                service.sent.insert((0, member), now);
                to_send.push(TxKind::DropMember {
                    service: id,
                    member,
                });
            }
        }
        if disputed {
            let liar = answers
                .iter()
                .zip(&agrees)
                .find(|(_, agrees)| !**agrees)
                .map(|((a, _), _)| *a);
            if let Some(liar) = liar {
                if service
                    .sent
                    .get(&(1, liar))
                    .is_none_or(|at| now - at >= RESEND_AFTER_MS)
                {
                    service.sent.insert((1, liar), now);
                    let responses: Vec<_> = answers.iter().map(|(_, s)| s.clone()).collect();
                    to_send.push(if tolerant {
                        // Each member judges the others' answers against its own: the honest
                        // agree among themselves, a liar's differs from everyone's.
                        let judgements = answers
                            .iter()
                            .zip(&agrees)
                            .filter_map(|((member, own), own_agrees)| {
                                let i = *self.by_address.get(member)?;
                                let (mut agree, mut differ) = (Vec::new(), Vec::new());
                                for ((other, theirs), their_agrees) in answers.iter().zip(&agrees) {
                                    if other == member {
                                        continue;
                                    }
                                    let h = theirs.response.response;
                                    if *own_agrees && *their_agrees {
                                        agree.push(h);
                                    } else {
                                        differ.push(h);
                                    }
                                }
                                Some(
                                    StreamJudgement {
                                        service: id,
                                        request,
                                        own: own.response.response,
                                        agree,
                                        differ,
                                    }
                                    .sign(&self.chain_id, &self.workers[i].key),
                                )
                            })
                            .collect();
                        TxKind::JudgeResponses {
                            service: id,
                            responses,
                            judgements,
                        }
                    } else {
                        TxKind::DisputeResponses {
                            service: id,
                            responses,
                        }
                    });
                }
            }
        }
        for kind in to_send {
            self.gateway_send(kind, now);
        }
    }

    /// Each living member with enough owed and unpaid settles its latest receipt (everything,
    /// once draining). Returns whether pay is still owed to a living member while draining.
    fn settle(&mut self, view: &ServiceView, now: u64) -> bool {
        let Some(service) = self.service.as_ref() else {
            return false;
        };
        let (id, draining) = (service.id, service.draining);
        let threshold = if draining {
            1
        } else {
            view.spec.max_unsettled.0 / 2
        };
        let receipts: Vec<(Address, StreamReceipt)> = service
            .served
            .iter()
            .map(|(a, &(responses, units, owed))| {
                (
                    *a,
                    StreamReceipt {
                        service: id,
                        provider: *a,
                        responses,
                        units,
                        owed: Amount(owed),
                    },
                )
            })
            .collect();
        let mut owed_to_living = false;
        for (member, receipt) in receipts {
            let Some(&i) = self.by_address.get(&member) else {
                continue;
            };
            let paid = view
                .members
                .iter()
                .find(|m| m.provider == member)
                .map_or(0, |m| m.paid.0);
            if !self.alive(i, now) || receipt.owed.0.saturating_sub(paid) < threshold {
                continue;
            }
            owed_to_living = true;
            let key = (id, 0, 0, 0);
            if self.due(i, Step::Settle, key, now) {
                self.mark(i, Step::Settle, key, now);
                let signed = receipt.sign(&self.chain_id, &self.service_gateway());
                self.send(
                    i,
                    TxKind::SettleStream {
                        receipts: vec![signed],
                    },
                    now,
                );
            }
        }
        draining && owed_to_living
    }

    fn service_gateway(&self) -> Keypair {
        self.service
            .as_ref()
            .map(|s| s.gateway.clone())
            .expect("a service")
    }

    fn gateway_send(&mut self, kind: TxKind, now: u64) {
        let delay = self.rng.below(self.cfg.max_delay_ms + 1);
        let chain_id = self.chain_id.clone();
        let Some(service) = self.service.as_mut() else {
            return;
        };
        let tx = Transaction {
            from: service.gateway.public(),
            nonce: service.next_nonce,
            fee: Amount::ZERO,
            kind,
        }
        .sign(&chain_id, &service.gateway);
        service.next_nonce += 1;
        let at = service
            .outbox
            .back()
            .map_or(now, |(t, _)| *t)
            .max(now + delay);
        service.outbox.push_back((at, tx));
    }

    /// Hands the node the gateway's messages due by `now`; after a refusal for its nonce (its
    /// earlier ones lost with the mempool at a restart) it starts again from the node's.
    pub(super) fn deliver_gateway(&mut self, now: u64) {
        loop {
            let Some(service) = self.service.as_mut() else {
                return;
            };
            if service.outbox.front().is_none_or(|(t, _)| *t > now) {
                return;
            }
            let Some((_, tx)) = service.outbox.pop_front() else {
                return;
            };
            let refused = self.node.submit(vec![tx]).pop().and_then(Result::err);
            if let Some(gridwork_node::AdmitError::Mempool(gridwork_node::MempoolError::Invalid(
                gridwork_protocol::TxError::NonceFuture { .. }
                | gridwork_protocol::TxError::NonceReplayed { .. },
            ))) = refused
            {
                let next = self
                    .node
                    .ledger()
                    .account(&service.gateway.address())
                    .next_nonce;
                service.outbox.clear();
                service.sent.clear();
                service.next_nonce = next;
            }
        }
    }
}
