"""Helpers shared by the Python client scenarios: argument parsing and loud failures."""

import argparse
import os
import sys
import time


class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


def check(cond, msg):
    if not cond:
        fail(msg)


def check_eq(actual, expected, what):
    if actual != expected:
        fail(f"{what}: expected {expected!r}, got {actual!r}")


def args(description, extra=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True, help="broker address HOST:PORT")
    if extra:
        extra(p)
    return p.parse_args()


def unique(prefix):
    # Scripts may be re-run against a long-lived broker: never reuse a topic name.
    return f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10**9}"


def metric(admin, name):
    """The sum of a metric's samples on the broker's /metrics: `name` alone covers every
    label set, `name{labels}` just that one."""
    import urllib.request

    body = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def trickle(producer, consumer, topic, seconds):
    """Produces one record at a time for `seconds` (each flushed) while `consumer`, subscribed
    to `topic`, reads; then reads what is left. Returns (sent, got): records kept flowing on
    the same connections, e.g. across SASL session lifetimes."""
    sent, got = [], []
    deadline = time.time() + seconds
    i = 0
    while time.time() < deadline:
        v = f"v{i}".encode()
        producer.produce(topic, v)
        sent.append(v)
        i += 1
        check_eq(producer.flush(10), 0, f"record {i} not delivered")
        m = consumer.poll(0.1)
        if m is not None and m.error() is None:
            got.append(m.value())
        time.sleep(0.05)
    while len(got) < len(sent):
        m = consumer.poll(5)
        if m is None:
            break
        if m.error() is None:
            got.append(m.value())
    consumer.close()
    return sent, got


def login_refused(conf, what):
    """A confluent-kafka producer with `conf` must be told its login failed (an
    authentication error within 15 s), not hang or get in."""
    from confluent_kafka import KafkaError, Producer

    errors = []
    p = Producer({**conf, "error_cb": errors.append})
    p.produce(unique("never"), b"x")
    deadline = time.time() + 15
    refused = lambda: any(e.code() == KafkaError._AUTHENTICATION for e in errors)  # noqa: E731
    while time.time() < deadline and not refused():
        p.poll(0.2)
    check(refused(), f"{what}: no authentication error, got {errors}")
    p.purge()



def varied_value(tag, i):
    """A record value of 2-8 KiB, incompressible-looking and self-describing: large
    uncompressed batches of them reach the fetch path that sends records from their files."""
    import hashlib

    size = 2048 + (i * 977) % 6144
    seed = hashlib.sha256(f"{tag}-{i}".encode()).digest()
    return f"{tag}-{i}|".encode() + (seed * (size // len(seed) + 1))[:size]


def confluent_read_all(conf, topic, parts, want, timeout=60):
    """confluent-kafka reads `topic`'s `parts` partitions from offset 0 until `want` records
    came (or `timeout` s passed), then 1.5 s more so anything beyond `want` shows too."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"group.id": unique("read"), "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **conf})
    c.assign([TopicPartition(topic, p, 0) for p in range(parts)])
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for m in c.consume(1000, 0.5):
            if m.error():
                fail(f"confluent-kafka: {m.error()}")
            got.append(m.value())
    end = time.time() + 1.5
    while time.time() < end:
        for m in c.consume(1000, 0.2):
            if not m.error():
                got.append(m.value())
    c.close()
    return got


def confluent_values(bootstrap, topic, want, wait):
    """The values (text) in partition 0 of `topic` once `want` are there (or `wait` s passed),
    and any beyond (see confluent_read_all)."""
    return [v.decode() for v in confluent_read_all({"bootstrap.servers": bootstrap}, topic, 1, want, wait)]


def kafka_python_read_all(kw, topic, parts, want, timeout=60):
    """kafka-python (KafkaConsumer settings `kw`) reads `topic`'s `parts` partitions from the
    beginning until `want` records came or `timeout` s passed."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(enable_auto_commit=False, consumer_timeout_ms=3000, **kw)
    c.assign([TopicPartition(topic, p) for p in range(parts)])
    c.seek_to_beginning()
    got = []
    deadline = time.time() + timeout
    while len(got) < want and time.time() < deadline:
        for recs in c.poll(timeout_ms=500, max_records=1000).values():
            got.extend(r.value for r in recs)
    c.close()
    return got

def main(body):
    """Run body(); turn a Failure (or any crash) into a clear message and exit status 1."""
    name = os.path.basename(sys.argv[0])
    try:
        summary = body()
    except Failure as e:
        print(f"FAIL {name}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        import traceback

        traceback.print_exc()
        print(f"FAIL {name}: unexpected exception (see traceback above)", file=sys.stderr)
        sys.exit(1)
    print(f"OK {name}: {summary}")
