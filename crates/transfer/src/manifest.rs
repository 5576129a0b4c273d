//! The binary manifest (tree format v2; docs/data-plane.md, "Trees").
//!
//! `"gridwork-tree-v2\n"` followed by the entries in path order, each
//! `kind u8 (0 file, 1 dir, 2 link, 3 FIFO, 4 hard link) || shared varint || suffix_len varint
//! || suffix || mode varint` and then, for a file, `size varint || count varint || ids [32] *
//! count`, for a link or a hard link `target_len varint || target`. Kinds 3 and 4 came after
//! the first v2 readers: a tree without FIFOs or hard links encodes as it always did (same
//! bytes, same id), and a reader that predates them refuses one that has them, naming the
//! kind, rather than misread it. A path is the first `shared` bytes of the entry
//! before's path followed by `suffix`; varints are unsigned LEB128. About 45 bytes a small
//! file where JSON with hex ids took 144: a third of the bytes to seal, send and keep, and
//! each edit changes fewer manifest chunks.

use gridwork_types::Hash;

use crate::tree::{Entry, EntryKind, TreeError};

/// The manifest's first bytes.
pub(crate) const MANIFEST_TAG: &[u8] = b"gridwork-tree-v2\n";

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The manifest bytes of `entries` (in path order).
pub(crate) fn encode(entries: &[Entry]) -> Vec<u8> {
    let ids: usize = entries.iter().map(|e| e.chunks.len()).sum();
    let mut out = Vec::with_capacity(MANIFEST_TAG.len() + entries.len() * 16 + ids * 32);
    out.extend_from_slice(MANIFEST_TAG);
    let mut before: &str = "";
    for e in entries {
        let shared = common_prefix(before, &e.path);
        let suffix = &e.path.as_bytes()[shared..];
        out.push(match e.kind {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Link => 2,
            EntryKind::Fifo => 3,
            EntryKind::HardLink => 4,
        });
        put_varint(&mut out, shared as u64);
        put_varint(&mut out, suffix.len() as u64);
        out.extend_from_slice(suffix);
        put_varint(&mut out, u64::from(e.mode));
        match e.kind {
            EntryKind::File => {
                put_varint(&mut out, e.size);
                put_varint(&mut out, e.chunks.len() as u64);
                for id in &e.chunks {
                    out.extend_from_slice(id.as_bytes());
                }
            }
            EntryKind::Dir | EntryKind::Fifo => {}
            EntryKind::Link | EntryKind::HardLink => {
                let target = e.target.as_deref().unwrap_or_default();
                put_varint(&mut out, target.len() as u64);
                out.extend_from_slice(target.as_bytes());
            }
        }
        before = &e.path;
    }
    out
}

/// Bytes shared at the start of `a` and `b`, cut back to a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !b.is_char_boundary(n) {
        n -= 1;
    }
    n
}

/// Reads fields off the front of the manifest, saying where it broke.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: &str) -> TreeError {
        TreeError::Malformed(format!("manifest byte {}: {what}", self.at))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], TreeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.bad(&format!("{what} runs past the end")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn varint(&mut self, what: &str) -> Result<u64, TreeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1, what)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.bad(&format!("{what} is not a varint")))
    }

    /// A length that fits in what is left of the manifest.
    fn len(&mut self, what: &str) -> Result<usize, TreeError> {
        let n = self.varint(what)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.at)
            .ok_or_else(|| self.bad(&format!("{what} {n} is longer than the manifest")))
    }

    fn text(&mut self, what: &str) -> Result<&'a str, TreeError> {
        let len = self.len(what)?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| self.bad(&format!("{what} is not UTF-8")))
    }
}

/// The entries of a manifest's bytes; an error names the byte where they stop making sense.
/// Paths are checked by the caller.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Entry>, TreeError> {
    let body = bytes
        .strip_prefix(MANIFEST_TAG)
        .ok_or_else(|| TreeError::Malformed("the manifest lacks its format tag".into()))?;
    let mut r = Reader { bytes: body, at: 0 };
    let mut entries: Vec<Entry> = Vec::new();
    while r.at < body.len() {
        let kind = match r.take(1, "kind")?[0] {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Link,
            3 => EntryKind::Fifo,
            4 => EntryKind::HardLink,
            k => return Err(r.bad(&format!("kind {k}"))),
        };
        // The shared prefix is of the previous path, not of what is left to read: a short
        // last entry may share more bytes than remain (found by the `manifest` fuzz target:
        // a tree ending in an empty directory beside a long path could not be pulled).
        let shared = usize::try_from(r.varint("shared prefix")?).unwrap_or(usize::MAX);
        let before = entries.last().map_or("", |e| e.path.as_str());
        let prefix = before
            .get(..shared)
            .ok_or_else(|| r.bad(&format!("shared prefix {shared} of `{before}`")))?;
        let path = format!("{prefix}{}", r.text("path")?);
        if path.as_str() <= before && !entries.is_empty() {
            return Err(r.bad(&format!("`{path}` is out of path order")));
        }
        let mode = u32::try_from(r.varint("mode")?).map_err(|_| r.bad("mode"))?;
        let mut entry = Entry {
            path,
            kind,
            mode,
            size: 0,
            chunks: Vec::new(),
            target: None,
        };
        match entry.kind {
            EntryKind::File => {
                entry.size = r.varint("size")?;
                let count = r.len("chunk count")?;
                let ids = r.take(count.saturating_mul(32), "chunk ids")?;
                entry.chunks = ids
                    .chunks_exact(32)
                    .map(|c| Hash(c.try_into().unwrap_or([0; 32])))
                    .collect();
            }
            EntryKind::Dir | EntryKind::Fifo => {}
            EntryKind::Link | EntryKind::HardLink => {
                entry.target = Some(r.text("link target")?.to_string())
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, ids: &[u8]) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            size,
            chunks: ids.iter().map(|&n| Hash([n; 32])).collect(),
            target: None,
        }
    }

    /// Found by the `manifest` fuzz target: the last entry shared more of the previous path
    /// than bytes were left in the manifest, and the reader took that for damage.
    #[test]
    fn a_tree_ending_in_a_short_entry_beside_a_long_path_reads_back() {
        let dir = |path: &str| Entry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            size: 0,
            chunks: Vec::new(),
            target: None,
        };
        let entries = vec![
            dir("results/2026-12-05/a-rather-long-directory-name/x"),
            dir("results/2026-12-05/a-rather-long-directory-name/y"),
        ];
        assert_eq!(decode(&encode(&entries)).unwrap(), entries);
    }

    #[test]
    fn a_manifest_reads_back_as_written_and_damage_is_named_not_a_panic() {
        let entries = vec![
            Entry {
                path: "d".into(),
                kind: EntryKind::Dir,
                mode: 0o755,
                size: 0,
                chunks: vec![],
                target: None,
            },
            file("d/a.bin", 300_000, &[1, 2]),
            file("d/ab.bin", 0, &[]),
            file("d/ä/x", 7, &[3]),
            file("d/ä/y", u64::MAX, &[4]),
            Entry {
                path: "d/ä/z".into(),
                kind: EntryKind::HardLink,
                mode: 0o644,
                size: 0,
                chunks: vec![],
                target: Some("d/ä/x".into()),
            },
            Entry {
                path: "p".into(),
                kind: EntryKind::Fifo,
                mode: 0o600,
                size: 0,
                chunks: vec![],
                target: None,
            },
            Entry {
                path: "z".into(),
                kind: EntryKind::Link,
                mode: 0o777,
                size: 0,
                chunks: vec![],
                target: Some("d/a.bin".into()),
            },
        ];
        let bytes = encode(&entries);
        assert_eq!(decode(&bytes).unwrap(), entries);
        // Shared prefixes: "d/ä/y" after "d/ä/x" costs its last byte only.
        assert!(
            bytes.len() < MANIFEST_TAG.len() + 8 * 8 + 5 * 32 + 70,
            "{}",
            bytes.len()
        );

        // Every cut and every flipped byte either reads as some manifest or names the
        // problem; none panics or reads past the end.
        for at in 0..bytes.len() {
            let _ = decode(&bytes[..at]);
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x41;
            let _ = decode(&damaged);
        }
        let mut out_of_order = entries.clone();
        out_of_order.swap(1, 2);
        assert!(decode(&encode(&out_of_order)).is_err());
        let huge_count = [
            MANIFEST_TAG,
            &[0, 0, 1, b'a', 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ]
        .concat();
        let err = decode(&huge_count).unwrap_err().to_string();
        assert!(err.contains("chunk count"), "{err}");
    }
}
