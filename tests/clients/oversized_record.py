#!/usr/bin/env python3
"""A record bigger than the topic's max.message.bytes must be refused by the broker with
MESSAGE_TOO_LARGE, without using up an offset, and the partition must keep working after it.

The client's own message.max.bytes is raised far above the value so that librdkafka sends the
record instead of refusing it locally: the refusal under test is the broker's.
"""

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, check_eq, main, unique
from confluent_codecs import consume_all

LIMIT = 10_000


def deliver(producer, topic, value):
    """Produce one record, wait for its delivery report, return (error, offset)."""
    report = []
    producer.produce(topic, value=value, partition=0, on_delivery=lambda e, m: report.append((e, m.offset())))
    check_eq(producer.flush(30), 0, f"records undelivered after 30 s (value of {len(value)} bytes)")
    check_eq(len(report), 1, "delivery reports")
    return report[0]


def run():
    a = args(__doc__)
    topic = unique("oversized")
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                  config={"max.message.bytes": str(LIMIT)})])[topic].result(timeout=30)

    producer = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "compression.type": "none",
        "enable.idempotence": False,
        "message.max.bytes": 10_000_000,
        "linger.ms": 0,
        "retries": 0,
    })
    small = b"s" * 100
    under = b"u" * (LIMIT - 200)  # batch overhead (61 bytes + record framing) still fits

    err, _ = deliver(producer, topic, b"x" * (2 * LIMIT))
    check(err is not None, "a 20000-byte record was accepted by a topic with max.message.bytes=10000")
    check_eq(err.code(), KafkaError.MSG_SIZE_TOO_LARGE,
             f"error for the oversized record ({err.str()})")
    check(not err.retriable(), f"MESSAGE_TOO_LARGE should not be retriable: {err}")

    err, offset = deliver(producer, topic, small)
    check(err is None, f"small record after the refused one failed: {err}")
    check_eq(offset, 0, "offset of the first accepted record (the refused one must not take one)")
    err, offset = deliver(producer, topic, under)
    check(err is None, f"record just under max.message.bytes failed: {err}")
    check_eq(offset, 1, "offset of the record just under the limit")

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "sluice-e2e-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "error"})
    got = consume_all(consumer, topic, [0])[0]
    check_eq([m.value() for m in got], [small, under], "values stored in the topic")
    check_eq(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False), (0, 2),
             "watermarks")
    consumer.close()

    # The other direction: a batch bigger than the consumer's fetch limits must still be returned
    # whole (Kafka always hands out the first batch of a fetch, however big), or the consumer
    # would be stuck at that offset forever.
    big_topic = unique("big-record")
    admin.create_topics([NewTopic(big_topic, num_partitions=1, replication_factor=1,
                                  config={"max.message.bytes": "4000000"})])[big_topic].result(timeout=30)
    big = bytes(range(256)) * 8000  # 2 MB
    err, offset = deliver(producer, big_topic, big)
    check(err is None and offset == 0, f"2 MB record into a topic allowing 4 MB: {err}, offset {offset}")
    check_eq(deliver(producer, big_topic, small), (None, 1), "record after the 2 MB one")
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "sluice-e2e-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "error", "max.partition.fetch.bytes": 1_048_576,
                         "fetch.max.bytes": 1_048_576, "receive.message.max.bytes": 10_000_000})
    got = consume_all(consumer, big_topic, [0])[0]
    consumer.close()
    check_eq([len(m.value()) for m in got], [len(big), len(small)], "sizes read back past 1 MB fetch limits")
    check(got[0].value() == big, "the 2 MB record came back altered")

    for f in admin.delete_topics([topic, big_topic]).values():
        f.result(timeout=30)
    return (f"{2 * LIMIT}-byte record refused with MSG_SIZE_TOO_LARGE; smaller records stored at offsets 0 "
            f"and 1; a 2 MB record read back through 1 MB fetch limits")


if __name__ == "__main__":
    main(run)
