//! The file a pin leaves in `pins/<cid>.pin`.
//!
//! `"GWPIN\0\0\x02" || until_ms u64 LE || lock [32] || pinner [20] || bytes u64 LE || chunk id
//! [32] * n`: until when the tree is kept, the [`proof_lock`](gridwork_transfer::proof_lock)
//! of its holders' key proof (set by the first pin, checked by every later pin and key
//! grant), the account that pinned it last (charged its stored bytes against its quota; all
//! zero: nobody), those bytes, and the chunks the pusher listed. Files of the first format
//! (`until_ms || ids`: no lock, no pinner; length 8 mod 32, where this one is 12 mod 32)
//! still read, as pins any key holder may claim and nobody is charged for.

use gridwork_types::{Address, Hash};

const MAGIC: &[u8; 8] = b"GWPIN\0\0\x02";

/// Bytes before the chunk ids in the current format.
const HEADER: usize = 8 + 8 + 32 + 20 + 8;

/// A pin as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinFile {
    /// Until when the tree is kept (ms since the epoch).
    pub(crate) until_ms: u64,
    /// The lock of the holders' key proof; `None` for a pin of the first format.
    pub(crate) lock: Option<Hash>,
    /// The account charged for the tree, and its stored bytes.
    pub(crate) charge: Option<(Address, u64)>,
    /// The chunks the pusher listed.
    pub(crate) chunks: Vec<Hash>,
}

fn ids(b: &[u8]) -> Vec<Hash> {
    b.chunks_exact(32)
        .filter_map(|c| c.try_into().ok().map(Hash))
        .collect()
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl PinFile {
    /// Reads a pin file's bytes; `None` if they are neither format.
    pub(crate) fn decode(bytes: &[u8]) -> Option<PinFile> {
        if bytes.starts_with(MAGIC) {
            if bytes.len() < HEADER || (bytes.len() - HEADER) % 32 != 0 {
                return None;
            }
            let pinner = Address(bytes.get(48..68)?.try_into().ok()?);
            return Some(PinFile {
                until_ms: u64_at(bytes, 8)?,
                lock: Some(Hash(bytes.get(16..48)?.try_into().ok()?)),
                charge: (pinner != Address([0; 20]))
                    .then(|| (pinner, u64_at(bytes, 68).unwrap_or(0))),
                chunks: ids(bytes.get(HEADER..)?),
            });
        }
        if bytes.len() < 8 || (bytes.len() - 8) % 32 != 0 {
            return None;
        }
        Some(PinFile {
            until_ms: u64_at(bytes, 0)?,
            lock: None,
            charge: None,
            chunks: ids(bytes.get(8..)?),
        })
    }

    /// The bytes of the current format (a pin without a lock is written with the lock of
    /// `fallback`).
    pub(crate) fn encode(&self, fallback: &Hash) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 32 * self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.until_ms.to_le_bytes());
        out.extend_from_slice(self.lock.as_ref().unwrap_or(fallback).as_bytes());
        let (pinner, bytes) = self.charge.unwrap_or((Address([0; 20]), 0));
        out.extend_from_slice(&pinner.0);
        out.extend_from_slice(&bytes.to_le_bytes());
        for id in &self.chunks {
            out.extend_from_slice(id.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_of_both_formats_read_back() {
        let pin = PinFile {
            until_ms: 1_700_000_000_000,
            lock: Some(Hash([9; 32])),
            charge: Some((Address([5; 20]), 12_345)),
            chunks: vec![Hash([1; 32]), Hash([2; 32])],
        };
        assert_eq!(PinFile::decode(&pin.encode(&Hash([0; 32]))), Some(pin));
        // The first format: until || ids, no lock.
        let mut old = 5u64.to_le_bytes().to_vec();
        old.extend_from_slice(&[3; 32]);
        assert_eq!(
            PinFile::decode(&old),
            Some(PinFile {
                until_ms: 5,
                lock: None,
                charge: None,
                chunks: vec![Hash([3; 32])]
            })
        );
        // A torn file is neither.
        assert_eq!(PinFile::decode(&old[..20]), None);
        let new = PinFile::decode(&old).unwrap().encode(&Hash([4; 32]));
        assert_eq!(PinFile::decode(&new[..new.len() - 1]), None);
        let claimed = PinFile::decode(&new).unwrap();
        assert_eq!(
            claimed.lock,
            Some(Hash([4; 32])),
            "written with the fallback lock"
        );
        assert_eq!(claimed.charge, None, "and nobody charged");
    }
}
