//! Content-addressed blobs: job inputs and task outputs, until the data plane replaces this.
//!
//! [`BlobStore`] is the boundary the data plane will implement with chunked, encrypted,
//! resumable transfer; today the node keeps whole blobs named by their BLAKE3 hash, on disk
//! ([`FsBlobStore`]) or in memory ([`MemoryBlobStore`]). Reads re-hash what they return, so
//! a damaged file is reported, never served.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use gridwork_types::Hash;

/// The largest blob the node accepts.
pub const MAX_BLOB_BYTES: usize = 64 * 1024 * 1024;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The file system failed.
    #[error("blob store {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Stored bytes no longer hash to their name.
    #[error("blob {cid} is damaged on disk")]
    Damaged {
        /// The blob.
        cid: Hash,
    },
}

/// A store of blobs named by the BLAKE3 hash of their bytes.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` and returns their content id.
    fn put(&self, bytes: &[u8]) -> Result<Hash, BlobError>;
    /// The bytes of `cid`, if stored.
    fn get(&self, cid: &Hash) -> Result<Option<Vec<u8>>, BlobError>;
}

/// Blobs in memory (tests, simulation).
#[derive(Debug, Default)]
pub struct MemoryBlobStore {
    blobs: Mutex<HashMap<Hash, Vec<u8>>>,
}

impl BlobStore for MemoryBlobStore {
    fn put(&self, bytes: &[u8]) -> Result<Hash, BlobError> {
        let cid = Hash::of(bytes);
        self.blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cid, bytes.to_vec());
        Ok(cid)
    }

    fn get(&self, cid: &Hash) -> Result<Option<Vec<u8>>, BlobError> {
        Ok(self
            .blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cid)
            .cloned())
    }
}

/// Blobs as files `DIR/<first two hex digits>/<cid>`.
#[derive(Debug)]
pub struct FsBlobStore {
    dir: PathBuf,
}

impl FsBlobStore {
    /// A store under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FsBlobStore { dir: dir.into() }
    }

    fn path(&self, cid: &Hash) -> PathBuf {
        let hex = cid.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }
}

impl BlobStore for FsBlobStore {
    fn put(&self, bytes: &[u8]) -> Result<Hash, BlobError> {
        let cid = Hash::of(bytes);
        let path = self.path(&cid);
        if path.exists() {
            return Ok(cid);
        }
        let io = |source| BlobError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // Write then rename, so a crash never leaves a partial blob under its name.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(cid)
    }

    fn get(&self, cid: &Hash) -> Result<Option<Vec<u8>>, BlobError> {
        let path = self.path(cid);
        match std::fs::read(&path) {
            Ok(bytes) if Hash::of(&bytes) == *cid => Ok(Some(bytes)),
            Ok(_) => Err(BlobError::Damaged { cid: *cid }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(BlobError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_content_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::new(dir.path());
        let cid = store.put(b"frame 1").unwrap();
        assert_eq!(cid, Hash::of(b"frame 1"));
        assert_eq!(store.get(&cid).unwrap().as_deref(), Some(&b"frame 1"[..]));
        assert_eq!(store.get(&Hash([0; 32])).unwrap(), None);
        std::fs::write(store.path(&cid), b"tampered").unwrap();
        assert!(matches!(store.get(&cid), Err(BlobError::Damaged { .. })));
    }
}
