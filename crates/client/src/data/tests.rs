//! Unit tests of request sizes, decryption slices and the sizer.

use gridwork_transfer::VerifiedChunk;
use gridwork_types::Hash;

use super::pull::{next_request, open_slices, Fetched};
use super::{DataError, Sizer};

fn id(n: u32) -> Hash {
    Hash::of(&n.to_le_bytes())
}

#[test]
fn requests_follow_the_chunks_sizes_not_their_count() {
    const MIB: u64 = 1024 * 1024;
    // Many tiny chunks, then large ones: the large ones must not ride in a request sized
    // by the tiny ones.
    let chunks = (0..5000)
        .map(|n| (id(n), 2_000))
        .chain((5000..5010).map(|n| (id(n), 4 * MIB)));
    let mut remaining = chunks.peekable();
    let mut sizes = Vec::new();
    loop {
        let batch = next_request(&mut remaining, 16 * MIB);
        assert!(batch.len() == 1 || batch.iter().map(|c| c.1).sum::<u64>() <= 20 * MIB);
        if batch.is_empty() {
            break;
        }
        sizes.push(batch.len());
    }
    assert_eq!(
        sizes[0],
        gridwork_api::frames::MAX_FETCH_IDS,
        "at most this many ids"
    );
    assert_eq!(sizes.iter().sum::<usize>(), 5010);
    assert!(sizes.iter().rev().take(2).all(|&n| n <= 4), "{sizes:?}");
    // A chunk larger than the target still goes, alone.
    let mut one = vec![(id(1), 64 * MIB), (id(2), 1)].into_iter().peekable();
    assert_eq!(next_request(&mut one, 16 * MIB), vec![(id(1), 64 * MIB)]);
}

#[test]
fn fetched_batches_are_opened_in_slices_of_bounded_size() {
    const MIB: u64 = 1024 * 1024;
    let chunk = |n: u32| {
        let bytes = bytes::Bytes::from(vec![n as u8; 1000]);
        let id = Hash::of(&bytes);
        (id, VerifiedChunk::check(id, bytes).unwrap())
    };
    // Sealed small, estimated 3 MiB each (compressible plaintext): slices follow the
    // plaintext the writer gets, not the bytes fetched.
    let fetched: Vec<(Hash, VerifiedChunk)> = (0..10).map(chunk).collect();
    let mut batch: Vec<(Hash, u64)> = fetched.iter().map(|(id, _)| (*id, 3 * MIB)).collect();
    // One already in the local store, not fetched; and a repeat of the first chunk.
    batch.insert(4, (id(99), MIB));
    batch.push((batch[0].0, 3 * MIB));
    let slices = open_slices(Ok((batch.clone(), fetched.into_iter().collect())));
    let slices: Vec<Fetched> = slices.into_iter().map(Result::unwrap).collect();
    let lens: Vec<usize> = slices.iter().map(|(ids, _)| ids.len()).collect();
    assert_eq!(lens, vec![3, 4, 3, 2]);
    let fetched_per_slice: Vec<usize> = slices.iter().map(|(_, c)| c.len()).collect();
    assert_eq!(
        fetched_per_slice,
        vec![3, 3, 3, 1],
        "each fetched chunk travels with the first slice that needs it"
    );
    let order: Vec<(Hash, u64)> = slices.into_iter().flat_map(|s| s.0).collect();
    assert_eq!(order, batch, "in order, each id once");
    let failed = open_slices(Err(DataError::Missing {
        id: id(1),
        asked: "nobody".into(),
    }));
    assert!(matches!(
        failed.as_slice(),
        [Err(DataError::Missing { .. })]
    ));
}

#[test]
fn request_sizes_grow_on_quick_full_requests_and_shrink_on_slow_ones() {
    let sizer = Sizer::new();
    for _ in 0..10 {
        sizer.observe(sizer.target(), 0.01);
    }
    assert_eq!(sizer.target(), Sizer::MAX);
    // A short tail request does not make the next one larger.
    sizer.observe(1024, 0.001);
    assert_eq!(sizer.target(), Sizer::MAX);
    for _ in 0..10 {
        sizer.observe(sizer.target(), 2.0);
    }
    assert_eq!(sizer.target(), Sizer::MIN);
}
