//! The push index a client keeps between pushes (a file anyone with the disk can edit).
#![no_main]
use gridwork_transfer::fuzzing::{pack_index, pack_index_body};

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    if let Some(index) = pack_index(body) {
        assert_eq!(pack_index(&pack_index_body(&index)), Some(index));
    }
});
