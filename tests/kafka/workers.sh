#!/usr/bin/env bash
# The click-aggregation example (examples/click-aggregation) on a three-node Apache Kafka 4.x
# cluster (CLUSTER=kafka) or on a sluice broker (CLUSTER=sluice), run by sluice workers, with
# failures while clicks flow:
#
#   3 workers start, with empty plugins directories -> the three pipelines are deployed with
#   `sluice plugin deploy --workers` -> clicks are produced -> kill -9 of worker 1 -> once its
#   tasks run on the other two (the failover time is printed) kill -9 of Kafka node 2 while
#   clicks still flow (of the sluice broker, restarted 2 s later) -> worker 1 comes back
#   (same state directory) ->
#   every final count must equal the ground truth, exactly (check.py reads ad-counts
#   read_committed).
#
#   bash tests/kafka/workers.sh
#   CLUSTER=sluice bash tests/kafka/workers.sh
#
# Needs: java 17 and mvn (Kafka's jars from Maven Central, see cluster.sh), python3 with
# confluent-kafka, the wasm32 toolchain (plugins/install-toolchain.sh), a built sluice.
# Knobs: CLICKS [75000], RATE [3000] clicks/s, BROKER_SESSION_MS [3000] (Kafka's fencing
# of a dead node, see below), GROUP_PROTOCOL [auto: KIP-848 where offered], consumer or classic, SLUICE [target/debug/sluice], DIR
# [/tmp/sluice-kafka-workers], KEEP=1 leaves the cluster and logs, STACKS=1 saves the live
# workers' thread stacks (gdb) on failure. Exits non-zero on any
# difference.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
EX="$REPO/examples/click-aggregation"
SLUICE=${SLUICE:-$REPO/target/debug/sluice}
DIR=${DIR:-/tmp/sluice-kafka-workers}
CLICKS=${CLICKS:-75000}
RATE=${RATE:-3000}
GROUP=clicks
CLUSTER=${CLUSTER:-kafka}

say() { printf '\n== %s  (%s)\n' "$*" "$(date +%T)"; }
[ -x "$SLUICE" ] || { echo "no sluice binary at $SLUICE (cargo build, or set SLUICE)" >&2; exit 1; }

rm -rf "$DIR"
mkdir -p "$DIR/components"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    # A worker restarted by the chaos subshell is not in pids.
    pkill -9 -f -- "--plugins-dir $DIR/worker" 2>/dev/null || true
    [ -z "${broker_pid:-}" ] || kill -9 "$broker_pid" 2>/dev/null || true
    # The broker the chaos subshell restarted is not in broker_pid.
    [ -z "${SLUICE_PORT:-}" ] || pkill -9 -f -- "--listen 127.0.0.1:$SLUICE_PORT " 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ] && [ "$CLUSTER" = kafka ]; then
        bash "$HERE/cluster.sh" stop "$DIR/kafka" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# KIP-848 groups take the broker's session timeout: 10 s, as the workers' classic one (and as
# cluster.sh sets Kafka's).
start_sluice() {
    printf 'group_consumer_session_timeout_ms = 10000\ngroup_consumer_heartbeat_interval_ms = 2000\n' >"$DIR/sluice.toml"
    "$SLUICE" serve --config "$DIR/sluice.toml" --listen "127.0.0.1:$SLUICE_PORT" --data-dir "$DIR/sluice-data" \
        --admin "127.0.0.1:$ADMIN_PORT" --plugins-dir "$DIR/sluice-plugins" >>"$DIR/sluice.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $SLUICE_PORT), 1)" 2>/dev/null && return
        sleep 0.1
    done
    echo "sluice did not start"; tail "$DIR/sluice.log"; exit 1
}
case $CLUSTER in
kafka)
    say "starting a 3-node Kafka cluster"
    # A dead node's partitions have no leader until the controller fences it
    # (broker.session.timeout.ms), and their producers hold their clicks until then. Held
    # past the example's idle_timeout_ms (10 s), clicks are late by definition (the task
    # reading the partition has let its event time move on), so the fencing must come well
    # before: 3 s here (Kafka's default is 9 s), as the README advises.
    BROKER_SESSION_MS=${BROKER_SESSION_MS:-3000} bash "$HERE/cluster.sh" start "$DIR/kafka"
    BOOT=$(bash "$HERE/cluster.sh" bootstrap)
    ;;
sluice)
    say "starting a sluice broker"
    SLUICE_PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    start_sluice
    BOOT=127.0.0.1:$SLUICE_PORT
    ;;
*) echo "CLUSTER=kafka or sluice" >&2; exit 2 ;;
esac

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

# Worker N: its own plugins directory (left empty: the pipelines come through the
# deployments topic) and state directory.
start_worker() {
    local n=$1 w="$DIR/worker$1"
    mkdir -p "$w/plugins"
    SLUICE_LOG=info "$SLUICE" worker --bootstrap "$BOOT" --group "$GROUP" \
        --group-protocol "${GROUP_PROTOCOL:-auto}" \
        --plugins-dir "$w/plugins" --state-dir "$w/state" >>"$w/worker.log" 2>&1 &
    eval "worker_pid_$n=$!"
    pids+=($!)
    echo "worker $n: pid $!"
}
for n in 1 2 3; do start_worker "$n"; done

say "deploying the pipelines through $GROUP.deployments"
cp "$EX"/pipeline/*.toml "$DIR/components/"
for m in "$DIR"/components/*.toml; do
    "$SLUICE" plugin deploy "$m" --workers "$GROUP" --bootstrap "$BOOT"
done

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
# Failover: the tasks worker 1 held when it was killed, and when the last of them started on
# worker 2 or 3. With "wait", polls until all have (at most 90 s).
cat >"$DIR/failover.py" <<'EOF'
import datetime, sys, time
d, wait = sys.argv[1], len(sys.argv) > 2
def ts(line):
    return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
def task(line):
    f = dict(w.split("=", 1) for w in line.split() if "=" in w)
    return (f.get("pipeline"), f.get("topic"), f.get("partition"))
killed = float(open(f"{d}/killed").read())
held = set()
for line in open(f"{d}/worker1/worker.log"):
    if "task assigned to this worker" in line and ts(line) < killed:
        held.add(task(line))
    elif "task left this worker" in line and ts(line) < killed:
        held.discard(task(line))
deadline = time.time() + 90
while True:
    moved = {}
    for n in (2, 3):
        for line in open(f"{d}/worker{n}/worker.log"):
            if "task assigned to this worker" in line and ts(line) > killed and task(line) in held:
                moved.setdefault(task(line), ts(line))
    if len(moved) == len(held) or not wait or time.time() > deadline:
        break
    time.sleep(0.5)
if held and len(moved) == len(held):
    print(f"failover: the {len(held)} tasks of the killed worker running elsewhere {max(moved.values()) - killed:.1f} s after its kill -9 (session timeout 10 s)")
else:
    print(f"failover: {len(moved)} of the killed worker's {len(held)} tasks running elsewhere")
EOF
(
    sleep $((secs / 4))
    say "kill -9 of worker 1"
    date +%s.%N >"$DIR/killed"
    kill -9 "$worker_pid_1"
    python3 "$DIR/failover.py" "$DIR" wait >"$DIR/failover"
    if [ "$CLUSTER" = kafka ]; then
        [ -e "$DIR/produced" ] && say "WARNING: every click was acknowledged before node 2's kill"
        say "kill -9 of Kafka node 2"
        bash "$HERE/cluster.sh" kill 2 "$DIR/kafka"
        sleep $((secs / 4))
    else
        say "kill -9 of the sluice broker (back in 2 s)"
        kill -9 "$broker_pid"
        sleep 2
        start_sluice
        sleep $((secs / 4 - 2))
    fi
    say "worker 1 back"
    start_worker 1
    sleep 600
) &
chaos=$!
say "producing $CLICKS clicks at $RATE/s"
python3 "$EX/generate.py" --bootstrap "$BOOT" --clicks "$CLICKS" --rate "$RATE" --ads 100 \
    --hot-share 0.3 --salts 6 --invalid 40 --truth "$DIR/truth.json" --stats "$DIR/load.json"
touch "$DIR/produced"
rc=0
wait "$checker" || rc=$?
kill "$chaos" 2>/dev/null || true
cat "$DIR/check.log"
cat "$DIR/failover" 2>/dev/null || true
if [ "$rc" = 0 ]; then
    say "OK: every final count equals the ground truth"
else
    say "FAILED (logs in $DIR)"
    if [ "${STACKS:-0}" = 1 ] && command -v gdb >/dev/null; then
        # Where each live worker's threads are, for a stall.
        for p in $(pgrep -f -- "--plugins-dir $DIR/worker" || true); do
            gdb -p "$p" -batch -ex "thread apply all bt" >"$DIR/stacks-$p.txt" 2>&1 || true
        done
    fi
    # The workers' own warnings and errors (librdkafka's connection noise left out), then the
    # verdict again: a CI log shows only its tail.
    for n in 1 2 3; do
        echo "-- worker $n"
        grep -E ' (WARN|ERROR) sluice' "$DIR/worker$n/worker.log" | tail -n 12 || true
    done
    echo "-- check.py"
    cat "$DIR/check.log"
    KEEP=1
fi
exit "$rc"
