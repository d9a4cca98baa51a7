#!/usr/bin/env python3
"""`sluice group ...` against a group confluent-kafka consumers really use.

A 3-partition topic (created with `sluice topic create`) holds 50 records per partition; a
consumer of group G commits 10 / 25 / 50 of them. Then:
  - `group describe` shows, per partition, the committed offset, the log end, the lag (40 / 25 /
    0) and the live member, and `group list` shows G as Stable;
  - `group reset --to-earliest` is refused while the member is active and changes nothing;
  - once the consumer closed: describe shows the group Empty with the same lag; reset
    --to-earliest prints 0 for every partition, describe shows lag 50, and a new consumer of G
    re-reads every record from offset 0, exactly once; after it commits, the lag is 0;
  - reset --to-offset 20 makes the next consumer start at offset 20 in every partition;
  - `group delete` removes the group and its offsets (list no longer shows it, committed() has
    nothing).
"""

import re
import subprocess
import time

from confluent_kafka import TopicPartition

from common import args, check, check_eq, fail, main, unique
from group_common import Member, committed, log, produce, wait_for

PARTITIONS = 3
PER_PARTITION = 50


def add_args(p):
    p.add_argument("--sluice", required=True, help="path of the sluice binary")


def sluice(a, *argv, ok=True):
    cmd = [a.sluice, *argv, "--bootstrap", a.bootstrap]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    log(f"$ {' '.join(cmd[1:])} -> {r.returncode}\n{r.stdout}{r.stderr}".rstrip())
    if ok and r.returncode != 0:
        fail(f"`{' '.join(cmd)}` exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


def describe(a, group, topic):
    """(state, members, {partition: (committed, log_end, lag, member)}) from `group describe`."""
    out = sluice(a, "group", "describe", group).stdout
    head = re.search(r"^GROUP (\S+)\s+STATE (\S+)\s+MEMBERS (\d+)", out, re.M)
    check(head is not None, f"no GROUP/STATE/MEMBERS line in describe output:\n{out}")
    check_eq(head.group(1), group, "group named by describe")
    check(re.search(r"^TOPIC\s+PARTITION\s+COMMITTED\s+LOG-END\s+LAG\s+MEMBER", out, re.M),
          f"describe has no TOPIC PARTITION COMMITTED LOG-END LAG MEMBER header:\n{out}")
    rows = {}
    for line in out.splitlines():
        f = line.split(None, 5)
        if len(f) >= 6 and f[0] == topic:
            p = int(f[1])
            check(p not in rows, f"partition {p} listed twice:\n{out}")
            num = lambda s: None if s == "-" else int(s)
            rows[p] = (num(f[2]), num(f[3]), num(f[4]), f[5])
    return head.group(2), int(head.group(3)), rows


def expect_rows(rows, committed_at, member, what):
    want = {}
    for p in range(PARTITIONS):
        c = committed_at[p]
        want[p] = (c, PER_PARTITION, PER_PARTITION - c, member(p))
    got = {p: r[:3] + (("live" if r[3] != "-" else "-"),) for p, r in rows.items()}
    check_eq(got, want, f"{what}: describe rows (committed, log end, lag, member?) per partition")


def consume_all(a, group, topic, name, first_expected):
    """A new member of `group` reads to the end; returns {partition: [offsets]} and commits."""
    m = Member(name, a.bootstrap, group, [topic])
    total = sum(PER_PARTITION - first_expected[p] for p in range(PARTITIONS))
    got = {p: [] for p in range(PARTITIONS)}
    values = set()
    deadline = time.time() + 30
    while sum(len(v) for v in got.values()) < total:
        check(time.time() < deadline, f"{name} read {({p: len(v) for p, v in got.items()})} of {total}")
        msg = m.poll(0.1)
        if msg is None:
            continue
        v = msg.value().decode()
        check(v not in values, f"{name} read {v} twice")
        values.add(v)
        got[msg.partition()].append(msg.offset())
    until = time.time() + 1.5
    while time.time() < until:
        msg = m.poll(0.1)
        check(msg is None, f"{name} read more than the {total} records it should: {msg and msg.value()}")
    for p in range(PARTITIONS):
        check_eq(got[p], list(range(first_expected[p], PER_PARTITION)), f"{name}: offsets read from partition {p}")
    res = m.consumer.commit(offsets=[TopicPartition(topic, p, PER_PARTITION) for p in range(PARTITIONS)],
                            asynchronous=False)
    check(all(tp.error is None for tp in res), f"{name}: commit failed {res}")
    m.close()
    return got


def run(a):
    topic = unique("cli")
    group = unique("gcli")
    out = sluice(a, "topic", "create", topic, "--partitions", str(PARTITIONS)).stdout
    check(topic in out, f"topic create output does not name the topic: {out}")
    produce(a.bootstrap, topic, [(i % PARTITIONS, f"c{i:04d}") for i in range(PARTITIONS * PER_PARTITION)])

    quota = {0: 10, 1: 25, 2: 50}
    m = Member("cli-member", a.bootstrap, group, [topic])
    wait_for("assignment", lambda: m.partitions() == [0, 1, 2], [m], 30, m.partitions)
    res = m.consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in quota.items()], asynchronous=False)
    check(all(tp.error is None for tp in res), f"commit failed {res}")

    state, members, rows = describe(a, group, topic)
    check_eq((state, members), ("Stable", 1), "state and member count with one consumer")
    expect_rows(rows, quota, lambda p: "live", "one active member")
    check(all("cli-member" in r[3] for r in rows.values()), f"MEMBER column does not name the consumer: {rows}")
    listed = sluice(a, "group", "list").stdout
    check(re.search(rf"^{re.escape(group)}\s+Stable\s+consumer\s*$", listed, re.M),
          f"group list does not show {group} Stable consumer:\n{listed}")

    r = sluice(a, "group", "reset", group, "--topic", topic, "--to-earliest", ok=False)
    check(r.returncode != 0, "reset of a group with an active member succeeded")
    check("active member" in r.stderr + r.stdout, f"reset refusal does not say why: {r.stderr}{r.stdout}")
    check_eq({p: o for p, (o, _) in committed(a.bootstrap, group, topic, PARTITIONS).items()}, quota,
             "committed offsets after the refused reset")
    m.poll(0.1)
    m.close()

    state, members, rows = describe(a, group, topic)
    check_eq((state, members), ("Empty", 0), "state and member count after the consumer closed")
    expect_rows(rows, quota, lambda p: "-", "no members")

    row = r"^(\S+)\s+(\d+)\s+(-?\d+)\s+(-?\d+)\s*$"
    out = sluice(a, "group", "reset", group, "--topic", topic, "--to-earliest", "--dry-run").stdout
    plan = {int(p): (int(cur), int(new)) for t, p, cur, new in re.findall(row, out, re.M) if t == topic}
    check_eq(plan, {p: (quota[p], 0) for p in range(PARTITIONS)}, "reset --dry-run: current and new offsets")
    check_eq({p: o for p, (o, _) in committed(a.bootstrap, group, topic, PARTITIONS).items()}, quota,
             "committed offsets after a dry run")

    out = sluice(a, "group", "reset", group, "--topic", topic, "--to-earliest").stdout
    shown = {int(p): (int(prev), int(new)) for t, p, prev, new in re.findall(row, out, re.M) if t == topic}
    check_eq(shown, {p: (quota[p], 0) for p in range(PARTITIONS)}, "offsets printed by reset --to-earliest")
    state, members, rows = describe(a, group, topic)
    expect_rows(rows, {p: 0 for p in range(PARTITIONS)}, lambda p: "-", "after reset --to-earliest")
    consume_all(a, group, topic, "re-reader", {p: 0 for p in range(PARTITIONS)})
    state, members, rows = describe(a, group, topic)
    expect_rows(rows, {p: PER_PARTITION for p in range(PARTITIONS)}, lambda p: "-", "after re-reading everything")

    sluice(a, "group", "reset", group, "--topic", topic, "--to-offset", "20")
    consume_all(a, group, topic, "from-20", {p: 20 for p in range(PARTITIONS)})

    sluice(a, "group", "delete", group)
    listed = sluice(a, "group", "list").stdout
    check(group not in listed, f"deleted group still listed:\n{listed}")
    check_eq({p: o for p, (o, _) in committed(a.bootstrap, group, topic, PARTITIONS).items()},
             {p: -1001 for p in range(PARTITIONS)}, "committed offsets of the deleted group")
    return "describe/lag, refused reset, reset --dry-run, --to-earliest and --to-offset, list and delete all checked"


if __name__ == "__main__":
    a = args(__doc__, add_args)
    main(lambda: run(a))
