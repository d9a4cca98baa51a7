#!/usr/bin/env bash
# Crash loop for plugin pipelines (a stress run, not part of tests/run.sh): an idempotent
# producer writes N numbered records while the broker is killed with SIGKILL K times; the
# stateful `version` test plugin tags each record with a per-partition counter kept in its
# state. Afterwards every input must appear exactly once in the output and each partition's
# counter must run 1, 2, 3, ... without a gap or repeat.
#
#   tests/stress/pipeline_crash_loop.sh [N=300000] [KILLS=12] [RATE=25000]
#
# Needs target/debug/sluice (cargo build), kcat, python3 with confluent-kafka, and the
# wasm toolchain (plugins/install-toolchain.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-300000}
KILLS=${2:-12}
RATE=${3:-25000}
SLUICE=${SLUICE:-$ROOT/target/debug/sluice}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/plugins"
"$SLUICE" plugin build "$ROOT/plugins/testing/version" --out "$WORK/plugins/eo.wasm" >/dev/null
PORT=$((20000 + RANDOM % 20000))
BOOT=127.0.0.1:$PORT
start() {
    "$SLUICE" serve --listen "$BOOT" --admin "127.0.0.1:$((PORT + 1))" --data-dir "$WORK/data" \
        --plugins-dir "$WORK/plugins" >> "$WORK/broker.log" 2>&1 &
    echo $! > "$WORK/pid"
}
start
sleep 1
"$SLUICE" topic create load --partitions 3 --bootstrap "$BOOT" >/dev/null
"$SLUICE" topic create eo-out --partitions 3 --bootstrap "$BOOT" >/dev/null
# The manifest last: a pipeline creates missing topics with the default partition count.
printf 'inputs = ["load"]\noutput = "eo-out"\n' > "$WORK/plugins/eo.toml"
sleep 3
python3 "$ROOT/tests/clients/plugin_load.py" --bootstrap "$BOOT" load "$N" "$RATE" > "$WORK/load.out" 2>&1 &
LOAD=$!
for _ in $(seq 1 "$KILLS"); do
    sleep 0.9
    kill -9 "$(cat "$WORK/pid")"
    sleep 0.1
    start
done
wait "$LOAD" || { echo "producer failed:"; cat "$WORK/load.out"; exit 1; }
tail -1 "$WORK/load.out"
# Wait for the pipeline to drain, then read everything.
for _ in $(seq 1 60); do
    have=$(kcat -b "$BOOT" -C -t eo-out -e -q -f '.' 2>/dev/null | wc -c)
    [ "$have" -ge "$N" ] && break
    sleep 1
done
sleep 2
kcat -b "$BOOT" -C -t eo-out -e -q -f '%p %s %h\n' > "$WORK/out.txt"
total=$(wc -l < "$WORK/out.txt")
unique=$(awk '{split($2, a, ":"); print a[2]}' "$WORK/out.txt" | sort -u | wc -l)
gaps=0
for p in 0 1 2; do
    g=$(awk -v p="$p" '$1 == p { split($3, a, "="); print a[2] }' "$WORK/out.txt" |
        awk 'NR != $1 { print; exit }' | wc -l)
    gaps=$((gaps + g))
done
echo "$KILLS kills: $N acknowledged, $total in the output, $unique distinct, state counters with gaps: $gaps"
[ "$total" -eq "$N" ] && [ "$unique" -eq "$N" ] && [ "$gaps" -eq 0 ]
