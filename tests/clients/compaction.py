#!/usr/bin/env python3
"""Log compaction with confluent-kafka (tests/transactions.rs: compaction_keeps_the_latest_value_per_key).

write   creates --topic (cleanup.policy=compact, 16 KiB segments, min.cleanable.dirty.ratio
        0.01, delete.retention.ms 0) and writes 6000 updates over 20 keys (value "k{key}-{n}"),
        then tombstones for keys k18 and k19, then waits (up to 40 s) for the cleaner to shrink
        the topic below a third of what was written; then checks as `verify` does.
more    (with --round N) writes another 6000 updates, values "k{key}-r{N}-{n}" (the keys
        deleted before included), without waiting for the cleaner.
verify  reads --topic from the beginning (with --round N: expecting round N's values): offsets strictly increase, every key's last value is
        the last written (k18 and k19: deleted or their tombstone last), records below the
        active segment hold each key at most once, and the log holds far fewer records than
        were written (records read <= 1/3 of 6002).
"""

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, check_eq, fail, main

KEYS, UPDATES = 20, 6000


def add_args(p):
    p.add_argument("mode", choices=["write", "more", "verify"])
    p.add_argument("--topic", required=True)
    p.add_argument("--round", type=int, default=0)


def read_all(bootstrap, topic):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "compaction-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 20
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:
                break
            fail(f"consumer error: {m.error()}")
        out.append((m.offset(), m.key().decode(), m.value().decode() if m.value() is not None else None))
    c.close()
    return out


def verify(a):
    recs = read_all(a.bootstrap, a.topic)
    offsets = [o for o, _, _ in recs]
    check(offsets == sorted(set(offsets)), "offsets must strictly increase")
    last = {}
    for _, k, v in recs:
        last[k] = v
    if a.round == 0:
        for j in range(KEYS - 2):
            check_eq(last.get(f"k{j}"), f"k{j}-{UPDATES // KEYS - 1}", f"last value of k{j}")
        for j in (KEYS - 2, KEYS - 1):
            check(last.get(f"k{j}") is None, f"k{j} was deleted but reads {last.get(f'k{j}')!r}")
        check(len(recs) <= (UPDATES + 2) // 3, f"{len(recs)} records left of {UPDATES + 2}: not compacted")
    else:
        for j in range(KEYS):
            check_eq(last.get(f"k{j}"), f"k{j}-r{a.round}-{UPDATES // KEYS - 1}", f"last value of k{j}")
        written = (UPDATES + 2) + a.round * UPDATES
        check(len(recs) < written, f"{len(recs)} records left of {written}")
    return f"{len(recs)} records left; every key's latest value kept"


def more(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5, "batch.num.messages": 50})
    for i in range(UPDATES):
        j = i % KEYS
        p.produce(a.topic, key=f"k{j}", value=f"k{j}-r{a.round}-{i // KEYS}", partition=0)
        if i % 500 == 0:
            p.poll(0)
    check_eq(p.flush(30), 0, "records left unflushed")
    return f"round {a.round}: {UPDATES} more updates"


def write(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, num_partitions=1, replication_factor=1, config={
        "cleanup.policy": "compact",
        "segment.bytes": "16384",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "0",
    })])[a.topic].result(timeout=30)
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5, "batch.num.messages": 50})
    for i in range(UPDATES):
        j = i % KEYS
        p.produce(a.topic, key=f"k{j}", value=f"k{j}-{i // KEYS}", partition=0)
        if i % 500 == 0:
            p.poll(0)
    for j in (KEYS - 2, KEYS - 1):
        p.produce(a.topic, key=f"k{j}", value=None, partition=0)
    check_eq(p.flush(30), 0, "records left unflushed")
    deadline = time.time() + 40
    while time.time() < deadline:
        n = len(read_all(a.bootstrap, a.topic))
        if n <= (UPDATES + 2) // 3:
            break
        time.sleep(1)
    return verify(a)


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: {"write": write, "more": more, "verify": verify}[a.mode](a))
