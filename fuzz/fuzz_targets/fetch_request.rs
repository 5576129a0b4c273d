//! A peer's fetch request (`gridwork/chunks/1`).
#![no_main]
use gridwork_api::frames::{encode_fetch_request, parse_fetch_request, MAX_FETCH_IDS};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(ids) = parse_fetch_request(data) {
        assert!(ids.len() <= MAX_FETCH_IDS);
        assert_eq!(encode_fetch_request(&ids), data);
    }
});
