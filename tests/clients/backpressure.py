"""Produce N records to TOPIC as fast as librdkafka will, and report what the broker's
throttling did to the producer: the largest throttle time librdkafka saw in produce responses
(from its statistics), the rate, and how many records were acknowledged. Prints one JSON line.

usage: backpressure.py --bootstrap HOST:PORT TOPIC N [RATE_PER_S]
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
a = ap.parse_args()

throttle_max = 0
acked = 0
errors = []


def stats(text):
    global throttle_max
    s = json.loads(text)
    for b in s.get("brokers", {}).values():
        throttle_max = max(throttle_max, b.get("throttle", {}).get("max", 0))


def done(err, msg):
    global acked
    if err is None:
        acked += 1
    else:
        errors.append(str(err))


p = Producer({
    "bootstrap.servers": a.bootstrap,
    "acks": "all",
    "linger.ms": 5,
    "statistics.interval.ms": 200,
    "stats_cb": stats,
    "message.timeout.ms": 120000,
})
value = b"x" * 100
start = time.time()
for i in range(a.n):
    while True:
        try:
            p.produce(a.topic, value, on_delivery=done)
            break
        except BufferError:
            p.poll(0.05)
    if a.rate > 0:
        ahead = (i + 1) / a.rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
    if i % 1000 == 0:
        p.poll(0)
left = p.flush(120)
took = time.time() - start
# One more statistics window, so throttling seen at the very end is counted.
end = time.time() + 0.5
while time.time() < end:
    p.poll(0.1)
print(json.dumps({
    "acked": acked,
    "errors": len(errors),
    "unflushed": left,
    "seconds": round(took, 3),
    "rate": round(a.n / took),
    "throttle_max_ms": throttle_max,
}))
sys.exit(0 if acked == a.n and left == 0 else 1)
