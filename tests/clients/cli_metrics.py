#!/usr/bin/env python3
"""The `sluice` command line against the broker, checked with confluent-kafka, and the
Prometheus endpoint.

  - topic create (with a config) / list / describe / alter-config / delete, and their errors:
    one line on stderr, a non-zero exit, never a panic;
  - produce with --key-separator puts each key where Kafka's murmur2 partitioner does
    (librdkafka's `murmur2_random` partitioner is the Java-compatible one); key-less lines are
    spread over every partition;
  - consume --from-beginning --print-key --max N prints exactly what was produced; kcat's
    -o (beginning, N, -N, s@MS, @-1h), -p, -f format tokens and -e (stop at the end);
  - /metrics reports the traffic: records in per topic, request counts per API, log sizes.
"""

import json
import subprocess
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition

from common import args, check, check_eq, main, unique

P = 4


def sluice(a, *argv, ok=True, stdin=None):
    r = subprocess.run([a.sluice, *argv, "--bootstrap", a.bootstrap], input=stdin,
                       capture_output=True, text=True, timeout=60)
    if ok:
        check(r.returncode == 0, f"sluice {' '.join(argv)} failed ({r.returncode}): {r.stderr}")
    else:
        check(r.returncode != 0, f"sluice {' '.join(argv)} should have failed: {r.stdout}")
        lines = r.stderr.strip().splitlines()
        check(len(lines) == 1 and lines[0].startswith("error: "),
              f"sluice {' '.join(argv)} must fail with one 'error:' line, got {r.stderr!r}")
    check("panicked" not in r.stderr and "backtrace" not in r.stderr.lower(), f"panic: {r.stderr}")
    return r


def read_all(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cli", "enable.auto.commit": False})
    parts = [TopicPartition(topic, p, 0) for p in range(P)]
    total = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    c.assign(parts)
    out = []
    import time
    deadline = time.time() + 20
    while len(out) < total and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            out.append(m)
    c.close()
    return out


def run(a):
    t = unique("cli")
    sluice(a, "topic", "create", t, "--partitions", str(P), "--config", "retention.ms=3600000")
    err = sluice(a, "topic", "create", t, ok=False)
    check("TopicAlreadyExists" in err.stderr, f"duplicate create: {err.stderr}")
    sluice(a, "topic", "create", "bad/name", ok=False)
    listed = sluice(a, "topic", "list").stdout
    check(any(line.split() == [t, str(P)] for line in listed.splitlines()), f"topic list: {listed}")

    lines = [f"key-{i}:value-{i}" for i in range(400)]
    sluice(a, "produce", t, "--key-separator", ":", stdin="\n".join(lines) + "\n")
    got = read_all(a.bootstrap, t)
    check_eq(len(got), 400, "records produced by the CLI")
    by_key = {m.key().decode(): m.partition() for m in got}
    check_eq(sorted(m.value().decode() for m in got), sorted(f"value-{i}" for i in range(400)), "values")

    # The same keys through librdkafka's Java-compatible partitioner land on the same partitions.
    ref = unique("cli-ref")
    sluice(a, "topic", "create", ref, "--partitions", str(P))
    p = Producer({"bootstrap.servers": a.bootstrap, "partitioner": "murmur2_random"})
    for i in range(400):
        p.produce(ref, key=f"key-{i}", value=b"x")
    check(p.flush(20) == 0, "reference produce did not complete")
    want = {m.key().decode(): m.partition() for m in read_all(a.bootstrap, ref)}
    check_eq(by_key, want, "partition of each key (sluice produce vs murmur2)")

    printed = sluice(a, "consume", t, "--from-beginning", "--print-key", "--max", "400").stdout
    check_eq(sorted(printed.splitlines()), sorted(line.replace(":", "\t", 1) for line in lines),
             "sluice consume --print-key output")

    # kcat-style offsets, formats and -e, against what librdkafka read.
    want = sorted(f"{m.partition()} {m.offset()} {m.key().decode()} {m.value().decode()}" for m in got)
    printed = sluice(a, "consume", t, "-o", "beginning", "-e", "-f", r"%p %o %k %s\n").stdout
    check_eq(sorted(printed.splitlines()), want, "consume -o beginning -e -f")
    printed = sluice(a, "consume", t, "-o", "@-1h", "-e", "-f", r"%p %o %k %s\n").stdout
    check_eq(sorted(printed.splitlines()), want, "consume -o @-1h (every record is newer)")
    ends = {}
    for m in got:
        ends[m.partition()] = max(ends.get(m.partition(), -1), m.offset() + 1)
    printed = sluice(a, "consume", t, "-o", "-2", "-e", "-f", r"%p:%o\n").stdout
    check_eq(sorted(printed.splitlines()),
             sorted(f"{p}:{o}" for p, e in ends.items() for o in (e - 2, e - 1)), "consume -o -2 -e")
    printed = sluice(a, "consume", t, "-p", "1", "-o", "3", "-e", "-f", r"%p:%o\n").stdout
    check_eq(printed.splitlines(), [f"1:{o}" for o in range(3, ends[1])], "consume -p 1 -o 3 -e")
    printed = sluice(a, "consume", t, "-o", "s@99999999999999", "-e").stdout
    check_eq(printed, "", "consume -o s@(the future) -e prints nothing")
    hdr = unique("cli-headers")
    sluice(a, "topic", "create", hdr, "--partitions", str(P))
    sluice(a, "produce", hdr, "-p", "2", "-H", "app=cli", "-H", "v=2", "--key-separator", ":",
           stdin="k1:x\nk2:y\n")
    printed = sluice(a, "consume", hdr, "-o", "beginning", "-e", "-f", r"%p %k %s %h\n").stdout
    check_eq(printed.splitlines(), ["2 k1 x app=cli,v=2", "2 k2 y app=cli,v=2"],
             "produce -p -H read back with consume -f %h")
    err = sluice(a, "consume", t, "-o", "soon", ok=False)
    check("soon" in err.stderr, f"a bad -o is named: {err.stderr}")

    keyless = unique("cli-spread")
    sluice(a, "topic", "create", keyless, "--partitions", str(P))
    sluice(a, "produce", keyless, stdin="".join(f"line {i}\n" for i in range(8000)))
    spread = [0] * P
    for m in read_all(a.bootstrap, keyless):
        spread[m.partition()] += 1
    check(sum(spread) == 8000 and min(spread) >= 1000, f"key-less records per partition: {spread}")

    info = json.loads(sluice(a, "cluster", "info", "--format", "json").stdout)
    check(len(info["brokers"]) == 1 and info["healthy"] and info["topics"] >= 2, f"cluster info: {info}")
    check(sluice(a, "cluster", "health").stdout.startswith("healthy"), "cluster health")

    listed = json.loads(sluice(a, "topic", "list", "--format", "json").stdout)
    check({"name": t, "partitions": P} in listed, f"topic list --format json: {listed}")
    d = json.loads(sluice(a, "topic", "describe", t, "--format", "json").stdout)
    check_eq(sum(p["high_watermark"] for p in d["partitions"]), 400, "describe --format json watermarks")
    check({"name": "retention.ms", "value": "3600000", "source": "topic"} in d["configs"],
          f"describe --format json configs: {d['configs']}")

    desc = sluice(a, "topic", "describe", t).stdout
    hw = sum(int(l.split()[3]) for l in desc.splitlines() if l.split()[:1] and l.split()[0].isdigit())
    check_eq(hw, 400, f"sum of high watermarks in describe:\n{desc}")
    check(any(l.split()[:3] == ["retention.ms", "3600000", "topic"] for l in desc.splitlines()),
          f"describe shows the topic's retention.ms:\n{desc}")
    sluice(a, "topic", "alter-config", t, "--set", "retention.ms=1000", "--set", "max.message.bytes=2000")
    desc = sluice(a, "topic", "describe", t).stdout
    check(any(l.split()[:2] == ["retention.ms", "1000"] for l in desc.splitlines()), f"altered:\n{desc}")
    err = sluice(a, "topic", "alter-config", t, "--set", "bogus.key=1", ok=False)
    check("InvalidConfig" in err.stderr, f"unknown config key: {err.stderr}")

    metrics = urllib.request.urlopen(f"http://{a.metrics}/metrics", timeout=10).read().decode()
    def value(prefix):
        rows = [l for l in metrics.splitlines() if l.startswith(prefix)]
        check(rows, f"metric {prefix} missing")
        return float(rows[0].rsplit(" ", 1)[1])
    check_eq(value(f'sluice_topic_records_in_total{{topic="{t}"}}'), 400.0, "records in of the topic")
    check(value(f'sluice_topic_records_out_total{{topic="{t}"}}') >= 400, "records out of the topic")
    check(value('sluice_request_duration_seconds_count{api="Produce"}') >= 3, "produce requests counted")
    check(value(f'sluice_partition_log_bytes{{topic="{t}",partition="0"}}') > 0, "log size of partition 0")
    check(value("sluice_connections_total") >= 5, "connections counted")

    sluice(a, "topic", "delete", t)
    check(t not in sluice(a, "topic", "list").stdout.split(), "deleted topic still listed")
    sluice(a, "topic", "delete", t, ok=False)
    return "topic commands, murmur2 keyed produce, even key-less spread, consume and /metrics"


if __name__ == "__main__":
    def extra(p):
        p.add_argument("--sluice", required=True)
        p.add_argument("--metrics", required=True)
    a = args(__doc__, extra)
    main(lambda: run(a))
