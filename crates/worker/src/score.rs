//! The standard CPU benchmark: what a provider's `Hardware::cpu_score` says.
//!
//! A fixed kernel, a 64 x 64 multiply of `f64` matrices (262,144 multiply-adds), run on every
//! core at once for a set time; the score is the millions of multiply-adds a second all cores
//! did together. The same kernel everywhere, so scores compare across machines the way run
//! times of CPU-bound tasks do. A worker measures it when it first starts on a machine and
//! keeps it (`cpu-score.json` in its work directory, with the CPU it was measured on), and
//! again on demand (`gridwork probe --bench`, `gridwork worker --bench`). The ledger takes the
//! score as declared and its councils spot-check it against run times
//! (`crates/protocol/src/market/settlement.rs`, `check_score`).
//!
//! GPUs are not scored yet: a GPU kernel needs a GPU toolkit this crate does not link.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Side of the kernel's matrices.
const N: usize = 64;
/// How long the benchmark runs when a worker measures its score.
pub const BENCH_TIME: Duration = Duration::from_secs(1);

/// One kernel: `c = a x b`, 64 x 64, row by row.
fn kernel(a: &[f64], b: &[f64], c: &mut [f64]) {
    for i in 0..N {
        let row = &mut c[i * N..(i + 1) * N];
        row.fill(0.0);
        for k in 0..N {
            let x = a[i * N + k];
            let bk = &b[k * N..(k + 1) * N];
            for (r, y) in row.iter_mut().zip(bk) {
                *r += x * y;
            }
        }
    }
}

/// Runs the kernel on every core for about `time` and returns the score: millions of
/// multiply-adds a second, all cores together (at least 1).
pub fn measure_cpu_score(time: Duration) -> u32 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (done, stop) = (&done, &stop);
            s.spawn(move || {
                let a: Vec<f64> = (0..N * N).map(|i| ((i + t) % 7) as f64 * 0.5).collect();
                let b: Vec<f64> = (0..N * N).map(|i| (i % 5) as f64 * 0.25).collect();
                let mut c = vec![0.0; N * N];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    kernel(std::hint::black_box(&a), std::hint::black_box(&b), &mut c);
                    std::hint::black_box(&c);
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
    });
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    let fma = done.load(Ordering::Relaxed) as f64 * (N * N * N) as f64;
    ((fma / seconds / 1e6).round() as u32).max(1)
}

/// A score as a worker keeps it: the score and the CPU it was measured on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Kept {
    cpu: String,
    cores: u32,
    score: u32,
}

/// What identifies the CPU a score was measured on: its model (from `/proc/cpuinfo`) and
/// core count. A kept score measured on another CPU is measured again.
fn cpu_identity(cores: u32) -> (String, u32) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    (model, cores)
}

/// The CPU score of this machine: the one kept in `work_dir` if it was measured on this CPU
/// (and `again` is false), otherwise measured now (for [`BENCH_TIME`]) and kept. Whether it
/// was measured now, with the score.
pub fn cpu_score(work_dir: &Path, cores: u32, again: bool) -> (u32, bool) {
    let path = work_dir.join("cpu-score.json");
    let (cpu, cores) = cpu_identity(cores);
    if !again {
        let kept: Option<Kept> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(k) = kept.filter(|k| k.cpu == cpu && k.cores == cores && k.score > 0) {
            return (k.score, false);
        }
    }
    let score = measure_cpu_score(BENCH_TIME);
    let kept = Kept { cpu, cores, score };
    if let Ok(bytes) = serde_json::to_vec(&kept) {
        let _ = std::fs::create_dir_all(work_dir);
        let tmp = path.with_extension("json.tmp");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    (score, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_multiplies_and_a_score_is_kept_for_its_cpu() {
        // The kernel is a matrix product: identity times b is b.
        let mut id = vec![0.0; N * N];
        for i in 0..N {
            id[i * N + i] = 1.0;
        }
        let b: Vec<f64> = (0..N * N).map(|i| i as f64).collect();
        let mut c = vec![0.0; N * N];
        kernel(&id, &b, &mut c);
        assert_eq!(c, b);

        let dir = tempfile::tempdir().unwrap();
        let (cpu, cores) = cpu_identity(2);
        let kept = Kept {
            cpu: cpu.clone(),
            cores,
            score: 4321,
        };
        std::fs::write(
            dir.path().join("cpu-score.json"),
            serde_json::to_vec(&kept).unwrap(),
        )
        .unwrap();
        assert_eq!(cpu_score(dir.path(), 2, false), (4321, false));
        // Kept for another CPU (here: another core count): measured again, and kept.
        let (measured, fresh) = cpu_score(dir.path(), 3, false);
        assert!(fresh && measured > 0);
        assert_eq!(cpu_score(dir.path(), 3, false), (measured, false));
    }
}
