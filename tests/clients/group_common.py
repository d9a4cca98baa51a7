"""Helpers for the consumer-group scenarios with confluent-kafka (librdkafka): a group member
that records every assignment and revocation its rebalance callbacks see, a member running in a
child process (so the test can SIGSTOP or SIGKILL it), and small produce/consume utilities."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, check_eq, fail


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}] {msg}", flush=True)


def create_topic(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # The cluster's default replication factor (-1), so the scripts also run against a
    # replicated Kafka cluster (tests/kafka/cluster.sh), where a new topic's metadata
    # reaches every broker a moment after the creation is acknowledged.
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])[topic].result(timeout=30)
    deadline = time.time() + 10
    while True:
        md = admin.list_topics(topic, timeout=10).topics[topic]
        if (md.error is None and len(md.partitions) == partitions) or time.time() > deadline:
            break
        time.sleep(0.1)
    check(md.error is None, f"metadata of new topic {topic}: {md.error}")
    check_eq(sorted(md.partitions), list(range(partitions)), f"partitions of new topic {topic}")


def produce(bootstrap, topic, records):
    """records: [(partition, value)]; every one must be acknowledged. Returns {value: (partition, offset)}."""
    where, errors = {}, []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(f"{msg.value()!r}: {err}")
        else:
            where[msg.value().decode()] = (msg.partition(), msg.offset())

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for part, value in records:
        p.produce(topic, value=value, partition=part, on_delivery=on_delivery)
        p.poll(0)
    left = p.flush(30)
    check(left == 0 and not errors, f"produce to {topic}: {left} undelivered, errors {errors[:5]}")
    check_eq(len(where), len(records), f"records acknowledged by {topic}")
    return where


class Member:
    """A group member in this process. Its rebalance callbacks run inside poll(), so whoever owns
    it must keep polling (wait_for does)."""

    def __init__(self, name, bootstrap, group, topics, extra=None):
        self.name = name
        self.topics = topics
        self.assigned = None  # set of (topic, partition) once the first assignment arrived
        self.assign_calls = 0
        self.revoke_calls = 0
        self.lost_calls = 0
        self.history = []
        self.errors = []
        # First offset read per partition, whoever polled: watching a member must not lose what
        # it read.
        self.first_offsets = {}
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "error_cb": self._on_error,
        }
        conf.update(extra or {})
        self.consumer = Consumer(conf)
        self.subscribed_at = time.time()
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.closed = False

    def _on_error(self, err):
        self.errors.append(str(err))
        log(f"{self.name}: client error {err}")

    def _on_assign(self, consumer, parts):
        self.assign_calls += 1
        self.assigned = {(tp.topic, tp.partition) for tp in parts}
        self.history.append(("assign", time.time(), sorted(self.assigned)))
        log(f"{self.name}: assigned {self.partitions()}")

    def _on_revoke(self, consumer, parts):
        self.revoke_calls += 1
        self.history.append(("revoke", time.time(), sorted((tp.topic, tp.partition) for tp in parts)))
        log(f"{self.name}: revoked {sorted(tp.partition for tp in parts)}")
        self.assigned = set()

    def _on_lost(self, consumer, parts):
        self.lost_calls += 1
        self.history.append(("lost", time.time(), sorted((tp.topic, tp.partition) for tp in parts)))
        log(f"{self.name}: LOST {sorted(tp.partition for tp in parts)}")
        self.assigned = set()

    def partitions(self):
        return sorted(p for _, p in (self.assigned or ()))

    def poll(self, timeout=0.02):
        msg = self.consumer.poll(timeout)
        if msg is not None and msg.error() is not None:
            err = msg.error()
            if err.fatal():
                fail(f"{self.name}: fatal consumer error {err}")
            self.errors.append(str(err))
            log(f"{self.name}: consumer error {err}")
            return None
        if msg is not None:
            self.first_offsets.setdefault(msg.partition(), msg.offset())
        return msg

    def close(self):
        if not self.closed:
            self.consumer.close()
            self.closed = True


class ChildMember:
    """A group member in a child process (this script's `member` mode), so it can be frozen
    (SIGSTOP) or killed (SIGKILL) like a hung or crashed application. It prints a JSON line on every
    assignment change."""

    def __init__(self, name, script, bootstrap, group, topic, session_timeout_ms=6000):
        self.name = name
        self.assigned = None
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, script, "member", "--bootstrap", bootstrap, "--group", group,
             "--topic", topic, "--name", name, "--session-timeout", str(session_timeout_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("{"):
                event = json.loads(line)
                self.assigned = set(map(int, event["assigned"]))
            else:
                print(f"    [{self.name}] {line.rstrip()}", flush=True)

    def partitions(self):
        return sorted(self.assigned or ())

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def run_member(a):
    """`member` mode: join the group and poll until killed, announcing each assignment."""

    def announce(consumer, parts):
        print(json.dumps({"assigned": sorted(tp.partition for tp in parts)}), flush=True)

    def revoked(consumer, parts):
        print(json.dumps({"assigned": []}), flush=True)

    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "client.id": a.name,
        "session.timeout.ms": a.session_timeout,
        "heartbeat.interval.ms": 500,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    c.subscribe([a.topic], on_assign=announce, on_revoke=revoked, on_lost=revoked)
    while True:
        msg = c.poll(0.1)
        if msg is not None and msg.error() is not None:
            print(f"consumer error {msg.error()}", flush=True)


def wait_for(what, cond, members, timeout, describe):
    """Poll every member until cond() holds; fail with describe() if it does not within timeout.
    Returns the seconds it took."""
    start = time.time()
    while not cond():
        if time.time() - start > timeout:
            fail(f"{what}: not reached within {timeout} s; state: {describe()}")
        for m in members:
            m.poll(0.02)
        if not members:
            time.sleep(0.02)
    return time.time() - start


def split_of(owners):
    """owners: {name: partitions or None}. Describes who holds what."""
    return ", ".join(f"{n}={p if p is not None else 'unassigned'}" for n, p in owners.items())


def is_even_split(assignments, partitions, per_member):
    """assignments: list of partition lists. True when every member has per_member partitions and
    together they cover every partition exactly once."""
    if any(a is None or len(a) != per_member for a in assignments):
        return False
    flat = [p for a in assignments for p in a]
    return sorted(flat) == list(range(partitions))


def check_disjoint_cover(assignments, partitions, what):
    flat = [p for a in assignments for p in a]
    check(sorted(flat) == list(range(partitions)),
          f"{what}: partitions must be owned exactly once between the members, got {assignments}")


def committed(bootstrap, group, topic, partitions):
    """The group's committed offsets, via OffsetFetch from a consumer that never joins."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        res = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
    finally:
        c.close()
    out = {}
    for tp in res:
        check(tp.error is None, f"committed() of {group} {topic}[{tp.partition}]: {tp.error}")
        out[tp.partition] = (tp.offset, tp.metadata)
    return out


def is_partition_eof(err):
    return err is not None and err.code() == KafkaError._PARTITION_EOF
