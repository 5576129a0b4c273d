//! Persistence of blocks, transactions, receipts and ledger state.
//!
//! [`Store`] is the boundary: [`MemoryStore`] for tests and simulation, [`RedbStore`] for
//! nodes. A block, its receipts and the state it produced are committed in one atomic,
//! durable write ("group commit": one fsync per block, however many transactions it holds),
//! so after a crash the store holds exactly the blocks whose commit returned, and the state of
//! the last of them.
//!
//! The ledger state itself lives in memory ([`gridwork_protocol::State`]); the store keeps the
//! accounts a block touched and reloads them all at start-up with [`Store::load_state`].
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

mod memory;
mod record;
mod redb_store;

pub use memory::{FailingStore, MemoryStore};
pub use record::{ChainMeta, TxRecord};
pub use redb_store::RedbStore;

use gridwork_protocol::{
    ArchivedJob, Event, Receipt, Service, State, StateChanges, PREFIX_ARCHIVE,
};
use gridwork_types::{Block, Hash, Header};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Another process has the data directory open.
    #[error("the database {path} is in use by another process (is another node running on this data directory?)")]
    Locked {
        /// The database file.
        path: String,
    },
    /// The underlying database failed.
    #[error("database error: {0}")]
    Database(String),
    /// Bytes in the store do not decode: the store is damaged or from another version.
    #[error("stored {what} is corrupt: {source}")]
    Corrupt {
        /// What was read.
        what: &'static str,
        /// The decoding error.
        source: gridwork_types::DecodeError,
    },
    /// The store has no chain yet.
    #[error("the store holds no chain; initialise it with a genesis first")]
    Empty,
    /// A commit that does not extend the stored head.
    #[error("block {got} does not follow the stored head {head:?}")]
    NotNext {
        /// Stored head height, if any.
        head: Option<u64>,
        /// The block's height.
        got: u64,
    },
    /// The reloaded state does not hash to the head's state root.
    #[error("stored state root {computed} differs from the head block's {expected}: the store is damaged")]
    StateRootMismatch {
        /// In the head header.
        expected: Hash,
        /// Recomputed from the stored accounts.
        computed: Hash,
    },
    /// Injected by a test double.
    #[error("injected failure: {0}")]
    Injected(&'static str),
}

/// The crate's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A durable home for the chain.
///
/// Every method takes `&self`: reads may run while a commit is in progress (redb serves them
/// from the last committed snapshot). Commits must come from one thread at a time, in
/// height order.
pub trait Store: Send + Sync {
    /// Writes the genesis block and state of a new chain. Fails if a chain is already stored.
    fn init(&self, meta: &ChainMeta, genesis: &Block, changes: &StateChanges) -> Result<()>;

    /// Atomically and durably stores the next block, its receipts and the state changes it
    /// made. When this returns `Ok`, the block survives a crash.
    fn commit(
        &self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
    ) -> Result<()>;

    /// The chain's fixed facts, if a chain is stored.
    fn meta(&self) -> Result<Option<ChainMeta>>;

    /// Height of the last committed block.
    fn head_height(&self) -> Result<Option<u64>>;

    /// A header by height.
    fn header(&self, height: u64) -> Result<Option<Header>>;

    /// The transaction hashes of a block, in order.
    fn block_tx_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>>;

    /// What a block triggered before its transactions (deadlines and their consequences).
    fn block_events(&self, height: u64) -> Result<Option<Vec<Event>>>;

    /// The height of the block with this hash.
    fn height_of(&self, hash: &Hash) -> Result<Option<u64>>;

    /// A committed transaction with its receipt.
    fn tx(&self, hash: &Hash) -> Result<Option<TxRecord>>;

    /// All stored accounts and globals, rebuilt into a state at the head, checked against the
    /// head's state root.
    fn load_state(&self) -> Result<Option<State>>;

    /// A finished job with its tasks, from the archive (it left the hot state when it
    /// finished; see [`gridwork_protocol::ArchivedJob`]).
    fn archived_job(&self, id: &Hash) -> Result<Option<ArchivedJob>>;

    /// A service closed for good, from the archive (it left the hot state as it closed; see
    /// [`gridwork_protocol::service_archive_key`]).
    fn archived_service(&self, id: &Hash) -> Result<Option<Service>>;

    /// A whole block with its transactions.
    fn block(&self, height: u64) -> Result<Option<Block>> {
        let Some(header) = self.header(height)? else {
            return Ok(None);
        };
        let hashes = self.block_tx_hashes(height)?.unwrap_or_default();
        let mut txs = Vec::with_capacity(hashes.len());
        for hash in &hashes {
            match self.tx(hash)? {
                Some(record) => txs.push(record.tx),
                None => {
                    return Err(StorageError::Database(format!(
                        "block {height} lists missing tx {hash}"
                    )))
                }
            }
        }
        Ok(Some(Block { header, txs }))
    }
}

/// The state-table key of an archived job.
/// A shared store is a store: a simulation keeps one `MemoryStore` across node restarts.
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn init(&self, meta: &ChainMeta, genesis: &Block, changes: &StateChanges) -> Result<()> {
        (**self).init(meta, genesis, changes)
    }

    fn commit(
        &self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
    ) -> Result<()> {
        (**self).commit(block, receipts, events, changes)
    }

    fn meta(&self) -> Result<Option<ChainMeta>> {
        (**self).meta()
    }

    fn head_height(&self) -> Result<Option<u64>> {
        (**self).head_height()
    }

    fn header(&self, height: u64) -> Result<Option<Header>> {
        (**self).header(height)
    }

    fn block_tx_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>> {
        (**self).block_tx_hashes(height)
    }

    fn block_events(&self, height: u64) -> Result<Option<Vec<Event>>> {
        (**self).block_events(height)
    }

    fn height_of(&self, hash: &Hash) -> Result<Option<u64>> {
        (**self).height_of(hash)
    }

    fn tx(&self, hash: &Hash) -> Result<Option<TxRecord>> {
        (**self).tx(hash)
    }

    fn load_state(&self) -> Result<Option<State>> {
        (**self).load_state()
    }

    fn archived_job(&self, id: &Hash) -> Result<Option<ArchivedJob>> {
        (**self).archived_job(id)
    }

    fn archived_service(&self, id: &Hash) -> Result<Option<Service>> {
        (**self).archived_service(id)
    }

    fn block(&self, height: u64) -> Result<Option<Block>> {
        (**self).block(height)
    }
}

fn archive_key(id: &Hash) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(PREFIX_ARCHIVE);
    key.extend_from_slice(id.as_bytes());
    key
}

fn decode_archived_service(bytes: &[u8]) -> Result<Service> {
    use gridwork_types::Decode;
    Service::from_bytes(bytes).map_err(|source| StorageError::Corrupt {
        what: "archived service",
        source,
    })
}

fn decode_archived(bytes: &[u8]) -> Result<ArchivedJob> {
    use gridwork_types::Decode;
    ArchivedJob::from_bytes(bytes).map_err(|source| StorageError::Corrupt {
        what: "archived job",
        source,
    })
}

/// Checks a reloaded state against its head and returns it.
fn verified(state: State) -> Result<State> {
    let computed = state.root();
    let expected = state.head().state_root;
    if computed != expected {
        return Err(StorageError::StateRootMismatch { expected, computed });
    }
    Ok(state)
}
