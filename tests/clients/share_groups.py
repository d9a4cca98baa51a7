#!/usr/bin/env python3
"""Share groups (KIP-932) with confluent-kafka's ShareConsumer: a topic used as a work queue.
The broker runs with share_auto_offset_reset = "earliest".

  1. two share consumers on ONE partition split 3000 records between them: each record is
     delivered to exactly one of them, and both get some (a queue, not a partition owner);
  2. explicit acknowledgement: a RELEASEd record comes back with its delivery count raised, an
     ACCEPTed one never does;
  3. a poison record released again and again is delivered at most 5 times
     (group.share.delivery.count.limit) and then archived (never delivered again) and copied to
     the group's dead-letter topic `<group>.dlq` with headers saying why, while the records
     after it keep flowing;
  4. records a consumer acquired and never acknowledged (it closed in explicit mode without
     acknowledging) are redelivered to another member.

  before-restart / after-restart: a member accepts the first 60 of 100 records; after a
  kill -9 and restart of the broker a new member gets exactly the other 40: the share group's
  progress is durable.
"""

import time

from confluent_kafka import AcknowledgeType, Consumer, ShareConsumer, TopicPartition

from common import args, check, check_eq, main, unique
from group_common import create_topic, produce


def consumer(bootstrap, group, topic, name, explicit=False):
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": name}
    if explicit:
        conf["share.acknowledgement.mode"] = "explicit"
    c = ShareConsumer(conf)
    c.subscribe([topic])
    return c


def poll_all(c, seconds):
    out, until = [], time.time() + seconds
    while time.time() < until:
        for m in c.poll(0.3):
            check(m.error() is None, f"share consumer error {m.error()}")
            out.append(m)
        if out:
            break
    return out


def run(a):
    topic = unique("queue")
    create_topic(a.bootstrap, topic, 1)
    produce(a.bootstrap, topic, [(0, f"job-{i}") for i in range(3000)])

    # 1. Two members, one partition: the work is shared, each record once.
    g1 = unique("workers")
    cs = [consumer(a.bootstrap, g1, topic, n) for n in ("w1", "w2")]
    who = {}
    deadline = time.time() + 30
    while len(who) < 3000 and time.time() < deadline:
        for i, c in enumerate(cs):
            # Small polls let the other worker take its turn.
            for m in c.poll(0.2):
                check(m.error() is None, f"share consumer error {m.error()}")
                v = m.value().decode()
                check(v not in who, f"{v} delivered twice (to w{who.get(v)} and w{i + 1})")
                who[v] = i + 1
    check_eq(len(who), 3000, "records delivered across the share group")
    per = [sum(1 for w in who.values() if w == k) for k in (1, 2)]
    check(min(per) > 0, f"one partition must feed both members of a share group, got {per}")
    for c in cs:
        c.close()

    # 2 and 3. Explicit acknowledgements on a fresh group.
    g2 = unique("acks")
    c = consumer(a.bootstrap, g2, topic, "explicit", explicit=True)
    deliveries = {}
    accepted = set()
    deadline = time.time() + 40
    while len(accepted) < 2999 and time.time() < deadline:
        for m in c.poll(0.3):
            check(m.error() is None, f"share consumer error {m.error()}")
            v = m.value().decode()
            check(v not in accepted, f"{v} delivered again after it was accepted")
            deliveries.setdefault(v, []).append(m.delivery_count())
            if v == "job-7":
                c.acknowledge(m, AcknowledgeType.RELEASE)  # the poison record
            elif v == "job-3" and len(deliveries[v]) == 1:
                c.acknowledge(m, AcknowledgeType.RELEASE)  # released once, then accepted
            else:
                c.acknowledge(m, AcknowledgeType.ACCEPT)
                accepted.add(v)
        c.commit_sync()
    check_eq(len(accepted), 2999, "records accepted (all but the poison one)")
    check_eq(deliveries["job-3"], [1, 2], "delivery counts of a record released once")
    # Let any last redelivery of the poison record arrive, then check it stopped at 5.
    for m in poll_all(c, 3):
        deliveries.setdefault(m.value().decode(), []).append(m.delivery_count())
        c.acknowledge(m, AcknowledgeType.RELEASE)
    c.commit_sync()
    check_eq(deliveries["job-7"], [1, 2, 3, 4, 5], "deliveries of the poison record before it is archived")
    c.close()
    # The archived poison record is in the group's dead-letter topic, saying why.
    dlq = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "dlq-reader", "enable.auto.commit": False})
    dlq.assign([TopicPartition(f"{g2}.dlq", 0, 0)])
    dead, deadline = [], time.time() + 15
    while not dead and time.time() < deadline:
        m = dlq.poll(0.5)
        if m is not None and m.error() is None:
            dead.append(m)
    dlq.close()
    check(dead, f"nothing in {g2}.dlq")
    headers = {k: v.decode() for k, v in (dead[0].headers() or [])}
    check_eq(dead[0].value().decode(), "job-7", "dead-lettered record")
    check_eq((headers.get("sluice.dlq.reason"), headers.get("sluice.dlq.deliveries"), headers.get("sluice.dlq.offset")),
             ("delivery limit reached", "5", "7"), "dead-letter headers")

    # 4. Acquired but never acknowledged: another member gets the records.
    g3 = unique("crash")
    produce(a.bootstrap, topic, [(0, f"late-{i}") for i in range(5)])
    quitter = consumer(a.bootstrap, g3, topic, "quitter", explicit=True)
    taken = poll_all(quitter, 20)
    check(taken, "the first member got nothing")
    first_batch = {m.value().decode() for m in taken}
    quitter.close()  # nothing acknowledged: its records go back to the group
    heir = consumer(a.bootstrap, g3, topic, "heir")
    again = set()
    deadline = time.time() + 40
    while not first_batch <= again and time.time() < deadline:
        for m in heir.poll(0.3):
            again.add(m.value().decode())
    check(first_batch <= again, f"records the quitter held were not redelivered: {sorted(first_batch - again)[:5]}")
    heir.close()
    return f"share group split 3000 records {per}, release/accept/delivery limit, redelivery after a quit"


def before_restart(a):
    produce(a.bootstrap, "durable-queue", [(0, f"d-{i}") for i in range(100)])
    c = consumer(a.bootstrap, "durable-share", "durable-queue", "first", explicit=True)
    accepted = []
    deadline = time.time() + 30
    while len(accepted) < 60 and time.time() < deadline:
        for m in c.poll(0.3):
            v = m.value().decode()
            if len(accepted) < 60:
                c.acknowledge(m, AcknowledgeType.ACCEPT)
                accepted.append(v)
            else:
                c.acknowledge(m, AcknowledgeType.RELEASE)
        c.commit_sync()
    check_eq(sorted(accepted), sorted(f"d-{i}" for i in range(60)), "records accepted before the restart")
    c.close()
    return "60 of 100 accepted"


def after_restart(a):
    c = consumer(a.bootstrap, "durable-share", "durable-queue", "second")
    got = set()
    deadline = time.time() + 30
    while len(got) < 40 and time.time() < deadline:
        for m in c.poll(0.3):
            got.add(m.value().decode())
    time.sleep(1)
    for m in c.poll(1):
        got.add(m.value().decode())
    c.close()
    check_eq(sorted(got), sorted(f"d-{i}" for i in range(60, 100)), "records delivered after the restart")
    return "the share group resumed after its 60 accepted records"


if __name__ == "__main__":
    a = args(__doc__, lambda p: p.add_argument("mode", nargs="?", default="queue",
                                              choices=["queue", "before-restart", "after-restart"]))
    steps = {"queue": run, "before-restart": before_restart, "after-restart": after_restart}
    main(lambda: steps[a.mode](a))
