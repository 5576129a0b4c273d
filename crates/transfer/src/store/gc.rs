//! Dropping chunks: garbage collection of unreferenced chunks, trims of a cache to its least
//! recently used, and packs rewritten so disk use follows the live bytes.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gridwork_types::Hash;

use super::{index_entry, io, lock, sync_dir, ChunkStore, Loc, State, StoreError, RECORD_HEADER};

impl ChunkStore {
    /// Forgets every chunk not in `keep` and rewrites the packs that held them, so their
    /// space returns to the file system; returns the chunk bytes freed.
    pub fn gc(&self, keep: &HashSet<Hash>) -> Result<u64, StoreError> {
        self.gc_unless(keep, Duration::ZERO)
    }

    /// Like [`gc`](Self::gc), but also keeps chunks written less than `younger_than` ago
    /// (or since the store was opened): parts of uploads whose trees are not referenced yet.
    pub fn gc_unless(
        &self,
        keep: &HashSet<Hash>,
        younger_than: Duration,
    ) -> Result<u64, StoreError> {
        let mut state = lock(&self.state);
        self.drop_where(&mut state, |id, loc| {
            !keep.contains(id) && loc.written.elapsed() >= younger_than
        })
    }

    /// Drops the least recently used chunks (written or read longest ago; chunks from before
    /// the store was opened first, oldest pack first) until at most `max_bytes` of chunks
    /// are stored, sparing those used less than `younger_than` ago; returns the bytes freed.
    /// What bounds a cache: a worker's or a client's store.
    pub fn trim(&self, max_bytes: u64, younger_than: Duration) -> Result<u64, StoreError> {
        self.trim_unless(max_bytes, younger_than, |_| false)
    }

    /// Like [`trim`](Self::trim), but never drops a chunk `keep` names (a pull's chunks of
    /// files not yet on disk).
    pub fn trim_unless(
        &self,
        max_bytes: u64,
        younger_than: Duration,
        keep: impl Fn(&Hash) -> bool,
    ) -> Result<u64, StoreError> {
        let mut state = lock(&self.state);
        if state.used <= max_bytes {
            return Ok(0);
        }
        let mut candidates: Vec<(Instant, u32, u64, Hash, u64)> = state
            .index
            .iter()
            .filter(|(id, loc)| loc.touched.elapsed() >= younger_than && !keep(id))
            .map(|(id, loc)| (loc.touched, loc.pack, loc.offset, *id, u64::from(loc.len)))
            .collect();
        candidates.sort_unstable_by_key(|&(touched, pack, offset, ..)| (touched, pack, offset));
        let mut excess = state.used - max_bytes;
        let mut drop = HashSet::new();
        for (.., id, len) in candidates {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(len);
            drop.insert(id);
        }
        self.drop_where(&mut state, |id, _| drop.contains(id))
    }

    /// Forgets the chunks `dropped` picks and rewrites the packs that held them; returns the
    /// chunk bytes freed.
    fn drop_where(
        &self,
        state: &mut State,
        dropped: impl Fn(&Hash, &Loc) -> bool,
    ) -> Result<u64, StoreError> {
        let mut freed = 0;
        let mut gone = Vec::new();
        state.index.retain(|id, loc| {
            let drop = dropped(id, loc);
            if drop {
                freed += u64::from(loc.len);
                gone.push(*loc);
            }
            !drop
        });
        state.used = state.used.saturating_sub(freed);
        for loc in gone {
            if let Some(pack) = state.packs.get(&loc.pack) {
                lock(pack).live -= RECORD_HEADER + u64::from(loc.len);
            }
        }
        // Packs with dead space and no write in flight are rewritten (or deleted when
        // nothing in them lives); a pack being written to waits for the next collection.
        let numbers: Vec<u32> = state
            .packs
            .iter()
            .filter(|(_, p)| {
                let p = lock(p);
                p.owned && p.pending == 0 && p.live < p.end
            })
            .map(|(n, _)| *n)
            .collect();
        for number in numbers {
            self.compact(state, number)?;
        }
        Ok(freed)
    }

    /// Copies a pack's live records into a new pack, points the index at them and deletes
    /// the old pack. A crash midway leaves both, and `open` keeps one copy of each chunk.
    fn compact(&self, state: &mut State, number: u32) -> Result<(), StoreError> {
        let mut live: Vec<(Hash, Loc)> = state
            .index
            .iter()
            .filter(|(_, loc)| loc.pack == number)
            .map(|(id, loc)| (*id, *loc))
            .collect();
        live.sort_unstable_by_key(|(_, loc)| loc.offset);
        if !live.is_empty() {
            let Some(old) = state.packs.get(&number).map(|p| lock(p).data.clone()) else {
                return Ok(());
            };
            let (fresh, mut pack) = self.create_pack(state)?;
            let fresh_path = self.pack_path(fresh, "pack");
            let mut moved = Vec::with_capacity(live.len());
            for (id, loc) in &live {
                let record = RECORD_HEADER + u64::from(loc.len);
                let mut buf = vec![0; record as usize];
                old.read_exact_at(&mut buf, loc.offset)
                    .map_err(io(&self.pack_path(number, "pack")))?;
                let to = Loc {
                    pack: fresh,
                    offset: pack.end,
                    len: loc.len,
                    written: loc.written,
                    touched: loc.touched,
                };
                pack.data
                    .write_all_at(&buf, to.offset)
                    .and_then(|()| (&pack.index).write_all(&index_entry(id, to)))
                    .map_err(io(&fresh_path))?;
                pack.end += record;
                pack.live += record;
                moved.push((*id, to));
            }
            // The copies are durable before the originals go.
            pack.data
                .sync_data()
                .and_then(|()| pack.index.sync_data())
                .map_err(io(&fresh_path))?;
            sync_dir(&self.dir.join("packs"))?;
            state.packs.insert(fresh, Arc::new(Mutex::new(pack)));
            state.index.extend(moved);
        }
        state.packs.remove(&number);
        state.dirty.remove(&number);
        for ext in ["pack", "idx"] {
            let path = self.pack_path(number, ext);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(&path)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
