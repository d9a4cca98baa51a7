#!/usr/bin/env python3
"""Clients from before Kafka 4: the protocol versions KIP-896 removed, which Kafka 3.9 served.

- librdkafka (kcat) told the broker is 0.8.2 or 0.9.0 (`api.version.request=false`; from
  0.10 on librdkafka asks anyway): Produce v0/v1 with message sets of magic 0 and Fetch v0/v1,
  in every codec that format has. Read back both the old way (kcat, same versions: the broker
  converts v2 batches down) and at current versions (confluent-kafka: what was stored is a
  proper v2 batch, stamped by the broker since magic 0 has no time).
- kafka-python pinned to 0.8.1, 0.8.2, 0.9, 0.10.0 and 0.10.1: Produce v0-v2 (magic 0, and
  magic 1 with the producer's timestamps, which must come back), Fetch v0-v3, OffsetCommit v0
  and v1, OffsetFetch v0, ListOffsets v0, with a committed offset read back.
- kafka-python pinned to 0.10.1 and 0.11 on its admin client: CreateTopics v0 and v1,
  DeleteTopics v0, DescribeConfigs v0 and the ACL APIs' v0 (the broker runs with ACLs on and
  this client as a super user).
The Rust side checks /metrics counted each old version.
"""

import subprocess
import time

from confluent_kafka import Consumer, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTP
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    NewTopic,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)
from kafka.structs import OffsetAndMetadata

from common import args, check, check_eq, main, unique

N = 40


def kcat(bootstrap, fallback, *a, stdin=None):
    cmd = [
        "kcat", "-b", bootstrap,
        "-X", "api.version.request=false",
        "-X", f"broker.version.fallback={fallback}",
        *a,
    ]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)
    check(r.returncode == 0, f"{' '.join(cmd)} failed: {r.stderr.decode()[-500:]}")
    check(b"Delivery failed" not in r.stderr, f"{' '.join(cmd)}: {r.stderr.decode()[-500:]}")
    return r.stdout.decode()


def read_modern(bootstrap, topic, n):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": unique("reader"),
        "enable.auto.commit": False,
    })
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 30
    while len(out) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


def librdkafka_message_sets(bootstrap):
    formats = [
        ("0.8.2", 0, ["none", "gzip", "snappy"]),
        ("0.9.0", 0, ["none", "gzip", "snappy"]),
    ]
    done = 0
    for fallback, magic, codecs in formats:
        topic = unique("old-" + fallback.replace(".", "-"))
        sent = []
        before = int(time.time() * 1000) - 60_000
        for codec in codecs:
            lines = [(f"k{codec}{i}", f"{fallback}-{codec}-{i}") for i in range(N)]
            sent += lines
            data = "".join(f"{k}:{v}\n" for k, v in lines).encode()
            kcat(bootstrap, fallback, "-P", "-t", topic, "-p", "0", "-z", codec, "-K", ":", stdin=data)
        after = int(time.time() * 1000) + 60_000
        # The old way back: the broker converts its v2 batches down to this magic.
        out = kcat(bootstrap, fallback, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                   "-f", "%o|%k|%s\n")
        rows = [line.split("|", 2) for line in out.splitlines() if line]
        check_eq(len(rows), len(sent), f"{fallback}: records read back by the old client")
        for i, ((off, k, v), (sk, sv)) in enumerate(zip(rows, sent)):
            check_eq((int(off), k, v), (i, sk, sv), f"{fallback}: record {i} (old client)")
        # At current versions: stored as v2 batches, stamped with the broker's time.
        got = read_modern(bootstrap, topic, len(sent))
        check_eq(len(got), len(sent), f"{fallback}: records read back by confluent-kafka")
        for i, (m, (sk, sv)) in enumerate(zip(got, sent)):
            check_eq((m.offset(), m.key().decode(), m.value().decode()), (i, sk, sv),
                     f"{fallback}: record {i} (current client)")
            _, ts = m.timestamp()
            check(before <= ts <= after, f"{fallback}: record {i} has timestamp {ts}")
        done += len(sent)
    return done


def kafka_python_offsets(bootstrap):
    for ver in [(0, 8, 1), (0, 8, 2), (0, 9), (0, 10, 0), (0, 10, 1)]:
        topic = unique("kp-" + "-".join(map(str, ver)))
        # Magic 1 (0.10) carries the producer's timestamps; lz4 needs it too.
        timed = ver >= (0, 10)
        p = KafkaProducer(bootstrap_servers=bootstrap, api_version=ver,
                          compression_type="lz4" if timed else "gzip")
        t0 = 1_700_000_000_000
        for i in range(N):
            p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0,
                   timestamp_ms=t0 + i if timed else None)
        p.flush()
        p.close()
        c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=ver, group_id=unique("g"),
                          enable_auto_commit=False, consumer_timeout_ms=5000)
        tp = KTP(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = [(m.offset, m.key, m.value, m.timestamp if timed else None) for m in c]
        want = [(i, b"k%d" % i, b"v%d" % i, t0 + i if timed else None) for i in range(N)]
        check_eq(got, want, f"{ver}: consumed")
        check_eq(c.end_offsets([tp])[tp], N, f"{ver}: end offset")
        c.commit({tp: OffsetAndMetadata(7, "seven", -1)})
        check_eq(c.committed(tp), 7, f"{ver}: committed offset read back")
        c.close()


def kafka_python_admin(bootstrap):
    for ver in [(0, 10, 1), (0, 11)]:
        topic = unique("adm-" + "-".join(map(str, ver)))
        a = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=ver)
        a.create_topics([NewTopic(topic, 2, 1, topic_configs={"retention.ms": "12345"})])
        md = a.describe_topics([topic])
        check_eq(len(md[0]["partitions"]), 2, f"{ver}: partitions of the created topic")
        if ver >= (0, 11):
            r = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            conf = r["topic"][topic]["retention.ms"]
            check_eq((conf["value"], conf["is_default"]), ("12345", False),
                     f"{ver}: retention.ms (DescribeConfigs v0)")
            pattern = ResourcePattern(ResourceType.TOPIC, topic)
            acl = ACL(principal="User:bob", host="*", operation=ACLOperation.READ,
                      permission_type=ACLPermissionType.ALLOW, resource_pattern=pattern)
            made = a.create_acls([acl])
            check_eq((len(made["succeeded"]), made["failed"]), (1, []), f"{ver}: CreateAcls v0")
            f = ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                          permission_type=ACLPermissionType.ANY,
                          resource_pattern=ResourcePatternFilter(
                              ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL))
            found, _ = a.describe_acls(f)
            check_eq([(x.principal, x.operation) for x in found],
                     [("User:bob", ACLOperation.READ)], f"{ver}: DescribeAcls v0")
            deleted = a.delete_acls([f])
            check_eq(len(deleted[0][1]), 1, f"{ver}: DeleteAcls v0 matched")
            check_eq(a.describe_acls(f)[0], [], f"{ver}: ACLs after DeleteAcls v0")
        r = a.delete_topics([topic])
        codes = [t["error_code"] for t in r["topics"]] if isinstance(r, dict) else [0]
        check_eq(codes, [0], f"{ver}: DeleteTopics")
        check(topic not in a.list_topics(), f"{ver}: {topic} still listed after deletion")
        a.close()


def body():
    bootstrap = args(__doc__).bootstrap
    n = librdkafka_message_sets(bootstrap)
    kafka_python_offsets(bootstrap)
    kafka_python_admin(bootstrap)
    return f"{n} records through magic 0 and 1; old offset and admin versions"


if __name__ == "__main__":
    main(body)
