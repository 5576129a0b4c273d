//! The ledger's queries, in domain types: accounts, transactions, blocks, jobs, providers
//! and the chain's facts.

use gridwork_protocol::{
    Account, Job, Params, PoolStatus, Provider, Service, ServiceStatus, State, Task,
};
use gridwork_storage::{StorageError, TxRecord};
use gridwork_types::{Address, Amount, Hash, Header, SignedTx};

use super::{BlockId, Ledger};
use crate::NodeError;

/// An account as the ledger holds it now.
#[derive(Debug, Clone)]
pub struct AccountNow {
    /// The account (its default when it never held anything).
    pub account: Account,
    /// The nonce to sign the next transaction with (after those pending).
    pub next_nonce: u64,
    /// The block time it was read at (vesting and unbonding are judged at it).
    pub now_ms: u64,
}

/// Where a transaction stands.
#[derive(Debug, Clone)]
pub enum TxLookup {
    /// In a durable block, with its receipt.
    Committed(TxRecord),
    /// Admitted, not yet durable.
    Pending(SignedTx),
}

/// A job and its tasks, open (from the state) or finished (from the archive).
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job.
    pub job: Job,
    /// Its tasks, by index.
    pub tasks: Vec<Task>,
}

/// A provider's record with its pool status and stake, now.
#[derive(Debug, Clone)]
pub struct ProviderNow {
    /// Its address.
    pub address: Address,
    /// Its record.
    pub provider: Provider,
    /// Online, busy or available at the current block time.
    pub status: PoolStatus,
    /// Its stake locked in the vault.
    pub stake_locked: Amount,
}

/// The chain as the ledger holds it: the last durable block, the supply, the parameters.
#[derive(Debug, Clone)]
pub struct ChainFacts {
    /// The chain id.
    pub chain_id: String,
    /// The genesis block's hash.
    pub genesis_hash: Hash,
    /// The last durable block's height.
    pub height: u64,
    /// Its header.
    pub head: Header,
    /// The fixed supply.
    pub total_supply: Amount,
    /// What the rewards pool holds.
    pub rewards_pool: Amount,
    /// The chain's parameters.
    pub params: Params,
    /// Transactions waiting in the mempool.
    pub mempool: usize,
}

impl Ledger {
    /// An account as the ledger holds it now, with the nonce to sign the next transaction
    /// with. While a block's commit is in flight (milliseconds) this already includes it;
    /// transaction and block queries show only durable blocks.
    pub fn account(&self, address: &Address) -> AccountNow {
        let inner = self.lock();
        AccountNow {
            account: inner.state.account(address),
            next_nonce: inner.mempool.next_nonce(&inner.state, address),
            now_ms: self.now_ms().max(inner.state.head().timestamp_ms),
        }
    }

    /// A transaction: committed (with receipt) or pending.
    pub fn tx(&self, hash: &Hash) -> Result<Option<TxLookup>, NodeError> {
        if let Some(record) = self.shared.store.tx(hash)? {
            return Ok(Some(TxLookup::Committed(record)));
        }
        let inner = self.lock();
        let in_flight = inner.in_flight.as_ref().and_then(|(block, hashes)| {
            hashes.iter().position(|h| h == hash).map(|i| &block.txs[i])
        });
        if let Some(tx) = inner.mempool.get(hash).or(in_flight) {
            return Ok(Some(TxLookup::Pending(tx.clone())));
        }
        drop(inner);
        // It may have left the mempool for a block whose commit just finished.
        Ok(self.shared.store.tx(hash)?.map(TxLookup::Committed))
    }

    /// A durable block's height and header, without its transactions.
    pub fn block_header(&self, id: BlockId) -> Result<Option<(u64, Header)>, NodeError> {
        let store = &self.shared.store;
        let height = match id {
            BlockId::Latest => Some(self.durable_head()?),
            BlockId::Height(h) => Some(h),
            BlockId::Hash(hash) => store.height_of(&hash)?,
        };
        let Some(height) = height else {
            return Ok(None);
        };
        Ok(store.header(height)?.map(|header| (height, header)))
    }

    /// The hashes of the transactions of the durable block at `height`.
    pub fn block_tx_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>, NodeError> {
        Ok(self.shared.store.block_tx_hashes(height)?)
    }

    /// Up to `limit` durable block headers, newest first, below `before` (exclusive) if
    /// given.
    pub fn headers(&self, limit: usize, before: Option<u64>) -> Result<Vec<Header>, NodeError> {
        let head = self.durable_head()?;
        let mut out = Vec::new();
        if before == Some(0) {
            return Ok(out);
        }
        let top = before.map_or(head, |b| (b - 1).min(head));
        for height in (0..=top).rev().take(limit) {
            if let Some(header) = self.shared.store.header(height)? {
                out.push(header);
            }
        }
        Ok(out)
    }

    /// A job with its tasks: from the hot state while it is open, from the archive once it
    /// finished (read from disk by id).
    pub fn job(&self, id: &Hash) -> Option<JobRecord> {
        {
            let inner = self.lock();
            let archiving = inner.archiving.iter().find(|(a, _)| a == id);
            match (inner.state.job(id), archiving) {
                (Some(job), _) => {
                    return Some(JobRecord {
                        job: job.clone(),
                        tasks: inner.state.tasks_of(id).map(|(_, t)| t.clone()).collect(),
                    })
                }
                (None, Some((_, archived))) => {
                    return Some(JobRecord {
                        job: archived.job.clone(),
                        tasks: archived.tasks.clone(),
                    })
                }
                (None, None) => {}
            }
        }
        match self.shared.store.archived_job(id) {
            Ok(archived) => archived.map(|a| JobRecord {
                job: a.job,
                tasks: a.tasks,
            }),
            Err(e) => {
                tracing::error!(error = %e, job = %id, "cannot read an archived job");
                None
            }
        }
    }

    /// How many services the hot state holds (those closed for good are archived).
    pub fn hot_services(&self) -> usize {
        self.lock().state.services().count()
    }

    /// How many jobs and tasks the hot state holds (what memory follows): open work, and
    /// jobs that finished in the last block until its end.
    pub fn hot_jobs_and_tasks(&self) -> (usize, usize) {
        let inner = self.lock();
        let jobs: Vec<Hash> = inner.state.jobs().map(|(id, _)| *id).collect();
        let tasks = jobs.iter().map(|id| inner.state.tasks_of(id).count()).sum();
        (jobs.len(), tasks)
    }

    /// Ids of jobs neither finished nor cancelled (what workers scan for work).
    pub fn open_jobs(&self) -> Vec<Hash> {
        self.open_jobs_page(None, usize::MAX).0
    }

    /// Up to `limit` open jobs after `after`, in id order, and where the next page starts.
    pub fn open_jobs_page(&self, after: Option<Hash>, limit: usize) -> (Vec<Hash>, Option<Hash>) {
        let inner = self.lock();
        let ids = inner
            .state
            .jobs()
            .filter(|(id, j)| !j.finished && !j.cancelled && after.is_none_or(|a| **id > a))
            .map(|(id, _)| *id);
        page(ids, limit)
    }

    /// A service, the block time it was read at and the chain's market fee (its reserve
    /// includes it). One closed for good comes from the archive.
    pub fn service(&self, id: &Hash) -> Option<(Service, u64, u32)> {
        let (now, fee) = {
            let inner = self.lock();
            let now = inner.state.head().timestamp_ms;
            let fee = inner.state.params().market_fee_bps;
            let hot = inner.state.service(id).cloned().or_else(|| {
                inner
                    .archiving_services
                    .iter()
                    .find(|(a, _)| a == id)
                    .map(|(_, s)| s.clone())
            });
            if let Some(s) = hot {
                return Some((s, now, fee));
            }
            (now, fee)
        };
        match self.shared.store.archived_service(id) {
            Ok(archived) => archived.map(|s| (s, now, fee)),
            Err(e) => {
                tracing::error!(error = %e, service = %id, "cannot read an archived service");
                None
            }
        }
    }

    /// Up to `limit` services not closed after `after`, in id order, and where the next page
    /// starts.
    pub fn services_page(&self, after: Option<Hash>, limit: usize) -> (Vec<Hash>, Option<Hash>) {
        let inner = self.lock();
        let ids = inner
            .state
            .services()
            .filter(|(id, s)| s.status != ServiceStatus::Closed && after.is_none_or(|a| **id > a))
            .map(|(id, _)| *id);
        page(ids, limit)
    }

    /// A provider's record with its pool status and stake.
    pub fn provider(&self, address: &Address) -> Option<ProviderNow> {
        let inner = self.lock();
        provider_now(&inner.state, address, self.now_ms())
    }

    /// Every provider.
    pub fn providers(&self) -> Vec<ProviderNow> {
        self.providers_page(None, usize::MAX).0
    }

    /// Up to `limit` providers after `after`, in address order, and where the next page
    /// starts.
    pub fn providers_page(
        &self,
        after: Option<Address>,
        limit: usize,
    ) -> (Vec<ProviderNow>, Option<Address>) {
        let inner = self.lock();
        let addresses = inner
            .state
            .providers()
            .map(|(a, _)| *a)
            .filter(|a| after.is_none_or(|after| *a > after));
        let (addresses, next) = page(addresses, limit);
        let now = self.now_ms();
        let found = addresses
            .iter()
            .filter_map(|a| provider_now(&inner.state, a, now))
            .collect();
        (found, next)
    }

    /// The last durable block, the supply, the parameters.
    pub fn facts(&self) -> Result<ChainFacts, NodeError> {
        let height = self.durable_head()?;
        let head = self
            .shared
            .store
            .header(height)?
            .ok_or(StorageError::Empty)?;
        let inner = self.lock();
        Ok(ChainFacts {
            chain_id: self.shared.chain_id.clone(),
            genesis_hash: self.shared.genesis_hash,
            height,
            head,
            total_supply: inner.state.total_supply(),
            rewards_pool: inner.state.rewards_pool(),
            params: inner.state.params().clone(),
            mempool: inner.mempool.len(),
        })
    }
}

fn provider_now(state: &State, address: &Address, now: u64) -> Option<ProviderNow> {
    let provider = state.provider(address)?.clone();
    let now = now.max(state.head().timestamp_ms);
    Some(ProviderNow {
        address: *address,
        status: provider.status(now, state.params().heartbeat_timeout_ms),
        provider,
        stake_locked: state.account(address).stake_locked,
    })
}

/// The first `limit` of `items` in order, and the last of them when more follow (where the
/// next page starts). Keeps only `limit + 1` at a time, whatever the list's length.
fn page<T: Ord + Copy>(items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, Option<T>) {
    let limit = limit.max(1);
    let mut kept: std::collections::BinaryHeap<T> = std::collections::BinaryHeap::new();
    for item in items {
        kept.push(item);
        if kept.len() > limit.saturating_add(1) {
            kept.pop();
        }
    }
    let mut kept = kept.into_sorted_vec();
    let more = kept.len() > limit;
    kept.truncate(limit);
    let next = if more { kept.last().copied() } else { None };
    (kept, next)
}

#[cfg(test)]
mod tests {
    use super::page;

    /// A page is the first `limit` in order, and names its last when more follow.
    #[test]
    fn a_page_is_the_first_entries_in_order_and_names_where_the_next_starts() {
        let items = [9u32, 3, 7, 1, 5];
        assert_eq!(page(items.into_iter(), 2), (vec![1, 3], Some(3)));
        assert_eq!(
            page(items.into_iter().filter(|i| *i > 3), 2),
            (vec![5, 7], Some(7))
        );
        assert_eq!(
            page(items.into_iter().filter(|i| *i > 7), 2),
            (vec![9], None)
        );
        assert_eq!(page(items.into_iter(), 5), (vec![1, 3, 5, 7, 9], None));
        assert_eq!(page(std::iter::empty::<u32>(), 5), (vec![], None));
    }
}
