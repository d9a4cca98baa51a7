#!/usr/bin/env bash
# The crash property tests on the simulated disk (runtime/src/disk/sim.rs), run long: the
# log and its flusher (log/sim_tests.rs), the internal tables (log/kv.rs), idempotent
# producers and their snapshots (broker/sim_tests.rs) and plugin checkpoints
# (plugin/checkpoint.rs), each with SIM_CASES random histories of appends, syncs, failed
# fsyncs and writes, kill -9 and power cuts. CI runs the same tests at their default size
# (a few dozen cases each) with `cargo test`.
#
#   bash tests/stress/sim.sh                 # 100,000 histories per test
#   SIM_CASES=5000 bash tests/stress/sim.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export SIM_CASES=${SIM_CASES:-100000}
cd "$ROOT"
started=$(date +%s)
cargo test -p sluice --lib -- \
    log::sim_tests kv::tests::the_table_survives_power_cuts \
    broker::sim_tests plugin::checkpoint::tests::a_checkpoint_survives_power_cuts_whole
echo "== $SIM_CASES histories per test, no failure, in $(($(date +%s) - started)) s"
