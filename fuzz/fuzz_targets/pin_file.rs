//! The pin files a node keeps under `pins/` (every format still read).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwork_fuzz::pin_file(data));
