//! Chunks on disk, named by their hash, with a quota and garbage collection.
//!
//! Layout: `DIR/<first two hex digits>/<id>`. A chunk is written to a temporary file and
//! renamed, so a crash or a full disk never leaves a partial chunk under its name; reads
//! re-hash, so damage is reported, never served. The store's size is counted at open and
//! kept current; a put that would pass the quota is refused before anything is written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gridwork_types::Hash;

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The bytes are not what the id names.
    #[error("chunk {id} does not match its bytes (corrupt or forged)")]
    Mismatch {
        /// The claimed id.
        id: Hash,
    },
    /// The quota would be passed.
    #[error("the chunk store is full: {used} of {quota} bytes used, {needed} more needed; run garbage collection or raise the quota")]
    Full {
        /// Bytes used.
        used: u64,
        /// The quota.
        quota: u64,
        /// Bytes the put needed.
        needed: u64,
    },
    /// The file system failed (a full disk among others).
    #[error("chunk store {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A chunk whose bytes have been checked against its id, so storing it need not hash again.
#[derive(Debug, Clone)]
pub struct VerifiedChunk {
    id: Hash,
    bytes: Vec<u8>,
}

impl VerifiedChunk {
    /// Checks `bytes` against `id`.
    pub fn check(id: Hash, bytes: Vec<u8>) -> Result<VerifiedChunk, StoreError> {
        if Hash::of(&bytes) != id {
            return Err(StoreError::Mismatch { id });
        }
        Ok(VerifiedChunk { id, bytes })
    }

    /// The id.
    pub fn id(&self) -> &Hash {
        &self.id
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// A directory of chunks.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    quota: Option<u64>,
    /// Shared by clones, so a clone can move to a blocking thread.
    state: std::sync::Arc<Mutex<Usage>>,
}

/// Bytes stored and chunks being written.
#[derive(Debug, Default)]
struct Usage {
    used: u64,
    writing: HashSet<Hash>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ChunkStore {
    /// Opens (or creates) a store, counting what it holds; leftover temporary files from an
    /// interrupted write are removed.
    pub fn open(dir: impl Into<PathBuf>, quota: Option<u64>) -> Result<ChunkStore, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut used = 0;
        for shard in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let shard = shard.map_err(io(&dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&shard).map_err(io(&shard))? {
                let path = entry.map_err(io(&shard))?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    std::fs::remove_file(&path).map_err(io(&path))?;
                } else {
                    used += path.metadata().map_err(io(&path))?.len();
                }
            }
        }
        Ok(ChunkStore {
            dir,
            quota,
            state: std::sync::Arc::new(Mutex::new(Usage {
                used,
                writing: HashSet::new(),
            })),
        })
    }

    fn path(&self, id: &Hash) -> PathBuf {
        let hex = id.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Bytes stored.
    pub fn used(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).used
    }

    /// Whether a chunk is stored.
    pub fn has(&self, id: &Hash) -> bool {
        self.path(id).exists()
    }

    /// The ids of `wanted` this store lacks (what a sender must still move).
    pub fn missing<'a>(&self, wanted: impl IntoIterator<Item = &'a Hash>) -> Vec<Hash> {
        let mut seen = HashSet::new();
        wanted
            .into_iter()
            .filter(|id| seen.insert(**id) && !self.has(id))
            .copied()
            .collect()
    }

    /// Stores a chunk after checking it against its id. Storing a chunk twice is a no-op.
    pub fn put(&self, id: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        if Hash::of(bytes) != *id {
            return Err(StoreError::Mismatch { id: *id });
        }
        self.write(id, bytes)
    }

    /// Stores a chunk checked on arrival. Storing a chunk twice is a no-op.
    pub fn put_verified(&self, chunk: &VerifiedChunk) -> Result<(), StoreError> {
        self.write(&chunk.id, &chunk.bytes)
    }

    fn write(&self, id: &Hash, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(id);
        let needed = bytes.len() as u64;
        // The lock covers the existence check and the quota reservation only; the write
        // runs outside it, so puts of different chunks proceed in parallel. A chunk being
        // written by another put counts as present (its writer finishes it).
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.writing.contains(id) || path.exists() {
                return Ok(());
            }
            if let Some(quota) = self.quota {
                if state.used + needed > quota {
                    return Err(StoreError::Full {
                        used: state.used,
                        quota,
                        needed,
                    });
                }
            }
            state.used += needed;
            state.writing.insert(*id);
        }
        let written = (|| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
        })();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.writing.remove(id);
        if let Err(e) = written {
            state.used -= needed;
            return Err(io(&path)(e));
        }
        Ok(())
    }

    /// A chunk's bytes, checked against its id; `None` if not stored.
    pub fn get(&self, id: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) if Hash::of(&bytes) == *id => Ok(Some(bytes)),
            Ok(_) => Err(StoreError::Mismatch { id: *id }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Deletes every chunk not in `keep`; returns the bytes freed.
    pub fn gc(&self, keep: &HashSet<Hash>) -> Result<u64, StoreError> {
        let mut freed = 0;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for shard in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let shard = shard.map_err(io(&self.dir))?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&shard).map_err(io(&shard))? {
                let path = entry.map_err(io(&shard))?.path();
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<Hash>().ok());
                if id.is_some_and(|id| !keep.contains(&id)) {
                    let len = path.metadata().map_err(io(&path))?.len();
                    std::fs::remove_file(&path).map_err(io(&path))?;
                    freed += len;
                }
            }
        }
        state.used = state.used.saturating_sub(freed);
        Ok(freed)
    }
}
