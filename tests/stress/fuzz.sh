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
TARGETS=${TARGETS:-"records plugin_files request segments tls_records"}
LOGS=${LOGS:-${TMPDIR:-/tmp}}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cd "$ROOT/runtime/fuzz"
for t in $TARGETS; do
    extra=()
    case $t in
    # The request target keeps one broker across inputs on purpose (its topics and groups are
    # state, not leaks), so LeakSanitizer's scan after most inputs found nothing and took
    # over half the time: 2,400 executions/s with it, 6,000 without.
    request) extra=(-rss_limit_mb=2048 -detect_leaks=0) ;;
    segments) extra=(-max_len=8192) ;;
    esac
    echo "== $t: $RUNS executions"
    started=$(date +%s)
    # RUSTC_BOOTSTRAP lets a stable toolchain take the sanitizer flags cargo-fuzz passes.
    # libFuzzer's progress lines go to fuzz-$t.log (exec/s, coverage); the last ones here.
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -runs="$RUNS" -print_final_stats=1 "${extra[@]}" \
        >"$LOGS/fuzz-$t.log" 2>&1 || { tail -n 30 "$LOGS/fuzz-$t.log"; exit 1; }
    grep -E "^(#[0-9]+|Done|stat::number_of_executed_units|stat::average_exec_per_sec)" "$LOGS/fuzz-$t.log" | tail -n 3
    echo "== $t: done in $(($(date +%s) - started)) s, no crash"
done
