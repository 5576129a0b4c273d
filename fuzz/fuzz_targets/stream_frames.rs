//! A member's streamed response (`POST /m/<service>/streams/<seq>`): frames read however the
//! body is cut on the way, each read once, re-encoded to the bytes they came from.
#![no_main]
use gridwork_types::{Decode, FrameReader, SignedResponse, StreamFrame};

fn read(data: &[u8], cut: usize) -> (Vec<StreamFrame>, bool) {
    let mut reader = FrameReader::default();
    let mut frames = Vec::new();
    for piece in data.chunks(cut.max(1)) {
        reader.push(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, false),
            }
        }
    }
    (frames, true)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let (whole, ok) = read(body, body.len());
    let (pieces, ok_in_pieces) = read(body, usize::from(cut));
    assert_eq!(ok, ok_in_pieces);
    assert_eq!(whole, pieces, "frames depend on how the body was cut");
    let mut again = Vec::new();
    for frame in &whole {
        match frame {
            StreamFrame::Data(d) => StreamFrame::encode_to(b'D', d, &mut again),
            StreamFrame::End(e) => {
                let _ = SignedResponse::from_bytes(e);
                StreamFrame::encode_to(b'E', e, &mut again);
            }
        }
    }
    assert_eq!(&body[..again.len()], &again[..]);
});
