#!/usr/bin/env python3
"""Consumer groups with kafka-python 3.0 (its own Python group coordinator client and
assignors), one KafkaConsumer per thread, on a 6-partition topic.

For each assignor (range, roundrobin, cooperative-sticky; one group each): three members get 2
partitions each, every partition owned once; one closes (LeaveGroup) and the other two end up
with 3 each. Then commits and resume: 1200 unique records, two members consume part of every
partition committing each record they process, both close, 600 more records, and a fresh member
must start exactly at the committed offsets (checked with committed() first) and read exactly the
rest: nothing skipped, nothing twice.
"""

import threading
import time
import traceback

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.structs import OffsetAndMetadata

from common import args, check, check_eq, fail, main, unique
from group_common import create_topic, is_even_split, log, produce

PARTITIONS = 6
ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "cooperative-sticky": CooperativeStickyAssignor,
}


class Listener(ConsumerRebalanceListener):
    def __init__(self, member):
        self.member = member

    def on_partitions_revoked(self, revoked):
        self.member.revokes += 1
        log(f"{self.member.name}: revoked {sorted(tp.partition for tp in revoked)}")

    def on_partitions_assigned(self, assigned):
        log(f"{self.member.name}: assigned {sorted(tp.partition for tp in assigned)}")

    def on_partitions_lost(self, lost):
        log(f"{self.member.name}: LOST {sorted(tp.partition for tp in lost)}")


class Member:
    """A KafkaConsumer polled by its own thread; on_record(member, record) runs in that thread."""

    def __init__(self, name, bootstrap, group, topic, assignor, on_record=None):
        self.name = name
        self.topic = topic
        self.on_record = on_record
        self.assigned = None
        self.revokes = 0
        self.error = None
        self.stopping = False
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            partition_assignment_strategy=[assignor],
        )
        self.consumer.subscribe([topic], listener=Listener(self))
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while not self.stopping:
                batch = self.consumer.poll(timeout_ms=50)
                self.assigned = sorted(tp.partition for tp in self.consumer.assignment())
                for tp, records in batch.items():
                    for r in records:
                        if self.on_record is not None:
                            self.on_record(self, tp, r)
            self.consumer.close()
        except Exception as e:  # reported by the main thread
            self.error = f"{self.name}: {e!r}\n{traceback.format_exc()}"

    def partitions(self):
        return self.assigned

    def stop(self):
        self.stopping = True
        self.thread.join(30)
        check(not self.thread.is_alive(), f"{self.name} did not close within 30 s")
        self.check()

    def check(self):
        if self.error:
            fail(self.error)


def wait_for(what, cond, members, timeout):
    start = time.time()
    while not cond():
        for m in members:
            m.check()
        if time.time() - start > timeout:
            fail(f"{what}: not reached within {timeout} s; " + ", ".join(f"{m.name}={m.partitions()}" for m in members))
        time.sleep(0.02)
    return time.time() - start


def split_and_leave(a, topic, label, assignor):
    group = unique(f"kp-{label}")
    members = [Member(f"{label}-{i}", a.bootstrap, group, topic, assignor) for i in (1, 2, 3)]
    took = wait_for(f"[{label}] 3 members with 2 partitions each",
                    lambda: is_even_split([m.partitions() for m in members], PARTITIONS, 2), members, 30)
    log(f"[{label}] " + ", ".join(f"{m.name}={m.partitions()}" for m in members) + f" after {took:.2f} s")
    members[2].stop()
    survivors = members[:2]
    took = wait_for(f"[{label}] after one member left, 3 partitions each",
                    lambda: is_even_split([m.partitions() for m in survivors], PARTITIONS, 3), survivors, 20)
    log(f"[{label}] after the leave: " + ", ".join(f"{m.name}={m.partitions()}" for m in survivors)
        + f" after {took:.2f} s")
    return survivors, group


def run(a):
    topic = unique("kpgrp")
    create_topic(a.bootstrap, topic, PARTITIONS)
    keep = None
    for label, assignor in ASSIGNORS.items():
        survivors, group = split_and_leave(a, topic, label, assignor)
        if label == "range":
            keep = (survivors, group)  # the range group goes on to commits and resume
        else:
            for m in survivors:
                m.stop()
    survivors, group = keep

    first = [(i % PARTITIONS, f"v{i:05d}") for i in range(1200)]
    quota = {p: 20 + 30 * p for p in range(PARTITIONS)}  # of 200 records per partition
    lock = threading.Lock()
    consumed = {}
    next_offset = {p: 0 for p in range(PARTITIONS)}
    problems = []

    def process(m, tp, r):
        with lock:
            p, o = tp.partition, r.offset
            if next_offset[p] >= quota[p]:
                m.consumer.pause(tp)  # over quota: neither processed nor committed
                return
            if o != next_offset[p]:
                problems.append(f"{m.name}: partition {p} delivered offset {o}, expected {next_offset[p]}")
                return
            v = r.value.decode()
            if v in consumed:
                problems.append(f"{v} delivered twice")
            consumed[v] = (p, o)
            m.consumer.commit({tp: OffsetAndMetadata(o + 1, "", -1)})
            next_offset[p] = o + 1

    for m in survivors:
        m.on_record = process
    produce(a.bootstrap, topic, first)
    wait_for("consuming and committing the quota",
             lambda: problems or all(next_offset[p] == quota[p] for p in range(PARTITIONS)), survivors, 30)
    check(not problems, f"while consuming: {problems[:5]}")
    for m in survivors:
        m.stop()
    log(f"consumed and committed {len(consumed)} records: {next_offset}")

    probe = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=group, enable_auto_commit=False)
    got = {p: probe.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    probe.close()
    check_eq(got, quota, "committed() offsets after both members closed")

    second = [(i % PARTITIONS, f"v{i:05d}") for i in range(1200, 1800)]
    produce(a.bootstrap, topic, second)
    rest = {v for _, v in first + second} - set(consumed)
    seen = {}
    first_offset = {}

    def resume(m, tp, r):
        with lock:
            v = r.value.decode()
            if v in consumed:
                problems.append(f"resumed member re-read {v} at {tp.partition}@{r.offset} (committed {quota[tp.partition]})")
            if v in seen:
                problems.append(f"resumed member read {v} twice")
            first_offset.setdefault(tp.partition, r.offset)
            seen[v] = (tp.partition, r.offset)

    m4 = Member("resumer", a.bootstrap, group, topic, RangePartitionAssignor, resume)
    wait_for(f"resumed member reading the {len(rest)} remaining records", lambda: problems or len(seen) >= len(rest), [m4], 30)
    time.sleep(2)  # anything extra would arrive now
    m4.stop()
    check(not problems, f"after the resume: {problems[:5]}")
    check_eq(first_offset, quota, "first offset read per partition by the resumed member (= committed offsets)")
    check_eq(set(seen), rest, "records read after the resume")
    return (f"even splits and leave with {list(ASSIGNORS)}; resume read exactly the {len(rest)} records "
            f"after the {len(consumed)} committed")


if __name__ == "__main__":
    a = args(__doc__)
    main(lambda: run(a))
