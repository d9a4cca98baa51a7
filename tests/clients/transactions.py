#!/usr/bin/env python3
"""Transactions with confluent-kafka (librdkafka's transactional producer) against sluice
(tests/transactions.rs). Scenarios, chosen by the first argument:

basic     commit, abort, commit of 10 records each into a 2-partition topic: a read_committed
          consumer gets exactly the 20 committed records (in order, per partition), a
          read_uncommitted one gets all 30; the read_committed end offset (LSO) equals the high
          watermark once nothing is open, and while a transaction is open the read_committed
          consumer stops before it and gets its records only after the commit.
fencing   a second producer with the same transactional.id fences the first: the first one's
          commit fails as fenced, its open transaction is aborted (never visible to
          read_committed), the second one's transaction commits.
timeout   a producer with transaction.timeout.ms=3000 opens a transaction and goes silent: the
          broker aborts it after the timeout, so a read_committed reader is not blocked behind
          it, and a transaction committed after it (by another producer) becomes visible.
ctp       consume-transform-produce: 600 input records read by a consumer group member and
          written (upper-cased) to an output topic in transactions of up to 50, each committing
          the consumer's offsets with send_offsets_to_transaction; every fourth transaction is
          aborted and its input re-read. A read_committed reader of the output then sees each
          input exactly once, and the group's committed offsets are the input's end.
"""

import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from common import args, check, check_eq, fail, main, unique
from group_common import create_topic, log


def txn_producer(bootstrap, txn_id, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "linger.ms": 5,
    }
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


def consume_all(bootstrap, topic, partitions, isolation, expect=None, wait=8.0):
    """Every record of `topic` from the start: {partition: [value, ...]}."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("reader"),
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
    })
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    eof = set()
    deadline = time.time() + wait
    while time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
                if len(eof) == partitions and (expect is None or sum(map(len, got.values())) >= expect):
                    break
                continue
            fail(f"consumer error: {m.error()}")
        got[m.partition()].append(m.value().decode())
        eof.discard(m.partition())
    c.close()
    return got


def end_offsets(bootstrap, topic, partitions, isolation):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("probe"), "isolation.level": isolation})
    out = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    c.close()
    return out


def basic(a):
    topic = unique("txn-basic")
    create_topic(a.bootstrap, topic, 2)
    p = txn_producer(a.bootstrap, unique("tx"))
    for round_, commit in enumerate([True, False, True]):
        p.begin_transaction()
        for i in range(10):
            p.produce(topic, value=f"r{round_}-{i}".encode(), partition=i % 2)
        # Delivered before the end, so the aborted records really are in the log (librdkafka
        # drops unsent records at an abort).
        check_eq(p.flush(10), 0, "records left unflushed")
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    committed = consume_all(a.bootstrap, topic, 2, "read_committed", expect=20)
    want = {part: [f"r{r}-{i}" for r in (0, 2) for i in range(10) if i % 2 == part] for part in (0, 1)}
    check_eq(committed, want, "read_committed records")
    everything = consume_all(a.bootstrap, topic, 2, "read_uncommitted", expect=30)
    check_eq(sum(map(len, everything.values())), 30, "read_uncommitted record count")
    check_eq(
        end_offsets(a.bootstrap, topic, 2, "read_committed"),
        end_offsets(a.bootstrap, topic, 2, "read_uncommitted"),
        "LSO equals the high watermark with nothing open",
    )

    # An open transaction holds read_committed readers back until it commits.
    p.begin_transaction()
    for i in range(4):
        p.produce(topic, value=f"open-{i}".encode(), partition=0)
    p.flush(10)
    lso = end_offsets(a.bootstrap, topic, 2, "read_committed")[0]
    hw = end_offsets(a.bootstrap, topic, 2, "read_uncommitted")[0]
    check(lso < hw, f"an open transaction must hold the LSO below the high watermark ({lso} vs {hw})")
    held = consume_all(a.bootstrap, topic, 2, "read_committed", wait=3)
    check(not any(v.startswith("open-") for v in held[0]), f"open transaction visible: {held[0]}")
    p.commit_transaction(30)
    after = consume_all(a.bootstrap, topic, 2, "read_committed", expect=24)
    check_eq([v for v in after[0] if v.startswith("open-")], [f"open-{i}" for i in range(4)], "records of the committed transaction")
    return "commit/abort/commit: read_committed sees the 20 committed of 30; LSO holds readers behind an open transaction"


def fencing(a):
    topic = unique("txn-fence")
    create_topic(a.bootstrap, topic, 1)
    tid = unique("tx")
    p1 = txn_producer(a.bootstrap, tid)
    p1.begin_transaction()
    for i in range(5):
        p1.produce(topic, value=f"zombie-{i}".encode(), partition=0)
    p1.flush(10)
    p2 = txn_producer(a.bootstrap, tid)
    try:
        p1.commit_transaction(10)
        fail("the fenced producer's commit succeeded")
    except KafkaException as e:
        err = e.args[0]
        log(f"fenced producer's commit failed as it should: {err}")
        check(err.fatal() or "fenced" in str(err).lower() or "epoch" in str(err).lower(), f"unexpected error kind: {err}")
    p2.begin_transaction()
    for i in range(3):
        p2.produce(topic, value=f"live-{i}".encode(), partition=0)
    p2.commit_transaction(30)
    got = consume_all(a.bootstrap, topic, 1, "read_committed", expect=3)
    check_eq(got[0], [f"live-{i}" for i in range(3)], "read_committed after fencing")
    return "a new instance fenced the old one, whose open transaction was aborted"


def timeout(a):
    topic = unique("txn-timeout")
    create_topic(a.bootstrap, topic, 1)
    stuck = txn_producer(a.bootstrap, unique("stuck"), **{"transaction.timeout.ms": 3000})
    stuck.begin_transaction()
    for i in range(3):
        stuck.produce(topic, value=f"stuck-{i}".encode(), partition=0)
    stuck.flush(10)
    p = txn_producer(a.bootstrap, unique("tx"))
    p.begin_transaction()
    p.produce(topic, value=b"after", partition=0)
    p.commit_transaction(30)
    started = time.time()
    got = consume_all(a.bootstrap, topic, 1, "read_committed", expect=1, wait=20)
    waited = time.time() - started
    check_eq(got[0], ["after"], "read_committed after the stuck transaction timed out")
    log(f"read_committed reader got the later commit after {waited:.1f}s")
    return f"a silent transaction was aborted after its timeout; the reader waited {waited:.1f}s"


def ctp(a):
    src, dst = unique("txn-in"), unique("txn-out")
    create_topic(a.bootstrap, src, 3)
    create_topic(a.bootstrap, dst, 3)
    n = 600
    feeder = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5})
    for i in range(n):
        feeder.produce(src, value=f"v{i}".encode(), partition=i % 3)
    check_eq(feeder.flush(30), 0, "input records left unflushed")
    group = unique("ctp")
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    c.subscribe([src])
    p = txn_producer(a.bootstrap, unique("ctp-tx"))
    done, txns, aborted = 0, 0, 0
    deadline = time.time() + 40
    while done < n and time.time() < deadline:
        msgs = c.consume(50, 1.0)
        msgs = [m for m in msgs if not m.error()]
        if not msgs:
            continue
        p.begin_transaction()
        for m in msgs:
            p.produce(dst, value=m.value().upper(), partition=m.partition())
        txns += 1
        if txns % 4 == 0:
            p.flush(10)
            p.abort_transaction(30)
            aborted += 1
            # Rewind to the last committed offsets, as an application does after an abort.
            committed = c.committed(c.assignment(), timeout=10)
            for tp in committed:
                c.seek(TopicPartition(src, tp.partition, tp.offset if tp.offset >= 0 else 0))
            continue
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        done += len(msgs)
    check_eq(done, n, "input records processed")
    committed = c.committed([TopicPartition(src, i) for i in range(3)], timeout=10)
    check_eq([tp.offset for tp in committed], [n // 3] * 3, "the group's committed offsets")
    c.close()
    out = consume_all(a.bootstrap, dst, 3, "read_committed", expect=n)
    values = sorted(v for vs in out.values() for v in vs)
    check_eq(values, sorted(f"V{i}" for i in range(n)), "read_committed output: each input exactly once")
    return f"{n} records in {txns} transactions ({aborted} aborted and redone): output exactly once"


def add_io_args(p):
    p.add_argument("scenario", choices=["basic", "fencing", "timeout", "ctp", "ctp-feed", "ctp-verify", "open", "stable"])
    p.add_argument("--src")
    p.add_argument("--dst")
    p.add_argument("--group")
    p.add_argument("--total", type=int)
    p.add_argument("--copied", action="store_true", help="ctp-verify: output values are the inputs as they were (not upper-cased)")


def ctp_feed(a):
    """Creates --src and --dst (3 partitions) and writes --total records v0..v{total-1}."""
    create_topic(a.bootstrap, a.src, 3)
    create_topic(a.bootstrap, a.dst, 3)
    feeder = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5})
    for i in range(a.total):
        feeder.produce(a.src, value=f"v{i}".encode(), partition=i % 3)
    check_eq(feeder.flush(30), 0, "input records left unflushed")
    return f"{a.total} input records"


def ctp_verify(a):
    """read_committed output holds V0..V{total-1} exactly once; the group committed the end."""
    out = consume_all(a.bootstrap, a.dst, 3, "read_committed", expect=a.total, wait=20)
    values = [v for vs in out.values() for v in vs]
    dupes = len(values) - len(set(values))
    missing = set(f"{'v' if a.copied else 'V'}{i}" for i in range(a.total)) - set(values)
    if dupes or missing or len(values) != a.total:
        lso = end_offsets(a.bootstrap, a.dst, 3, "read_committed")
        hw = end_offsets(a.bootstrap, a.dst, 3, "read_uncommitted")
        fail(f"read_committed output: {len(values)} records ({ {p: len(v) for p, v in out.items()} } per partition), "
             f"{dupes} duplicates, {len(missing)} missing (e.g. {sorted(missing)[:5]}); LSO {lso}, high watermark {hw}")
    everything = consume_all(a.bootstrap, a.dst, 3, "read_uncommitted", expect=a.total, wait=10)
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.group})
    committed = c.committed([TopicPartition(a.src, i) for i in range(3)], timeout=10)
    c.close()
    check_eq(sum(tp.offset for tp in committed), a.total, "the group's committed offsets")
    return (f"{a.total} inputs exactly once under read_committed "
            f"({sum(map(len, everything.values())) - a.total} aborted records in the log)")


def open_txn(a):
    """Leaves a transaction open in --src partition 0 (3 records) and exits without ending it;
    prints `producer_id=N transactional_id=X` for the test."""
    import os
    create_topic(a.bootstrap, a.src, 1)
    tid = unique("left-open")
    p = txn_producer(a.bootstrap, tid, **{"transaction.timeout.ms": 900000})
    p.begin_transaction()
    for i in range(3):
        p.produce(a.src, value=f"open-{i}".encode(), partition=0)
    check_eq(p.flush(10), 0, "records left unflushed")
    lso, hw = end_offsets(a.bootstrap, a.src, 1, "read_committed")[0], end_offsets(a.bootstrap, a.src, 1, "read_uncommitted")[0]
    check((lso, hw) == (0, 3), f"LSO and high watermark with the transaction open: {(lso, hw)}")
    print(f"transactional_id={tid}", flush=True)
    # No abort on the way out: the transaction must stay open.
    os._exit(0)


def stable(a):
    """--src partition 0 has no open transaction: its LSO is its high watermark, and
    read_committed readers get none of the records of the (aborted) transaction."""
    lso = end_offsets(a.bootstrap, a.src, 1, "read_committed")[0]
    hw = end_offsets(a.bootstrap, a.src, 1, "read_uncommitted")[0]
    check_eq(lso, hw, "LSO after the abort")
    got = consume_all(a.bootstrap, a.src, 1, "read_committed", wait=3)
    check_eq(got[0], [], "records visible under read_committed")
    return f"LSO {lso} = high watermark; nothing visible"


SCENARIOS = {"open": open_txn, "stable": stable, "ctp-feed": ctp_feed, "ctp-verify": ctp_verify, "basic": basic, "fencing": fencing, "timeout": timeout, "ctp": ctp}

if __name__ == "__main__":
    a = args(__doc__, add_io_args)
    main(lambda: SCENARIOS[a.scenario](a))
