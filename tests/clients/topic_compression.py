#!/usr/bin/env python3
"""A topic's compression.type decides how its batches are stored, as on Kafka's broker,
seen through confluent-kafka and the segment files on disk:

  - an idempotent producer compressing with lz4 writes to a topic of each compression.type
    (zstd, gzip, uncompressed, producer) and to a zstd topic changed to snappy halfway;
  - every record reads back as sent (key, value, headers, timestamp, offset);
  - the data batches in the partition's segment files carry the topic's codec (lz4 where it
    is `producer`; lz4 then snappy for the changed topic) — read from --data-dir;
  - compression.gzip.level and compression.zstd.level are applied: the same records take
    less room at level 9 (gzip) and 19 (zstd) than at level 1.
"""

import glob
import os
import struct
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

CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
N = 400


def produce(bootstrap, topic, start, n):
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4",
                  "enable.idempotence": True, "linger.ms": 20})
    errors = []
    for i in range(start, start + n):
        p.produce(topic, key=f"k{i}".encode(), value=(f"value {i} " * 60).encode(),
                  headers=[("h", f"{i}".encode())], timestamp=1_700_000_000_000 + i,
                  on_delivery=lambda err, msg: err and errors.append(err))
    p.flush(30)
    check_eq(errors, [], f"delivery errors on {topic}")


def read_back(bootstrap, topic, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("cmp"),
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.time() + 30
        while len(got) < n and time.time() < deadline:
            m = c.poll(1)
            if m is not None and not m.error():
                got.append(m)
        check_eq(len(got), n, f"records read from {topic}")
        for i, m in enumerate(got):
            want = (i, f"k{i}".encode(), (f"value {i} " * 60).encode(),
                    [("h", f"{i}".encode())], 1_700_000_000_000 + i)
            have = (m.offset(), m.key(), m.value(), m.headers(), m.timestamp()[1])
            check_eq(have, want, f"{topic} record {i}")
    finally:
        c.close()


def stored_codecs(data_dir, topic, sizes=False):
    """The codec (or size) of each data batch in partition 0's segment files, in order."""
    out = []
    for path in sorted(glob.glob(os.path.join(data_dir, "topics", topic, "0", "*.log"))):
        b = open(path, "rb").read()
        at = 0
        while at + 23 <= len(b):
            (length,) = struct.unpack(">i", b[at + 8:at + 12])
            (attributes,) = struct.unpack(">h", b[at + 21:at + 23])
            if not attributes & 0x20:  # not a control batch
                out.append(12 + length if sizes else CODECS[attributes & 7])
            at += 12 + length
    return out


def body(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    want = {"zstd": "zstd", "gzip": "gzip", "uncompressed": "none", "producer": "lz4"}
    topics = {kind: unique(f"cmp-{kind}") for kind in want}
    changed = unique("cmp-changed")
    new = [NewTopic(t, 1, 1, config={"compression.type": kind}) for kind, t in topics.items()]
    new.append(NewTopic(changed, 1, 1, config={"compression.type": "zstd"}))
    for f in admin.create_topics(new).values():
        f.result(timeout=10)

    for kind, t in topics.items():
        produce(a.bootstrap, t, 0, N)
        read_back(a.bootstrap, t, N)
        codecs = stored_codecs(a.data_dir, t)
        check(codecs, f"no batches found on disk for {t}")
        check_eq(set(codecs), {want[kind]}, f"codecs stored for compression.type={kind}")

    produce(a.bootstrap, changed, 0, N // 2)
    res = ConfigResource(ConfigResource.Type.TOPIC, changed, incremental_configs=[
        ConfigEntry("compression.type", "snappy", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=10)
    produce(a.bootstrap, changed, N // 2, N // 2)
    read_back(a.bootstrap, changed, N)
    codecs = stored_codecs(a.data_dir, changed)
    first_snappy = codecs.index("snappy") if "snappy" in codecs else len(codecs)
    check(first_snappy > 0 and set(codecs[:first_snappy]) == {"zstd"}
          and set(codecs[first_snappy:]) == {"snappy"},
          f"want zstd batches, then snappy after the change; got {codecs}")
    sizes = {}
    for codec, level in [("gzip", 1), ("gzip", 9), ("zstd", 1), ("zstd", 19)]:
        t = unique(f"cmp-{codec}{level}")
        admin.create_topics([NewTopic(t, 1, 1, config={
            "compression.type": codec, f"compression.{codec}.level": str(level)})])[t].result(timeout=10)
        produce(a.bootstrap, t, 0, N)
        read_back(a.bootstrap, t, N)
        check_eq(set(stored_codecs(a.data_dir, t)), {codec}, f"codec of {t}")
        sizes[(codec, level)] = sum(stored_codecs(a.data_dir, t, sizes=True))
    check(sizes[("gzip", 9)] < sizes[("gzip", 1)] and sizes[("zstd", 19)] < sizes[("zstd", 1)],
          f"stored bytes by level do not shrink: {sizes}")
    return f"{N} records per topic stored in the topic's codec: " + ", ".join(
        f"{k}->{v}" for k, v in want.items()) + "; bytes by level: " + ", ".join(
        f"{c} {l}: {n}" for (c, l), n in sizes.items())


if __name__ == "__main__":
    a = args(__doc__, lambda p: p.add_argument("--data-dir", required=True))
    main(lambda: body(a))
