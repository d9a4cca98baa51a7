#!/usr/bin/env python3
"""Idempotent producer across broker crashes (tests/groups.rs: idempotent_producer_survives_kill9).

A confluent-kafka producer with enable.idempotence=true and up to 5 requests in flight per
connection (tiny batches, so many requests really are in flight) writes --count records to a
3-partition topic: record i has key k{i % 9}, goes to partition i % 3 and has the value i. The
test kills the broker with SIGKILL and restarts it while this runs (it watches --progress, a
line per 1000 acknowledged records); librdkafka has to retry the requests that were in flight,
with the sequence numbers they had. Every record must be acknowledged (no delivery error, no
fatal idempotence error), and then a fresh consumer must find every record exactly once and,
per partition, in produce order, at the offset its delivery report gave.
"""

import time

from confluent_kafka import Consumer, Producer, TopicPartition

from common import args, check, check_eq, fail, main, unique
from group_common import create_topic, log

PARTITIONS = 3


def add_args(p):
    p.add_argument("--topic")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--rate", type=int, default=2500, help="records per second")
    p.add_argument("--progress", help="file that gets a line per 1000 acknowledged records")
    p.add_argument("--debug", help="librdkafka debug contexts, e.g. eos,msg")


def produce(a, topic):
    progress = open(a.progress, "w", buffering=1) if a.progress else None
    acked = {}  # i -> (partition, offset)
    errors = []
    fatal = []

    def on_delivery(err, msg):
        i = int(msg.value())
        if err is not None:
            errors.append(f"record {i}: {err}")
            return
        check(i not in acked, f"record {i} acknowledged twice")
        acked[i] = (msg.partition(), msg.offset())
        if progress and len(acked) % 1000 == 0:
            progress.write(f"{len(acked)}\n")

    def on_error(err):
        log(f"client error: {err}{' (FATAL)' if err.fatal() else ''}")
        if err.fatal():
            fatal.append(str(err))

    producer = Producer({
        "bootstrap.servers": a.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 1,
        "batch.num.messages": 20,
        "message.timeout.ms": 45000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 300,
        "error_cb": on_error,
        **({"debug": a.debug} if a.debug else {}),
    })
    start = time.time()
    for i in range(a.count):
        while True:
            try:
                producer.produce(topic, key=f"k{i % 9}", value=str(i), partition=i % PARTITIONS,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(max(start + i / a.rate - time.time(), 0))
        check(not fatal, f"fatal producer error: {fatal}")
    left = producer.flush(60)
    check(not fatal, f"fatal producer error: {fatal}")
    check(not errors, f"{len(errors)} records failed delivery, e.g. {errors[:5]}")
    check_eq(left, 0, "records still unacknowledged after flush(60)")
    check_eq(len(acked), a.count, "acknowledged records")
    log(f"all {a.count} records acknowledged in {time.time() - start:.1f} s")
    return acked


def read_back(a, topic, acked):
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": unique("verify"), "enable.auto.commit": False})
    expected = {p: [i for i in range(a.count) if i % PARTITIONS == p] for p in range(PARTITIONS)}
    got = {p: [] for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        check_eq(low, 0, f"low watermark of partition {p}")
        c.assign([TopicPartition(topic, p, 0)])
        offsets = []
        deadline = time.time() + 30
        while len(offsets) < high:
            check(time.time() < deadline, f"partition {p}: read {len(offsets)} of {high} records")
            for msg in c.consume(1000, 0.5):
                check(msg.error() is None, f"consume partition {p}: {msg.error()}")
                offsets.append(msg.offset())
                got[p].append(int(msg.value()))
                check_eq(msg.key().decode(), f"k{int(msg.value()) % 9}", f"key of {p}@{msg.offset()}")
        check_eq(offsets, list(range(high)), f"offsets read from partition {p}")
        if got[p] != expected[p]:
            seen = set()
            dups = sorted({i for i in got[p] if i in seen or seen.add(i)})
            missing = sorted(set(expected[p]) - set(got[p]))
            order = next((k for k, (x, y) in enumerate(zip(got[p], sorted(got[p]))) if x != y), None)
            fail(f"partition {p}: {len(got[p])} records stored, {len(expected[p])} produced; "
                 f"duplicates {len(dups)} {dups[:10]}, missing {len(missing)} {missing[:10]}, "
                 f"first out-of-order position {order}")
        for off, i in enumerate(got[p]):
            check_eq(acked[i], (p, off), f"delivery report of record {i} vs where it is stored")
    c.close()
    return got


def run(a):
    topic = a.topic or unique("idem")
    create_topic(a.bootstrap, topic, PARTITIONS)
    acked = produce(a, topic)
    got = read_back(a, topic, acked)
    return (f"{a.count} records each stored exactly once, in produce order, "
            f"{[len(v) for v in got.values()]} per partition")


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: run(a))
