//! Two tensor files a judge compares element by element under `NumericTolerance` (numpy
//! arrays, safetensors): another party's output, so any bytes. The first byte splits the rest
//! into the two files; both formats are tried.
#![no_main]

use gridwork_verify::tensor::{tensor_file_difference, TensorFile};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((a, b)) = gridwork_fuzz::split_pair(data) else {
        return;
    };
    for kind in [TensorFile::Npy, TensorFile::Safetensors] {
        let _ = tensor_file_difference(kind, a, b, 1e-6, 1e-6);
        let _ = tensor_file_difference(kind, b, a, 0.0, 0.0);
    }
});
