#!/usr/bin/env python3
"""Consumer groups with confluent-kafka (librdkafka's classic protocol, range/roundrobin assignors).

  membership (tests/groups.rs: confluent_group_membership_and_resume), one 6-partition topic:
    1. three members subscribe: each gets 2 partitions, every partition owned once;
    2. one closes (LeaveGroup): the other two get 3 each;
    3. a third member in a child process joins (2 each again) and is then frozen with SIGSTOP: it
       keeps its TCP connection but stops heartbeating, so the broker must evict it after
       session.timeout.ms (6000) and the other two get 3 each again, no sooner than ~the session
       timeout and within session timeout + rebalance;
    4. the same with a member that is SIGKILLed (connection gone, no LeaveGroup);
    5. resume: 1200 unique records; the two members consume part of every partition (a different
       amount each), committing every record they process; both close; 600 more records; a fresh
       member of the group must start exactly at the committed offsets and read exactly the rest:
       nothing skipped, nothing twice.
  member: run one group member until killed (used by membership steps 3 and 4).
  commit / check-committed (tests/groups.rs: committed_offsets_survive_kill9): commit offsets
    (with metadata, including rewinds and a deleted group) and write what was committed to
    --state; after the broker was killed with SIGKILL and restarted, check-committed requires
    OffsetFetch to return exactly that, and a new member to resume there.
"""

import json
import signal
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from common import args, check, check_eq, fail, main, unique
from group_common import (
    ChildMember,
    Member,
    committed,
    create_topic,
    is_even_split,
    log,
    produce,
    run_member,
    split_of,
    wait_for,
)

PARTITIONS = 6
SESSION_MS = 6000


def add_args(p):
    p.add_argument("mode", choices=["membership", "member", "commit", "check-committed"])
    p.add_argument("--group")
    p.add_argument("--topic")
    p.add_argument("--name", default="child")
    p.add_argument("--session-timeout", type=int, default=SESSION_MS)
    p.add_argument("--state", help="commit/check-committed: JSON file of what was committed")


def membership(a):
    topic = unique("grp")
    group = unique("g")
    create_topic(a.bootstrap, topic, PARTITIONS)
    log(f"topic {topic} ({PARTITIONS} partitions), group {group}")

    # 1. Three members, two partitions each.
    members = [Member(f"m{i}", a.bootstrap, group, [topic]) for i in (1, 2, 3)]
    last_subscribe = time.time()
    state = lambda ms: split_of({m.name: (m.partitions() if m.assigned is not None else None) for m in ms})
    took = wait_for("3 members with 2 partitions each",
                    lambda: is_even_split([m.partitions() for m in members], PARTITIONS, 2),
                    members, 30, lambda: state(members))
    log(f"step 1: {state(members)} ({took:.2f} s after the last subscribe, {time.time() - last_subscribe:.2f})")
    for m in members:
        check(m.lost_calls == 0, f"{m.name} lost its partitions during the first join: {m.history}")

    # 2. m3 leaves; m1 and m2 take over its partitions.
    m1, m2, m3 = members
    m3.close()
    left_at = time.time()
    survivors = [m1, m2]
    took = wait_for("after m3 left, m1 and m2 with 3 partitions each",
                    lambda: is_even_split([m.partitions() for m in survivors], PARTITIONS, 3),
                    survivors, 10, lambda: state(survivors))
    log(f"step 2: {state(survivors)} {took:.2f} s after m3's LeaveGroup")

    # 3 and 4. A member that stops heartbeating (SIGSTOP), then one that dies (SIGKILL).
    for how in (signal.SIGSTOP, signal.SIGKILL):
        child = ChildMember(f"child-{how.name}", __file__, a.bootstrap, group, topic, SESSION_MS)
        everyone = lambda: split_of({"m1": m1.partitions(), "m2": m2.partitions(), child.name: child.assigned})
        wait_for(f"{child.name} joined: 2 partitions each",
                 lambda: child.assigned is not None
                 and is_even_split([m1.partitions(), m2.partitions(), child.partitions()], PARTITIONS, 2),
                 survivors, 30, everyone)
        log(f"{child.name} joined: {everyone()}")
        # Let a couple of heartbeats go through in the new generation before freezing it.
        settle_until = time.time() + 1.0
        while time.time() < settle_until:
            for m in survivors:
                m.poll(0.05)
        check(is_even_split([m1.partitions(), m2.partitions(), child.partitions()], PARTITIONS, 2),
              f"assignment changed while nothing happened: {everyone()}")
        child.signal(how)
        frozen_at = time.time()
        log(f"sent {how.name} to {child.name} (pid {child.proc.pid})")
        took = wait_for(f"after {how.name} of a member, m1 and m2 with 3 partitions each",
                        lambda: is_even_split([m1.partitions(), m2.partitions()], PARTITIONS, 3),
                        survivors, SESSION_MS / 1000 + 4, everyone)
        log(f"step {how.name}: {everyone()} {took:.2f} s after {how.name}")
        # The heartbeat just before the signal can be up to heartbeat.interval.ms (500) old.
        check(took >= SESSION_MS / 1000 - 1.5,
              f"{child.name} was evicted {took:.2f} s after it stopped, before its {SESSION_MS} ms session timeout")
        child.kill()

    # 5. Commit part of every partition, stop everyone, produce more, resume exactly.
    first = [(i % PARTITIONS, f"v{i:05d}") for i in range(1200)]
    produce(a.bootstrap, topic, first)
    quota = {p: 30 + 25 * p for p in range(PARTITIONS)}  # of 200 records in each partition
    consumed = {}  # value -> (partition, offset)
    next_offset = {p: 0 for p in range(PARTITIONS)}
    done = lambda: all(next_offset[p] == quota[p] for p in range(PARTITIONS))

    def consume_one(m):
        msg = m.poll(0.005)
        if msg is None:
            return
        p, o = msg.partition(), msg.offset()
        if next_offset[p] >= quota[p]:
            m.consumer.pause([TopicPartition(topic, p)])  # over quota: not processed, not committed
            return
        check_eq(o, next_offset[p], f"{m.name}: offset of the next record of partition {p}")
        v = msg.value().decode()
        check(v not in consumed, f"{v} delivered twice")
        consumed[v] = (p, o)
        res = m.consumer.commit(offsets=[TopicPartition(topic, p, o + 1)], asynchronous=False)
        check(all(tp.error is None for tp in res), f"{m.name}: commit {p}@{o + 1} failed: {res}")
        next_offset[p] = o + 1

    deadline = time.time() + 30
    while not done():
        check(time.time() < deadline, f"consuming the quota: at {next_offset}, want {quota}")
        for m in survivors:
            consume_one(m)
    log(f"step 5: consumed and committed {len(consumed)} records: {next_offset}")
    got = committed(a.bootstrap, group, topic, PARTITIONS)
    check_eq({p: o for p, (o, _) in got.items()}, quota, "committed offsets before stopping the members")
    m1.close()
    m2.close()

    second = [(i % PARTITIONS, f"v{i:05d}") for i in range(1200, 1800)]
    produce(a.bootstrap, topic, second)
    everything = {v for _, v in first + second}
    rest = everything - set(consumed)

    m4 = Member("m4", a.bootstrap, group, [topic], {"enable.partition.eof": False})
    seen = {}
    first_offset = {}
    deadline = time.time() + 30
    while len(seen) < len(rest):
        check(time.time() < deadline,
              f"the resumed member read {len(seen)} of the {len(rest)} records it should; first offsets {first_offset}")
        msg = m4.poll(0.1)
        if msg is None:
            continue
        v = msg.value().decode()
        check(v not in consumed, f"resumed member re-read {v} at {msg.partition()}@{msg.offset()}, "
              f"which was consumed and committed before (committed offset {quota[msg.partition()]})")
        check(v not in seen, f"resumed member read {v} twice")
        first_offset.setdefault(msg.partition(), msg.offset())
        seen[v] = (msg.partition(), msg.offset())
    quiet_until = time.time() + 2
    while time.time() < quiet_until:
        msg = m4.poll(0.1)
        if msg is not None:
            fail(f"resumed member read an extra record {msg.value()!r} at {msg.partition()}@{msg.offset()}")
    check_eq(first_offset, quota, "first offset the resumed member read per partition (= committed offsets)")
    check_eq(set(seen), rest, "records read after the resume")
    m4.close()
    errors = sorted({e for m in members + [m4] for e in m.errors})
    return (f"3-way split, leave, SIGSTOP and SIGKILL eviction, resume of {len(rest)} records "
            f"after {len(consumed)} committed; client errors seen: {errors}")


COMMITS = [
    # (group suffix, partition -> offset, metadata, as a member?); later commits overwrite earlier ones.
    ("main", {0: 17, 1: 42, 2: 0, 3: 100}, "first", True),
    ("main", {0: 5, 1: 43}, "second", True),  # a rewind and an advance, same member
    ("other", {0: 99, 3: 1}, "other", False),  # from a consumer that never joins (generation -1)
    ("deleted", {0: 50, 1: 50, 2: 50, 3: 50}, "gone", False),
]


def commit(a):
    create_topic(a.bootstrap, a.topic, 4)
    produce(a.bootstrap, a.topic, [(i % 4, f"r{i:04d}") for i in range(400)])  # 100 per partition
    expected = {}
    member = None
    for tag, offsets, meta, as_member in COMMITS:
        group = f"{a.group}-{tag}"
        if as_member:
            if member is None:
                member = Member(f"committer-{tag}", a.bootstrap, group, [a.topic])
                wait_for(f"{group} assignment", lambda: member.partitions() == [0, 1, 2, 3], [member], 30,
                         member.partitions)
            consumer = member.consumer
        else:
            consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(a.topic, p, o, metadata=f"{meta}-{p}") for p, o in offsets.items()]
        res = consumer.commit(offsets=tps, asynchronous=False)
        check(all(tp.error is None for tp in res), f"commit to {group} failed: {res}")
        if not as_member:
            consumer.close()
        for p, o in offsets.items():
            expected.setdefault(group, {})[str(p)] = [o, f"{meta}-{p}"]
    member.close()
    gone = f"{a.group}-deleted"
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.delete_consumer_groups([gone], request_timeout=15)[gone].result(timeout=30)
    expected[gone] = {}
    for group, offsets in expected.items():
        got = committed(a.bootstrap, group, a.topic, 4)
        want = {p: tuple(offsets.get(str(p), [-1001, None])) for p in range(4)}
        check_eq(got, want, f"committed offsets of {group} (before the kill)")
    with open(a.state, "w") as f:
        json.dump({"topic": a.topic, "groups": expected}, f)
    return f"committed {json.dumps(expected)}"


def check_committed(a):
    with open(a.state) as f:
        state = json.load(f)
    topic = state["topic"]
    for group, offsets in state["groups"].items():
        got = committed(a.bootstrap, group, topic, 4)
        want = {p: tuple(offsets.get(str(p), [-1001, None])) for p in range(4)}
        check_eq(got, want, f"committed offsets (offset, metadata) of {group} after kill -9 and restart")
    # A member of the main group resumes from those offsets.
    group = f"{a.group}-main"
    offsets = {int(p): o for p, (o, _) in state["groups"][group].items()}
    m = Member("resumer", a.bootstrap, group, [topic])
    first = {}
    want_first = {p: o for p, o in offsets.items() if o < 100}
    want_first.update({p: 0 for p in range(4) if p not in offsets})  # auto.offset.reset=earliest
    deadline = time.time() + 30
    while set(first) != set(want_first):
        check(time.time() < deadline, f"resumed member read first offsets {first}, want {want_first}")
        msg = m.poll(0.1)
        if msg is not None:
            first.setdefault(msg.partition(), msg.offset())
    m.close()
    check_eq(first, want_first, "first offset read per partition by a member resuming after the restart")
    return f"offsets of {sorted(state['groups'])} intact after restart; resumed at {first}"


def run(a):
    if a.mode == "membership":
        return membership(a)
    if a.mode == "member":
        return run_member(a)
    check(a.group and a.topic and a.state, "commit/check-committed need --group, --topic and --state")
    return commit(a) if a.mode == "commit" else check_committed(a)


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: run(a))
