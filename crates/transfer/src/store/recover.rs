//! Reading packs back at open: their indexes, the records past the last indexed one checked and
//! indexed or cut off, and stores of one file per chunk moved into packs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gridwork_types::Hash;

use super::{
    index_entry, io, pack_path, try_lock, ChunkStore, Loc, Pack, State, StoreError, INDEX_ENTRY,
    MAX_CHUNK, RECORD_HEADER,
};

impl ChunkStore {
    /// Moves chunks stored one file each (the layout before packs) into packs.
    pub(super) fn import_legacy(&self) -> Result<(), StoreError> {
        for shard in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let shard = shard.map_err(io(&self.dir))?.path();
            let is_shard = shard
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_shard || !shard.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&shard).map_err(io(&shard))? {
                let path = entry.map_err(io(&shard))?.path();
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<Hash>().ok());
                if let Some(id) = id {
                    let bytes = std::fs::read(&path).map_err(io(&path))?;
                    match self.put(&id, &bytes) {
                        // A damaged chunk is dropped, as a read would have refused it.
                        Ok(()) | Err(StoreError::Mismatch { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
            std::fs::remove_dir(&shard).map_err(io(&shard))?;
        }
        Ok(())
    }
}

/// Opens (or creates) a pack's index for appending.
pub(super) fn open_index(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))
}

/// Reads one pack's index into `state` and repairs what an interrupted write left: a torn
/// index entry is cut off, records past the last indexed one are indexed when whole and
/// matching their id, and the pack is cut after the last good record.
pub(super) fn load_pack(
    packs_dir: &Path,
    number: u32,
    state: &mut State,
) -> Result<Pack, StoreError> {
    let data_path = pack_path(packs_dir, number, "pack");
    let index_path = pack_path(packs_dir, number, "idx");
    let data = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data_path)
        .map_err(io(&data_path))?;
    let owned = try_lock(&data);
    let file_len = data.metadata().map_err(io(&data_path))?.len();
    let entries = match std::fs::read(&index_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&index_path)(e)),
    };
    let index = open_index(&index_path)?;
    let whole = entries.len() - entries.len() % INDEX_ENTRY;
    if whole != entries.len() && owned {
        index.set_len(whole as u64).map_err(io(&index_path))?;
    }
    let mut pack = Pack {
        data: Arc::new(data),
        index,
        end: 0,
        live: 0,
        pending: 0,
        owned,
    };
    let mut admit = |pack: &mut Pack, id: Hash, loc: Loc| {
        let record = RECORD_HEADER + u64::from(loc.len);
        pack.end = pack.end.max(loc.offset + record);
        if let std::collections::hash_map::Entry::Vacant(slot) = state.index.entry(id) {
            slot.insert(loc);
            state.used += u64::from(loc.len);
            pack.live += record;
        }
    };
    for entry in entries[..whole].chunks_exact(INDEX_ENTRY) {
        let mut id = [0; 32];
        id.copy_from_slice(&entry[..32]);
        let mut offset = [0; 8];
        offset.copy_from_slice(&entry[32..40]);
        let mut len = [0; 4];
        len.copy_from_slice(&entry[40..]);
        let loc = Loc {
            pack: number,
            offset: u64::from_le_bytes(offset),
            len: u32::from_le_bytes(len),
            written: Instant::now(),
            touched: Instant::now(),
        };
        // An entry pointing past the file's end is stale; the read would fail anyway.
        if loc.offset + RECORD_HEADER + u64::from(loc.len) <= file_len {
            admit(&mut pack, Hash(id), loc);
        }
    }
    if !owned {
        // Another process is writing it: take what its index lists, repair nothing.
        return Ok(pack);
    }
    // Records written after the last indexed one: keep the whole ones, cut the rest.
    loop {
        let offset = pack.end;
        let mut header = [0; RECORD_HEADER as usize];
        if offset + RECORD_HEADER > file_len
            || pack.data.read_exact_at(&mut header, offset).is_err()
        {
            break;
        }
        let mut id = [0; 32];
        id.copy_from_slice(&header[..32]);
        let mut len = [0; 4];
        len.copy_from_slice(&header[32..]);
        let len = u32::from_le_bytes(len);
        if len as usize > MAX_CHUNK || offset + RECORD_HEADER + u64::from(len) > file_len {
            break;
        }
        let mut bytes = vec![0; len as usize];
        if pack
            .data
            .read_exact_at(&mut bytes, offset + RECORD_HEADER)
            .is_err()
            || Hash::of(&bytes) != Hash(id)
        {
            break;
        }
        let loc = Loc {
            pack: number,
            offset,
            len,
            written: Instant::now(),
            touched: Instant::now(),
        };
        (&pack.index)
            .write_all(&index_entry(&Hash(id), loc))
            .map_err(io(&index_path))?;
        admit(&mut pack, Hash(id), loc);
    }
    if pack.end < file_len {
        pack.data.set_len(pack.end).map_err(io(&data_path))?;
    }
    Ok(pack)
}
