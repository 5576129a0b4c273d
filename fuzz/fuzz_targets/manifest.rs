//! Tree manifests as a pull opens them: binary v2, and the JSON of v1 (first byte odd).
#![no_main]
use gridwork_transfer::fuzzing::{encode_manifest, manifest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let v1 = first % 2 == 1;
    if let Ok(read) = manifest(rest, v1) {
        // What a pull accepts reads back the same through the current encoding.
        let again = manifest(&encode_manifest(&read.entries), false).expect("re-encoded manifest");
        assert_eq!(again.entries, read.entries);
    }
});
