//! Moving file trees through the node's blob store (manifest plus one blob per file).

use std::path::Path;

use gridwork_types::Hash;

use crate::client::{Client, ClientError};
use crate::manifest::{safe_relative, walk, Manifest, ManifestEntry, ManifestError};

/// Why a tree did not move.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The node failed or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The manifest or a path is bad.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A blob the manifest names is not stored.
    #[error("blob {cid} ({path}) is not stored on the node")]
    Missing {
        /// The blob.
        cid: Hash,
        /// Its path in the tree.
        path: String,
    },
    /// Writing the tree failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Client {
    /// Uploads a file or directory; returns the content id of its manifest.
    pub async fn upload_tree(&self, root: &Path) -> Result<Hash, TreeError> {
        let mut files = Vec::new();
        for (rel, abs, executable) in walk(root)? {
            let bytes = std::fs::read(&abs).map_err(|source| TreeError::Io {
                path: abs.display().to_string(),
                source,
            })?;
            let size = bytes.len() as u64;
            let cid = self.put_blob(bytes).await?;
            files.push(ManifestEntry {
                path: rel,
                cid,
                size,
                executable,
            });
        }
        let manifest = Manifest {
            format: Manifest::FORMAT.into(),
            files,
        };
        Ok(self.put_blob(manifest.to_bytes()).await?)
    }

    /// Downloads the tree of manifest `cid` into `dest`, checking every blob.
    pub async fn download_tree(&self, cid: &Hash, dest: &Path) -> Result<Manifest, TreeError> {
        let bytes = self.blob(cid).await?.ok_or(TreeError::Missing {
            cid: *cid,
            path: "(manifest)".into(),
        })?;
        let manifest = Manifest::from_bytes(&bytes)?;
        for f in &manifest.files {
            let rel = safe_relative(&f.path)?;
            let data = self.blob(&f.cid).await?.ok_or_else(|| TreeError::Missing {
                cid: f.cid,
                path: f.path.clone(),
            })?;
            let path = dest.join(rel);
            let io = |source| TreeError::Io {
                path: path.display().to_string(),
                source,
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(&path, &data).map_err(io)?;
            #[cfg(unix)]
            if f.executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io)?;
            }
        }
        Ok(manifest)
    }
}
