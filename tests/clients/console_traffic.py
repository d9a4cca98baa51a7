"""Traffic for the web console test (tests/console.rs): a consumer group that read part of
--output and committed, so it lags, and clicks flowing into --input (every tenth an event the
pipeline has no route for, so it is dead-lettered) for --seconds or until killed.

Prints "READY" once the group has committed and the first dead letters are due.
"""

import json
import time

from confluent_kafka import Consumer, Producer

from common import args, check, main


def extra(p):
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--seconds", type=float, default=600)


a = args(__doc__, extra)


def click(i):
    event = "view" if i % 10 == 9 else "click"
    return json.dumps({"ad": f"ad{i % 7}", "user": f"u{i}", "ts": int(time.time() * 1000), "event": event})


def produce(p, first, n):
    for i in range(first, first + n):
        p.produce(a.input, key=f"ad{i % 7}", value=click(i))
    p.flush(10)


def body():
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5})
    produce(p, 0, 400)
    # The group reads some of what the pipeline wrote, commits and leaves: it lags after that.
    c = Consumer({
        "bootstrap.servers": a.bootstrap, "group.id": a.group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    c.subscribe([a.output])
    got, deadline = 0, time.time() + 60
    while got < 50 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    check(got >= 50, f"the group read only {got} records of {a.output}")
    c.commit(asynchronous=False)
    c.close()
    print("READY", flush=True)
    i, end = 400, time.time() + a.seconds
    while time.time() < end:
        produce(p, i, 50)
        i += 50
        time.sleep(0.1)
    return f"{i} clicks produced"


main(body)
