//! Chunk frames: upload bodies (`POST /v1/chunks`) and fetch answers from nodes and peers.
#![no_main]
use gridwork_api::frames::{parse_frames, read_answer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = bytes::Bytes::copy_from_slice(data);
    if let Ok(frames) = parse_frames(&body, 1 << 16) {
        let ids: Vec<_> = frames.iter().map(|(id, _)| *id).collect();
        assert_eq!(read_answer(&body, &ids, 1 << 16).map(|f| f.len()), Ok(ids.len()));
    }
});
