#!/usr/bin/env python3
"""Acknowledged means stored: the two halves of the kill -9 scenario (tests/clients.rs drives it).

  produce: create a 3-partition topic and produce --count records with acks=all, paced so the run
           lasts several seconds; every delivery report that succeeds is appended to --acked as
           "partition offset value" and flushed at once, so the file always lists every record
           the broker has acknowledged so far. The broker is killed and restarted meanwhile;
           records that fail delivery are simply not listed.
  check:   read every partition from offset 0 and require each listed record at its offset.
"""

import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import args, check, check_eq, fail, main
from confluent_codecs import consume_all

PARTITIONS = 3


def add_args(p):
    p.add_argument("mode", choices=["produce", "check"])
    p.add_argument("--topic", required=True)
    p.add_argument("--acked", required=True, help="file of acknowledged records")
    p.add_argument("--count", type=int, default=30000)
    p.add_argument("--rate", type=int, default=4000, help="records per second")
    p.add_argument("--min-acked", type=int, default=1)
    p.add_argument("--allow-loss", action="store_true",
                   help="count acknowledged records that are gone instead of failing (a power cut "
                        "without durable mode); the log must still be consistent")


def value_of(i):
    return f"rec-{i:07d}-" + "p" * (i % 64)


def produce(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, num_partitions=PARTITIONS, replication_factor=1)])[a.topic].result(timeout=30)
    out = open(a.acked, "w", buffering=1)
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)
            return
        out.write(f"{msg.partition()} {msg.offset()} {msg.value().decode()}\n")
        out.flush()

    producer = Producer({
        "bootstrap.servers": a.bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 30000,  # records caught by the outage may still land after restart
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    })
    start = time.time()
    for i in range(a.count):
        while True:
            try:
                producer.produce(a.topic, value=value_of(i), partition=i % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full while the broker is down
                producer.poll(0.1)
        lag = start + i / a.rate - time.time()
        producer.poll(max(lag, 0))
    left = producer.flush(90)
    out.close()
    kinds = sorted({e.name() for e in failed})
    return f"{a.count} produced, {len(failed)} failed delivery {kinds}, {left} unresolved"


def check_stored(a):
    acked = {}
    with open(a.acked) as f:
        for n, line in enumerate(f, 1):
            p, o, v = line.rstrip("\n").split(" ", 2)
            key = (int(p), int(o))
            if key in acked and acked[key] != v:
                fail(f"broker acknowledged two different records at partition {p} offset {o}: "
                     f"{acked[key]!r} and {v!r} (data acknowledged before the kill was lost and "
                     f"its offset reused)")
            acked[key] = v
    check(len(acked) >= a.min_acked, f"only {len(acked)} acknowledged records listed, expected >= {a.min_acked}")

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "sluice-e2e-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "error"})
    got = consume_all(consumer, a.topic, list(range(PARTITIONS)), deadline_s=120)
    consumer.close()
    stored = {}
    for p, msgs in got.items():
        check_eq([m.offset() for m in msgs], list(range(len(msgs))), f"offsets of partition {p}")
        for m in msgs:
            stored[(p, m.offset())] = m.value().decode()
    missing = sorted(k for k in acked if k not in stored)
    if a.allow_loss:
        # What survives must still be what was acknowledged, at its offset.
        acked = {k: v for k, v in acked.items() if k in stored}
    check(a.allow_loss or not missing, f"{len(missing)} of {len(acked)} acknowledged records are gone after kill -9, "
          f"first (partition, offset): {missing[:10]}; partition sizes now "
          f"{ {p: len(m) for p, m in got.items()} }")
    wrong = [(k, acked[k], stored[k]) for k in sorted(acked) if stored[k] != acked[k]]
    check(not wrong, f"{len(wrong)} acknowledged offsets hold a different record now, first: {wrong[:5]}")
    if a.allow_loss:
        return f"lost {len(missing)} acknowledged records; {len(acked)} present at their offsets ({len(stored)} stored in all)"
    return f"all {len(acked)} acknowledged records present at their offsets ({len(stored)} stored in all)"


def run():
    a = args(__doc__, add_args)
    return produce(a) if a.mode == "produce" else check_stored(a)


if __name__ == "__main__":
    main(run)
