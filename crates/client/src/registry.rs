//! The data keys a user pushed trees under, remembered per path so that pushing the same
//! directory again reuses the key and moves only changed chunks.
//!
//! `HOME/data/keys.json` maps each canonical path to its data key wrapped for the pusher's
//! own key (so the file holds nothing another key can open); `HOME/data/index/` keeps each
//! path's push index (named by the BLAKE3 of the path).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gridwork_transfer::{unwrap_key, wrap_key, DataKey, WrappedKey};
use gridwork_types::Keypair;

/// Why a data key could not be found or remembered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The path to push does not exist.
    #[error("{path} does not exist")]
    NoSuchPath {
        /// The path.
        path: PathBuf,
    },
    /// The registry could not be written.
    #[error("writing {path}: {message}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The data keys of the paths one user pushed, under a home directory.
#[derive(Debug, Clone)]
pub struct KeyRegistry {
    home: PathBuf,
}

impl KeyRegistry {
    /// The registry under `home` (`GRIDWORK_HOME`).
    pub fn new(home: impl Into<PathBuf>) -> Self {
        KeyRegistry { home: home.into() }
    }

    /// The data key for `path` (the one used before, unwrapped with `me`, or a new one,
    /// remembered) and where its push index lives.
    pub fn key_for(&self, path: &Path, me: &Keypair) -> Result<(DataKey, PathBuf), RegistryError> {
        let file = self.home.join("data/keys.json");
        let keys: BTreeMap<String, WrappedKey> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let canonical = path.canonicalize().map_err(|_| RegistryError::NoSuchPath {
            path: path.to_path_buf(),
        })?;
        let name = canonical.display().to_string();
        let index = self
            .home
            .join("data/index")
            .join(format!("{}.index", blake3::hash(name.as_bytes()).to_hex()));
        // The index's first form (JSON) is not read any more; it would only take space.
        let _ = std::fs::remove_file(index.with_extension("json"));
        if let Some(k) = keys.get(&name).and_then(|w| unwrap_key(w, me)) {
            return Ok((k, index));
        }
        let key = DataKey::generate();
        let mut keys = keys;
        keys.insert(name, wrap_key(&key, &me.public()));
        let failed = |path: &Path, e: &dyn std::fmt::Display| RegistryError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(dir, &e))?;
        }
        let json = serde_json::to_vec_pretty(&keys).map_err(|e| failed(&file, &e))?;
        std::fs::write(&file, json).map_err(|e| failed(&file, &e))?;
        Ok((key, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path pushed again gets its key back (so only changed chunks move); another key gets
    /// a key of its own, since the file holds keys only their pusher can open; a path that
    /// does not exist is named in the error.
    #[test]
    fn a_path_keeps_its_key_for_its_pusher_only() {
        let home = tempfile::tempdir().unwrap();
        let data = home.path().join("dataset");
        std::fs::create_dir(&data).unwrap();
        let registry = KeyRegistry::new(home.path());
        let (alice, bob) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        let (first, index) = registry.key_for(&data, &alice).unwrap();
        let (again, same_index) = registry.key_for(&data, &alice).unwrap();
        assert_eq!((first.clone(), index.clone()), (again, same_index));
        let (bobs, _) = registry.key_for(&data, &bob).unwrap();
        assert_ne!(bobs, first);
        let err = registry
            .key_for(&home.path().join("missing"), &alice)
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
