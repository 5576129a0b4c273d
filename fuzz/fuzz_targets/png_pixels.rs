//! Two PNG files a judge compares by their pixels (`Equivalence::Image`): another party's
//! output, so any bytes. The first byte splits the rest into the two files.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((a, b)) = gridwork_fuzz::split_pair(data) else {
        return;
    };
    let _ = gridwork_verify::image::png_difference(a, b, 40.0, 8);
    let _ = gridwork_verify::image::png_difference(b, b, 40.0, 8);
});
