#!/usr/bin/env bash
# Crash loop for the broker's log (a stress run, not part of tests/run.sh): an idempotent
# acks=all producer (confluent-kafka) writes N keyed records to 3 partitions with small
# segments, so segments roll, get flushed in the background and are recovered, while the
# broker is killed with SIGKILL K times. Afterwards every acknowledged record must be stored
# exactly once at the offset it was acknowledged with, and each key's records in order.
#
#   tests/stress/broker_crash_loop.sh [N=60000] [KILLS=12] [SEGMENT_BYTES=65536]
#
# Needs target/release/sluice (cargo build --release; SLUICE=... to use another) and python3
# with confluent-kafka.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-60000}
KILLS=${2:-12}
SEGMENT_BYTES=${3:-65536}
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
BOOT=127.0.0.1:$PORT
start() {
    # Small segments on purpose (many rolls and recoveries): below the default floor.
    printf 'segment_bytes_min = 1024\n' > "$WORK/sluice.toml"
    "$SLUICE" serve --listen "$BOOT" --admin "127.0.0.1:$((PORT + 1))" --data-dir "$WORK/data" \
        --plugins-dir "$WORK/plugins" --config "$WORK/sluice.toml" >> "$WORK/broker.log" 2>&1 &
    echo $! > "$WORK/pid"
    sleep 0.3
}
start
sleep 0.7
"$SLUICE" topic create cl --partitions 3 --config "segment.bytes=$SEGMENT_BYTES" --bootstrap "$BOOT" >/dev/null

python3 - "$BOOT" "$N" "$WORK/acked.json" > "$WORK/produce.log" 2>&1 <<'PY' &
import json, sys, time
from confluent_kafka import Producer
boot, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
acked = {}
def cb(err, m):
    if err is None:
        acked[m.value().decode()] = (m.partition(), m.offset())
p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
              "linger.ms": 2, "message.timeout.ms": 120000})
for i in range(n):
    while True:
        try:
            p.produce("cl", key=str(i % 50), value=f"v{i}", on_delivery=cb)
            break
        except BufferError:
            p.poll(0.05)
    if i % 200 == 0:
        p.poll(0)
        time.sleep(0.01)
left = p.flush(180)
json.dump(acked, open(out, "w"))
print("acked", len(acked), "undelivered", left)
PY
PRODUCER=$!
for _ in $(seq 1 "$KILLS"); do
    sleep 1.5
    kill -9 "$(cat "$WORK/pid")"
    wait "$(cat "$WORK/pid")" 2>/dev/null || true
    sleep 0.2
    start
done
wait "$PRODUCER"
cat "$WORK/produce.log"

python3 - "$BOOT" "$WORK/acked.json" <<'PY'
import json, sys
from confluent_kafka import Consumer, TopicPartition
boot, acked = sys.argv[1], json.load(open(sys.argv[2]))
c = Consumer({"bootstrap.servers": boot, "group.id": "crash-check", "enable.auto.commit": False})
got, dups = {}, 0
for p in range(3):
    lo, hi = c.get_watermark_offsets(TopicPartition("cl", p), timeout=10)
    c.assign([TopicPartition("cl", p, lo)])
    n = 0
    while n < hi - lo:
        m = c.poll(2)
        if m is None:
            break
        if m.error():
            continue
        n += 1
        v = m.value().decode()
        dups += v in got
        got[v] = (m.partition(), m.offset())
missing = [v for v in acked if v not in got]
moved = [v for v, po in acked.items() if v in got and tuple(got[v]) != tuple(po)]
last, order_bad = {}, 0
for v, (p, o) in sorted(got.items(), key=lambda kv: kv[1]):
    i = int(v[1:])
    order_bad += last.get(i % 50, -1) > i
    last[i % 50] = i
print(f"acked {len(acked)} stored {len(got)} duplicates {dups} missing {len(missing)} "
      f"moved {len(moved)} per-key order violations {order_bad}")
sys.exit(1 if (missing or moved or dups or order_bad or not acked) else 0)
PY
echo "recovery: $(grep -c 'truncating damaged tail\|deleting segment after' "$WORK/broker.log" || true) truncations logged over $KILLS kills"
