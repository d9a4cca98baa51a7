#!/usr/bin/env python3
"""Measurements, not a test: prints figures, checks nothing beyond sanity.

  rebalance: time from the last of 3 confluent-kafka consumers calling subscribe() to all three
             holding an assignment (2 partitions each of a 6-partition topic), a fresh group per
             trial, each consumer polled by its own thread. Run it against brokers with different
             group_initial_rebalance_delay_ms to compare.
  produce:   confluent-kafka producer throughput, acks=all, 200,000 records of 100 bytes to a
             3-partition topic, enable.idempotence true vs false, and false with the 5 requests in
             flight idempotence implies (interleaved trials, fresh topic and producer each; the
             producer's start-up, up to its first acknowledgement, is reported separately).
"""

import statistics
import threading
import time

from confluent_kafka import Consumer, Producer

from common import args, check, main, unique
from group_common import create_topic


def add_args(p):
    p.add_argument("what", choices=["rebalance", "produce"])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--heartbeat-ms", type=int, default=3000, help="heartbeat.interval.ms (librdkafka default 3000)")
    p.add_argument("--count", type=int, default=200_000)


def rebalance_once(a, topic):
    group = unique("bench")
    assigned = [None, None, None]
    stop = threading.Event()
    consumers = []
    for i in range(3):
        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": group, "session.timeout.ms": 10000,
                      "heartbeat.interval.ms": a.heartbeat_ms, "enable.auto.commit": False})
        consumers.append(c)

    def on_assign_for(i):
        def cb(consumer, parts):
            assigned[i] = (time.time(), sorted(tp.partition for tp in parts))
        return cb

    def on_revoke_for(i):
        def cb(consumer, parts):
            assigned[i] = None
        return cb

    def loop(c):
        while not stop.is_set():
            c.poll(0.05)

    threads = []
    for i, c in enumerate(consumers):
        c.subscribe([topic], on_assign=on_assign_for(i), on_revoke=on_revoke_for(i))
        threads.append(threading.Thread(target=loop, args=(c,), daemon=True))
        threads[-1].start()
    last_subscribe = time.time()
    deadline = last_subscribe + 60
    while True:
        snap = list(assigned)
        if all(s is not None for s in snap) and sorted(p for s in snap for p in s[1]) == list(range(6)):
            took = max(s[0] for s in snap) - last_subscribe
            break
        check(time.time() < deadline, f"no complete assignment after 60 s: {snap}")
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join()
    for c in consumers:
        c.close()
    return took, [s[1] for s in snap]


def rebalance(a):
    topic = unique("bench-rb")
    create_topic(a.bootstrap, topic, 6)
    times = []
    for n in range(a.trials):
        took, split = rebalance_once(a, topic)
        times.append(took)
        print(f"trial {n + 1}: {took:.3f} s {split}")
    return (f"3-member rebalance (heartbeat.interval.ms={a.heartbeat_ms}): median {statistics.median(times):.3f} s, "
            f"min {min(times):.3f}, max {max(times):.3f} over {a.trials} trials")


VARIANTS = {
    "idempotence=false": {"enable.idempotence": False},
    # librdkafka caps in-flight requests at 5 for idempotence; this isolates what that cap costs.
    "idempotence=false, max.in.flight=5": {"enable.idempotence": False, "max.in.flight.requests.per.connection": 5},
    "idempotence=true": {"enable.idempotence": True},
}


def produce_once(a, conf):
    """(records/s for --count records, seconds until the first record was acknowledged).
    One record is produced and flushed first, so that a producer's start-up (connecting, and for
    idempotence InitProducerId) is measured separately from the steady rate."""
    topic = unique("bench-p")
    create_topic(a.bootstrap, topic, 3)
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", **conf})
    errors = []
    acked = [0]

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[0] += 1

    start = time.time()
    p.produce(topic, value=b"warm-up", on_delivery=on_delivery)
    check(p.flush(30) == 0, "warm-up record not acknowledged")
    first_ack = time.time() - start
    value = b"x" * 100
    start = time.time()
    for i in range(a.count):
        while True:
            try:
                p.produce(topic, value=value, key=str(i % 100), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    left = p.flush(120)
    took = time.time() - start
    check(left == 0 and not errors and acked[0] == a.count + 1, f"{left} left, {len(errors)} errors {errors[:3]}")
    return a.count / took, first_ack


def produce(a):
    rates = {name: [] for name in VARIANTS}
    starts = {name: [] for name in VARIANTS}
    for n in range(a.trials):
        for name, conf in VARIANTS.items():
            r, first = produce_once(a, conf)
            rates[name].append(r)
            starts[name].append(first)
            print(f"trial {n + 1} {name}: {r:,.0f} records/s (first ack after {first * 1000:.0f} ms)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = med["idempotence=false"]
    return f"{a.count:,} x 100 B, acks=all, median records/s: " + "; ".join(
        f"{k} {v:,.0f} ({(v / base - 1) * 100:+.1f}%, first ack {statistics.median(starts[k]) * 1000:.0f} ms)"
        for k, v in med.items())


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: rebalance(a) if a.what == "rebalance" else produce(a))
