//! The durable store on redb.
//!
//! Tables (keys and values are canonical encodings, see `docs/encoding.md`):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | `chain` (ChainMeta), `rewards_pool` (u128) |
//! | `blocks` | height (u64) | header and transaction hashes |
//! | `block_hashes` | block hash | height |
//! | `txs` | transaction hash | signed transaction and receipt |
//! | `state` | map prefix and key | entry of the hot state (every prefix but 6), or an archived job (6) |
//!
//! Each commit is one redb write transaction with `Durability::Immediate`: it is on disk,
//! fsynced, when `commit` returns, and all of it or none of it survives a crash.

use std::path::Path;

use gridwork_protocol::{ArchivedJob, Event, Receipt, State, StateChanges};
use gridwork_types::{Amount, Block, Decode, Encode, Hash, Header};
use redb::{Database, ReadableTable, TableDefinition};

use crate::record::{ChainMeta, StoredBlock, TxRecord};
use crate::{verified, Result, StorageError, Store};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const BLOCK_HASHES: TableDefinition<[u8; 32], u64> = TableDefinition::new("block_hashes");
const TXS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("txs");
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");

/// A store in one redb file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

fn db_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Database(e.to_string())
}

fn corrupt(what: &'static str) -> impl Fn(gridwork_types::DecodeError) -> StorageError {
    move |source| StorageError::Corrupt { what, source }
}

impl RedbStore {
    /// Opens or creates the database at `path`. Fails with [`StorageError::Locked`] if another
    /// process has it open.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked {
                path: path.display().to_string(),
            },
            other => db_err(other),
        })?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            tx.open_table(META).map_err(db_err)?;
            tx.open_table(BLOCKS).map_err(db_err)?;
            tx.open_table(BLOCK_HASHES).map_err(db_err)?;
            tx.open_table(TXS).map_err(db_err)?;
            tx.open_table(STATE).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    fn write(
        &self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
        meta: Option<&ChainMeta>,
    ) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta_table = tx.open_table(META).map_err(db_err)?;
            let mut blocks = tx.open_table(BLOCKS).map_err(db_err)?;
            let head = blocks.last().map_err(db_err)?.map(|(k, _)| k.value());
            match meta {
                Some(meta) => {
                    if head.is_some() || meta_table.get("chain").map_err(db_err)?.is_some() {
                        return Err(StorageError::NotNext { head, got: 0 });
                    }
                    meta_table
                        .insert("chain", meta.to_bytes().as_slice())
                        .map_err(db_err)?;
                }
                None => {
                    if head.map(|h| h + 1) != Some(block.header.height) {
                        return Err(StorageError::NotNext {
                            head,
                            got: block.header.height,
                        });
                    }
                }
            }
            meta_table
                .insert("rewards_pool", changes.rewards_pool.to_bytes().as_slice())
                .map_err(db_err)?;

            let mut txs = tx.open_table(TXS).map_err(db_err)?;
            let mut bytes = Vec::with_capacity(256);
            for (signed, receipt) in block.txs.iter().zip(receipts) {
                bytes.clear();
                signed.encode(&mut bytes);
                receipt.encode(&mut bytes);
                txs.insert(receipt.tx_hash.0, bytes.as_slice())
                    .map_err(db_err)?;
            }
            let stored = StoredBlock {
                header: block.header.clone(),
                tx_hashes: receipts.iter().map(|r| r.tx_hash).collect(),
                events: events.to_vec(),
            };
            blocks
                .insert(block.header.height, stored.to_bytes().as_slice())
                .map_err(db_err)?;
            let mut hashes = tx.open_table(BLOCK_HASHES).map_err(db_err)?;
            hashes
                .insert(block.header.hash().0, block.header.height)
                .map_err(db_err)?;

            let mut state = tx.open_table(STATE).map_err(db_err)?;
            for (key, value) in &changes.entries {
                match value {
                    Some(v) => state.insert(key.as_slice(), v.as_slice()).map(drop),
                    None => state.remove(key.as_slice()).map(drop),
                }
                .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    fn stored_block(&self, height: u64) -> Result<Option<StoredBlock>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let blocks = tx.open_table(BLOCKS).map_err(db_err)?;
        let Some(bytes) = blocks.get(height).map_err(db_err)? else {
            return Ok(None);
        };
        StoredBlock::from_bytes(bytes.value())
            .map(Some)
            .map_err(corrupt("block"))
    }
}

impl Store for RedbStore {
    fn init(&self, meta: &ChainMeta, genesis: &Block, changes: &StateChanges) -> Result<()> {
        self.write(genesis, &[], &[], changes, Some(meta))
    }

    fn commit(
        &self,
        block: &Block,
        receipts: &[Receipt],
        events: &[Event],
        changes: &StateChanges,
    ) -> Result<()> {
        self.write(block, receipts, events, changes, None)
    }

    fn meta(&self) -> Result<Option<ChainMeta>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(META).map_err(db_err)?;
        let Some(bytes) = table.get("chain").map_err(db_err)? else {
            return Ok(None);
        };
        ChainMeta::from_bytes(bytes.value())
            .map(Some)
            .map_err(corrupt("chain meta"))
    }

    fn head_height(&self) -> Result<Option<u64>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let blocks = tx.open_table(BLOCKS).map_err(db_err)?;
        let last = blocks.last().map_err(db_err)?;
        Ok(last.map(|(k, _)| k.value()))
    }

    fn header(&self, height: u64) -> Result<Option<Header>> {
        Ok(self.stored_block(height)?.map(|b| b.header))
    }

    fn block_tx_hashes(&self, height: u64) -> Result<Option<Vec<Hash>>> {
        Ok(self.stored_block(height)?.map(|b| b.tx_hashes))
    }

    fn block_events(&self, height: u64) -> Result<Option<Vec<Event>>> {
        Ok(self.stored_block(height)?.map(|b| b.events))
    }

    fn height_of(&self, hash: &Hash) -> Result<Option<u64>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(BLOCK_HASHES).map_err(db_err)?;
        let height = table.get(hash.0).map_err(db_err)?;
        Ok(height.map(|v| v.value()))
    }

    fn tx(&self, hash: &Hash) -> Result<Option<TxRecord>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(TXS).map_err(db_err)?;
        let Some(bytes) = table.get(hash.0).map_err(db_err)? else {
            return Ok(None);
        };
        TxRecord::from_bytes(bytes.value())
            .map(Some)
            .map_err(corrupt("transaction"))
    }

    fn load_state(&self) -> Result<Option<State>> {
        let Some(meta) = self.meta()? else {
            return Ok(None);
        };
        let Some(height) = self.head_height()? else {
            return Ok(None);
        };
        let head = self.header(height)?.ok_or(StorageError::Empty)?;
        let tx = self.db.begin_read().map_err(db_err)?;
        let meta_table = tx.open_table(META).map_err(db_err)?;
        let pool = match meta_table.get("rewards_pool").map_err(db_err)? {
            Some(bytes) => Amount::from_bytes(bytes.value()).map_err(corrupt("rewards pool"))?,
            None => return Err(StorageError::Empty),
        };
        let table = tx.open_table(STATE).map_err(db_err)?;
        let mut entries = Vec::new();
        // Every map of the hot state, around the archive (finished jobs and closed services,
        // history, never read here): prefixes below it and above it alike, so a map added later is read too.
        let archive = [gridwork_protocol::PREFIX_ARCHIVE];
        let past_archive = [gridwork_protocol::PREFIX_ARCHIVE + 1];
        let below = table.range(..&archive[..]).map_err(db_err)?;
        let above = table.range(&past_archive[..]..).map_err(db_err)?;
        for entry in below.chain(above) {
            let (k, v) = entry.map_err(db_err)?;
            entries.push((k.value().to_vec(), v.value().to_vec()));
        }
        let state = State::from_parts(
            meta.chain_id,
            meta.params,
            meta.total_supply,
            pool,
            entries,
            head,
        )
        .map_err(corrupt("state entry"))?;
        verified(state).map(Some)
    }

    fn archived_job(&self, id: &Hash) -> Result<Option<ArchivedJob>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(STATE).map_err(db_err)?;
        let key = crate::archive_key(id);
        let value = table.get(key.as_slice()).map_err(db_err)?;
        value.map(|v| crate::decode_archived(v.value())).transpose()
    }

    fn archived_service(&self, id: &Hash) -> Result<Option<gridwork_protocol::Service>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let table = tx.open_table(STATE).map_err(db_err)?;
        let key = gridwork_protocol::service_archive_key(id);
        let value = table.get(key.as_slice()).map_err(db_err)?;
        value
            .map(|v| crate::decode_archived_service(v.value()))
            .transpose()
    }
}
