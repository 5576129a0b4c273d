//! A pull's journal (a file that survives crashes, and anything that edits it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        gridwork_fuzz::pull_journal(text);
    }
});
