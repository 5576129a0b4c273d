//! Equivalence functions e(r, r'): does a council member's result match the executor's?
//!
//! Results are output trees on disk. [`equivalent`] compares two trees under an
//! [`Equivalence`]: `ExactHash` wants the same files with the same bytes; `NumericTolerance`
//! wants the same files, and in each file the same tokens, where tokens that are both numbers
//! may differ by at most the absolute tolerance or the relative tolerance (either suffices),
//! as numpy's `isclose` does. Pure: no network, no clock. Used by workers, not by the ledger.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gridwork_types::Equivalence;

/// Why two trees could not be compared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Reading a tree failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The verdict, with the first difference found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Equivalent.
    Same,
    /// Not equivalent, and why.
    Different(String),
}

impl Verdict {
    /// Whether the trees are equivalent.
    pub fn is_same(&self) -> bool {
        matches!(self, Verdict::Same)
    }
}

fn files(root: &Path) -> Result<BTreeMap<String, PathBuf>, VerifyError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| VerifyError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| VerifyError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let path = entry.path();
            if path.is_dir() {
                stack.push((path, rel));
            } else {
                out.insert(rel, path);
            }
        }
    }
    Ok(out)
}

/// Compares the trees at `a` and `b` under `e`.
pub fn equivalent(e: &Equivalence, a: &Path, b: &Path) -> Result<Verdict, VerifyError> {
    let (fa, fb) = (files(a)?, files(b)?);
    if fa.keys().ne(fb.keys()) {
        let only: Vec<&String> = fa
            .keys()
            .filter(|k| !fb.contains_key(*k))
            .chain(fb.keys().filter(|k| !fa.contains_key(*k)))
            .collect();
        return Ok(Verdict::Different(format!(
            "the file sets differ: {only:?}"
        )));
    }
    for (name, pa) in &fa {
        let pb = &fb[name];
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| VerifyError::Io {
                path: p.display().to_string(),
                source,
            })
        };
        let (ba, bb) = (read(pa)?, read(pb)?);
        if ba == bb {
            continue;
        }
        match e {
            Equivalence::ExactHash {} => return Ok(Verdict::Different(format!("{name} differs"))),
            Equivalence::NumericTolerance { abs_ppb, rel_ppb } => {
                let abs = *abs_ppb as f64 / 1e9;
                let rel = *rel_ppb as f64 / 1e9;
                if let Some(why) = numeric_difference(&ba, &bb, abs, rel) {
                    return Ok(Verdict::Different(format!("{name}: {why}")));
                }
            }
        }
    }
    Ok(Verdict::Same)
}

/// The first difference beyond tolerance between two texts of numbers, if any.
fn numeric_difference(a: &[u8], b: &[u8], abs: f64, rel: f64) -> Option<String> {
    let (ta, tb) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    let split = |s: &str| {
        s.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (wa, wb) = (split(&ta), split(&tb));
    if wa.len() != wb.len() {
        return Some(format!("{} tokens against {}", wa.len(), wb.len()));
    }
    for (i, (x, y)) in wa.iter().zip(&wb).enumerate() {
        if x == y {
            continue;
        }
        match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(u), Ok(v)) if u.is_finite() && v.is_finite() => {
                let diff = (u - v).abs();
                if diff > abs && diff > rel * v.abs().max(u.abs()) {
                    return Some(format!("token {i}: {x} and {y} differ by {diff:e}"));
                }
            }
            _ => return Some(format!("token {i}: `{x}` and `{y}` differ")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        dir
    }

    #[test]
    fn exact_hash_wants_identical_bytes() {
        let a = tree(&[("out/loss.txt", "0.5\n")]);
        let b = tree(&[("out/loss.txt", "0.5\n")]);
        let c = tree(&[("out/loss.txt", "0.50001\n")]);
        let e = Equivalence::ExactHash {};
        assert!(equivalent(&e, a.path(), b.path()).unwrap().is_same());
        assert!(!equivalent(&e, a.path(), c.path()).unwrap().is_same());
    }

    #[test]
    fn numeric_tolerance_accepts_small_differences_only() {
        let a = tree(&[("w.txt", "weights 1.000000, 2.0\nstep 7")]);
        let near = tree(&[("w.txt", "weights 1.0000004, 2.0\nstep 7")]);
        let far = tree(&[("w.txt", "weights 1.1, 2.0\nstep 7")]);
        let word = tree(&[("w.txt", "weights 1.0, 2.0\nstep 8")]);
        let e = Equivalence::NumericTolerance {
            abs_ppb: 1_000,
            rel_ppb: 0,
        };
        assert!(equivalent(&e, a.path(), near.path()).unwrap().is_same());
        assert!(!equivalent(&e, a.path(), far.path()).unwrap().is_same());
        assert!(!equivalent(&e, a.path(), word.path()).unwrap().is_same());
    }

    #[test]
    fn different_file_sets_are_different() {
        let a = tree(&[("a.txt", "1")]);
        let b = tree(&[("a.txt", "1"), ("b.txt", "2")]);
        let v = equivalent(&Equivalence::ExactHash {}, a.path(), b.path()).unwrap();
        assert!(matches!(v, Verdict::Different(why) if why.contains("b.txt")));
    }
}
