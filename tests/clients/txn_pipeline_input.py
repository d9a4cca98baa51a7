#!/usr/bin/env python3
"""Pipelines read committed (tests/plugins.rs: a_pipeline_reads_only_committed_transactions).

A transactional producer writes to --topic partition 0: a committed transaction (a1, a2), an
aborted one (b1), then opens a third (c1) and leaves it open for 3 s. The pipeline under test
upper-cases its input into --output. While the third transaction is open, --output must hold
exactly A1, A2 (nothing aborted, nothing uncommitted); after its commit, A1, A2, C1.
"""

import time

from confluent_kafka import Producer

from common import args, check_eq, confluent_values, main


def add_args(p):
    p.add_argument("--topic", required=True)
    p.add_argument("--output", required=True)


def run(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": f"pipe-in-{a.topic}", "linger.ms": 5})
    p.init_transactions(30)
    for values, commit in ((["a1", "a2"], True), (["b1"], False), (["c1"], None)):
        p.begin_transaction()
        for v in values:
            p.produce(a.topic, key="k", value=v, partition=0)
        check_eq(p.flush(10), 0, "records left unflushed")
        if commit is True:
            p.commit_transaction(30)
        elif commit is False:
            p.abort_transaction(30)
    time.sleep(3)
    check_eq(confluent_values(a.bootstrap, a.output, 2, 20), ["A1", "A2"], "pipeline output with c1's transaction open")
    p.commit_transaction(30)
    check_eq(confluent_values(a.bootstrap, a.output, 3, 20), ["A1", "A2", "C1"], "pipeline output after the commit")
    return "the pipeline skipped the aborted record and waited for the open transaction"


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: run(a))
