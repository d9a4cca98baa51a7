#!/usr/bin/env bash
# Runs every fuzz target under libFuzzer (coverage-guided, with AddressSanitizer) for RUNS
# executions each and stops at the first crash. Nightly-sized, not part of CI: CI runs the
# same target bodies on mutated inputs for a few seconds each (the unit test in
# runtime/src/fuzzing.rs).
#
#   bash tests/stress/fuzz.sh                 # 10 M executions per target
#   RUNS=100000 TARGETS="records" bash tests/stress/fuzz.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUNS=${RUNS:-10000000}
TARGETS=${TARGETS:-"records plugin_files request segments"}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cd "$ROOT/runtime/fuzz"
for t in $TARGETS; do
    extra=()
    case $t in
    request) extra=(-rss_limit_mb=2048) ;;
    segments) extra=(-max_len=8192) ;;
    esac
    echo "== $t: $RUNS executions"
    started=$(date +%s)
    # RUSTC_BOOTSTRAP lets a stable toolchain take the sanitizer flags cargo-fuzz passes.
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -runs="$RUNS" "${extra[@]}" 2>&1 | tail -n 3
    echo "== $t: done in $(($(date +%s) - started)) s, no crash"
done
