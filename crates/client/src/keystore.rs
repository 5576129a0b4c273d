//! The keystore: one passphrase-encrypted file per named key under `GRIDWORK_HOME/keys`.
//!
//! The secret seed is sealed with ChaCha20-Poly1305 under a key derived from the passphrase
//! with Argon2id (its parameters and salt are stored beside the ciphertext, so they can be
//! raised later without breaking old files). The address and public key are stored in clear
//! so `keys list` needs no passphrase. A wrong passphrase fails the AEAD tag check and is
//! reported as such; nothing is ever decrypted to garbage.
//!
//! Argon2id runs at RFC 9106's second recommended setting (64 MiB, 3 passes, 4 lanes:
//! stronger than OWASP's minimums of 19 MiB x 2 or 46 MiB x 1); unlocking takes about 0.2 s
//! on one core of this project's build machine. An empty passphrase is refused for a
//! non-dev key unless the caller asks for it explicitly ([`Keystore::insert_unprotected`],
//! `keys new --insecure-no-passphrase`). Key files are written to a fresh temporary file
//! created exclusively (never through a link left in its place), mode 0600 from its first
//! byte, fsynced and renamed.
//!
//! Dev keys (`dev0`, `dev1`, ... added by `gridwork node --dev`) are public knowledge and
//! stored with an empty passphrase (and a cheap derivation), marked `dev`.

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
    /// An empty passphrase for a key that is not a dev key.
    #[error("an empty passphrase would leave key `{name}` readable by anyone who reads the file; give a passphrase (or pass --insecure-no-passphrase if that is really meant)")]
    EmptyPassphrase {
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

    /// Stores `key` under `name`, sealed with `passphrase`. Refuses to overwrite, and refuses
    /// an empty passphrase unless `dev` (a well-known key).
    pub fn insert(
        &self,
        name: &str,
        key: &Keypair,
        passphrase: &str,
        dev: bool,
    ) -> Result<KeyInfo, KeystoreError> {
        if passphrase.is_empty() && !dev {
            return Err(KeystoreError::EmptyPassphrase {
                name: name.to_string(),
            });
        }
        self.seal(name, key, passphrase, dev)
    }

    /// Stores a non-dev `key` under `name` with an empty passphrase, as its owner explicitly
    /// asked: anyone who can read the file has the key.
    pub fn insert_unprotected(&self, name: &str, key: &Keypair) -> Result<KeyInfo, KeystoreError> {
        self.seal(name, key, "", false)
    }

    fn seal(
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
        // A dev key is public: deriving a key from its empty passphrase protects nothing.
        let (m_cost_kib, t_cost, p_cost) = if dev {
            (Params::MIN_M_COST.max(64), 1, 1)
        } else {
            (KDF_M_COST_KIB, KDF_T_COST, KDF_P_COST)
        };
        let kdf = KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib,
            t_cost,
            p_cost,
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

/// Argon2id memory, in KiB, for keys with a passphrase (RFC 9106, second recommendation).
pub(crate) const KDF_M_COST_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub(crate) const KDF_T_COST: u32 = 3;
/// Argon2id lanes.
pub(crate) const KDF_P_COST: u32 = 4;

/// Writes `bytes` to `path` readable by the owner only, via a temporary file and a rename so
/// a crash never leaves half a key file. The temporary file has a fresh random name and is
/// created exclusively (`O_CREAT|O_EXCL`: a link planted in its place is refused, not
/// followed) with mode 0600 from the start.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let tmp = path.with_extension(format!("json.{}.tmp", hex::encode(suffix)));
    write_private_via(path, &tmp, bytes)
}

fn write_private_via(path: &Path, tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
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

    /// A non-dev key with an empty passphrase is refused unless asked for explicitly; a
    /// passphrase key uses the strong Argon2id setting, and its file is private.
    #[test]
    fn empty_passphrases_are_refused_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = Keystore::new(dir.path());
        let key = Keypair::from_seed([7; 32]);
        assert!(matches!(
            store.insert("erin", &key, "", false),
            Err(KeystoreError::EmptyPassphrase { .. })
        ));
        assert!(!store.contains("erin"));
        store.insert_unprotected("erin", &key).unwrap();
        assert_eq!(store.unlock("erin", "").unwrap().address(), key.address());
        store.insert("frank", &key, "pass", false).unwrap();
        let (path, file) = store.read("frank").unwrap();
        assert_eq!(
            (file.kdf.m_cost_kib, file.kdf.t_cost, file.kdf.p_cost),
            (KDF_M_COST_KIB, KDF_T_COST, KDF_P_COST)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }

    /// A link planted where a temporary file goes is never written through.
    #[cfg(unix)]
    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "untouched").unwrap();
        let path = dir.path().join("k.json");
        let tmp = dir.path().join("k.json.tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let err = write_private_via(&path, &tmp, b"secret").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(!path.exists());
        // The real writer picks a fresh name each time, so a planted name is never its own.
        write_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
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
