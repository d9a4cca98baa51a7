#!/usr/bin/env python3
"""Fetches answered from the segment files (sendfile) carry exactly the records produced.

Large uncompressed batches (2-8 KiB records, lingered into batches far over 16 KiB) go to
three partitions; then:
- confluent-kafka (librdkafka, read_committed by default) and kafka-python (read_uncommitted)
  read every record back byte for byte, with small and large fetch limits (one batch per
  partition per fetch, and many);
- a transaction left open stops a read_committed reader at its first record (the last stable
  offset cuts the file range) while a read_uncommitted one reads into it; once it is aborted
  and another committed, the read_committed reader gets the committed one and none of the
  aborted records;
- the broker's /metrics counts the bytes it sent from files, so the path really was taken.

usage: sendfile_fetch.py --bootstrap HOST:PORT --admin HOST:PORT
"""

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import (args, check, check_eq, confluent_read_all, kafka_python_read_all, main,
                    metric, unique, varied_value)

a = args(__doc__, lambda p: p.add_argument("--admin", required=True))
PARTS = 3


def produce(p, topic, tag, n, **kw):
    sent = {}
    for i in range(n):
        v = varied_value(tag, i)
        p.produce(topic, v, key=f"k{i}".encode(), partition=i % PARTS, **kw)
        sent[v] = i
        if i % 500 == 0:
            p.poll(0)
    return sent


def confluent_read(topic, want, conf=None, timeout=60):
    return confluent_read_all({"bootstrap.servers": a.bootstrap, **(conf or {})}, topic, PARTS,
                              want, timeout)


def kafka_python_read(topic, want, max_partition_fetch_bytes):
    return kafka_python_read_all({"bootstrap_servers": a.bootstrap,
                                  "max_partition_fetch_bytes": max_partition_fetch_bytes},
                                 topic, PARTS, want)


def same_records(got, sent, who):
    check_eq(len(got), len(sent), f"{who}: records read")
    missing = [v[:20] for v in sent if v not in set(got)]
    check(not missing, f"{who}: {len(missing)} records missing or changed, e.g. {missing[:3]}")


def body():
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    topic = unique("sendfile")
    admin.create_topics([NewTopic(topic, PARTS, 1)])[topic].result(30)
    before = metric(a.admin, "sluice_fetch_sendfile_bytes_total")

    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 200,
                  "batch.size": 1000000, "compression.type": "none"})
    sent = produce(p, topic, "plain", 3000)
    check_eq(p.flush(30), 0, "records left undelivered")

    same_records(confluent_read(topic, len(sent)), sent, "confluent-kafka")
    # One batch per partition per fetch at most (the limit is under two batches).
    same_records(confluent_read(topic, len(sent), {"fetch.message.max.bytes": 40000,
                                                   "fetch.max.bytes": 100000,
                                                   "message.max.bytes": 100000}),
                 sent, "confluent-kafka, small fetches")
    same_records(kafka_python_read(topic, len(sent), 1048576), sent, "kafka-python")
    same_records(kafka_python_read(topic, len(sent), 30000), sent, "kafka-python, small fetches")
    sent_bytes = metric(a.admin, "sluice_fetch_sendfile_bytes_total") - before
    check(sent_bytes >= 4 * sum(len(v) for v in sent),
          f"only {sent_bytes:.0f} bytes went out by sendfile for four full reads")

    # Read_committed stops at an open transaction; read_uncommitted does not.
    tp = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": unique("sf-txn"),
                   "linger.ms": 200, "batch.size": 1000000})
    tp.init_transactions(30)
    tp.begin_transaction()
    aborted = produce(tp, topic, "aborted", 600)
    check_eq(tp.flush(30), 0, "transactional records left undelivered")
    got = confluent_read(topic, len(sent) + 1, timeout=5)
    same_records(got, sent, "read_committed beside an open transaction")
    got = confluent_read(topic, len(sent) + len(aborted),
                         {"isolation.level": "read_uncommitted"})
    check_eq(len(got), len(sent) + len(aborted), "read_uncommitted beside an open transaction")
    tp.abort_transaction(30)
    tp.begin_transaction()
    committed = produce(tp, topic, "committed", 600)
    tp.commit_transaction(30)
    want = dict(sent)
    want.update(committed)
    got = confluent_read(topic, len(want))
    same_records(got, want, "read_committed after abort and commit")
    check(not set(got) & set(aborted), "aborted records reached a read_committed reader")
    return (f"{len(sent)} records read back four ways and {len(committed)} committed ones "
            f"past {len(aborted)} aborted; {sent_bytes / 1e6:.1f} MB sent from files")


main(body)
