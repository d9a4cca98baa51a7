#!/usr/bin/env python3
"""Hostile and odd bytes on raw sockets must cost the broker at most that one connection.

Each step opens its own connection: random bytes, absurd/negative/zero length prefixes, an unknown
API key, a known API key with a garbage body, a frame trickled in byte by byte, two pipelined
frames, a frame cut off mid-way, and ApiVersions at version 99, which Kafka answers with a v0
ApiVersions response carrying UNSUPPORTED_VERSION (35) and the broker's API list so that the
client can retry with a version both sides know. Between steps a confluent-kafka producer on its
own connection must keep getting records acknowledged, and the broker (--pid) must stay alive.
"""

import os
import random
import socket
import struct
import time

from confluent_kafka import Consumer, Producer

from common import args, check, check_eq, fail, main, unique
from confluent_codecs import consume_all

API_VERSIONS = 18
UNSUPPORTED_VERSION = 35
REQUIRED_APIS = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions",
                 19: "CreateTopics", 20: "DeleteTopics", 32: "DescribeConfigs"}


def frame(body):
    return struct.pack(">i", len(body)) + body


def header_v1(api_key, version, correlation_id, client_id=b"garbage-test"):
    return struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id


def api_versions_v0(correlation_id):
    return frame(header_v1(API_VERSIONS, 0, correlation_id))


def api_versions_v99(correlation_id):
    # Header v2 (flexible: an empty tagged-field section) and a v3-style body; a broker that
    # does not know the version must not depend on understanding either.
    body = b"\x00" + b"\x07garbage" + b"\x041.0" + b"\x00"
    return frame(header_v1(API_VERSIONS, 99, correlation_id) + body)


def connect(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n, what):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            fail(f"{what}: connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(s, what):
    (size,) = struct.unpack(">i", recv_exact(s, 4, what))
    check(0 < size < 1 << 20, f"{what}: response frame size {size}")
    return recv_exact(s, size, what)


def parse_api_versions_v0(body, correlation_id, what):
    """A v0 ApiVersions response: correlation id, error code, [api_key, min, max]; nothing more."""
    check(len(body) >= 10, f"{what}: response of {len(body)} bytes is too short")
    corr, error, n = struct.unpack(">ihi", body[:10])
    check_eq(corr, correlation_id, f"{what}: correlation id")
    check(n >= 0 and len(body) == 10 + 6 * n,
          f"{what}: {len(body)} bytes do not hold exactly a v0 response with {n} APIs "
          f"(expected {10 + 6 * max(n, 0)}): {body[:64].hex()}")
    apis = {k: (lo, hi) for k, lo, hi in struct.iter_unpack(">hhh", body[10:])}
    return error, apis


def send_quietly(s, data):
    try:
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass  # the broker may hang up before it has read everything


def closed_by_broker(s, within_s=5.0):
    """True if the broker closes (or resets) the connection within the time limit."""
    s.settimeout(within_s)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def run():
    a = args(__doc__, lambda p: p.add_argument("--pid", type=int, help="broker pid that must stay alive"))
    rnd = random.Random(99)
    topic = unique("garbage-canary")
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "enable.idempotence": False,
                         "linger.ms": 0})
    acked = []

    def still_serving(after):
        if a.pid is not None:
            try:
                os.kill(a.pid, 0)
            except ProcessLookupError:
                fail(f"broker process {a.pid} died after: {after}")
        value = f"after {after}".encode()
        errors = []
        producer.produce(topic, value=value, on_delivery=lambda e, m: errors.append(e))
        check_eq(producer.flush(30), 0, f"canary record undelivered after: {after}")
        check(errors == [None], f"canary record failed after {after}: {errors}")
        acked.append(value)
        with connect(a.bootstrap) as s:
            s.sendall(api_versions_v0(7))
            error, apis = parse_api_versions_v0(read_frame(s, "probe"), 7, f"ApiVersions probe after {after}")
            check_eq(error, 0, f"ApiVersions probe error after {after}")

    still_serving("start")

    for i in range(5):
        with connect(a.bootstrap) as s:
            send_quietly(s, rnd.randbytes(rnd.choice([3, 50, 1000, 70_000])))
            closed_by_broker(s, 1.0)  # either outcome is fine; the broker just has to survive
        still_serving(f"random bytes #{i}")

    must_close = {
        "length prefix 0x7fffffff": b"\x7f\xff\xff\xff" + rnd.randbytes(100),
        "negative length prefix": b"\xff\xff\xff\xff" + rnd.randbytes(100),
        "zero length prefix": b"\x00\x00\x00\x00" + rnd.randbytes(8),
        "unknown API key 0x7777": frame(header_v1(0x7777, 0, 1) + rnd.randbytes(40)),
        "frame too short for a request header": frame(b"\x00\x12"),
    }
    for what, data in must_close.items():
        with connect(a.bootstrap) as s:
            send_quietly(s, data)
            check(closed_by_broker(s), f"{what}: broker kept the connection open for 5 s")
        still_serving(what)

    # A known API with a garbage body: closing the connection and answering with an error are
    # both acceptable; only survival is checked.
    for api_key, version in [(3, 12), (0, 9), (1, 12), (19, 7)]:
        with connect(a.bootstrap) as s:
            send_quietly(s, frame(header_v1(api_key, version, 4242) + rnd.randbytes(60)))
            closed_by_broker(s, 2.0)
        still_serving(f"api {api_key} v{version} with a garbage body")

    with connect(a.bootstrap) as s:
        for byte in api_versions_v0(11):
            s.sendall(bytes([byte]))
            time.sleep(0.01)
        error, _ = parse_api_versions_v0(read_frame(s, "trickled"), 11, "ApiVersions sent one byte at a time")
        check_eq(error, 0, "error code of the trickled ApiVersions")
    still_serving("a request trickled one byte at a time")

    with connect(a.bootstrap) as s:
        s.sendall(api_versions_v0(21) + api_versions_v0(22))
        for corr in (21, 22):
            error, _ = parse_api_versions_v0(read_frame(s, "pipelined"), corr, f"pipelined ApiVersions {corr}")
            check_eq(error, 0, f"error code of pipelined ApiVersions {corr}")
    still_serving("two pipelined requests")

    with connect(a.bootstrap) as s:
        s.sendall(api_versions_v0(31)[:7])
    still_serving("a frame cut off by the client")

    with connect(a.bootstrap) as s:
        s.sendall(api_versions_v99(42))
        error, apis = parse_api_versions_v0(read_frame(s, "v99"), 42, "ApiVersions v99 (v0-format answer)")
        check_eq(error, UNSUPPORTED_VERSION, "error code of ApiVersions v99")
        missing = {k: n for k, n in REQUIRED_APIS.items() if k not in apis}
        check(not missing, f"ApiVersions v99 answer lacks {missing}; it lists {sorted(apis)}")
        check(apis[API_VERSIONS][0] == 0 and apis[API_VERSIONS][1] >= 3,
              f"ApiVersions range in the v99 answer: {apis[API_VERSIONS]}")
        # The client retries on the same connection with a version from that list.
        s.sendall(api_versions_v0(43))
        error, apis0 = parse_api_versions_v0(read_frame(s, "v0 after v99"), 43, "ApiVersions v0 after v99")
        check_eq(error, 0, "error code of ApiVersions v0 after v99")
        check_eq(apis0, apis, "API list of v0 answer vs v99 answer")
    still_serving("ApiVersions v99")

    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "sluice-e2e-unused",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "error"})
    got = [m.value() for m in consume_all(consumer, topic, [0])[0]]
    consumer.close()
    check_eq(got, acked, "canary records stored")
    return f"{len(acked)} canary records acknowledged and stored through every hostile step"


if __name__ == "__main__":
    main(run)
