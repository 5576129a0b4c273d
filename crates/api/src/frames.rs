//! The body of batched chunk requests: `POST /v1/chunks` (upload) and
//! `POST /v1/chunks/fetch` (download).
//!
//! A body is a sequence of frames, `id [32] || status u8 || len u32 LE || bytes [len]`.
//! Status 1 carries the chunk; 0 says the node lacks it; 2 says it was left out of this
//! response to keep it under [`MAX_RESPONSE_BYTES`] and should be asked for again. Uploads
//! carry status 1 only. The receiver checks every chunk against its id.

use gridwork_types::Hash;

/// The most chunk bytes one fetch response carries; chunks past it are marked status 2.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes one batched upload may carry.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// The most ids one fetch may ask for.
pub const MAX_FETCH_IDS: usize = 4096;

/// One frame of a batched body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The chunk's stored bytes.
    Chunk(Vec<u8>),
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
    out.extend_from_slice(id.as_bytes());
    out.push(status);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The answer to a fetch of `ids`: one frame per id from `get` (the stored bytes or `None`),
/// chunks past [`MAX_RESPONSE_BYTES`] deferred. What the node and a peer both serve.
pub fn answer_fetch<E>(
    ids: &[Hash],
    mut get: impl FnMut(&Hash) -> Result<Option<Vec<u8>>, E>,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::new();
    for id in ids {
        if out.len() >= MAX_RESPONSE_BYTES {
            push_frame(&mut out, id, &Frame::Deferred);
            continue;
        }
        match get(id)? {
            Some(bytes) => push_chunk(&mut out, id, &bytes),
            None => push_frame(&mut out, id, &Frame::Missing),
        }
    }
    Ok(out)
}

/// Reads the answer to a fetch of `ids`: one frame per id, in the order asked, or why not.
pub fn read_answer(body: &[u8], ids: &[Hash], max_chunk: usize) -> Result<Vec<Frame>, String> {
    let frames = parse_frames(body, max_chunk).map_err(|e| e.to_string())?;
    if frames.len() != ids.len() || frames.iter().zip(ids).any(|((a, _), b)| a != b) {
        return Err("the frames do not answer the ids asked".into());
    }
    Ok(frames.into_iter().map(|(_, f)| f).collect())
}

/// Splits a body into its frames; each chunk is at most `max_chunk` bytes.
pub fn parse_frames(body: &[u8], max_chunk: usize) -> Result<Vec<(Hash, Frame)>, FrameError> {
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
        let bytes = body
            .get(at + 37..at + 37 + len)
            .ok_or(bad("truncated chunk"))?;
        let frame = match status {
            1 => Frame::Chunk(bytes.to_vec()),
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
        push_frame(&mut body, &a, &Frame::Chunk(b"sealed".to_vec()));
        push_frame(&mut body, &b, &Frame::Missing);
        push_frame(&mut body, &c, &Frame::Deferred);
        assert_eq!(
            parse_frames(&body, 1024).unwrap(),
            vec![
                (a, Frame::Chunk(b"sealed".to_vec())),
                (b, Frame::Missing),
                (c, Frame::Deferred)
            ]
        );
        assert_eq!(
            parse_frames(&body[..40], 1024).unwrap_err().why,
            "truncated chunk"
        );
        assert_eq!(
            parse_frames(&body, 3).unwrap_err().why,
            "chunk larger than allowed"
        );
    }
}
