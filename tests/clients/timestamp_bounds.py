#!/usr/bin/env python3
"""Record timestamps checked against the broker's clock, as Kafka 4 does, seen through
confluent-kafka:

  - a topic with Kafka 4's defaults (message.timestamp.after.max.ms = one hour, no bound on
    the past) takes records stamped now, 50 minutes ahead and a year ago, and refuses one
    stamped two hours ahead with INVALID_TIMESTAMP; nothing refused is stored;
  - raising the bound (IncrementalAlterConfigs) lets the same record in;
  - message.timestamp.before.max.ms = 60000 refuses a record stamped an hour ago;
  - a LogAppendTime topic takes any create time, and stamps the broker's;
  - the topic's DescribeConfigs reports the default of one hour.
"""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from common import args, check, check_eq, main, unique

HOUR = 3_600_000


def produce(bootstrap, topic, stamps):
    """Produces one record per timestamp, each on its own; returns each one's error name
    (None when stored)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "retries": 0})
    out = []
    for ts in stamps:
        got = []
        p.produce(topic, key=b"k", value=str(ts).encode(), timestamp=ts,
                  on_delivery=lambda err, msg: got.append(err.name() if err else None))
        p.flush(15)
        check_eq(len(got), 1, f"delivery reports for a record stamped {ts}")
        out.append(got[0])
    return out


def stored(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ts"),
                  "enable.auto.commit": False})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, lo)])
        out = []
        deadline = time.time() + 20
        while len(out) < hi - lo and time.time() < deadline:
            m = c.poll(1)
            if m is not None and not m.error():
                out.append((int(m.value()), m.timestamp()))
        return out
    finally:
        c.close()


def alter(admin, topic, key, value):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=10)


def body(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    plain, strict, stamped = unique("ts-plain"), unique("ts-strict"), unique("ts-append")
    topics = [NewTopic(plain, 1, 1),
              NewTopic(strict, 1, 1, config={"message.timestamp.before.max.ms": "60000"}),
              NewTopic(stamped, 1, 1, config={"message.timestamp.type": "LogAppendTime"})]
    for f in admin.create_topics(topics).values():
        f.result(timeout=10)

    res = ConfigResource(ConfigResource.Type.TOPIC, plain)
    entry = admin.describe_configs([res])[res].result(timeout=10)["message.timestamp.after.max.ms"]
    check_eq(entry.value, str(HOUR), "message.timestamp.after.max.ms default")

    now = int(time.time() * 1000)
    ahead, soon, old = now + 2 * HOUR, now + 50 * 60_000, now - 365 * 24 * HOUR
    got = produce(a.bootstrap, plain, [now, ahead, soon, old])
    check_eq(got, [None, "INVALID_TIMESTAMP", None, None], "two hours ahead refused, the rest taken")
    check_eq(sorted(v for v, _ in stored(a.bootstrap, plain)), sorted([now, soon, old]),
             "records stored (the refused one is not)")

    alter(admin, plain, "message.timestamp.after.max.ms", str(3 * HOUR))
    # Kafka applies a topic's new config a moment after it answers the alter.
    deadline = time.time() + 10
    while (got := produce(a.bootstrap, plain, [ahead])) != [None] and time.time() < deadline:
        time.sleep(0.5)
    check_eq(got, [None], "two hours ahead with a 3 h bound")

    hour_ago = int(time.time() * 1000) - HOUR
    got = produce(a.bootstrap, strict, [hour_ago, int(time.time() * 1000)])
    check_eq(got, ["INVALID_TIMESTAMP", None], "an hour old refused with before.max.ms=60000")

    got = produce(a.bootstrap, stamped, [ahead])
    check_eq(got, [None], "LogAppendTime takes any create time")
    (value, (kind, ts)), = stored(a.bootstrap, stamped)
    check(kind == 2 and abs(ts - time.time() * 1000) < 60_000,
          f"want the broker's LogAppendTime, got type {kind} at {ts}")
    return "future records refused past message.timestamp.after.max.ms, old ones past before.max.ms"


if __name__ == "__main__":
    a = args(__doc__)
    main(lambda: body(a))
