//! Blocks as a node reads them back from its store (and, with validators, from peers).
#![no_main]
use gridwork_types::{Block, Decode, Encode, Header};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::from_bytes(data) {
        assert_eq!(block.to_bytes(), data);
    }
    if let Ok(header) = Header::from_bytes(data) {
        assert_eq!(header.to_bytes(), data);
    }
});
