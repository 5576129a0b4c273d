//! A tree's root object (clear, fetched first by every pull).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gridwork_transfer::root_children(data);
});
