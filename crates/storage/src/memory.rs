//! In-memory stores: [`MemoryStore`] for tests and simulation, and [`FailingStore`], a test
//! double that "crashes" after a number of commits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use gridwork_protocol::{ArchivedJob, Event, Receipt, State, StateChanges};
use gridwork_types::{Amount, Block, Hash, Header};

use crate::record::{ChainMeta, TxRecord};
use crate::{verified, Result, StorageError, Store};

/// A store that keeps everything in memory, with the same semantics as the durable one.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    meta: Option<ChainMeta>,
    headers: BTreeMap<u64, (Header, Vec<Hash>, Vec<Event>)>,
    hashes: BTreeMap<Hash, u64>,
    txs: BTreeMap<Hash, TxRecord>,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    rewards_pool: Amount,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Writes to the tables cannot panic half-way, so a poisoned lock holds whole data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tables {
    fn put_block(
        &mut self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
    ) {
        let hashes: Vec<Hash> = receipts.iter().map(|r| r.tx_hash).collect();
        for (tx, receipt) in block.txs.iter().zip(receipts) {
            self.txs.insert(
                receipt.tx_hash,
                TxRecord {
                    tx: tx.clone(),
                    receipt: receipt.clone(),
                },
            );
        }
        self.hashes.insert(block.header.hash(), block.header.height);
        self.headers.insert(
            block.header.height,
            (block.header.clone(), hashes, events.to_vec()),
        );
        for (key, value) in &changes.entries {
            match value {
                Some(v) => self.entries.insert(key.clone(), v.clone()),
                None => self.entries.remove(key),
            };
        }
        self.rewards_pool = changes.rewards_pool;
    }
}

impl Store for MemoryStore {
    fn init(&self, meta: &ChainMeta, genesis: &Block, changes: &StateChanges) -> Result<()> {
        let mut t = self.tables();
        if t.meta.is_some() {
            let head = t.headers.keys().next_back().copied();
            return Err(StorageError::NotNext { head, got: 0 });
        }
        t.meta = Some(meta.clone());
        t.put_block(genesis, &[], &[], changes);
        Ok(())
    }

    fn commit(
        &self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
    ) -> Result<()> {
        let mut t = self.tables();
        let head = t.headers.keys().next_back().copied();
        if head.map(|h| h + 1) != Some(block.header.height) {
            return Err(StorageError::NotNext {
                head,
                got: block.header.height,
            });
        }
        t.put_block(block, receipts, events, changes);
        Ok(())
    }

    fn meta(&self) -> Result<Option<ChainMeta>> {
        Ok(self.tables().meta.clone())
    }

    fn head_height(&self) -> Result<Option<u64>> {
        Ok(self.tables().headers.keys().next_back().copied())
    }

    fn header(&self, height: u64) -> Result<Option<Header>> {
        Ok(self
            .tables()
            .headers
            .get(&height)
            .map(|(h, _, _)| h.clone()))
    }

    fn block_tx_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>> {
        Ok(self
            .tables()
            .headers
            .get(&height)
            .map(|(_, hashes, _)| hashes.clone()))
    }

    fn block_events(&self, height: u64) -> Result<Option<Vec<Event>>> {
        Ok(self
            .tables()
            .headers
            .get(&height)
            .map(|(_, _, e)| e.clone()))
    }

    fn height_of(&self, hash: &Hash) -> Result<Option<u64>> {
        Ok(self.tables().hashes.get(hash).copied())
    }

    fn tx(&self, hash: &Hash) -> Result<Option<TxRecord>> {
        Ok(self.tables().txs.get(hash).cloned())
    }

    fn load_state(&self) -> Result<Option<State>> {
        let t = self.tables();
        let (Some(meta), Some((head, _, _))) = (&t.meta, t.headers.values().next_back()) else {
            return Ok(None);
        };
        let state = State::from_parts(
            meta.chain_id.clone(),
            meta.params.clone(),
            meta.total_supply,
            t.rewards_pool,
            t.entries.iter().map(|(k, v)| (k.clone(), v.clone())),
            head.clone(),
        )
        .map_err(|source| StorageError::Corrupt {
            what: "state entry",
            source,
        })?;
        verified(state).map(Some)
    }

    fn archived_job(&self, id: &Hash) -> Result<Option<ArchivedJob>> {
        let t = self.tables();
        t.entries
            .get(&crate::archive_key(id))
            .map(|b| crate::decode_archived(b))
            .transpose()
    }

    fn archived_service(&self, id: &Hash) -> Result<Option<gridwork_protocol::Service>> {
        let t = self.tables();
        t.entries
            .get(&gridwork_protocol::service_archive_key(id))
            .map(|b| crate::decode_archived_service(b))
            .transpose()
    }
}

/// A store that commits normally `commits_before_crash` times, then fails every commit, as
/// a disk that filled up or a machine that lost power would. The failed commits write
/// nothing. Reads keep working, so a test can check that what was committed is intact.
#[derive(Debug)]
pub struct FailingStore<S> {
    inner: S,
    commits_left: AtomicUsize,
}

impl<S: Store> FailingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, commits_before_crash: usize) -> Self {
        Self {
            inner,
            commits_left: AtomicUsize::new(commits_before_crash),
        }
    }

    /// The wrapped store, as a restarted node would find it.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Store> Store for FailingStore<S> {
    fn init(&self, meta: &ChainMeta, genesis: &Block, changes: &StateChanges) -> Result<()> {
        self.inner.init(meta, genesis, changes)
    }

    fn commit(
        &self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
    ) -> Result<()> {
        let left = self
            .commits_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if left.is_err() {
            return Err(StorageError::Injected("commit after simulated crash"));
        }
        self.inner.commit(block, receipts, events, changes)
    }

    fn meta(&self) -> Result<Option<ChainMeta>> {
        self.inner.meta()
    }

    fn head_height(&self) -> Result<Option<u64>> {
        self.inner.head_height()
    }

    fn header(&self, height: u64) -> Result<Option<Header>> {
        self.inner.header(height)
    }

    fn block_tx_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>> {
        self.inner.block_tx_hashes(height)
    }

    fn block_events(&self, height: u64) -> Result<Option<Vec<Event>>> {
        self.inner.block_events(height)
    }

    fn height_of(&self, hash: &Hash) -> Result<Option<u64>> {
        self.inner.height_of(hash)
    }

    fn tx(&self, hash: &Hash) -> Result<Option<TxRecord>> {
        self.inner.tx(hash)
    }

    fn load_state(&self) -> Result<Option<State>> {
        self.inner.load_state()
    }

    fn archived_job(&self, id: &Hash) -> Result<Option<ArchivedJob>> {
        self.inner.archived_job(id)
    }

    fn archived_service(&self, id: &Hash) -> Result<Option<gridwork_protocol::Service>> {
        self.inner.archived_service(id)
    }
}
