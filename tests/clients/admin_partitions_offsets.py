#!/usr/bin/env python3
"""Growing topics and managing group offsets through admin clients.

  - confluent-kafka create_partitions 2 -> 5: metadata shows 5, a keyed producer reaches the new
    partitions, old data stays; shrinking or a same count gets INVALID_PARTITIONS; validate_only
    changes nothing;
  - manual replica assignments naming the one broker are taken (create_topics, and
    create_partitions), any other gets INVALID_REPLICA_ASSIGNMENT (librdkafka's 0081_admin
    creates topics this way);
  - confluent-kafka alter/list_consumer_group_offsets on an empty group;
  - kafka-python delete_group_offsets (OffsetDelete): the offsets are gone for an empty group,
    refused with GROUP_SUBSCRIBED_TO_TOPIC while a member subscribed to the topic is live.
"""

import time

from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions,
                                  NewTopic)
from kafka import KafkaAdminClient
from kafka.structs import TopicPartition as KTP

from common import args, check, check_eq, main, unique


def run(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    t = unique("grow")
    admin.create_topics([NewTopic(t, 2, 1)])[t].result(timeout=10)
    p = Producer({"bootstrap.servers": a.bootstrap})
    for i in range(20):
        p.produce(t, key=f"k{i}", value=b"before")
    check(p.flush(10) == 0, "produce before growing")

    admin.create_partitions([NewPartitions(t, 4)], validate_only=True)[t].result(timeout=10)
    check_eq(len(admin.list_topics(t, timeout=10).topics[t].partitions), 2, "partitions after validate_only")
    admin.create_partitions([NewPartitions(t, 5)])[t].result(timeout=10)
    check_eq(len(admin.list_topics(t, timeout=10).topics[t].partitions), 5, "partitions after growing")
    for bad in (5, 3):
        try:
            admin.create_partitions([NewPartitions(t, bad)])[t].result(timeout=10)
            check(False, f"going to {bad} partitions must be refused")
        except KafkaException as e:
            check_eq(e.args[0].name(), "INVALID_PARTITIONS", f"error going to {bad} partitions")

    p = Producer({"bootstrap.servers": a.bootstrap, "topic.metadata.refresh.interval.ms": 500})
    seen = set()
    for i in range(200):
        p.produce(t, key=f"key-{i}", value=b"after",
                  on_delivery=lambda err, m: seen.add(m.partition()) if err is None else None)
    check(p.flush(10) == 0, "produce after growing")
    check_eq(seen, {0, 1, 2, 3, 4}, "partitions reached by keyed records after growing")
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "x", "enable.auto.commit": False})
    old = sum(c.get_watermark_offsets(TopicPartition(t, i), timeout=10)[1] for i in range(2))
    check(old >= 20, f"records of the first two partitions kept: {old}")
    c.close()

    node = admin.list_topics(timeout=10).brokers
    check_eq(len(node), 1, "brokers in metadata")
    node = next(iter(node))
    ma = unique("manual")
    admin.create_topics([NewTopic(ma, 3, replica_assignment=[[node], [node], [node]])])[ma].result(timeout=10)
    check_eq(len(admin.list_topics(ma, timeout=10).topics[ma].partitions), 3, "partitions of a manual assignment")
    admin.create_partitions([NewPartitions(ma, 4, replica_assignment=[[node]])])[ma].result(timeout=10)
    check_eq(len(admin.list_topics(ma, timeout=10).topics[ma].partitions), 4, "after a manual partition add")
    for what, fut in [
        ("another broker", admin.create_topics([NewTopic(unique("bad"), 1, replica_assignment=[[node + 1]])])),
        ("two replicas", admin.create_topics([NewTopic(unique("bad"), 1, replica_assignment=[[node, node]])])),
        ("added partition on another broker", admin.create_partitions([NewPartitions(ma, 5, replica_assignment=[[node + 7]])])),
    ]:
        try:
            list(fut.values())[0].result(timeout=10)
            check(False, f"an assignment to {what} must be refused")
        except KafkaException as e:
            check_eq(e.args[0].name(), "INVALID_REPLICA_ASSIGNMENT", f"error for {what}")

    cluster = admin.describe_cluster(include_authorized_operations=True).result(timeout=10)
    check_eq([n.id for n in cluster.nodes], [node], "describe_cluster nodes")
    check_eq(cluster.controller.id, node, "controller")
    check_eq(sorted(op.name for op in cluster.authorized_operations),
             sorted(["CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS",
                     "ALTER_CONFIGS", "IDEMPOTENT_WRITE"]), "cluster authorized operations")
    desc = admin.describe_topics(TopicCollection([ma]), include_authorized_operations=True)[ma].result(timeout=10)
    check_eq(len(desc.partitions), 4, "describe_topics partitions")
    check_eq(sorted(op.name for op in desc.authorized_operations),
             sorted(["READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS",
                     "ALTER_CONFIGS"]), "topic authorized operations")

    dr = unique("delrec")
    admin.create_topics([NewTopic(dr, 1, 1)])[dr].result(timeout=10)
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 0})
    for i in range(20):
        p.produce(dr, value=f"v{i}".encode(), partition=0)
        p.flush(10)  # one batch per record, so the new start falls inside the data
    res = admin.delete_records([TopicPartition(dr, 0, 7)])
    low = list(res.values())[0].result(timeout=10)
    check_eq(low.low_watermark, 7, "low watermark after delete_records")
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": unique("dr"), "auto.offset.reset": "earliest"})
    check_eq(c.get_watermark_offsets(TopicPartition(dr, 0), timeout=10), (7, 20), "watermarks after delete_records")
    c.assign([TopicPartition(dr, 0, -2)])  # OFFSET_BEGINNING
    first = None
    deadline = time.time() + 15
    while first is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            first = (m.offset(), m.value())
    c.close()
    check_eq(first, (7, b"v7"), "first record read from the beginning")
    try:
        list(admin.delete_records([TopicPartition(dr, 0, 25)]).values())[0].result(timeout=10)
        check(False, "delete_records past the end must be refused")
    except KafkaException as e:
        check_eq(e.args[0].name(), "OFFSET_OUT_OF_RANGE", "delete_records past the end")

    ct = unique("compacted")
    admin.create_topics([NewTopic(ct, 1, 1)])[ct].result(timeout=10)
    res = ConfigResource("topic", ct)

    def policy():
        got = admin.describe_configs([res])[res].result(timeout=10)
        return got["cleanup.policy"].value

    def alter(op):
        entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=op)
        admin.incremental_alter_configs([ConfigResource("topic", ct, incremental_configs=[entry])])[res].result(timeout=10)

    def produce(key):
        p = Producer({"bootstrap.servers": a.bootstrap, "retries": 0})
        out = []
        p.produce(ct, key=key, value=b"v", on_delivery=lambda err, m: out.append(err))
        p.flush(10)
        return out[0].name() if out and out[0] else None

    alter(AlterConfigOpType.APPEND)
    check_eq(policy(), "delete,compact", "cleanup.policy after APPEND")
    check_eq(produce(None), "INVALID_RECORD", "keyless record on a compacted topic")
    check_eq(produce(b"k"), None, "keyed record on a compacted topic")
    alter(AlterConfigOpType.SUBTRACT)
    check_eq(policy(), "delete", "cleanup.policy after SUBTRACT")
    check_eq(produce(None), None, "keyless record once no longer compacted")

    g = unique("offs")
    tps = [TopicPartition(t, i, 3 + i) for i in range(5)]
    res = admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(g, tps)])[g].result(timeout=10)
    check(all(tp.error is None for tp in res.topic_partitions), f"alter offsets: {res.topic_partitions}")
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g].result(timeout=10)
    check_eq(sorted((tp.partition, tp.offset) for tp in listed.topic_partitions),
             [(i, 3 + i) for i in range(5)], "listed group offsets")

    ka = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    out = ka.delete_group_offsets(g, [KTP(t, 0), KTP(t, 1)])
    check(all(e is None or getattr(e, "errno", 0) == 0 for e in out.values()),
          f"delete_group_offsets: {out}")
    left = ka.list_group_offsets(g)[g]
    check_eq(sorted(tp.partition for tp, om in left.items() if om.offset >= 0), [2, 3, 4],
             "partitions with offsets after OffsetDelete")

    member = Consumer({"bootstrap.servers": a.bootstrap, "group.id": g, "enable.auto.commit": False,
                       "session.timeout.ms": 6000})
    member.subscribe([t])
    deadline = time.time() + 20
    while not member.assignment() and time.time() < deadline:
        member.poll(0.2)
    check(member.assignment(), "member never got an assignment")
    out = ka.delete_group_offsets(g, [KTP(t, 2)])
    # kafka-python reports each partition's error as an error class.
    errs = [e.__name__ if isinstance(e, type) else type(e).__name__ for e in out.values()]
    check(errs == ["GroupSubscribedToTopicError"], f"OffsetDelete with a live subscriber: {out}")
    member.close()
    ka.close()
    return "create_partitions 2->5 (+ refusals), group offsets altered, listed and deleted"


if __name__ == "__main__":
    a = args(__doc__)
    main(lambda: run(a))
