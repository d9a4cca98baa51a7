#!/usr/bin/env python3
"""Retention and persistent topic configs, seen through confluent-kafka.

  retain (the broker runs retention every 200 ms):
    - topic A: segment.bytes=1024, retention.bytes=3000; 300 records of 100 bytes, one batch
      each. Whole old segments go: the earliest offset rises above 0, what remains is contiguous
      from there to 300 and readable, and the partition keeps at least retention.bytes;
    - topic B: retention.ms=20000; records stamped an hour ago all go, even those in the segment
      being written to (it is rolled first), and records stamped now stay;
    - topic C: created with configs, then changed with IncrementalAlterConfigs.
  after-restart: the configs of A, B and C are what was set, and A's offsets are unchanged.
"""

import json
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigEntry, AlterConfigOpType, NewTopic

from common import args, check, check_eq, main

A, B, C = "retain-bytes", "retain-time", "configured"
WANT = {
    A: {"segment.bytes": "1024", "retention.bytes": "3000"},
    B: {"retention.ms": "20000", "segment.bytes": "1024"},
    C: {"retention.ms": "86400000", "max.message.bytes": "50000", "cleanup.policy": "delete"},
}


def watermarks(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm", "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def read_all(bootstrap, topic, start):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ra", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, start)])
    out, deadline = [], time.time() + 20
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    while len(out) < hi - start and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            out.append((m.offset(), m.value().decode()))
    c.close()
    return out


def configs(admin, topic):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    got = admin.describe_configs([res])[res].result(timeout=10)
    return {k: v.value for k, v in got.items()}


def produce_one_by_one(bootstrap, topic, values, ts=None):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    for v in values:
        p.produce(topic, value=v, partition=0, timestamp=ts or 0)
        check(p.flush(10) == 0, "produce did not complete")


def retain(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    fs = admin.create_topics([NewTopic(t, 1, 1, config=WANT[t]) for t in (A, B)])
    for f in fs.values():
        f.result(timeout=10)
    values = [f"{i:03d}".ljust(100, "x") for i in range(300)]
    produce_one_by_one(a.bootstrap, A, values)
    # Retention runs every 200 ms: wait for a pass after the last record.
    deadline = time.time() + 15
    while (300 - watermarks(a.bootstrap, A)[0]) * 168 > 3000 + 1024 + 168 and time.time() < deadline:
        time.sleep(0.2)
    lo, hi = watermarks(a.bootstrap, A)
    check(lo > 0, f"retention.bytes deleted nothing: watermarks {(lo, hi)}")
    check_eq(hi, 300, "high watermark of A")
    rest = read_all(a.bootstrap, A, lo)
    check_eq([o for o, _ in rest], list(range(lo, 300)), "offsets left after retention")
    check_eq([v for _, v in rest], values[lo:], "records left after retention")
    # Each record is its own ~168-byte batch on disk: what remains must still hold
    # retention.bytes, and no more than that plus one 1024-byte segment.
    kept_bytes = (300 - lo) * 168
    check(3000 <= kept_bytes <= 3000 + 1024 + 168, f"retention kept {300 - lo} records (~{kept_bytes} bytes)")

    # Records stamped an hour ago: even the segment still being written to goes (it is
    # rolled, then deleted), so the log ends up empty at offset 20.
    hour_ago = int(time.time() * 1000) - 3600_000
    produce_one_by_one(a.bootstrap, B, [f"old-{i}".ljust(200, "o") for i in range(20)], ts=hour_ago)
    deadline = time.time() + 15
    while watermarks(a.bootstrap, B)[0] < 20 and time.time() < deadline:
        time.sleep(0.2)
    check_eq(watermarks(a.bootstrap, B), (20, 20), "watermarks of B once its hour-old records expired")
    produce_one_by_one(a.bootstrap, B, [f"new-{i}".ljust(200, "n") for i in range(10)])
    time.sleep(1)  # several retention passes
    check_eq(watermarks(a.bootstrap, B), (20, 30), "watermarks of B after records stamped now")
    kept = [v for _, v in read_all(a.bootstrap, B, 20)]
    check_eq(len(kept), 10, "records stamped now kept")
    check(all(v.startswith("new-") for v in kept), f"records stamped now must stay, got {kept[:3]}")

    admin.create_topics([NewTopic(C, 2, 1, config={"retention.ms": "1000"})])[C].result(timeout=10)
    res = ConfigResource(ConfigResource.Type.TOPIC, C, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in WANT[C].items()])
    admin.incremental_alter_configs([res])[res].result(timeout=10)
    for t in (A, B, C):
        got = configs(admin, t)
        for k, v in WANT[t].items():
            check_eq(got.get(k), v, f"{t} config {k}")
    print(json.dumps({"a_start": lo}))
    return f"retention.bytes kept offsets {lo}..300, retention.ms dropped 20 old records, configs set"


def after_restart(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    for t in (A, B, C):
        got = configs(admin, t)
        for k, v in WANT[t].items():
            check_eq(got.get(k), v, f"{t} config {k} after restart")
    lo, hi = watermarks(a.bootstrap, A)
    check_eq(hi, 300, "A's high watermark after restart")
    check_eq(read_all(a.bootstrap, A, lo)[-1][0], 299, "A's last offset after restart")
    return "topic configs and offsets survived the restart"


if __name__ == "__main__":
    a = args(__doc__, lambda p: p.add_argument("mode", choices=["retain", "after-restart"]))
    main(lambda: retain(a) if a.mode == "retain" else after_restart(a))
