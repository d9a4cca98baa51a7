#!/usr/bin/env bash
# Start-up time of a broker holding many partitions, after a clean shutdown (SIGTERM: logs
# fsynced, a marker left, active segments trusted) and after kill -9 (every active segment
# CRC-scanned). A benchmark: prints figures, asserts nothing.
#
#   bash runtime/benches/startup_bench.sh
#
# Knobs: TOPICS [684] one-partition topics, KB [512] KiB of records written to each,
# COLD [1] (drop the page cache before each start, as after a reboot; needs root), BUILD [1],
# KEEP [0].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=runtime/benches/lib.sh
source "$ROOT/runtime/benches/lib.sh"
TOPICS=${TOPICS:-684}
KB=${KB:-512}
COLD=${COLD:-1}
# Writes dirty pages back, and with COLD=1 empties the page cache.
quiesce() {
    sync
    if [[ $COLD == 1 ]]; then
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || { echo "cannot drop caches: COLD=0" >&2; COLD=0; }
    fi
}

build_broker
make_work_dir
start_broker
log "broker pid $BROKER_PID on $BOOTSTRAP, data in $DATA; writing $TOPICS topics x $KB KiB"
python3 - "$BOOTSTRAP" "$TOPICS" "$KB" <<'PY'
import sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, topics, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = [f"startup-{i:04d}" for i in range(topics)]
admin = AdminClient({"bootstrap.servers": bootstrap})
for f in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
    f.result(60)
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": 1})
value = b"x" * 1000
for n in names:
    for _ in range(kb):
        while True:
            try:
                p.produce(n, value)
                break
            except BufferError:
                p.poll(0.05)
    p.poll(0)
assert p.flush(120) == 0
PY

PORT=${BOOTSTRAP##*:}
APORT=${ADMIN##*:}
# restart: starts the broker again on the same data; sets ELAPSED, seconds until it serves.
restart() {
    local t0 t1
    t0=$(date +%s.%N)
    "$SLUICE" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --admin "127.0.0.1:$APORT" \
        --plugins-dir "$PLUGINS" >"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    until grep -q "sluice is serving" "$WORK/broker.log"; do
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/broker.log" >&2; exit 1; }
        sleep 0.01
    done
    t1=$(date +%s.%N)
    ELAPSED=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}

kill -TERM "$BROKER_PID"
wait "$BROKER_PID" || true
quiesce
restart
clean=$ELAPSED
grep -q "clean shutdown last time" "$WORK/broker.log" || echo "WARNING: no clean-shutdown marker was found" >&2
kill -9 "$BROKER_PID"
wait "$BROKER_PID" 2>/dev/null || true
quiesce
restart
crashed=$ELAPSED
stop_broker
echo
echo "sluice $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), $TOPICS partitions x $KB KiB ($(data_mb) MB), $(nproc) cores"
echo "start-up after a clean shutdown (SIGTERM): ${clean} s"
echo "start-up after kill -9 (active segments CRC-scanned): ${crashed} s"
if [[ $COLD == 1 ]]; then echo "(page cache dropped before each start)"; else echo "(page cache warm)"; fi
