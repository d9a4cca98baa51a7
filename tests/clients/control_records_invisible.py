#!/usr/bin/env python3
"""Watermark announcements (control batches a pipeline writes into its output) are invisible
to Kafka consumers: confluent-kafka (librdkafka) and kafka-python read exactly the data
records, and their positions still reach the end of each partition.

usage: control_records_invisible.py --bootstrap HOST:PORT --topic T --count N
(the topic holds N data records with values V0 .. V{N-1}, plus control records)
"""

import time

from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KTP

from common import args, check, check_eq, fail, main


def extra(p):
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)


a = args(__doc__, extra)
WANT = sorted(f"V{i}" for i in range(a.count))


def confluent():
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"ctl-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    md = c.list_topics(a.topic, timeout=10).topics[a.topic]
    parts = sorted(md.partitions)
    highs = {p: c.get_watermark_offsets(TopicPartition(a.topic, p), timeout=10)[1] for p in parts}
    check(sum(highs.values()) > a.count,
          f"no control records in {a.topic}: high watermarks {highs} for {a.count} records")
    c.subscribe([a.topic])
    got = []
    deadline = time.time() + 60
    while len(got) < a.count and time.time() < deadline:
        for m in c.consume(500, 0.5):
            if m.error():
                fail(f"confluent-kafka: {m.error()}")
            got.append(m.value().decode())
    # Anything more (a control record surfacing) would come now.
    end = time.time() + 2
    while time.time() < end:
        for m in c.consume(500, 0.2):
            if not m.error():
                got.append(m.value().decode())
    check_eq(sorted(got), WANT, "confluent-kafka's records")
    c.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in
                 c.committed([TopicPartition(a.topic, p) for p in parts], timeout=10)}
    c.close()
    return highs, committed


def kafka_python(highs):
    c = KafkaConsumer(bootstrap_servers=a.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=3000)
    tps = [KTP(a.topic, p) for p in highs]
    c.assign(tps)
    c.seek_to_beginning()
    got = [m.value.decode() for m in c]
    check_eq(sorted(got), WANT, "kafka-python's records")
    positions = {tp.partition: c.position(tp) for tp in tps}
    c.close()
    return positions


def body():
    highs, committed = confluent()
    positions = kafka_python(highs)
    check_eq(positions, highs, "kafka-python's positions after reading everything")
    check_eq(committed, highs, "confluent-kafka's committed offsets after reading everything")
    return (f"{a.count} records read by confluent-kafka and kafka-python, none of the "
            f"{sum(highs.values()) - a.count} control records; positions at the end {highs}")


main(body)
