#!/usr/bin/env python3
"""KIP-848 consumer groups (librdkafka with group.protocol=consumer): the broker assigns.

One 6-partition topic with 600 unique records:
  1. three members subscribe: each ends up with 2 partitions, every partition owned once, and
     while they converge no partition is handed to two members at once (every record is read
     exactly once across the group, commits after each record);
  2. one member closes (it leaves with epoch -1): the other two get 3 each;
  3. both commit and close; 300 more records; a fresh member resumes exactly at the committed
     offsets: it reads exactly the 300 new records plus what was left unread;
  4. a member of another group subscribes with a regex (the broker resolves it, KIP-848): it gets
     the matching topic's partitions and not a topic whose name only contains the pattern, then
     also those of a matching topic created after it joined, and reads every record of both.
"""

import time

from confluent_kafka import Consumer, TopicPartition

from common import args, check, check_eq, main, unique
from group_common import create_topic, log, produce

PARTITIONS = 6


def member(bootstrap, group, topic, name):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": "consumer",
        "client.id": name,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    return c


def parts(c):
    return sorted(tp.partition for tp in c.assignment())


def drain(members, topic, seen, until):
    """Polls every member until `until()` holds (max 45 s), committing each record read."""
    deadline = time.time() + 45
    while not until():
        check(time.time() < deadline,
              f"not reached in 45 s: assignments {[parts(c) for c in members]}, {len(seen)} records read")
        for c in members:
            m = c.poll(0.05)
            if m is None:
                continue
            check(m.error() is None, f"consumer error {m.error()}")
            key = (m.partition(), m.offset())
            check(key not in seen, f"record {key} read twice (by {seen.get(key)} and {c})")
            seen[key] = m.value().decode()
            c.commit(offsets=[TopicPartition(topic, m.partition(), m.offset() + 1)], asynchronous=False)


def run(a):
    topic, group = unique("k848"), unique("g848")
    create_topic(a.bootstrap, topic, PARTITIONS)
    produce(a.bootstrap, topic, [(i % PARTITIONS, f"v{i}") for i in range(600)])
    ms = [member(a.bootstrap, group, topic, f"m{i}") for i in range(3)]
    seen = {}
    start = time.time()
    drain(ms, topic, seen, lambda: sorted(len(parts(c)) for c in ms) == [2, 2, 2] and len(seen) == 600)
    log(f"3 members converged to {[parts(c) for c in ms]} in {time.time() - start:.1f} s")
    check_eq(sorted(p for c in ms for p in parts(c)), list(range(PARTITIONS)), "partitions owned once")

    ms[2].close()
    left = ms[:2]
    drain(left, topic, seen, lambda: sorted(len(parts(c)) for c in left) == [3, 3])
    log(f"after one left: {[parts(c) for c in left]}")

    for c in left:
        c.close()
    where = produce(a.bootstrap, topic, [(i % PARTITIONS, f"w{i}") for i in range(300)])
    fresh = member(a.bootstrap, group, topic, "fresh")
    got = {}
    drain([fresh], topic, got, lambda: len(got) >= 300)
    time.sleep(1)
    drain([fresh], topic, got, lambda: True)
    check_eq(sorted(got.values()), sorted(where), "records read by the fresh member (exactly the new ones)")
    fresh.close()

    prefix = unique("rx")
    create_topic(a.bootstrap, f"{prefix}-a", 2)
    create_topic(a.bootstrap, f"x{prefix}-a", 1)
    produce(a.bootstrap, f"{prefix}-a", [(i % 2, f"a{i}") for i in range(10)])
    produce(a.bootstrap, f"x{prefix}-a", [(0, "not for the regex")])
    rx = member(a.bootstrap, unique("grx"), f"^{prefix}-.*", "regex")
    got = {}

    def topics_of(c):
        return sorted({tp.topic for tp in c.assignment()})

    drain([rx], f"{prefix}-a", got, lambda: topics_of(rx) == [f"{prefix}-a"] and len(got) == 10)
    create_topic(a.bootstrap, f"{prefix}-b", 1)
    produce(a.bootstrap, f"{prefix}-b", [(0, f"b{i}") for i in range(5)])
    drain_any(rx, got, lambda: len(rx.assignment()) == 3 and len(got) == 15)
    check_eq(topics_of(rx), [f"{prefix}-a", f"{prefix}-b"], "topics assigned by the regex")
    check_eq(sorted(got.values()), sorted([f"a{i}" for i in range(10)] + [f"b{i}" for i in range(5)]),
             "records read through the regex subscription")
    rx.close()
    return "KIP-848 group: 2/2/2, then 3/3, then exact resume from committed offsets; regex subscription"


def drain_any(c, seen, until):
    """Like drain, for one member reading several topics."""
    deadline = time.time() + 45
    while not until():
        check(time.time() < deadline, f"not reached in 45 s: {c.assignment()}, {len(seen)} records read")
        m = c.poll(0.05)
        if m is None:
            continue
        check(m.error() is None, f"consumer error {m.error()}")
        key = (m.topic(), m.partition(), m.offset())
        check(key not in seen, f"record {key} read twice")
        seen[key] = m.value().decode()


if __name__ == "__main__":
    a = args(__doc__)
    main(lambda: run(a))
