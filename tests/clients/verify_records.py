#!/usr/bin/env python3
"""Read a whole topic with confluent-kafka and compare it with an expectation written by
another client (kafkajs cannot consume without consumer groups, so it hands its records here).

--expect FILE is JSON: a list of {"partition", "offset", "key", "value", "headers", "timestamp"}
where key/value/header values are base64 strings or null and headers is a list of [name, value].
The topic must hold exactly these records: same offsets, nothing more.
"""

import base64
import json

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer

from common import args, check, check_eq, main
from confluent_codecs import consume_all


def b64(data):
    return None if data is None else base64.b64encode(data).decode()


def run():
    a = args(__doc__, lambda p: (p.add_argument("--topic", required=True),
                                 p.add_argument("--expect", required=True)))
    with open(a.expect) as f:
        expected = {(r["partition"], r["offset"]): r for r in json.load(f)}
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "sluice-e2e-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "error"})
    md = consumer.list_topics(a.topic, timeout=10).topics[a.topic]
    check(md.error is None, f"metadata for {a.topic}: {md.error}")
    got = consume_all(consumer, a.topic, sorted(md.partitions))
    consumer.close()
    seen = 0
    for p, msgs in got.items():
        for m in msgs:
            where = f"{a.topic}[{p}]@{m.offset()}"
            r = expected.get((p, m.offset()))
            check(r is not None, f"{where}: record the producer never wrote (key={m.key()!r})")
            check_eq(b64(m.key()), r["key"], f"{where} key (base64)")
            check_eq(b64(m.value()), r["value"], f"{where} value (base64)")
            check_eq([[k, b64(v)] for k, v in (m.headers() or [])], r["headers"], f"{where} headers")
            check_eq(m.timestamp(), (TIMESTAMP_CREATE_TIME, r["timestamp"]), f"{where} timestamp")
            seen += 1
    check_eq(seen, len(expected), f"records in {a.topic}")
    return f"{seen} records in {a.topic} match the expectation"


if __name__ == "__main__":
    main(run)
