//! The keystore: one passphrase-encrypted file per named key under `GRIDWORK_HOME/keys`.
//!
//! The secret seed is sealed with ChaCha20-Poly1305 under a key derived from the passphrase
//! with Argon2id (its parameters and salt are stored beside the ciphertext, so they can be
//! raised later without breaking old files). The address and public key are stored in clear
//! so `keys list` needs no passphrase. A wrong passphrase fails the AEAD tag check and is
//! reported as such; nothing is ever decrypted to garbage.
//!
//! Dev keys (`dev0`, `dev1`, ... added by `gridwork node --dev`) are public knowledge and
//! stored with an empty passphrase, marked `dev`.

use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use gridwork_types::{Address, Keypair};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// Why a keystore operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// No key by that name.
    #[error("no key named `{name}` in {dir}; create one with `gridwork keys new {name}` or list them with `gridwork keys list`")]
    NotFound {
        /// The name.
        name: String,
        /// The keystore directory.
        dir: String,
    },
    /// The name is taken.
    #[error("a key named `{name}` already exists; choose another name")]
    Exists {
        /// The name.
        name: String,
    },
    /// Not a usable key name.
    #[error("`{name}` is not a valid key name: use 1 to 64 letters, digits, `-` or `_`")]
    BadName {
        /// The name.
        name: String,
    },
    /// The passphrase does not open the key.
    #[error("wrong passphrase for key `{name}`")]
    WrongPassphrase {
        /// The name.
        name: String,
    },
    /// The key file is damaged.
    #[error("key file {path} is damaged: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What the keystore knows about a key without its passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The name.
    pub name: String,
    /// The account address.
    pub address: Address,
    /// The public key, hex.
    pub public_key: String,
    /// A well-known dev key (empty passphrase).
    pub dev: bool,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    name: String,
    address: Address,
    public_key: String,
    #[serde(default)]
    dev: bool,
    kdf: KdfParams,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    algorithm: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

/// A directory of key files.
#[derive(Debug, Clone)]
pub struct Keystore {
    dir: PathBuf,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Keystore {
    /// The keystore in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Keystore { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        if !valid_name(name) {
            return Err(KeystoreError::BadName {
                name: name.to_string(),
            });
        }
        Ok(self.dir.join(format!("{name}.json")))
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> KeystoreError + '_ {
        move |source| KeystoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether a key by that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.path(name).is_ok_and(|p| p.exists())
    }

    /// Stores `key` under `name`, sealed with `passphrase`. Refuses to overwrite.
    pub fn insert(
        &self,
        name: &str,
        key: &Keypair,
        passphrase: &str,
        dev: bool,
    ) -> Result<KeyInfo, KeystoreError> {
        let path = self.path(name)?;
        if path.exists() {
            return Err(KeystoreError::Exists {
                name: name.to_string(),
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let kdf = KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib: Params::DEFAULT_M_COST,
            t_cost: Params::DEFAULT_T_COST,
            p_cost: Params::DEFAULT_P_COST,
            salt: hex::encode(salt),
        };
        let cipher = cipher(&kdf, &salt, passphrase).map_err(|message| KeystoreError::Corrupt {
            path: path.display().to_string(),
            message,
        })?;
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), key.seed().as_slice())
            .map_err(|_| KeystoreError::Corrupt {
                path: path.display().to_string(),
                message: "encryption failed".into(),
            })?;
        let info = KeyInfo {
            name: name.to_string(),
            address: key.address(),
            public_key: hex::encode(key.public().to_bytes()),
            dev,
        };
        let file = KeyFile {
            version: 1,
            name: info.name.clone(),
            address: info.address,
            public_key: info.public_key.clone(),
            dev,
            kdf,
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| KeystoreError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        write_private(&path, &json).map_err(Self::io(&path))?;
        Ok(info)
    }

    fn read(&self, name: &str) -> Result<(PathBuf, KeyFile), KeystoreError> {
        let path = self.path(name)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::NotFound {
                    name: name.to_string(),
                    dir: self.dir.display().to_string(),
                })
            }
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| KeystoreError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok((path, file))
    }

    /// A key's public facts.
    pub fn info(&self, name: &str) -> Result<KeyInfo, KeystoreError> {
        let (_, f) = self.read(name)?;
        Ok(KeyInfo {
            name: f.name,
            address: f.address,
            public_key: f.public_key,
            dev: f.dev,
        })
    }

    /// Every key, by name.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeystoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names.iter().map(|n| self.info(n)).collect()
    }

    /// Decrypts a key.
    pub fn unlock(&self, name: &str, passphrase: &str) -> Result<Keypair, KeystoreError> {
        let (path, f) = self.read(name)?;
        let corrupt = |message: &str| KeystoreError::Corrupt {
            path: path.display().to_string(),
            message: message.into(),
        };
        let salt = hex::decode(&f.kdf.salt).map_err(|_| corrupt("salt is not hex"))?;
        let nonce: [u8; 12] = hex::decode(&f.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("nonce is not 12 bytes of hex"))?;
        let ciphertext =
            hex::decode(&f.ciphertext).map_err(|_| corrupt("ciphertext is not hex"))?;
        let cipher = cipher(&f.kdf, &salt, passphrase).map_err(|m| corrupt(&m))?;
        let seed = cipher
            .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
            .map_err(|_| KeystoreError::WrongPassphrase {
                name: name.to_string(),
            })?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| corrupt("secret is not 32 bytes"))?;
        let key = Keypair::from_seed(seed);
        if key.address() != f.address {
            return Err(corrupt("secret does not match the stored address"));
        }
        Ok(key)
    }
}

fn cipher(kdf: &KdfParams, salt: &[u8], passphrase: &str) -> Result<ChaCha20Poly1305, String> {
    if kdf.algorithm != "argon2id" {
        return Err(format!("unknown key derivation `{}`", kdf.algorithm));
    }
    let params =
        Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32)).map_err(|e| e.to_string())?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| e.to_string())?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(&key)))
}

/// Writes `bytes` to `path` readable by the owner only, via a temporary file and a rename so
/// a crash never leaves half a key file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_unlocks_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::new(dir.path());
        let key = Keypair::from_seed([3; 32]);
        let info = store.insert("alice", &key, "correct horse", false).unwrap();
        assert_eq!(info.address, key.address());
        assert_eq!(
            store.unlock("alice", "correct horse").unwrap().address(),
            key.address()
        );
        assert_eq!(store.list().unwrap(), vec![info]);
    }

    #[test]
    fn wrong_passphrase_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::new(dir.path());
        store
            .insert("bob", &Keypair::from_seed([4; 32]), "right", false)
            .unwrap();
        let err = store.unlock("bob", "wrong").unwrap_err();
        assert!(
            matches!(err, KeystoreError::WrongPassphrase { .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_overwrite_bad_names_and_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::new(dir.path());
        store
            .insert("carol", &Keypair::from_seed([5; 32]), "p", false)
            .unwrap();
        assert!(matches!(
            store.insert("carol", &Keypair::from_seed([6; 32]), "p", false),
            Err(KeystoreError::Exists { .. })
        ));
        assert!(matches!(
            store.insert("../etc", &Keypair::from_seed([6; 32]), "p", false),
            Err(KeystoreError::BadName { .. })
        ));
        assert!(matches!(
            store.unlock("dave", "p"),
            Err(KeystoreError::NotFound { .. })
        ));
    }
}
