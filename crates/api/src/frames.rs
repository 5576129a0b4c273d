//! The body of batched chunk requests: `POST /v1/chunks` (upload) and
//! `POST /v1/chunks/fetch` (download).
//!
//! A body is a sequence of frames, `id [32] || status u8 || len u32 LE || bytes [len]`.
//! Status 1 carries the chunk; 0 says the node lacks it; 2 says it was left out of this
//! response to keep it under [`MAX_RESPONSE_BYTES`] and should be asked for again. Uploads
//! carry status 1 only. The receiver checks every chunk against its id.

use bytes::Bytes;
use gridwork_transfer::BufferPool;
use gridwork_types::Hash;

/// The most chunk bytes one fetch response carries; chunks past it are marked status 2.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The most chunk bytes a fetch answers a caller that did not sign it: an unauthenticated
/// request of a few ids cannot make the node hold 64 MiB for a reader that never reads.
/// (The first chunk is always answered whatever its size, so a pull still progresses.)
pub const UNSIGNED_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The most bytes one batched upload may carry.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// The most ids one fetch may ask for.
pub const MAX_FETCH_IDS: usize = 4096;

/// Request and response bodies for reuse (up to 64 MiB each; see [`BufferPool`]): enough for
/// a node's and a client's streams in one process.
static POOL: BufferPool = BufferPool::new(32, MAX_RESPONSE_BYTES + (8 << 20));

/// An empty body buffer with room for `capacity` bytes, reused when one is free.
pub fn take_buffer(capacity: usize) -> Vec<u8> {
    POOL.take(capacity)
}

/// Returns a body buffer for reuse.
pub fn give_back(buf: Vec<u8>) {
    POOL.give_back(buf);
}

/// `buf` as shared bytes that return it to the pool once the last slice of it is dropped
/// (frames parsed from it are such slices).
pub fn share(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Pooled(buf))
}

/// A buffer that goes back to the pool when dropped.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

/// Somewhere chunks can be fetched from by id: a node (the client's `Client`), a peer
/// (`gridwork_p2p::PeerSource`), a test double. What it returns is checked against the ids by
/// the caller; a source may lie. It lives here, beside the frames it answers with, so that
/// sources and pulls depend on this crate and not on each other.
pub trait ChunkSource: Send + Sync {
    /// A name for reports and errors (a URL).
    fn label(&self) -> String;
    /// One answer per id asked, in order: the stored bytes, missing, or deferred (ask again).
    fn fetch_chunks<'a>(&'a self, ids: &'a [Hash]) -> Fetch<'a>;
}

/// What [`ChunkSource::fetch_chunks`] answers with.
pub type Fetch<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Frame>, SourceError>> + Send + 'a>,
>;

/// Why a [`ChunkSource`] gave no frames. The pull reports it with the source's label and asks
/// another source; the kinds are kept for the reader, not for the pull's decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No answer: the connection failed, was cut, or the source was silent too long.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The source answered with a refusal (for a node: its error code and message).
    #[error("refused: {0}")]
    Refused(String),
    /// The source answered something that is not frames.
    #[error("unreadable answer: {0}")]
    BadAnswer(String),
}

/// One frame of a batched body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The chunk's stored bytes (a slice of the body it came in, not a copy).
    Chunk(Bytes),
    /// The sender does not have it.
    Missing,
    /// Left out of this response (size limit); ask again.
    Deferred,
}

/// Why a batched body did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunk frames at byte {offset}: {why}")]
pub struct FrameError {
    /// Where.
    pub offset: usize,
    /// What was wrong.
    pub why: &'static str,
}

/// Appends a frame to `out`.
pub fn push_frame(out: &mut Vec<u8>, id: &Hash, frame: &Frame) {
    match frame {
        Frame::Chunk(b) => push_chunk(out, id, b),
        Frame::Missing => push_raw(out, id, 0, &[]),
        Frame::Deferred => push_raw(out, id, 2, &[]),
    }
}

/// Appends a frame carrying `bytes` (no copy into a [`Frame`] first).
pub fn push_chunk(out: &mut Vec<u8>, id: &Hash, bytes: &[u8]) {
    push_raw(out, id, 1, bytes);
}

fn push_raw(out: &mut Vec<u8>, id: &Hash, status: u8, bytes: &[u8]) {
    out.extend_from_slice(&frame_header(id, status, bytes.len()));
    out.extend_from_slice(bytes);
}

/// The bytes before a frame's payload: `id || status || len`.
fn frame_header(id: &Hash, status: u8, len: usize) -> [u8; 37] {
    let mut head = [0u8; 37];
    head[..32].copy_from_slice(id.as_bytes());
    head[32] = status;
    head[33..].copy_from_slice(&(len as u32).to_le_bytes());
    head
}

/// The frames of an upload of `chunks` as pieces of a body: each chunk's header, then the
/// chunk itself (shared, not copied). Their lengths add up to the body's.
pub fn upload_pieces(chunks: &[(Hash, Bytes)]) -> Vec<Bytes> {
    chunks
        .iter()
        .flat_map(|(id, bytes)| {
            let head = frame_header(id, 1, bytes.len());
            [Bytes::copy_from_slice(&head), bytes.clone()]
        })
        .collect()
}

/// The answer to a fetch of `ids`: one frame per id, chunks past `max_bytes` (at most
/// [`MAX_RESPONSE_BYTES`]) deferred, and an id asked again within the fetch deferred too (no amplification: a
/// request of one id a thousand times costs one chunk, not a thousand). What the node and a
/// peer both serve. `get` appends a chunk's stored bytes to
/// the body (no copy of its own) and says whether it had them; `capacity` is the body's
/// expected size, so the body is allocated once (or reused: see [`take_buffer`]).
pub fn answer_fetch<E>(
    ids: &[Hash],
    capacity: usize,
    max_bytes: usize,
    mut get: impl FnMut(&Hash, &mut Vec<u8>) -> Result<bool, E>,
) -> Result<Vec<u8>, E> {
    let max_bytes = max_bytes.min(MAX_RESPONSE_BYTES);
    let mut out = take_buffer(capacity.min(max_bytes + ids.len() * 37 + (4 << 20)));
    let mut answered = std::collections::HashSet::with_capacity(ids.len());
    for id in ids {
        if out.len() >= max_bytes || !answered.insert(*id) {
            push_frame(&mut out, id, &Frame::Deferred);
            continue;
        }
        let header = out.len();
        push_raw(&mut out, id, 1, &[]);
        if get(id, &mut out)? {
            let len = (out.len() - header - 37) as u32;
            out[header + 33..header + 37].copy_from_slice(&len.to_le_bytes());
        } else {
            out.truncate(header);
            push_frame(&mut out, id, &Frame::Missing);
        }
    }
    Ok(out)
}

/// A peer's fetch request (`gridwork/chunks/1`): `count u32 LE || id [32] * count`.
pub fn encode_fetch_request(ids: &[Hash]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 32 * ids.len());
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// The ids of a peer's fetch request, or `None` if it is malformed or asks for more than
/// [`MAX_FETCH_IDS`].
pub fn parse_fetch_request(bytes: &[u8]) -> Option<Vec<Hash>> {
    let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let ids = bytes.get(4..)?;
    if count > MAX_FETCH_IDS || ids.len() != count.checked_mul(32)? {
        return None;
    }
    Some(
        ids.chunks_exact(32)
            .filter_map(|c| c.try_into().ok().map(Hash))
            .collect(),
    )
}

/// Reads the answer to a fetch of `ids`: one frame per id, in the order asked, or why not.
pub fn read_answer(body: &Bytes, ids: &[Hash], max_chunk: usize) -> Result<Vec<Frame>, String> {
    let frames = parse_frames(body, max_chunk).map_err(|e| e.to_string())?;
    if frames.len() != ids.len() || frames.iter().zip(ids).any(|((a, _), b)| a != b) {
        return Err("the frames do not answer the ids asked".into());
    }
    Ok(frames.into_iter().map(|(_, f)| f).collect())
}

/// Splits a body into its frames; each chunk is at most `max_chunk` bytes and shares the
/// body's memory.
pub fn parse_frames(body: &Bytes, max_chunk: usize) -> Result<Vec<(Hash, Frame)>, FrameError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let bad = |why| FrameError { offset: at, why };
        let head = body.get(at..at + 37).ok_or(bad("truncated header"))?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&head[..32]);
        let status = head[32];
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[33..37]);
        let len = u32::from_le_bytes(len) as usize;
        if len > max_chunk {
            return Err(bad("chunk larger than allowed"));
        }
        if body.len() < at + 37 + len {
            return Err(bad("truncated chunk"));
        }
        let frame = match status {
            1 => Frame::Chunk(body.slice(at + 37..at + 37 + len)),
            0 if len == 0 => Frame::Missing,
            2 if len == 0 => Frame::Deferred,
            _ => return Err(bad("unknown status")),
        };
        frames.push((Hash(id), frame));
        at += 37 + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_named() {
        let mut body = Vec::new();
        let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        push_frame(&mut body, &a, &Frame::Chunk(Bytes::from_static(b"sealed")));
        push_frame(&mut body, &b, &Frame::Missing);
        push_frame(&mut body, &c, &Frame::Deferred);
        let body = Bytes::from(body);
        assert_eq!(
            parse_frames(&body, 1024).unwrap(),
            vec![
                (a, Frame::Chunk(Bytes::from_static(b"sealed"))),
                (b, Frame::Missing),
                (c, Frame::Deferred)
            ]
        );
        assert_eq!(
            parse_frames(&body.slice(..40), 1024).unwrap_err().why,
            "truncated chunk"
        );
        assert_eq!(
            parse_frames(&body, 3).unwrap_err().why,
            "chunk larger than allowed"
        );
    }

    /// The tests that use the buffer pool run one at a time.
    static POOL_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_shared_body_returns_to_the_pool_when_its_last_slice_is_dropped() {
        let _one = POOL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let in_pool = |ptr: *const u8| POOL.holds(ptr);
        let mut body = take_buffer(1 << 20);
        push_chunk(&mut body, &Hash([1; 32]), &[7; 1000]);
        let ptr = body.as_ptr();
        let shared = share(body);
        let frames = parse_frames(&shared, 4096).unwrap();
        drop(shared);
        assert!(!in_pool(ptr), "a frame still uses it");
        drop(frames);
        assert!(in_pool(ptr));
        let again = take_buffer(1 << 20);
        assert_eq!(again.as_ptr(), ptr, "reused, not allocated");
        assert!(again.is_empty() && again.capacity() >= 1 << 20);
    }

    #[test]
    fn an_answer_carries_what_the_store_appended_and_names_what_it_lacked() {
        let _one = POOL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        let body = answer_fetch(&[a, b, c], 0, MAX_RESPONSE_BYTES, |id, out| {
            Ok::<_, ()>(match id.0[0] {
                1 => {
                    out.extend_from_slice(b"first");
                    true
                }
                3 => {
                    out.extend_from_slice(b"third chunk");
                    true
                }
                _ => false,
            })
        })
        .unwrap();
        let frames = read_answer(&Bytes::from(body), &[a, b, c], 64).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Chunk(Bytes::from_static(b"first")),
                Frame::Missing,
                Frame::Chunk(Bytes::from_static(b"third chunk")),
            ]
        );
    }

    #[test]
    fn fetch_requests_round_trip_and_bad_ones_are_refused() {
        let ids = vec![Hash([1; 32]), Hash([2; 32])];
        assert_eq!(
            parse_fetch_request(&encode_fetch_request(&ids)),
            Some(ids.clone())
        );
        let mut short = encode_fetch_request(&ids);
        short.pop();
        assert_eq!(parse_fetch_request(&short), None);
        assert_eq!(parse_fetch_request(&[1, 0]), None);
        let mut too_many = ((MAX_FETCH_IDS + 1) as u32).to_le_bytes().to_vec();
        too_many.resize(4 + 32 * (MAX_FETCH_IDS + 1), 0);
        assert_eq!(parse_fetch_request(&too_many), None);
    }

    /// A stranger asking for one chunk a thousand times in one fetch (seen: a 128 KiB
    /// request drew a 64 MiB answer) gets it once; the repeats are deferred, 37 bytes each.
    #[test]
    fn a_fetch_answers_each_id_once() {
        let _one = POOL_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let a = Hash([1; 32]);
        let ids = vec![a; 1000];
        let chunk = vec![7u8; 64 << 10];
        let body = answer_fetch(&ids, 0, MAX_RESPONSE_BYTES, |_, out| {
            out.extend_from_slice(&chunk);
            Ok::<_, ()>(true)
        })
        .unwrap();
        assert_eq!(body.len(), 37 + chunk.len() + 999 * 37);
        let frames = read_answer(&Bytes::from(body), &ids, 1 << 20).unwrap();
        assert!(matches!(frames[0], Frame::Chunk(_)));
        assert!(frames[1..].iter().all(|f| *f == Frame::Deferred));
    }
}
