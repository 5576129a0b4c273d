//! Fuzz targets for every decoder of untrusted bytes (`fuzz_targets/`), run by
//! `scripts/fuzz.sh` under libFuzzer on the stable toolchain.
//!
//! Decoders public in light crates (types, api, transfer) are called through those crates;
//! the transfer crate's private ones through `gridwork_transfer::fuzzing` (compiled only with
//! `--cfg fuzzing`). The pin file, pull journal and job file decoders live in crates whose
//! network stacks (axum, reqwest) would triple the instrumented build, so their source files
//! are compiled in here as they are (the same code, not a copy), with the entry points below.
#![allow(dead_code, unreachable_pub, missing_docs)]

use gridwork_types::Hash;

#[path = "../../crates/node/src/pinfile.rs"]
mod pinfile;

#[path = "../../crates/client/src/journal.rs"]
mod journal;

#[path = "../../crates/client/src/jobfile.rs"]
mod jobfile;

#[path = "../../crates/client/src/render.rs"]
mod render;

#[path = "../../crates/client/src/train.rs"]
mod train;

/// Two files from one input: the first byte says where the rest splits (what a judge
/// compares: one party's file and another's).
pub fn split_pair(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&split, rest) = data.split_first()?;
    Some(rest.split_at(usize::from(split).min(rest.len())))
}

/// Reads a pin file; one that reads is written again and must read back the same.
pub fn pin_file(data: &[u8]) {
    if let Some(pin) = pinfile::PinFile::decode(data) {
        let encoded = pin.encode(&Hash([0; 32]));
        let again = pinfile::PinFile::decode(&encoded).expect("a written pin reads back");
        assert_eq!(again.until_ms, pin.until_ms);
        assert_eq!(again.chunks, pin.chunks);
    }
}

/// Reads a pull journal of tree `[7; 32]`.
pub fn pull_journal(text: &str) -> usize {
    journal::parse_journal(text, &Hash([7; 32])).len()
}

/// Reads a job file.
pub fn job_file(text: &str) -> bool {
    jobfile::JobFile::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent")).is_ok()
}

/// Valid inputs of the formats compiled in here, to seed the corpus: (target, bytes).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use gridwork_types::Address;
    let pin = pinfile::PinFile {
        until_ms: 1_700_000_000_000,
        lock: Some(Hash([9; 32])),
        charges: vec![(Address([5; 20]), 12_345), (Address([6; 20]), 12_000)],
        chunks: vec![Hash([1; 32]), Hash([2; 32])],
    };
    let journal = format!("gridwork pull journal v2 {}\n0 1700000000123456789\n3 17\n", Hash([7; 32]));
    vec![
        ("pin_file", pin.encode(&Hash([0; 32]))),
        ("pull_journal", journal.into_bytes()),
        (
            "job_file",
            include_str!("../../docs/job.example.toml").as_bytes().to_vec(),
        ),
    ]
}

/// The prescription of `docs/job.example.toml`, for transaction seeds.
pub fn example_prescription() -> Option<gridwork_types::Prescription> {
    jobfile::JobFile::parse(
        include_str!("../../docs/job.example.toml"),
        "job.example.toml",
        std::path::Path::new("/nonexistent"),
    )
    .ok()
    .map(|job| job.prescription)
}
