//! The file a pin leaves in `pins/<cid>.pin`.
//!
//! `"GWPIN\0\0\x03" || until_ms u64 LE || lock [32] || n u16 LE || (pinner [20] || bytes
//! u64 LE) * n || chunk id [32] * m`: until when the tree is kept, the
//! [`proof_lock`](gridwork_transfer::proof_lock) of its holders' key proof for this node (set
//! by the first pin, checked by every later pin and key grant), each account that pinned it
//! with the stored bytes it is charged for (against its quota, until the tree is collected),
//! and the chunks the latest pusher listed.
//!
//! Older files still read. The second format (`"GWPIN\0\0\x02" || until || lock || pinner
//! [20] || bytes || ids`) holds a lock of the first, node-independent proof, which no proof
//! opens now: its pin reads without a lock (any holder may claim it) and keeps its charge.
//! The first format (`until_ms || ids`; length 8 mod 32) reads as a pin without lock or
//! charges.

use gridwork_types::{Address, Hash};

const MAGIC: &[u8; 8] = b"GWPIN\0\0\x03";
const MAGIC_V2: &[u8; 8] = b"GWPIN\0\0\x02";

/// Bytes before the pinners in the current format.
const HEADER: usize = 8 + 8 + 32 + 2;

/// Bytes of one pinner's entry.
const PINNER: usize = 20 + 8;

/// Bytes before the chunk ids in the second format.
const HEADER_V2: usize = 8 + 8 + 32 + 20 + 8;

/// Most accounts one pin file records (the count is a u16 and a pin stays small).
pub(crate) const MAX_PINNERS: usize = 1024;

/// A pin as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinFile {
    /// Until when the tree is kept (ms since the epoch).
    pub(crate) until_ms: u64,
    /// The lock of the holders' key proof; `None` for a pin of an older format.
    pub(crate) lock: Option<Hash>,
    /// The accounts charged for the tree, each with the stored bytes it is charged.
    pub(crate) charges: Vec<(Address, u64)>,
    /// The chunks the pusher listed.
    pub(crate) chunks: Vec<Hash>,
}

fn ids(b: &[u8]) -> Option<Vec<Hash>> {
    if b.len() % 32 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(32)
            .filter_map(|c| c.try_into().ok().map(Hash))
            .collect(),
    )
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn address_at(b: &[u8], at: usize) -> Option<Address> {
    Some(Address(b.get(at..at + 20)?.try_into().ok()?))
}

impl PinFile {
    /// Reads a pin file's bytes; `None` if they are no format.
    pub(crate) fn decode(bytes: &[u8]) -> Option<PinFile> {
        if bytes.starts_with(MAGIC) {
            let n = u16::from_le_bytes(bytes.get(48..50)?.try_into().ok()?) as usize;
            let charges = (0..n)
                .map(|i| {
                    let at = HEADER + i * PINNER;
                    Some((address_at(bytes, at)?, u64_at(bytes, at + 20)?))
                })
                .collect::<Option<Vec<_>>>()?;
            return Some(PinFile {
                until_ms: u64_at(bytes, 8)?,
                lock: Some(Hash(bytes.get(16..48)?.try_into().ok()?)),
                charges,
                chunks: ids(bytes.get(HEADER + n * PINNER..)?)?,
            });
        }
        if bytes.starts_with(MAGIC_V2) {
            let pinner = address_at(bytes, 48)?;
            return Some(PinFile {
                until_ms: u64_at(bytes, 8)?,
                lock: None,
                charges: if pinner == Address([0; 20]) {
                    Vec::new()
                } else {
                    vec![(pinner, u64_at(bytes, 68)?)]
                },
                chunks: ids(bytes.get(HEADER_V2..)?)?,
            });
        }
        Some(PinFile {
            until_ms: u64_at(bytes, 0)?,
            lock: None,
            charges: Vec::new(),
            chunks: ids(bytes.get(8..)?)?,
        })
    }

    /// The bytes of the current format (a pin without a lock is written with the lock of
    /// `fallback`; past [`MAX_PINNERS`] the earliest charges are left out).
    pub(crate) fn encode(&self, fallback: &Hash) -> Vec<u8> {
        let charges = &self.charges[self.charges.len().saturating_sub(MAX_PINNERS)..];
        let mut out = Vec::with_capacity(HEADER + PINNER * charges.len() + 32 * self.chunks.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.until_ms.to_le_bytes());
        out.extend_from_slice(self.lock.as_ref().unwrap_or(fallback).as_bytes());
        out.extend_from_slice(&(charges.len() as u16).to_le_bytes());
        for (who, bytes) in charges {
            out.extend_from_slice(&who.0);
            out.extend_from_slice(&bytes.to_le_bytes());
        }
        for id in &self.chunks {
            out.extend_from_slice(id.as_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PinFile {
        PinFile {
            until_ms: 1_700_000_000_000,
            lock: Some(Hash([9; 32])),
            charges: vec![(Address([5; 20]), 12_345), (Address([6; 20]), 12_000)],
            chunks: vec![Hash([1; 32]), Hash([2; 32])],
        }
    }

    #[test]
    fn pins_of_every_format_read_back() {
        let pin = sample();
        assert_eq!(PinFile::decode(&pin.encode(&Hash([0; 32]))), Some(pin));
        let nobody = PinFile {
            charges: Vec::new(),
            ..sample()
        };
        assert_eq!(
            PinFile::decode(&nobody.encode(&Hash([0; 32]))),
            Some(nobody)
        );

        // The second format: one pinner, a lock of the node-independent proof (dropped).
        let mut second = MAGIC_V2.to_vec();
        second.extend_from_slice(&7u64.to_le_bytes());
        second.extend_from_slice(&[8; 32]);
        second.extend_from_slice(&[5; 20]);
        second.extend_from_slice(&99u64.to_le_bytes());
        second.extend_from_slice(&[3; 32]);
        assert_eq!(
            PinFile::decode(&second),
            Some(PinFile {
                until_ms: 7,
                lock: None,
                charges: vec![(Address([5; 20]), 99)],
                chunks: vec![Hash([3; 32])]
            })
        );

        // The first format: until || ids, no lock.
        let mut first = 5u64.to_le_bytes().to_vec();
        first.extend_from_slice(&[3; 32]);
        assert_eq!(
            PinFile::decode(&first),
            Some(PinFile {
                until_ms: 5,
                lock: None,
                charges: Vec::new(),
                chunks: vec![Hash([3; 32])]
            })
        );
        let claimed = PinFile::decode(&PinFile::decode(&first).unwrap().encode(&Hash([4; 32])));
        assert_eq!(
            claimed.map(|p| (p.lock, p.charges)),
            Some((Some(Hash([4; 32])), Vec::new())),
            "written with the fallback lock and nobody charged"
        );
    }

    #[test]
    fn torn_pin_files_read_as_none() {
        let whole = sample().encode(&Hash([0; 32]));
        for cut in [1, 31, 32 + 1, 32 + PINNER] {
            assert_eq!(
                PinFile::decode(&whole[..whole.len() - cut]),
                None,
                "cut {cut}"
            );
        }
        let mut first = 5u64.to_le_bytes().to_vec();
        first.extend_from_slice(&[3; 32]);
        assert_eq!(PinFile::decode(&first[..20]), None);
    }

    #[test]
    fn a_pin_keeps_the_latest_pinners_when_more_than_it_can_hold() {
        let many = PinFile {
            charges: (0..MAX_PINNERS as u64 + 3)
                .map(|i| (Address([(i % 251) as u8; 20]), i))
                .collect(),
            ..sample()
        };
        let read = PinFile::decode(&many.encode(&Hash([0; 32]))).unwrap();
        assert_eq!(read.charges.len(), MAX_PINNERS);
        assert_eq!(read.charges.first().map(|c| c.1), Some(3));
    }
}
