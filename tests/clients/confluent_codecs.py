#!/usr/bin/env python3
"""confluent-kafka (librdkafka): exact round trip through every compression codec.

Per codec: AdminClient creates a 3-partition topic, a producer (acks=all) writes records with
awkward keys/values/headers and explicit timestamps, then each partition is read back from
offset 0 (and from inside a batch) by assignment (the broker has no consumer groups) and compared
field by field against what the delivery reports said was stored at each offset. librdkafka's
debug output must show the codec really was used. Watermarks and offsets_for_times are checked
against the same model. Also: topic auto-creation through metadata, duplicate creates, and
deleting the topics at the end.
"""

import logging
import random
import re
import time

from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from common import Failure, args, check, check_eq, fail, main, unique

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
COUNT = 2000


def make_record(i, base_ts, rnd):
    """Record i, cycling through the shapes that tend to break encoders."""
    key = {3: None, 7: b"", 5: rnd.randbytes(8)}.get(i % 10, f"key-{i}".encode())
    kind = i % 13
    if kind == 0:
        value = None
    elif kind == 1:
        value = b""
    elif kind == 2:
        value = rnd.randbytes(rnd.randrange(1, 300))
    elif kind == 3:
        value = (f"row {i} " * 600).encode()  # a few KB that compress well
    else:
        value = f"value-{i}-".encode() + b"x" * (i % 50)
    headers = [
        [],
        [("h", b"first"), ("h", b"second")],  # duplicate keys must keep both, in order
        [("trace", str(i).encode()), ("null-header", None), ("empty", b"")],
        [("bin", rnd.randbytes(5))],
    ][i % 4]
    # Pairs of records in a partition share a timestamp, so offsets_for_times must pick the first.
    ts = base_ts + (i // 6) * 10
    return {"partition": i % PARTITIONS, "key": key, "value": value, "headers": headers, "ts": ts}


def create_topic(admin, topic):
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)], operation_timeout=10
    )
    futures[topic].result(timeout=30)
    md = admin.list_topics(timeout=10)
    check(topic in md.topics, f"created topic {topic} missing from list_topics: {sorted(md.topics)}")
    tmd = md.topics[topic]
    check(tmd.error is None, f"{topic} metadata error: {tmd.error}")
    check_eq(sorted(tmd.partitions), list(range(PARTITIONS)), f"{topic} partition ids")
    for p, pmd in tmd.partitions.items():
        check(pmd.error is None and pmd.leader >= 0, f"{topic}[{p}] leader={pmd.leader} error={pmd.error}")

    # A second create of the same name must be refused, not silently accepted.
    again = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic]
    try:
        again.result(timeout=30)
        fail(f"creating {topic} twice succeeded")
    except KafkaException as e:
        check_eq(e.args[0].code(), KafkaError.TOPIC_ALREADY_EXISTS, f"second create of {topic}")


class BatchCodecs(logging.Handler):
    """librdkafka's "msg" debug line for each Produce batch names the codec actually used.

    librdkafka quietly sends a batch uncompressed when it decides the broker cannot take the
    codec (for LZ4 it wants FindCoordinator in ApiVersions), so delivery alone proves nothing.
    """

    def __init__(self):
        super().__init__()
        self.codecs = []

    def emit(self, record):
        m = re.search(r"Produce MessageSet with (\d+) message\(s\) \((\d+) bytes.*, (\w+)\)$", record.getMessage())
        if m:
            self.codecs.append((m.group(3), int(m.group(1)), int(m.group(2))))


def produce(bootstrap, topic, codec, records):
    stored = {}  # (partition, offset) -> record index, as the delivery reports say
    errors = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                stored[(msg.partition(), msg.offset())] = i
        return cb

    batches = BatchCodecs()
    logger = logging.getLogger(f"rdkafka.{topic}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(batches)
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "compression.type": codec,
        "enable.idempotence": False,
        "linger.ms": 20,  # let batches of many records form, so compression has work to do
        "debug": "msg",
    }, logger=logger)
    for i, r in enumerate(records):
        producer.produce(topic, key=r["key"], value=r["value"], partition=r["partition"],
                         headers=r["headers"], timestamp=r["ts"], on_delivery=on_delivery(i))
        producer.poll(0)
    left = producer.flush(60)
    check(left == 0, f"[{codec}] {left} records still undelivered after 60 s")
    check(not errors, f"[{codec}] delivery failed: {errors[:5]} ({len(errors)} in all)")
    check_eq(len(stored), len(records), f"[{codec}] distinct (partition, offset) pairs reported")
    # A batch that the codec would make bigger legitimately goes out uncompressed (typically a
    # small tail batch), so require the codec for most records rather than for every batch.
    want = "uncompressed" if codec == "none" else codec
    with_codec = sum(n for c, n, _ in batches.codecs if c == want)
    check(with_codec >= 0.9 * len(records),
          f"[{codec}] only {with_codec} of {len(records)} records went out {want}; librdkafka's "
          f"Produce batches (codec, records, bytes): {batches.codecs}")
    return stored


def consume_all(consumer, topic, partitions, deadline_s=60, start=0):
    """Every record of every partition from offset `start` up to the end, by partition."""
    consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    got = {p: [] for p in partitions}
    at_end = set()
    deadline = time.time() + deadline_s
    while at_end != set(partitions):
        check(time.time() < deadline, f"{topic}: not at end of {set(partitions) - at_end} "
              f"after {deadline_s} s; have {({p: len(v) for p, v in got.items()})}")
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                continue
            if msg.topic() == topic:
                fail(f"consume {topic}[{msg.partition()}]: {err}")
            print(f"note: consumer reported {err}")  # e.g. about the group it never joins
            continue
        got[msg.partition()].append(msg)
    consumer.unassign()
    return got


def header_list(msg):
    return [(k, v) for k, v in (msg.headers() or [])]


def verify(consumer, topic, codec, records, stored):
    got = consume_all(consumer, topic, range(PARTITIONS))
    per_partition = {p: sum(1 for r in records if r["partition"] == p) for p in range(PARTITIONS)}
    for p, msgs in got.items():
        offsets = [m.offset() for m in msgs]
        check_eq(offsets, list(range(per_partition[p])), f"[{codec}] offsets of partition {p}")
        for m in msgs:
            where = f"[{codec}] {topic}[{p}]@{m.offset()}"
            i = stored.get((p, m.offset()))
            check(i is not None, f"{where}: no delivery report named this offset")
            r = records[i]
            check_eq(m.key(), r["key"], f"{where} key")
            check_eq(m.value(), r["value"], f"{where} value")
            check_eq(header_list(m), r["headers"], f"{where} headers")
            check_eq(m.timestamp(), (TIMESTAMP_CREATE_TIME, r["ts"]), f"{where} timestamp")

        # Starting inside a (compressed) batch: the records before the start must not show up.
        tail = consume_all(consumer, topic, [p], start=101)[p]
        check_eq([m.offset() for m in tail], list(range(101, per_partition[p])),
                 f"[{codec}] offsets of partition {p} read from offset 101")
        check_eq([m.value() for m in tail], [m.value() for m in msgs[101:]],
                 f"[{codec}] values of partition {p} read from offset 101")

        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        check_eq((low, high), (0, per_partition[p]), f"[{codec}] watermarks of partition {p}")

        # offsets_for_times: the first offset whose timestamp is >= t, or -1 past the end.
        ts_by_offset = [records[stored[(p, o)]]["ts"] for o in range(per_partition[p])]
        mid = ts_by_offset[len(ts_by_offset) // 2]
        for t in [ts_by_offset[0] - 1000, ts_by_offset[0], mid, mid + 1, ts_by_offset[-1],
                  ts_by_offset[-1] + 1]:
            want = next((o for o, ts in enumerate(ts_by_offset) if ts >= t), -1)
            [res] = consumer.offsets_for_times([TopicPartition(topic, p, t)], timeout=10)
            check(res.error is None, f"[{codec}] offsets_for_times({p}, {t}): {res.error}")
            check_eq(res.offset, want, f"[{codec}] offsets_for_times partition {p} t={t}")


def auto_create(bootstrap, admin, consumer):
    """Metadata creates a missing topic (1 partition) only when the request allows it: librdkafka
    producers allow it, consumers do not. Returns the topic created."""
    missing = unique("never-created")
    err = consumer.list_topics(missing, timeout=10).topics[missing].error
    check(err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART,
          f"consumer metadata for a missing topic: expected UNKNOWN_TOPIC_OR_PART, got {err}")
    check(missing not in admin.list_topics(timeout=10).topics,
          f"{missing} was created by metadata that did not allow auto-creation")

    created = unique("auto-created")
    producer = Producer({"bootstrap.servers": bootstrap})
    # As Kafka: the request that creates the topic is answered LEADER_NOT_AVAILABLE (which
    # librdkafka may retry by itself), and the topic is there when asked again.
    for _ in range(20):
        tmd = producer.list_topics(created, timeout=10).topics[created]
        if tmd.error is None or tmd.error.code() != KafkaError.LEADER_NOT_AVAILABLE:
            break
        time.sleep(0.1)
    check(tmd.error is None, f"producer metadata for {created}: {tmd.error}")
    check_eq(sorted(tmd.partitions), [0], f"partitions of auto-created {created}")
    check(created in admin.list_topics(timeout=10).topics, f"auto-created {created} is not listed")

    bad = "no spaces allowed"
    err = producer.list_topics(bad, timeout=10).topics[bad].error
    check(err is not None and err.code() == KafkaError.TOPIC_EXCEPTION,
          f"metadata for invalid topic name {bad!r}: expected TOPIC_EXCEPTION, got {err}")
    producer.close()
    return created


def delete_topics(admin, topics):
    for topic, f in admin.delete_topics(topics, operation_timeout=10).items():
        f.result(timeout=30)
    deadline = time.time() + 10
    while True:
        left = set(topics) & set(admin.list_topics(timeout=10).topics)
        if not left:
            return
        check(time.time() < deadline, f"deleted topics still listed: {sorted(left)}")
        time.sleep(0.2)


def run():
    a = args(__doc__)
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    consumer = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": "sluice-e2e-unused",  # librdkafka insists; nothing is committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",  # an out-of-range offset 0 must surface, not be skipped
    })
    rnd = random.Random(20240611)
    base_ts = int(time.time() * 1000) - 3_600_000
    records = [make_record(i, base_ts, rnd) for i in range(COUNT)]
    topics = [auto_create(a.bootstrap, admin, consumer)]
    failures = []  # one codec failing should not hide how the others fare
    for codec in CODECS:
        topic = unique(f"codec-{codec}")
        create_topic(admin, topic)
        topics.append(topic)
        try:
            stored = produce(a.bootstrap, topic, codec, records)
            verify(consumer, topic, codec, records, stored)
        except Failure as e:
            failures.append(str(e))
    consumer.close()
    delete_topics(admin, topics)
    check(not failures, "\n  ".join([f"{len(failures)} of {len(CODECS)} codecs failed:"] + failures))
    return (f"{COUNT} records x {len(CODECS)} codecs round-tripped exactly; topics created, "
            f"auto-created and deleted")


if __name__ == "__main__":
    main(run)
