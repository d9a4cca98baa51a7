#!/usr/bin/env python3
"""Static membership (KIP-345) with confluent-kafka: members with group.instance.id that restart
within their session timeout get their old partitions back without a rebalance.

Two static members A and B share a 4-partition topic (2 partitions each). B closes (a static
member sends no LeaveGroup) and a new consumer with B's group.instance.id starts at once: it must
get exactly B's partitions, within the session timeout, and resume at the offsets B committed,
while A sees no revocation, no new assignment and keeps its partitions (librdkafka would run A's
revoke callback on any rebalance). Then the same with A restarting (A was the first to join,
so the leader) while B is watched. Finally both consume new records of their own partitions only.
"""

import time

from confluent_kafka import TopicPartition

from common import args, check, check_eq, fail, main, unique
from group_common import Member, create_topic, is_even_split, log, produce, wait_for

PARTITIONS = 4
SESSION_MS = 10000


def static_member(name, instance, a, group, topic):
    return Member(name, a.bootstrap, group, [topic],
                  {"group.instance.id": instance, "session.timeout.ms": SESSION_MS})


def snapshot(m):
    return (m.partitions(), m.assign_calls, m.revoke_calls, m.lost_calls)


def watch(members, seconds):
    until = time.time() + seconds
    while time.time() < until:
        for m in members:
            m.poll(0.02)


def restart(a, group, topic, old, other, instance, commit_at, leader):
    """Close `old`, start its replacement with the same instance id; `other` must not notice."""
    before_other = snapshot(other)
    old_parts = old.partitions()
    res = old.consumer.commit(offsets=[TopicPartition(topic, p, commit_at) for p in old_parts], asynchronous=False)
    check(all(tp.error is None for tp in res), f"{old.name}: commit failed {res}")
    watch([other], 0.2)
    old.close()
    log(f"{old.name} ({instance}) closed holding {old_parts}; restarting it")
    new = static_member(old.name + "'", instance, a, group, topic)
    took = wait_for(f"{new.name} assigned", lambda: new.assigned, [new, other], SESSION_MS / 1000 + 10,
                    lambda: f"{new.name}={new.partitions()} {other.name}={other.partitions()}")
    log(f"{new.name} got {new.partitions()} {took:.2f} s after starting")
    check_eq(new.partitions(), old_parts, f"partitions of the restarted static member {instance}")
    check(took < SESSION_MS / 1000,
          f"restarted static member waited {took:.2f} s for its partitions (session timeout {SESSION_MS} ms): "
          f"the broker evicted the old instance instead of handing over")
    # Several heartbeat intervals (500 ms) for any rebalance to reach the other member.
    watch([new, other], 3)
    after_other = snapshot(other)
    if after_other != before_other:
        events = [(kind, [p for _, p in parts]) for kind, _, parts in other.history]
        fail(f"restarting static member {instance} ({'joined first, so the group leader' if leader else 'a follower'}) rebalanced "
             f"{other.name}: (partitions, assign calls, revoke calls, lost calls) went from {before_other} to "
             f"{after_other}; {other.name}'s callbacks so far: {events}")
    check_eq(snapshot(new)[1:], (1, 0, 0), f"{new.name} (assign, revoke, lost calls) after the restart")
    return new


def run(a):
    topic = unique("static")
    group = unique("gs")
    create_topic(a.bootstrap, topic, PARTITIONS)
    produce(a.bootstrap, topic, [(i % PARTITIONS, f"old-{i}") for i in range(40)])  # 10 per partition
    A = static_member("A", "inst-a", a, group, topic)
    watch([A], 0.3)  # A joins first: it becomes the leader
    B = static_member("B", "inst-b", a, group, topic)
    wait_for("A and B with 2 partitions each",
             lambda: is_even_split([A.partitions(), B.partitions()], PARTITIONS, 2),
             [A, B], 30, lambda: f"A={A.partitions()} B={B.partitions()}")
    watch([A, B], 1.5)
    check(is_even_split([A.partitions(), B.partitions()], PARTITIONS, 2) and A.revoke_calls == 0
          and B.revoke_calls == 0, f"group did not settle: A {A.history} B {B.history}")
    log(f"A={A.partitions()} B={B.partitions()}")

    B = restart(a, group, topic, B, A, "inst-b", 3, leader=False)
    A = restart(a, group, topic, A, B, "inst-a", 6, leader=True)

    # Both resume at the offsets their previous instances committed, and only see their own partitions.
    want = {p: (3 if p in B.partitions() else 6) for p in range(PARTITIONS)}
    owner = {}
    deadline = time.time() + 20
    while True:
        firsts = {**A.first_offsets, **B.first_offsets}
        if len(firsts) >= PARTITIONS:
            break
        check(time.time() < deadline, f"first offsets read {firsts}, want {want}")
        for m in (A, B):
            msg = m.poll(0.05)
            if msg is None:
                continue
            p = msg.partition()
            check(p in m.partitions(), f"{m.name} read partition {p} it does not own ({m.partitions()})")
    for m in (A, B):
        for p in m.first_offsets:
            check(p in m.partitions(), f"{m.name} read partition {p} it does not own ({m.partitions()})")
            owner.setdefault(p, m.name)
    check_eq(firsts, want, "first offset read per partition after the restarts (committed by the old instances)")
    for m in (A, B):
        check(m.revoke_calls == 0 and m.lost_calls == 0, f"{m.name} was rebalanced: {m.history}")
    A.close()
    B.close()
    return f"static members kept {owner} across two restarts without a rebalance"


if __name__ == "__main__":
    a = args(__doc__)
    main(lambda: run(a))
