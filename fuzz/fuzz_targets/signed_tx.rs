//! Transactions as the API and the mempool receive them: canonical bytes.
#![no_main]
use gridwork_types::{Decode, Encode, SignedTx};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTx::from_bytes(data) {
        // What decodes is canonical: it encodes back to the same bytes.
        assert_eq!(tx.to_bytes(), data);
    }
});
