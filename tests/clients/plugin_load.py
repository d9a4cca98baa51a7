"""Produce N numbered records ("0".."N-1") to a topic with an idempotent, acks=all producer,
riding through broker restarts (librdkafka reconnects and retries), optionally at a fixed
rate. Prints one JSON line: records acknowledged, failures, rate, and the largest
throttle_time_ms librdkafka saw in produce responses (from its statistics: the broker's back
pressure). Exits 0 once every record is acknowledged.

usage: plugin_load.py --bootstrap HOST:PORT [--value-bytes B] TOPIC N [RATE_PER_S]
(--value-bytes pads each number with spaces to B bytes.)
"""
import argparse
import json
import sys
import time

from confluent_kafka import Producer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("topic")
ap.add_argument("n", type=int)
ap.add_argument("rate", type=float, nargs="?", default=0.0)
ap.add_argument("--value-bytes", type=int, default=0)
a = ap.parse_args()

acked = 0
failed = []
throttle_max = 0


def done(err, msg):
    global acked
    if err is None:
        acked += 1
    else:
        failed.append(str(err))


def stats(text):
    global throttle_max
    for b in json.loads(text).get("brokers", {}).values():
        throttle_max = max(throttle_max, b.get("throttle", {}).get("max", 0))


p = Producer({
    "bootstrap.servers": a.bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "message.timeout.ms": 120000,
    "reconnect.backoff.max.ms": 200,
    "statistics.interval.ms": 200,
    "stats_cb": stats,
})
start = time.time()
for i in range(a.n):
    while True:
        try:
            p.produce(a.topic, str(i).ljust(a.value_bytes).encode(), on_delivery=done)
            break
        except BufferError:
            p.poll(0.05)
    if a.rate > 0:
        ahead = (i + 1) / a.rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
    if i % 500 == 0:
        p.poll(0)
left = p.flush(180)
took = time.time() - start
# One more statistics window, so throttling seen at the very end is counted.
end = time.time() + 0.5
while time.time() < end:
    p.poll(0.1)
print(json.dumps({
    "acked": acked,
    "failed": len(failed),
    "first_failure": failed[0] if failed else None,
    "unflushed": left,
    "seconds": round(took, 3),
    "rate": round(a.n / took),
    "throttle_max_ms": throttle_max,
}))
sys.exit(0 if acked == a.n and left == 0 else 1)
