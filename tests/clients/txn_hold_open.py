#!/usr/bin/env python3
"""Holds a transaction open on one partition (tests/workers.rs:
a_restore_waits_for_transactions_open_on_the_changelog).

Writes one record to each partition of --topic in a transaction, creates the file --ready, and
keeps the transaction open until the file --release appears (at most --hold seconds), then
aborts it. Meanwhile each partition's last stable offset stays at that record: nothing
committed after it is visible to read_committed consumers.
"""

import os
import time

from confluent_kafka import Producer

from common import args, check_eq, main


def add_args(p):
    p.add_argument("--topic", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--hold", type=float, default=50)


def run(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": f"hold-{a.topic}", "linger.ms": 0})
    p.init_transactions(30)
    md = p.list_topics(a.topic, timeout=15).topics[a.topic]
    check_eq(md.error, None, f"metadata of {a.topic}")
    p.begin_transaction()
    for partition in md.partitions:
        p.produce(a.topic, key="not-a-task", value="held open", partition=partition)
    check_eq(p.flush(10), 0, "records left unflushed")
    open(a.ready, "w").close()
    deadline = time.time() + a.hold
    while not os.path.exists(a.release) and time.time() < deadline:
        time.sleep(0.1)
    p.abort_transaction(30)
    return f"held a transaction open on {len(md.partitions)} partitions of {a.topic}, then aborted it"


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: run(a))
