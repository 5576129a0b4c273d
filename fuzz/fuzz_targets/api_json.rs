//! JSON bodies of the API's routes, as the node deserialises them (the first byte picks the
//! route).
#![no_main]
use gridwork_api::{ChunkIds, KeyGrant, PostDecline, PostLog, SubmitTx};
use gridwork_types::{Decode, SignedTx};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    match route % 5 {
        0 => {
            if let Ok(submit) = serde_json::from_slice::<SubmitTx>(body) {
                if let Ok(bytes) = hex_decode(&submit.tx) {
                    let _ = SignedTx::from_bytes(&bytes);
                }
            }
        }
        1 => drop(serde_json::from_slice::<PostLog>(body)),
        2 => drop(serde_json::from_slice::<PostDecline>(body)),
        3 => drop(serde_json::from_slice::<KeyGrant>(body)),
        _ => drop(serde_json::from_slice::<ChunkIds>(body)),
    }
});

fn hex_decode(s: &str) -> Result<Vec<u8>, ()> {
    if s.len() % 2 != 0 {
        return Err(());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).ok_or(())?, 16).map_err(|_| ()))
        .collect()
}
