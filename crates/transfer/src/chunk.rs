//! Cutting and sealing chunks.
//!
//! Sealed chunk (version 1): `1u8 || compression u8 (0 none, 1 zstd) || nonce [12] ||
//! ChaCha20-Poly1305(data key, nonce, aad = first two bytes, payload)`. The nonce is the
//! first 12 bytes of BLAKE3 keyed with a key derived from the data key, over the plaintext:
//! the same plaintext under the same key seals to the same bytes (so the same id), and
//! different plaintexts never share a nonce. Its chunk id is BLAKE3 of the sealed bytes.

use std::cell::RefCell;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use gridwork_types::Hash;
use zstd::bulk::{Compressor, Decompressor};

use crate::keys::DataKey;
use crate::pool::BufferPool;

/// Chunk sizes for FastCDC, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Smallest chunk.
    pub min: u32,
    /// Typical chunk.
    pub avg: u32,
    /// Largest chunk (also the most a sealed chunk may expand to when opened).
    pub max: u32,
}

impl ChunkParams {
    /// 256 KiB minimum, 1 MiB average, 4 MiB maximum.
    pub const DEFAULT: ChunkParams = ChunkParams {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
    };
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams::DEFAULT
    }
}

/// Why a chunk did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The data key does not open it (wrong key, or the bytes were altered).
    #[error(
        "cannot decrypt chunk {id}: the data key does not open it (wrong key or altered chunk)"
    )]
    WrongKey {
        /// The chunk.
        id: Hash,
    },
    /// Not a sealed chunk of a known version.
    #[error("chunk {id} is not a sealed chunk of a known format")]
    Malformed {
        /// The chunk.
        id: Hash,
    },
    /// It decompresses beyond the maximum chunk size.
    #[error("chunk {id} decompresses beyond {max} bytes")]
    TooLarge {
        /// The chunk.
        id: Hash,
        /// The limit.
        max: u32,
    },
}

/// Content-defined chunk boundaries of `data`, as `(offset, length)`.
pub fn chunk_ranges(data: &[u8], p: ChunkParams) -> Vec<(usize, usize)> {
    if data.is_empty() {
        return Vec::new();
    }
    fastcdc::v2020::FastCDC::new(data, p.min, p.avg, p.max)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// Bytes a [`Cutter`] reads at a time beyond the chunk it cuts.
const READ_AHEAD: usize = 8 * 1024 * 1024;

/// Cuts a byte stream into the chunks [`chunk_ranges`] finds in the whole of it, holding at
/// most one window of it (the largest chunk plus 8 MiB): a file of any size packs in bounded
/// memory. FastCDC looks at most `max` bytes past a cut, so a window that holds `max` bytes
/// (or the rest of the stream) cuts where the whole would.
pub(crate) struct Cutter<'w, R> {
    source: R,
    params: ChunkParams,
    window: &'w mut Vec<u8>,
    /// First byte of the window not yet cut.
    start: usize,
    /// Bytes of the window read so far.
    end: usize,
    eof: bool,
    /// Bytes read from the source.
    read: u64,
}

impl<'w, R: std::io::Read> Cutter<'w, R> {
    /// A cutter reading `source`, in `window` (a buffer kept between streams, so its pages
    /// are not faulted in again for each file).
    pub(crate) fn new(source: R, params: ChunkParams, window: &'w mut Vec<u8>) -> Self {
        let len = params.max as usize + READ_AHEAD;
        if window.len() < len {
            window.resize(len, 0);
        }
        Cutter {
            source,
            params,
            window,
            start: 0,
            end: 0,
            eof: false,
            read: 0,
        }
    }

    /// Bytes read from the source so far (all of it, once [`Cutter::next_chunk`] returned
    /// `None`).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The next chunk, or `None` at the end of the stream.
    pub(crate) fn next_chunk(&mut self) -> std::io::Result<Option<&[u8]>> {
        let max = self.params.max as usize;
        if !self.eof && self.end - self.start < max {
            self.window.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while !self.eof && self.end < self.window.len() {
                match self.source.read(&mut self.window[self.end..]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => {
                        self.end += n;
                        self.read += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let rest = &self.window[self.start..self.end];
        if rest.is_empty() {
            return Ok(None);
        }
        let p = self.params;
        let (_, cut) = fastcdc::v2020::FastCDC::new(rest, p.min, p.avg, p.max).cut(0, rest.len());
        let chunk = self.start..self.start + cut.max(1);
        self.start = chunk.end;
        Ok(Some(&self.window[chunk]))
    }
}

thread_local! {
    /// Per-thread zstd contexts and the buffer a compressed payload is decrypted into: a
    /// context per chunk cost an allocation of about a megabyte, and each fresh buffer
    /// faulted its pages in again (perf: a fifth of a pull was the kernel zeroing pages).
    static ZSTD: RefCell<Option<(Compressor<'static>, Decompressor<'static>)>> =
        const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Plaintext chunks for reuse: [`open`] takes from it, the tree writer gives back.
static PLAINTEXTS: BufferPool = BufferPool::new(64, 8 << 20);

/// Returns an opened chunk's buffer once its bytes are used, for the next [`open`].
pub(crate) fn recycle(plain: Vec<u8>) {
    PLAINTEXTS.give_back(plain);
}

/// Runs `f` with this thread's zstd contexts, made on first use.
fn with_zstd<T>(
    f: impl FnOnce(&mut Compressor<'static>, &mut Decompressor<'static>) -> T,
) -> Option<T> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some((Compressor::new(1).ok()?, Decompressor::new().ok()?));
        }
        let (c, d) = slot.as_mut()?;
        Some(f(c, d))
    })
}

/// Bytes of each sample [`incompressible`] compresses.
const SAMPLE: usize = 8 * 1024;

/// Whether a chunk of at least 64 KiB looks incompressible: none of three samples (its
/// start, middle and end) compresses below 97% of its size. zstd would find out too, but only
/// after a pass over the whole chunk and a copy of it into raw blocks (7% of a push's CPU on
/// media and weights); the samples cost 2% of that. Deterministic, so equal plaintexts still
/// seal equally.
fn incompressible(c: &mut Compressor<'static>, plain: &[u8]) -> bool {
    if plain.len() < 8 * SAMPLE {
        return false;
    }
    let mid = plain.len() / 2 - SAMPLE / 2;
    let mut out = [0u8; SAMPLE + 512];
    [0, mid, plain.len() - SAMPLE].iter().all(|&at| {
        let sample = &plain[at..at + SAMPLE];
        c.compress_to_buffer(sample, &mut out[..])
            .map_or(true, |n| n * 100 >= SAMPLE * 97)
    })
}

/// Seals a plaintext chunk; returns its id and stored bytes.
pub fn seal(key: &DataKey, plain: &[u8]) -> (Hash, Vec<u8>) {
    let nonce_key = blake3::derive_key("gridwork chunk nonce v1", &key.0);
    let nonce_full = blake3::keyed_hash(&nonce_key, plain);
    let nonce = &nonce_full.as_bytes()[..12];
    // One buffer: header, nonce, then the payload compressed straight into it (or copied
    // when compression does not help), encrypted in place, then the tag.
    let bound = zstd::zstd_safe::compress_bound(plain.len());
    let mut out = Vec::with_capacity(14 + bound.max(plain.len()) + 16);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(nonce);
    let mut cursor = std::io::Cursor::new(out);
    cursor.set_position(14);
    let compressed = with_zstd(|c, _| {
        if incompressible(c, plain) {
            return None;
        }
        c.compress_to_buffer(plain, &mut cursor).ok()
    })
    .flatten();
    let mut out = cursor.into_inner();
    match compressed {
        Some(n) if n < plain.len() => out[1] = 1,
        _ => {
            out.truncate(14);
            out.extend_from_slice(plain);
        }
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let (head, payload) = out.split_at_mut(14);
    // Encryption with a 32-byte key and a 12-byte nonce cannot fail for chunk-sized input.
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&head[2..14]), &head[..2], payload)
        .unwrap_or_default();
    out.extend_from_slice(&tag);
    (Hash::of(&out), out)
}

/// Opens a sealed chunk (whose id the caller has checked) back into plaintext.
pub fn open(key: &DataKey, id: &Hash, sealed: &[u8], max: u32) -> Result<Vec<u8>, SealError> {
    if sealed.len() < 14 + 16 || sealed[0] != 1 || sealed[1] > 1 {
        return Err(SealError::Malformed { id: *id });
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let (ciphertext, tag) = sealed[14..].split_at(sealed.len() - 14 - 16);
    let decrypt = |buf: &mut [u8]| {
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&sealed[2..14]),
                &sealed[..2],
                buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| SealError::WrongKey { id: *id })
    };
    if sealed[1] == 0 {
        if ciphertext.len() > max as usize {
            return Err(SealError::TooLarge { id: *id, max });
        }
        let mut plain = PLAINTEXTS.take(ciphertext.len());
        plain.extend_from_slice(ciphertext);
        decrypt(&mut plain)?;
        return Ok(plain);
    }
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        buf.extend_from_slice(ciphertext);
        decrypt(&mut buf)?;
        // The frame states its size (seal writes it); the buffer is that large, at most `max`.
        let size = zstd::zstd_safe::get_frame_content_size(&buf)
            .ok()
            .flatten()
            .map_or(max as usize, |n| n.min(u64::from(max)) as usize);
        let mut plain = PLAINTEXTS.take(size);
        let plain = with_zstd(|_, d| d.decompress_to_buffer(&buf[..], &mut plain))
            .and_then(Result::ok)
            .map(|_| plain)
            .ok_or(SealError::TooLarge { id: *id, max });
        if buf.capacity() > 8 << 20 {
            *buf = Vec::new();
        }
        plain
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_is_deterministic_per_key_and_opens_only_with_it() {
        let (k1, k2) = (DataKey([1; 32]), DataKey([2; 32]));
        let plain = b"the same chunk of data, repeated repeated repeated repeated".to_vec();
        let (id1, s1) = seal(&k1, &plain);
        let (id1b, _) = seal(&k1, &plain);
        let (id2, _) = seal(&k2, &plain);
        assert_eq!(id1, id1b);
        assert_ne!(id1, id2);
        assert_eq!(open(&k1, &id1, &s1, 1 << 20).unwrap(), plain);
        assert_eq!(
            open(&k2, &id1, &s1, 1 << 20),
            Err(SealError::WrongKey { id: id1 })
        );
        let mut forged = s1.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            open(&k1, &id1, &forged, 1 << 20),
            Err(SealError::WrongKey { id: id1 })
        );
    }

    /// The format as docs/data-plane.md states it, built the plain way.
    fn reference_seal(key: &DataKey, plain: &[u8]) -> Vec<u8> {
        use chacha20poly1305::aead::{Aead, Payload};
        let nonce_key = blake3::derive_key("gridwork chunk nonce v1", &key.0);
        let nonce = blake3::keyed_hash(&nonce_key, plain).as_bytes()[..12].to_vec();
        let sample = |at: usize| {
            zstd::bulk::compress(&plain[at..at + 8192], 1)
                .unwrap()
                .len()
        };
        let skipped = plain.len() >= 65_536
            && [0, plain.len() / 2 - 4096, plain.len() - 8192]
                .iter()
                .all(|&at| sample(at) * 100 >= 8192 * 97);
        let compressed = zstd::bulk::compress(plain, 1)
            .ok()
            .filter(|c| !skipped && c.len() < plain.len());
        let header = [1u8, u8::from(compressed.is_some())];
        let payload = compressed.as_deref().unwrap_or(plain);
        let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&key.0))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: payload,
                    aad: &header,
                },
            )
            .unwrap();
        [&header[..], &nonce, &ciphertext].concat()
    }

    #[test]
    fn sealed_bytes_follow_the_documented_format_and_open_again() {
        let key = DataKey([7; 32]);
        let mut random = vec![0u8; 300_000];
        blake3::Hasher::new()
            .update(b"incompressible")
            .finalize_xof()
            .fill(&mut random);
        let text = b"a line of text that repeats\n".repeat(10_000);
        // Incompressible but for its middle, or but for a stretch no sample sees.
        let mut middle = random.clone();
        middle[140_000..160_000].fill(b'm');
        let mut unseen = random.clone();
        unseen[20_000..120_000].fill(b'u');
        // Twice each, so the second seal runs on this thread's reused contexts.
        for plain in [
            &random[..],
            &text[..],
            b"",
            &middle,
            &unseen,
            &random[..],
            &text[..],
        ] {
            let (id, sealed) = seal(&key, plain);
            assert_eq!(sealed, reference_seal(&key, plain));
            assert_eq!(id, Hash::of(&sealed));
            assert_eq!(open(&key, &id, &sealed, 1 << 20).unwrap(), plain);
        }
        let (id, sealed) = seal(&key, &text);
        assert_eq!(sealed[1], 1, "text is stored compressed");
        assert_eq!(
            seal(&key, &random).1[1],
            0,
            "random bytes are stored as they are"
        );
        assert_eq!(
            seal(&key, &middle).1[1],
            1,
            "a sample saw the compressible middle"
        );
        assert_eq!(
            seal(&key, &unseen).1[1],
            0,
            "no sample saw it: stored as it is, though zstd would have saved 100 kB"
        );
        assert_eq!(
            open(&key, &id, &sealed, 1000),
            Err(SealError::TooLarge { id, max: 1000 })
        );
    }

    /// A reader that hands out at most `step` bytes per call, as pipes and sockets do.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_stream_is_cut_where_the_whole_of_it_would_be() {
        let p = ChunkParams {
            min: 64 * 1024,
            avg: 256 * 1024,
            max: 1024 * 1024,
        };
        let mut data = vec![0u8; 30 * 1024 * 1024 + 12_345];
        blake3::Hasher::new()
            .update(b"stream cut")
            .finalize_xof()
            .fill(&mut data);
        // A zeroed stretch longer than the largest chunk forces cuts at `max`.
        data[5_000_000..8_000_000].fill(0);
        let mut window = Vec::new();
        for len in [
            0,
            1,
            64 * 1024,
            1024 * 1024,
            1024 * 1024 + 1,
            9_437_184,
            data.len(),
        ] {
            for step in [usize::MAX, 100_000, 4096] {
                let whole = &data[..len];
                let mut cutter = Cutter::new(Trickle { data: whole, step }, p, &mut window);
                let mut got = Vec::new();
                let mut at = 0;
                while let Some(chunk) = cutter.next_chunk().unwrap() {
                    assert_eq!(chunk, &whole[at..at + chunk.len()], "bytes in order");
                    got.push((at, chunk.len()));
                    at += chunk.len();
                }
                assert_eq!(
                    got,
                    chunk_ranges(whole, p),
                    "{len} bytes, read {step} at a time"
                );
                assert_eq!(cutter.bytes_read(), len as u64);
            }
        }
        assert!(
            window.len() <= 1024 * 1024 + READ_AHEAD,
            "the window stays bounded"
        );
    }

    #[test]
    fn chunk_boundaries_survive_an_insertion() {
        let mut data = vec![0u8; 8_000_000];
        blake3::Hasher::new()
            .update(b"chunk test data")
            .finalize_xof()
            .fill(&mut data);
        let p = ChunkParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        };
        let before: std::collections::HashSet<Vec<u8>> = chunk_ranges(&data, p)
            .iter()
            .map(|(o, l)| data[*o..o + l].to_vec())
            .collect();
        data.insert(4_000_000, 42);
        let after: Vec<Vec<u8>> = chunk_ranges(&data, p)
            .iter()
            .map(|(o, l)| data[*o..o + l].to_vec())
            .collect();
        let new = after.iter().filter(|c| !before.contains(*c)).count();
        assert!(
            new <= 3,
            "{new} of {} chunks changed after a one-byte insertion",
            after.len()
        );
    }
}
