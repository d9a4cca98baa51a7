#!/usr/bin/env python3
"""A consume-transform-produce worker (tests/transactions.rs: exactly_once_under_kill9).

Reads --src as a member of --group (read_committed), writes each record upper-cased to --dst
(same partition) and commits the consumed offsets in the same transaction
(send_offsets_to_transaction), transactional.id --txn-id. Exits 0 once the group's committed
offsets cover all --total input records. The test kills the broker and this worker with
SIGKILL while it runs; the worker does what an application should: abort and rewind on an
abortable error, retry a commit on a retriable one, and exit non-zero on a fatal one (the
test then starts a new instance, which fences this one). --progress gets a line with the
number of records committed after every commit.
"""

import faulthandler
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from common import args
from group_common import log


def add_args(p):
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--txn-id", required=True)
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--progress", required=True)


def main():
    a = args(__doc__, add_args)
    # If a call ever blocks, the test's report shows where.
    faulthandler.dump_traceback_later(20, repeat=True)
    progress = open(a.progress, "a", buffering=1)
    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "transactional.id": a.txn_id,
        "transaction.timeout.ms": 10000,
        "linger.ms": 5,
        **({"debug": os.environ["RDKAFKA_DEBUG"]} if os.environ.get("RDKAFKA_DEBUG") else {}),
    })
    while True:
        try:
            p.init_transactions(20)
            break
        except KafkaException as e:
            if e.args[0].fatal():
                raise
            log(f"init_transactions: {e.args[0]}; retrying")
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 6000,
    })
    c.subscribe([a.src])
    parts = [TopicPartition(a.src, i) for i in range(a.partitions)]

    def committed_total():
        try:
            return sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=5))
        except KafkaException:
            return -1

    def rewind():
        assigned = c.assignment()
        if not assigned:
            return
        for tp in c.committed(assigned, timeout=10):
            c.seek(TopicPartition(a.src, tp.partition, tp.offset if tp.offset >= 0 else 0))

    idle_since = time.time()
    while True:
        msgs = [m for m in c.consume(100, 1.0) if not m.error()]
        if not msgs:
            if time.time() - idle_since > 2:
                done = committed_total()
                if done >= a.total:
                    log(f"all {done} input records committed")
                    return 0
                idle_since = time.time()
            continue
        idle_since = time.time()
        try:
            p.begin_transaction()
            for m in msgs:
                p.produce(a.dst, value=m.value().upper(), partition=m.partition())
            p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
            for attempt in range(10):
                try:
                    p.commit_transaction(20)
                    break
                except KafkaException as e:
                    if e.args[0].retriable() and attempt < 9:
                        log(f"commit: {e.args[0]}; retrying")
                        continue
                    raise
            progress.write(f"{len(msgs)}\n")
        except KafkaException as e:
            err = e.args[0]
            if err.fatal():
                log(f"fatal: {err}")
                return 3
            log(f"aborting: {err}")
            try:
                p.abort_transaction(20)
            except KafkaException as e2:
                log(f"abort failed: {e2.args[0]}")
                return 4
            try:
                rewind()
            except KafkaException as e3:
                log(f"rewind failed: {e3.args[0]}")
                return 5


if __name__ == "__main__":
    sys.exit(main())
