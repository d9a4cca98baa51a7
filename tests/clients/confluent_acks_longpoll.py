#!/usr/bin/env python3
"""confluent-kafka: the acks levels not covered elsewhere (0 and 1), and Fetch long polling.

acks=0 and acks=1: records are stored in order and read back exactly (with acks=0 the client
gets no offsets, so order within the partition is what is compared).
Long poll: a consumer waiting at the end of an empty partition with fetch.wait.max.ms=5000 must
(1) not spin (few Fetch requests while idle, counted from librdkafka's statistics) and
(2) get a new record well before the 5 s wait runs out, i.e. the append wakes the parked Fetch.
"""

import json
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, check_eq, main, unique
from confluent_codecs import consume_all

MAX_WAIT_MS = 5000


def acks_round_trip(bootstrap, admin, acks):
    topic = unique(f"acks{acks}")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    values = [f"acks={acks} #{i} ".encode() * (1 + i % 9) for i in range(500)]
    errors = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": str(acks), "enable.idempotence": False,
                         "linger.ms": 5})
    for v in values:
        producer.produce(topic, value=v, key=v[:8], partition=0,
                         on_delivery=lambda e, m: errors.append(e) if e else None)
        producer.poll(0)
    check_eq(producer.flush(30), 0, f"acks={acks}: undelivered records")
    check(not errors, f"acks={acks}: delivery errors {errors[:3]}")
    if acks == 0:
        # Nothing tells an acks=0 producer when the broker is done; wait for the high watermark.
        probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-e2e-unused",
                          "enable.auto.commit": False})
        deadline = time.time() + 10
        while probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1] < len(values):
            check(time.time() < deadline, f"acks=0: high watermark never reached {len(values)}")
            time.sleep(0.1)
        probe.close()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-e2e-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "error"})
    got = consume_all(consumer, topic, [0])[0]
    consumer.close()
    check_eq([m.value() for m in got], values, f"acks={acks}: values in partition order")
    check_eq([m.key() for m in got], [v[:8] for v in values], f"acks={acks}: keys in partition order")


def fetch_requests(stats):
    """Fetch requests sent to real brokers (not librdkafka's internal pseudo-brokers)."""
    return sum(b.get("req", {}).get("Fetch", 0) for b in stats["brokers"].values() if b.get("nodeid", -1) >= 0)


def long_poll(bootstrap, admin):
    topic = unique("longpoll")
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)
    latest = {}
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-e2e-unused",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": MAX_WAIT_MS,
        "statistics.interval.ms": 500,
        "stats_cb": lambda s: latest.update(json.loads(s)),
    })
    consumer.assign([TopicPartition(topic, 0, 0)])
    end = time.time() + 2
    while time.time() < end:  # let the consumer reach the (empty) end and park its Fetch
        check(consumer.poll(0.2) is None, "a record arrived in an empty topic")
    check("brokers" in latest, "no statistics from librdkafka")
    before = fetch_requests(latest)
    end = time.time() + 3
    while time.time() < end:
        check(consumer.poll(0.2) is None, "a record arrived in an empty topic")
    idle_fetches = fetch_requests(latest) - before
    check(idle_fetches <= 3, f"{idle_fetches} Fetch requests in 3 idle seconds with fetch.wait.max.ms="
          f"{MAX_WAIT_MS}: the broker answers empty fetches at once instead of holding them")

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False})
    acked_at = []
    producer.produce(topic, value=b"wake up", partition=0, on_delivery=lambda e, m: acked_at.append((e, time.time())))
    check_eq(producer.flush(10), 0, "wake-up record undelivered")
    err, t_ack = acked_at[0]
    check(err is None, f"wake-up record failed: {err}")
    deadline = time.time() + MAX_WAIT_MS / 1000 + 5
    while True:
        msg = consumer.poll(0.05)
        if msg is not None and msg.error() is None:
            break
        check(time.time() < deadline, "the waiting consumer never got the new record")
    latency = time.time() - t_ack
    consumer.close()
    check_eq(msg.value(), b"wake up", "record seen by the waiting consumer")
    check(latency < 1.5, f"the waiting consumer got the record {latency:.2f} s after it was acknowledged: "
          f"the append did not wake the parked Fetch (fetch.wait.max.ms={MAX_WAIT_MS})")
    return idle_fetches, latency


def run():
    a = args(__doc__)
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    for acks in (0, 1):
        acks_round_trip(a.bootstrap, admin, acks)
    idle_fetches, latency = long_poll(a.bootstrap, admin)
    return (f"acks=0 and acks=1 round trips exact; long poll: {idle_fetches} Fetch requests in 3 idle s, "
            f"new record delivered {latency * 1000:.0f} ms after its ack")


if __name__ == "__main__":
    main(run)
