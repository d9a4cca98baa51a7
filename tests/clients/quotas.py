"""Client quotas with confluent-kafka (tests/security.rs sets them with Kafka's own
kafka-configs first): client.id "slow" has producer_byte_rate=200000 and
consumer_byte_rate=300000; client.id "busy" has request_percentage=0.01; client.id "fast" has
none.

Checks: over 6 s "slow" gets about its produce quota delivered (not more than 1.6x, which
leaves room for the one-second burst, and not starved), while "fast" delivers far more; the
broker reported the throttle to the client (librdkafka's throttle statistics); reading 3 MB
back as "slow" takes about 3 MB / 300 kB/s; and the broker counted the throttled requests.
"busy", sending a request per record, is throttled by its share of the broker's time (the
broker counts it; librdkafka's statistics show only some of those throttles, so what it saw is
reported, not checked).
"""

import json
import time

from confluent_kafka import Consumer, Producer

import common
from common import args, check, main, unique

A = args(__doc__, lambda p: p.add_argument("--admin", required=True))
PRODUCE_QUOTA = 200_000
FETCH_QUOTA = 300_000


def metric(name):
    return common.metric(A.admin, name)


def produce_for(topic, client_id, secs, batch_size=16384):
    delivered = [0]
    throttles = []

    def stats(s):
        for b in json.loads(s)["brokers"].values():
            if b.get("throttle", {}).get("max", 0) > 0:
                throttles.append(b["throttle"]["max"])

    def ack(err, msg):
        if err is None:
            delivered[0] += len(msg.value())

    # Small requests: a request is served first and paid for after (as in Kafka), so with
    # librdkafka's default 1 MB batches a few seconds would measure mostly the first ones.
    p = Producer({"bootstrap.servers": A.bootstrap, "client.id": client_id, "linger.ms": 5,
                  "batch.size": batch_size,
                  "statistics.interval.ms": 500, "stats_cb": stats})
    value = b"x" * 1000
    t0 = time.time()
    while time.time() - t0 < secs:
        try:
            p.produce(topic, value, on_delivery=ack)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    rate = delivered[0] / (time.time() - t0)
    p.purge()
    p.flush(5)
    return rate, throttles


def body():
    topic = unique("quota")
    before = metric('sluice_quota_throttled_total{key="producer_byte_rate"}')
    slow, throttles = produce_for(topic, "slow", 6)
    fast, _ = produce_for(topic, "fast", 3)
    check(0.3 * PRODUCE_QUOTA < slow < 1.6 * PRODUCE_QUOTA, f"slow client delivered {slow:.0f} B/s at a 200000 B/s quota")
    check(fast > 3 * PRODUCE_QUOTA, f"unthrottled client delivered only {fast:.0f} B/s")
    check(throttles, "librdkafka saw no throttle_time_ms")
    check(metric('sluice_quota_throttled_total{key="producer_byte_rate"}') > before, "no throttled produce counted")

    # A request per record: the handling time, not the bytes, runs into the quota.
    before = metric('sluice_quota_throttled_total{key="request_percentage"}')
    busy, busy_throttles = produce_for(topic, "busy", 4, batch_size=1)
    counted = metric('sluice_quota_throttled_total{key="request_percentage"}') - before
    check(counted > 0, f"request_percentage: no throttle counted ({busy:.0f} B/s delivered)")

    # Fetch: 3 MB back as "slow" at 300 kB/s.
    c = Consumer({"bootstrap.servers": A.bootstrap, "client.id": "slow", "group.id": unique("qg"),
                  "auto.offset.reset": "earliest", "fetch.max.bytes": 65536, "message.max.bytes": 65536,
                  "max.partition.fetch.bytes": 65536})
    c.subscribe([topic])
    got, t0 = 0, time.time()
    while got < 3_000_000 and time.time() - t0 < 60:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got += len(m.value())
    took = time.time() - t0
    c.close()
    read_rate = got / took
    check(got >= 3_000_000, f"read only {got} bytes")
    check(read_rate < 1.6 * FETCH_QUOTA, f"slow consumer read {read_rate:.0f} B/s at a 300000 B/s quota")
    return f"produce: slow {slow:.0f} B/s (quota 200000), fast {fast:.0f} B/s; fetch: slow {read_rate:.0f} B/s (quota 300000); max throttle seen by librdkafka {max(throttles)} ms; request_percentage=0.01: {counted:.0f} responses throttled, {busy:.0f} B/s delivered, librdkafka saw throttles of {busy_throttles} ms"


main(body)
