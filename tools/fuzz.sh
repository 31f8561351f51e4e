#!/usr/bin/env bash
# The fuzz campaigns: every target of fuzz/ (cargo-fuzz, nightly toolchain, libFuzzer) for
# SECONDS each (default 300), with a 2 GiB memory limit and a 10 s limit per input; the corpus
# each campaign grows is kept in fuzz/corpus/TARGET (minimise it with `cargo fuzz cmin` before
# committing). A crash stops that target and leaves its input in fuzz/artifacts/TARGET/: copy it
# to fuzz/regressions/TARGET/ (replayed by `cargo test -p hr-fuzz`) and fix the reader.
# Prints one line per target: runs, corpus size, crashes. Needs: cargo install cargo-fuzz.
#
# usage: bash tools/fuzz.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-300}"; shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=($(cargo +nightly fuzz list))
cargo +nightly fuzz build -s none >/dev/null || exit 1
for t in "${targets[@]}"; do
    log="target/fuzz-$t.log"
    cargo +nightly fuzz run -s none "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 -seed=1 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    echo "$t: exit $rc, ${runs:-?} inputs run in ${secs}s, corpus $(ls "corpus/$t" | wc -l) files, artifacts $crashes"
done
