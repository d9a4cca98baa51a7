#!/usr/bin/env python3
"""A partition is silent only while caught up (tests/plugins.rs:
a_partition_whose_records_were_on_their_way_was_not_idle).

The pipeline under test reads --topic with event time (lateness 500 ms, idle timeout 3 s) and
sets late records apart in --late. A transactional producer writes one committed record at
T0, then holds a transaction open for 5 s (its record past the last stable offset: the
pipeline is behind its input's end, not at it) and aborts it. 1.5 s later it commits a
record stamped T0 + 100 ms. The partition was silent for 1.5 s, not 6.5: the record is on
time (in --output), not late. A task that counted its silence from its last record would
have called the partition idle right after the abort and moved its watermark ~6 s past T0.
"""

import time

from confluent_kafka import Producer

from common import args, check_eq, confluent_values, main


def add_args(p):
    p.add_argument("--topic", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--late", required=True)


def run(a):
    p = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": f"not-idle-{a.topic}", "linger.ms": 5})
    p.init_transactions(30)
    t0 = int(time.time() * 1000)

    def txn(value, ts, then):
        p.begin_transaction()
        p.produce(a.topic, key="k", value=value, partition=0, timestamp=ts)
        check_eq(p.flush(10), 0, "records left unflushed")
        then()

    txn("first", t0, lambda: p.commit_transaction(30))
    check_eq(confluent_values(a.bootstrap, a.output, 1, 20), ["FIRST"], "pipeline output after the first record")
    txn("held", t0 + 50, lambda: time.sleep(5))
    p.abort_transaction(30)
    time.sleep(1.5)
    txn("second", t0 + 100, lambda: p.commit_transaction(30))
    check_eq(confluent_values(a.bootstrap, a.output, 2, 20), ["FIRST", "SECOND"], "pipeline output after the second record")
    # The late topic is made when the first late record is routed there.
    if a.late in p.list_topics(timeout=15).topics:
        check_eq(confluent_values(a.bootstrap, a.late, 1, 3), [], "records set apart as late")
    return "a partition behind its end for 5 s was not called idle when the transaction was aborted"


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: run(a))
