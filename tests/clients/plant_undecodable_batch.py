"""Plants a record batch that passes produce's checks (header, CRC32C) but whose records
cannot be decoded, as any client speaking the wire protocol could.

usage: plant_undecodable_batch.py --bootstrap HOST:PORT TOPIC PARTITION

Sends one Produce v3 request by hand over a socket (no client library builds such a batch)
and exits 0 if the broker acknowledged it.
"""

import argparse
import socket
import struct
import sys
import time


def crc32c(data: bytes) -> int:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def garbage_batch() -> bytes:
    now = int(time.time() * 1000)
    # One record claimed; its length varint never ends.
    records = b"\xff" * 12
    after_crc = struct.pack(">hiqqqhii", 0, 0, now, now, -1, -1, -1, 1) + records
    crc = crc32c(after_crc)
    body = struct.pack(">ibI", 0, 2, crc) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", 0, len(body)) + body


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("topic")
    ap.add_argument("partition", type=int)
    a = ap.parse_args()
    bootstrap, topic, partition = a.bootstrap, a.topic, a.partition
    host, port = bootstrap.rsplit(":", 1)
    batch = garbage_batch()
    req = (struct.pack(">hhi", 0, 3, 7) + string("planter")  # Produce v3, correlation 7
           + struct.pack(">hhi", -1, -1, 10_000)  # no transactional id, acks=all, timeout
           + struct.pack(">i", 1) + string(topic)
           + struct.pack(">i", 1) + struct.pack(">i", partition)
           + struct.pack(">i", len(batch)) + batch)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
        resp = b""
        while len(resp) < size:
            resp += s.recv(size - len(resp))
    # correlation id, topics [name, partitions [index, error_code, base_offset, ...]]
    at = 4 + 4
    (n,) = struct.unpack_from(">h", resp, at)
    at += 2 + n + 4
    index, error, base = struct.unpack_from(">ihq", resp, at)
    print(f"planted an undecodable batch in {topic}-{index} at offset {base} (error code {error})")
    sys.exit(0 if error == 0 else 1)


if __name__ == "__main__":
    main()
