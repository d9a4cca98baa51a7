"""Produce N numbered records ("0".."N-1") to a topic with an idempotent, acks=all producer,
riding through broker restarts (librdkafka reconnects and retries). Exits 0 once every record
is acknowledged, printing how many were.

usage: plugin_load.py --bootstrap HOST:PORT TOPIC N [RATE_PER_S]
"""
import argparse
import sys
import time

from confluent_kafka import Producer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("topic")
ap.add_argument("n", type=int)
ap.add_argument("rate", type=float, nargs="?", default=0.0)
a = ap.parse_args()
bootstrap, topic, n, rate = a.bootstrap, a.topic, a.n, a.rate

acked = 0
failed = []


def done(err, msg):
    global acked
    if err is None:
        acked += 1
    else:
        failed.append(str(err))


p = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "message.timeout.ms": 120000,
    "reconnect.backoff.max.ms": 200,
})
start = time.time()
for i in range(n):
    while True:
        try:
            p.produce(topic, str(i).encode(), on_delivery=done)
            break
        except BufferError:
            p.poll(0.05)
    if rate > 0:
        ahead = (i + 1) / rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
    if i % 500 == 0:
        p.poll(0)
left = p.flush(180)
print(f"acked {acked} failed {len(failed)} unflushed {left}")
if failed:
    print("first failure:", failed[0])
sys.exit(0 if acked == n and left == 0 else 1)
