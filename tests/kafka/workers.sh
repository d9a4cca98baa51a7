#!/usr/bin/env bash
# The click-aggregation example (examples/click-aggregation) on a three-node Apache Kafka 4.x
# cluster, run by sluice workers, with failures while clicks flow:
#
#   3 workers start -> clicks are produced -> kill -9 of worker 1 -> kill -9 of Kafka node 2
#   -> worker 1 comes back (same state directory) -> every final count must equal the ground
#   truth, exactly (check.py reads ad-counts read_committed).
#
#   bash tests/kafka/workers.sh
#
# Needs: java 17 and mvn (Kafka's jars from Maven Central, see cluster.sh), python3 with
# confluent-kafka, the wasm32 toolchain (plugins/install-toolchain.sh), a built sluice.
# Knobs: CLICKS [60000], RATE [3000] clicks/s, SLUICE [target/debug/sluice], DIR
# [/tmp/sluice-kafka-workers], KEEP=1 leaves the cluster and logs. Exits non-zero on any
# difference.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EX="$REPO/examples/click-aggregation"
SLUICE=${SLUICE:-$REPO/target/debug/sluice}
DIR=${DIR:-/tmp/sluice-kafka-workers}
CLICKS=${CLICKS:-60000}
RATE=${RATE:-3000}
GROUP=clicks

say() { printf '\n== %s  (%s)\n' "$*" "$(date +%T)"; }
[ -x "$SLUICE" ] || { echo "no sluice binary at $SLUICE (cargo build, or set SLUICE)" >&2; exit 1; }

rm -rf "$DIR"
mkdir -p "$DIR/components"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # A worker restarted by the chaos subshell is not in pids.
    pkill -9 -f -- "--plugins-dir $DIR/worker" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then bash "$HERE/cluster.sh" stop "$DIR/kafka" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "starting a 3-node Kafka cluster"
bash "$HERE/cluster.sh" start "$DIR/kafka"
BOOT=$(bash "$HERE/cluster.sh" bootstrap)

say "building the plugins"
for crate in dead-letter-router salted-aggregate; do
    "$SLUICE" plugin build "$REPO/plugins/$crate" --out "$DIR/components/$crate.wasm" >/dev/null
done

say "creating the topics on Kafka"
topic() { "$SLUICE" topic create "$1" --partitions "$2" --bootstrap "$BOOT" >/dev/null; }
topic clicks 6
topic clicks-valid 6
topic clicks-partials 1
topic ad-counts 1
topic clicks-invalid 1
topic clicks-late 1
topic ad-counts-late 1

# Worker N: its own plugins directory (the same files dropped in each) and state directory.
start_worker() {
    local n=$1 w="$DIR/worker$1"
    mkdir -p "$w/plugins"
    cp "$DIR"/components/*.wasm "$EX"/pipeline/*.toml "$w/plugins/"
    SLUICE_LOG=info "$SLUICE" worker --bootstrap "$BOOT" --group "$GROUP" \
        --plugins-dir "$w/plugins" --state-dir "$w/state" >>"$w/worker.log" 2>&1 &
    eval "worker_pid_$n=$!"
    pids+=($!)
    echo "worker $n: pid $!"
}
for n in 1 2 3; do start_worker "$n"; done

# Until every partition of the three pipelines' inputs has a task somewhere.
want=$((6 + 6 + 1))
deadline=$((SECONDS + 120))
while :; do
    have=$(cat "$DIR"/worker*/worker.log | grep -c "task assigned" || true)
    [ "$have" -ge "$want" ] && break
    ((SECONDS < deadline)) || { echo "only $have tasks started"; tail -n 30 "$DIR"/worker*/worker.log; exit 1; }
    sleep 1
done
say "tasks running: $(for n in 1 2 3; do printf 'worker %s: %s  ' "$n" "$(grep -c 'task assigned' "$DIR/worker$n/worker.log")"; done)"

python3 "$EX/check.py" --bootstrap "$BOOT" --truth "$DIR/truth.json" --report "$DIR/check.json" \
    --timeout 240 >"$DIR/check.log" 2>&1 &
checker=$!
secs=$((CLICKS / RATE))
(
    sleep $((secs / 4))
    say "kill -9 of worker 1"
    kill -9 "$worker_pid_1"
    sleep $((secs / 4))
    say "kill -9 of Kafka node 2"
    bash "$HERE/cluster.sh" kill 2 "$DIR/kafka"
    sleep $((secs / 4))
    say "worker 1 back"
    start_worker 1
    sleep 600
) &
chaos=$!
say "producing $CLICKS clicks at $RATE/s"
python3 "$EX/generate.py" --bootstrap "$BOOT" --clicks "$CLICKS" --rate "$RATE" --ads 100 \
    --hot-share 0.3 --salts 6 --invalid 40 --truth "$DIR/truth.json" --stats "$DIR/load.json"
rc=0
wait "$checker" || rc=$?
kill "$chaos" 2>/dev/null || true
cat "$DIR/check.log"
say "tasks moved: $(cat "$DIR"/worker*/worker.log | grep -c 'tasks leaving this worker' || true) revocations; worker errors: $(cat "$DIR"/worker*/worker.log | grep -c ERROR || true)"
if [ "$rc" = 0 ]; then
    say "OK: every final count equals the ground truth"
else
    say "FAILED (logs in $DIR)"
    tail -n 40 "$DIR"/worker*/worker.log
    KEEP=1
fi
exit "$rc"
