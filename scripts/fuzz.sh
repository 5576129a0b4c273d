#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 10) under libFuzzer, on the
# stable toolchain: cargo-fuzz needs nightly for its sanitizer flags, but libFuzzer's
# coverage instrumentation is stable codegen options (sancov), which is all this sets. The
# build is for an explicit --target so the flags reach the targets and not build scripts.
#
# Each target starts from its seeds (fuzz/seeds/<target>, made by
# `cargo run --manifest-path fuzz/Cargo.toml --example seeds`) copied to a scratch corpus, so
# a run never writes into the repository; a crash leaves its input in fuzz/artifacts/<target>/
# and fails the run. Every crash found becomes a regression test beside the decoder.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-10}
shift || true
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
cargo build --release --locked --target "$triple" --bins
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "artifacts/$t"
    if [ -d "seeds/$t" ]; then cp -r "seeds/$t/." "$scratch/$t/"; fi
    log="$scratch/$t.log"
    if "$CARGO_TARGET_DIR/$triple/release/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=65536 -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$scratch/$t" \
        >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
        echo "fuzz $t: ok, $runs execs in ${seconds}s, $cov"
    else
        failed=1
        echo "fuzz $t: FAILED"
        tail -40 "$log"
    fi
done
exit $failed
