//! Equivalence functions e(r, r'): does a council member's result match the executor's?
//!
//! Results are output trees on disk. [`equivalent`] compares two trees under an
//! [`Equivalence`]: `ExactHash` wants the same files with the same bytes; `NumericTolerance`
//! wants the same files, and in each file the same tokens, where tokens that are both numbers
//! may differ by at most the absolute tolerance or the relative tolerance (either suffices),
//! as numpy's `isclose` does, and numpy arrays and safetensors files the same tensors, element
//! by element under the same tolerances ([`tensor`]); `Image` wants the same files, PNG images among them compared by
//! their pixels alone ([`image`]), the others byte for byte. Pure: no network, no clock. Used
//! by workers, not by the ledger.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gridwork_types::Equivalence;

pub mod image;
pub mod tensor;

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

/// One entry of a tree as compared: a regular file (its path, to read), or anything else
/// (a link, by its target as text; a FIFO or device, by kind), which is never opened: a
/// link in another party's output must not make a judge read its own machine's files, nor a
/// FIFO make it wait forever.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    File(PathBuf),
    Link(PathBuf),
    Special,
}

fn files(root: &Path) -> Result<BTreeMap<String, Item>, VerifyError> {
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
            let io = |source| VerifyError::Io {
                path: path.display().to_string(),
                source,
            };
            // The entry's own type: a link is not followed.
            let kind = entry.file_type().map_err(io)?;
            if kind.is_dir() {
                stack.push((path, rel));
            } else if kind.is_file() {
                out.insert(rel, Item::File(path));
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(io)?;
                out.insert(rel, Item::Link(target));
            } else {
                out.insert(rel, Item::Special);
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
    for (name, ia) in &fa {
        let (pa, pb) = match (ia, &fb[name]) {
            (Item::File(pa), Item::File(pb)) => (pa, pb),
            (a, b) if a == b => continue,
            _ => {
                return Ok(Verdict::Different(format!(
                    "{name} differs in kind or link target"
                )))
            }
        };
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
                let why = match tensor::kind_of(name) {
                    Some(kind) => tensor::tensor_file_difference(kind, &ba, &bb, abs, rel),
                    None => numeric_difference(&ba, &bb, abs, rel),
                };
                if let Some(why) = why {
                    return Ok(Verdict::Different(format!("{name}: {why}")));
                }
            }
            Equivalence::Image {
                min_psnr_mdb,
                max_diff,
            } => {
                let why = if image::is_png_name(name) {
                    image::png_difference(&ba, &bb, f64::from(*min_psnr_mdb) / 1e3, *max_diff)
                } else {
                    Some("differs (not a PNG image: compared byte for byte)".to_string())
                };
                if let Some(why) = why {
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
        let bytes: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_bytes())).collect();
        tree_of_bytes(&bytes)
    }

    fn tree_of_bytes(files: &[(&str, &[u8])]) -> tempfile::TempDir {
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

    /// Under `Image`, frames whose pixels agree are the same result whatever their metadata
    /// says; any other file must match byte for byte.
    #[test]
    fn image_equivalence_compares_frames_by_pixels_and_other_files_by_bytes() {
        let frame = |note: &str| {
            let mut out = Vec::new();
            let mut enc = png::Encoder::new(&mut out, 2, 2);
            enc.set_color(png::ColorType::Grayscale);
            enc.add_text_chunk("Date".into(), note.into()).unwrap();
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0, 64, 128, 255]).unwrap();
            drop(w);
            out
        };
        let write = tree_of_bytes;
        let a = write(&[("frames/0001.png", &frame("Monday")), ("log.txt", b"ok\n")]);
        let b = write(&[("frames/0001.png", &frame("Tuesday")), ("log.txt", b"ok\n")]);
        let c = write(&[("frames/0001.png", &frame("Monday")), ("log.txt", b"ok!\n")]);
        let e = Equivalence::Image {
            min_psnr_mdb: 40_000,
            max_diff: 8,
        };
        assert_eq!(equivalent(&e, a.path(), b.path()).unwrap(), Verdict::Same);
        assert!(!equivalent(&Equivalence::ExactHash {}, a.path(), b.path())
            .unwrap()
            .is_same());
        let v = equivalent(&e, a.path(), c.path()).unwrap();
        assert!(
            matches!(&v, Verdict::Different(why) if why.starts_with("log.txt")),
            "{v:?}"
        );
    }

    #[test]
    fn different_file_sets_are_different() {
        let a = tree(&[("a.txt", "1")]);
        let b = tree(&[("a.txt", "1"), ("b.txt", "2")]);
        let v = equivalent(&Equivalence::ExactHash {}, a.path(), b.path()).unwrap();
        assert!(matches!(v, Verdict::Different(why) if why.contains("b.txt")));
    }

    /// Another party's output holds a link to a file of the judge's machine, and a FIFO: the
    /// judge compares the link as a link (its target), never reading through it, and never
    /// opens the FIFO, so it neither leaks nor hangs.
    #[test]
    fn links_and_fifos_are_compared_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "the judge's key\n").unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        for d in [&a, &b, &c] {
            std::fs::create_dir(d).unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                d.join("pipe"),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
        }
        std::os::unix::fs::symlink(&secret, a.join("key")).unwrap();
        std::os::unix::fs::symlink(&secret, b.join("key")).unwrap();
        std::fs::write(c.join("key"), "the judge's key\n").unwrap();
        let e = Equivalence::ExactHash {};
        assert_eq!(equivalent(&e, &a, &b).unwrap(), Verdict::Same);
        assert!(!equivalent(&e, &a, &c).unwrap().is_same());
    }
}
