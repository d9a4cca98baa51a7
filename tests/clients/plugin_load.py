"""Produce N numbered records ("0".."N-1") to a topic with an idempotent, acks=all producer,
riding through broker restarts (librdkafka reconnects and retries). Exits 0 once every record
is acknowledged, printing how many were.

usage: plugin_load.py BOOTSTRAP TOPIC N [RATE_PER_S]
"""
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0

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
