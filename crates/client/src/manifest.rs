//! Manifests: how a file tree travels as blobs until the data plane lands.
//!
//! Each input of a job (a file or a directory) is uploaded file by file as blobs, plus one
//! manifest blob listing them; the job's D holds the manifests' content ids. A worker fetches
//! a manifest, then each file, checks every blob against its id, and writes the tree into
//! its work directory. Paths are relative, `/`-separated, and may not climb out (`..`) or be
//! absolute: a manifest that tries is refused before anything is written.

use std::path::{Component, Path, PathBuf};

use gridwork_types::Hash;
use serde::{Deserialize, Serialize};

/// One file of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Content id of the bytes.
    pub cid: Hash,
    /// Size in bytes.
    pub size: u64,
    /// Whether the file is executable.
    #[serde(default)]
    pub executable: bool,
}

/// A file tree.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `gridwork-manifest-v1`.
    pub format: String,
    /// The files, sorted by path.
    pub files: Vec<ManifestEntry>,
}

/// Why a manifest or a tree was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A path that is absolute or climbs out of the tree.
    #[error(
        "manifest path `{path}` is not allowed: paths must be relative and stay inside the tree"
    )]
    UnsafePath {
        /// The path.
        path: String,
    },
    /// Not a manifest.
    #[error("not a gridwork manifest: {0}")]
    Malformed(String),
    /// Reading the tree failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Manifest {
    /// The manifest's format tag.
    pub const FORMAT: &'static str = "gridwork-manifest-v1";

    /// Parses and checks a manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if m.format != Self::FORMAT {
            return Err(ManifestError::Malformed(format!(
                "format is `{}`",
                m.format
            )));
        }
        for f in &m.files {
            safe_relative(&f.path)?;
        }
        Ok(m)
    }

    /// The manifest as bytes (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `path` as a relative path that stays inside its root, or an error.
pub fn safe_relative(path: &str) -> Result<PathBuf, ManifestError> {
    let unsafe_path = || ManifestError::UnsafePath {
        path: path.to_string(),
    };
    if path.is_empty() || path.contains('\\') {
        return Err(unsafe_path());
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(unsafe_path());
    }
    Ok(out)
}

/// Lists the files of `root` (a file or a directory): `(relative path, absolute path,
/// executable)`, sorted. Symbolic links are refused rather than followed.
pub fn walk(root: &Path) -> Result<Vec<(String, PathBuf, bool)>, ManifestError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ManifestError::Io {
            path: path.clone(),
            source,
        }
    };
    let meta = std::fs::symlink_metadata(root).map_err(io(root))?;
    let mut out = Vec::new();
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "input".into());
        out.push((name, root.to_path_buf(), is_executable(&meta)));
        return Ok(out);
    }
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                stack.push((path, rel));
            } else if meta.is_file() {
                out.push((rel, path, is_executable(&meta)));
            } else {
                return Err(ManifestError::UnsafePath { path: rel });
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_that_escape() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "",
            "..",
            "a\\b",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert_eq!(safe_relative("a/./b").unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn a_manifest_with_an_escaping_path_is_refused() {
        let m = Manifest {
            format: Manifest::FORMAT.into(),
            files: vec![ManifestEntry {
                path: "../x".into(),
                cid: Hash::ZERO,
                size: 0,
                executable: false,
            }],
        };
        assert!(matches!(
            Manifest::from_bytes(&m.to_bytes()),
            Err(ManifestError::UnsafePath { .. })
        ));
    }

    #[test]
    fn walks_a_tree_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/y.txt"), "y").unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        let files: Vec<String> = walk(dir.path())
            .unwrap()
            .into_iter()
            .map(|(r, _, _)| r)
            .collect();
        assert_eq!(files, vec!["a.txt", "b/y.txt"]);
    }
}
