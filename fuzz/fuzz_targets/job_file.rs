//! Job files (TOML written by people, and shared between them).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        gridwork_fuzz::job_file(text);
    }
});
