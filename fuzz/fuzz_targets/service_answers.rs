//! A tolerant service's answers as a gateway and its judges compare them, and the judge task
//! a member reads from its gateway: two bodies (behind the split byte) compare the same way
//! each way round and each agrees with itself, under any tolerance; the whole input read as a
//! `JudgeTask` never panics, and its first answers compare under each equivalence.
#![no_main]
use gridwork_types::{Decode, Equivalence, JudgeTask};
use gridwork_verify::{answers_equivalent, numeric_text_difference, Answer};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (a, b) = rest.split_at(at);
    for (abs, rel) in [(0.0, 0.0), (1e-6, 1e-5), (1.0, 0.5)] {
        assert!(numeric_text_difference(a, a, abs, rel).is_none());
        assert_eq!(
            numeric_text_difference(a, b, abs, rel).is_some(),
            numeric_text_difference(b, a, abs, rel).is_some(),
            "not symmetric"
        );
    }
    if let Ok(task) = JudgeTask::from_bytes(data) {
        if let [x, y, ..] = task.answers.as_slice() {
            for e in [
                Equivalence::ExactHash {},
                Equivalence::NumericTolerance {
                    abs_ppb: 1_000,
                    rel_ppb: 10_000,
                },
                Equivalence::Image {
                    min_psnr_mdb: 40_000,
                    max_diff: 32,
                },
            ] {
                let same = answers_equivalent(&e, Answer::from(x), Answer::from(y)).is_same();
                let back = answers_equivalent(&e, Answer::from(y), Answer::from(x)).is_same();
                assert_eq!(same, back, "not symmetric under {e:?}");
            }
        }
    }
});
