//! The API's views, built from the services' domain types: what `gridwork-api` puts on the
//! wire is decided here, not in the ledger.

use gridwork_api::{
    AccountView, BlockView, ChainInfo, Decline, Health, HealthStatus, JobStatus, JobView,
    MemberView, ProviderView, ServiceView, SubscriberView, TaskView, TxState, TxStatus, TxView,
};
use gridwork_protocol::{Event, Receipt};
use gridwork_types::{Address, Hash};
use serde::Serialize;

use crate::{AccountNow, Committed, JobRecord, Node, NodeError, ProviderNow, TxLookup};

/// `GET /v1/accounts/{address}`.
pub fn account(address: Address, now: &AccountNow) -> AccountView {
    AccountView::new(address, &now.account, now.now_ms, now.next_nonce)
}

/// `GET /v1/txs/{hash}`.
pub fn tx(hash: Hash, found: TxLookup) -> TxStatus {
    match found {
        TxLookup::Committed(record) => TxStatus {
            hash,
            // A transaction the market refused is in its block, with only its fee spent.
            status: if record.receipt.failure().is_some() {
                TxState::Failed
            } else {
                TxState::Committed
            },
            tx: TxView::from(&record.tx),
            receipt: Some(record.receipt),
        },
        TxLookup::Pending(signed) => TxStatus {
            hash,
            status: TxState::Pending,
            tx: TxView::from(&signed),
            receipt: None,
        },
    }
}

/// `GET /v1/jobs/{id}`: the job, each task, and the reasons providers gave for not bidding.
pub fn job(id: Hash, record: &JobRecord, declines: Vec<Decline>) -> JobView {
    let job = &record.job;
    let instructions = &job.prescription.instructions;
    let tasks = record
        .tasks
        .iter()
        .enumerate()
        .map(|(index, t)| TaskView {
            index: index as u32,
            phase: t.phase,
            attempt: t.attempt,
            items: instructions.task_items(index as u32),
            bids: t
                .bids
                .iter()
                .map(|b| gridwork_api::BidView {
                    provider: b.provider,
                    price: b.price,
                    cached: b.cached,
                })
                .collect(),
            executor: t.executor,
            price: t.price,
            council: t.council.clone(),
            committed: t.commits.iter().map(|c| c.provider).collect(),
            revealed: t.reveals.iter().map(|r| (r.provider, r.output)).collect(),
            judged: t
                .judgements
                .iter()
                .filter(|j| j.round == t.round)
                .map(|j| j.provider)
                .collect(),
            round: t.round,
            result: t.result,
            ended: t.ended,
            paid: t.paid,
            deadline_ms: t.deadline_ms,
            note: t.note.to_string(),
            checkpoints: t.checkpoints.clone(),
            replay: t.replay.clone(),
            run_failed: t.run_failed,
        })
        .collect();
    let status = if job.cancelled {
        JobStatus::Cancelled
    } else if job.finished {
        JobStatus::Finished
    } else {
        JobStatus::Open
    };
    JobView {
        id,
        requester: job.requester,
        status,
        prescription: job.prescription.clone(),
        escrow: job.escrow,
        spent: job.spent,
        max_task_cost: job.max_task_cost,
        settled: job.settled,
        closed: job.closed,
        tasks,
        declines,
    }
}

/// A job on `node` with the declines its records hold, `None` if there is no such job.
pub fn job_on(node: &Node, id: &Hash) -> Option<JobView> {
    let record = node.ledger().job(id)?;
    Some(job(*id, &record, node.records().declines(id)))
}

/// `GET /v1/services/{id}`: the service as the ledger holds it at block time `now_ms`.
pub fn service(
    id: Hash,
    s: gridwork_protocol::Service,
    now_ms: u64,
    market_fee_bps: u32,
) -> ServiceView {
    let current = match s.status {
        gridwork_protocol::ServiceStatus::Down => now_ms.saturating_sub(s.since_ms),
        _ => 0,
    };
    ServiceView {
        id,
        requester: s.requester,
        status: s.status,
        since_ms: s.since_ms,
        downtime_ms: s.downtime_ms.saturating_add(current),
        reserve: s
            .spec
            .reserve(market_fee_bps)
            .unwrap_or(gridwork_types::Amount(u128::MAX)),
        spec: s.spec,
        escrow: s.escrow,
        paid: s.paid,
        subscribers: s
            .subscribers
            .into_iter()
            .map(|sub| SubscriberView {
                provider: sub.provider,
                price: sub.price,
                since_ms: sub.since_ms,
            })
            .collect(),
        council: s.council,
        members: s
            .pay
            .into_iter()
            .map(|p| MemberView {
                provider: p.provider,
                responses: p.responses,
                units: p.units,
                paid: p.paid,
            })
            .collect(),
        barred: s.barred,
        disputes: s.disputes,
        closes_at_ms: s.closes_at_ms,
        gateway_url: s.gateway_url,
        periods: s
            .periods
            .iter()
            .map(|p| gridwork_api::PeriodView {
                status: p.status,
                from_ms: p.from_ms,
                to_ms: p.to_ms,
            })
            .collect(),
    }
}

/// `GET /v1/providers/{address}`.
pub fn provider(found: ProviderNow) -> ProviderView {
    let p = found.provider;
    ProviderView {
        address: found.address,
        owner: p.owner,
        status: found.status,
        hardware: p.hardware,
        stake_locked: found.stake_locked,
        streak: p.streak,
        validated: p.validated,
        failed: p.failed,
        earned: p.earned,
        slashed: p.slashed,
        active: p.active,
        last_heartbeat_ms: p.last_heartbeat_ms,
        peer: p.peer,
        score_lost: p.score_lost,
    }
}

/// `GET /v1/chain`: the ledger's facts, and the node's key and peer endpoint.
pub fn chain(node: &Node) -> Result<ChainInfo, NodeError> {
    let facts = node.ledger().facts()?;
    Ok(ChainInfo {
        chain_id: facts.chain_id,
        genesis_hash: facts.genesis_hash,
        height: facts.height,
        head_hash: facts.head.hash(),
        head_time_ms: facts.head.timestamp_ms,
        total_supply: facts.total_supply,
        rewards_pool: facts.rewards_pool,
        params: facts.params,
        mempool: facts.mempool,
        node_key: node.keys().public_key(),
        node_peer: node.peer(),
    })
}

/// `/health`.
pub fn health(node: &Node) -> Health {
    let halted = node.ledger().halted();
    Health {
        status: if halted.is_some() {
            HealthStatus::Halted
        } else {
            HealthStatus::Ok
        },
        height: node.ledger().height(),
        reason: halted,
    }
}

/// A committed block as the event stream sends it: a [`gridwork_api::BlockEvent`], written
/// from the ledger's record without copying its transaction hashes, events or receipts (each
/// subscriber writes every block: up to 20,000 hashes a block, for up to 256 subscribers).
#[derive(Serialize)]
pub struct BlockEventRef<'a> {
    block: BlockRef<'a>,
    events: &'a [Event],
    receipts: &'a [Receipt],
}

/// A [`BlockView`] whose transaction hashes are borrowed: its header fields, then `txs`.
#[derive(Serialize)]
struct BlockRef<'a> {
    #[serde(flatten)]
    header: BlockView,
    txs: &'a [Hash],
}

/// The event-stream form of `committed`.
pub fn block_event(committed: &Committed) -> BlockEventRef<'_> {
    BlockEventRef {
        block: BlockRef {
            header: BlockView::new(&committed.header, None),
            txs: &committed.tx_hashes,
        },
        events: &committed.events,
        receipts: &committed.receipts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridwork_api::BlockEvent;
    use gridwork_types::Amount;

    /// The event stream writes a committed block without copying it, and a client reads it
    /// back as the `BlockEvent` the API documents, field for field.
    #[test]
    fn a_committed_block_reads_back_as_the_documented_block_event() {
        let job = Hash::of(b"job");
        let receipt = Receipt {
            tx_hash: Hash::of(b"tx"),
            height: 7,
            index: 0,
            fee: Amount(3),
            events: vec![Event::JobFinished {
                job,
                refund: Amount(5),
            }],
        };
        let committed = Committed {
            header: gridwork_types::Header {
                height: 7,
                parent: Hash::of(b"parent"),
                timestamp_ms: 1_700_000_000_000,
                proposer: Address([1; 20]),
                tx_root: Hash::of(b"txs"),
                state_root: Hash::of(b"state"),
                tx_count: 1,
            },
            tx_hashes: vec![receipt.tx_hash],
            events: vec![Event::JobCancelled {
                job,
                refund: Amount(1),
            }],
            receipts: vec![receipt],
        };
        let json = serde_json::to_string(&block_event(&committed)).unwrap();
        let read: BlockEvent = serde_json::from_str(&json).unwrap();
        let expected = BlockEvent {
            block: BlockView::new(&committed.header, Some(committed.tx_hashes.clone())),
            events: committed.events.clone(),
            receipts: committed.receipts.clone(),
        };
        assert_eq!(read, expected);
        assert_eq!(json, serde_json::to_string(&expected).unwrap());
    }
}
