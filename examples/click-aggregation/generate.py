#!/usr/bin/env python3
"""Produce ad clicks to a Kafka topic (sluice or Kafka) and write the ground truth.

Each click is a JSON value {"ad":"ad7","user":"u123","ts":1700000000123,"event":"click"}
with the record timestamp set to ts, keyed by the ad with a salt: "ad7#3". Salting spreads
one ad's clicks over several keys, hence partitions; the aggregation strips the salt again.

- Popularity is skewed: ad0 takes --hot-share of the clicks, the other ads share the rest
  Zipf-like (--zipf 1.0; 0 makes them uniform).
- Event times are deterministic: click i has ts = start + i * 1000 // rate, start being the
  next whole second of the wall clock shifted by --offset-ms (negative: a backlog behind
  the clock). Clicks go out as the wall clock reaches their ts, --speed times faster than
  real time (so --rate * --speed is the pace), in increasing event time: none is late
  except the --late ones, sent 5 s behind the click just before them on their partition.
- --partitioner NAME lets librdkafka's partitioner of that name place the salted keys.
- --salts S keys click j of an ad "adN#S" with S = j mod S, and sends it to the partition S
  steps on from where the bare key "adN" hashes (Kafka's murmur2, computed here), so the S
  salts of an ad land on S different partitions. Letting the default partitioner hash the
  salted keys would leave it to chance: ad0#0..ad0#5 cover only 4 of 6 partitions.
  --blind-salts does exactly that, for comparison.
- The producer is idempotent with acks=all: it rides through a broker restart without
  losing or doubling a click. It exits non-zero if any click is not acknowledged.

Writes (optional) the ground truth (--truth: clicks per ad and window, windows of the
window_ms in pipeline/click-partials.toml) and the load per partition of the topic and of
the hot ad, from the partition each delivery report names (--stats; plot.py draws it).

    pip install confluent-kafka
    python3 generate.py --bootstrap 127.0.0.1:9092 --clicks 200000 --truth out/truth.json
"""

import argparse
import bisect
import json
import os
import random
import sys
import time
import tomllib

from confluent_kafka import KafkaException, Producer

HERE = os.path.dirname(os.path.abspath(__file__))


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records (the Java client's murmur2)."""
    m, h = 0x5BD1E995, 0x9747B28C ^ len(key)
    n4 = len(key) & ~3
    for i in range(0, n4, 4):
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = len(key) & 3
    if rest >= 3:
        h ^= key[n4 + 2] << 16
    if rest >= 2:
        h ^= key[n4 + 1] << 8
    if rest >= 1:
        h ^= key[n4]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def salted_partition(ad: str, salt: int, partitions: int) -> int:
    """Where a salted key goes: salt S moves the ad S partitions on from where its bare key
    hashes, so salts 0..S-1 land on S different partitions. (Hashing the salted key instead
    leaves it to chance: ad0#0..ad0#5 hash to only 4 of 6 partitions.)"""
    return (murmur2_partition(ad.encode(), partitions) + salt) % partitions


def window_ms_from_manifest() -> int:
    with open(os.path.join(HERE, "pipeline", "click-partials.toml"), "rb") as f:
        return int(tomllib.load(f)["config"]["window_ms"])


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("SLUICE_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--topic", default="clicks")
    ap.add_argument("--clicks", type=int, default=200_000, help="valid clicks to produce")
    ap.add_argument("--ads", type=int, default=100)
    ap.add_argument("--hot-share", type=float, default=0.3, help="share of the clicks on ad0")
    ap.add_argument("--zipf", type=float, default=1.0,
                    help="popularity exponent of the other ads (0: uniform)")
    ap.add_argument("--salts", type=int, default=6, help="salts per ad")
    ap.add_argument("--no-salt", action="store_true", help="key clicks by the bare ad")
    ap.add_argument("--blind-salts", action="store_true",
                    help="salts 0..S-1 whatever partition they hash to")
    ap.add_argument("--rate", type=float, default=20_000,
                    help="clicks per second of event time, and the most produced per second")
    ap.add_argument("--invalid", type=int, default=0,
                    help="malformed records to mix in (dead-lettered by click-validate)")
    ap.add_argument("--partitioner", default=None,
                    help="let this librdkafka partitioner place the salted keys (e.g. "
                         "consistent_random, librdkafka's default; murmur2_random, Kafka's) "
                         "instead of sending salt S to its own partition")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="event time runs this many times faster than the wall clock")
    ap.add_argument("--offset-ms", type=int, default=0,
                    help="event time starts this far ahead of the wall clock (negative: behind)")
    ap.add_argument("--late", type=int, default=0,
                    help="also send this many clicks 5 s behind their partition (they must "
                         "go to the late topic, not into any count)")
    ap.add_argument("--start-ms", type=int, default=None,
                    help="event time of the first click (default: the next whole second); "
                         "clicks whose time has come are produced at full speed")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--window-ms", type=int, default=None,
                    help="window length of the ground truth (default: pipeline/click-partials.toml)")
    ap.add_argument("--truth", help="write the ground truth to this JSON file")
    ap.add_argument("--stats", help="write the load per partition to this JSON file")
    a = ap.parse_args()
    if a.clicks < 1 or a.ads < 1 or a.salts < 1 or a.rate <= 0 or not 0 <= a.hot_share <= 1:
        ap.error("need --clicks, --ads, --salts, --rate > 0 and 0 <= --hot-share <= 1")
    if a.speed <= 0 or a.late < 0:
        ap.error("need --speed > 0 and --late >= 0")
    return a


# Malformed clicks for the dead-letter path: (value, what is wrong).
def invalid_value(n: int, ad: str, ts: int) -> bytes:
    kinds = [
        f'{{"ad":"{ad}","user":"u1","ts":"{ts}","event":"click"}}',  # ts is a string
        f'{{"ad":"{ad}","ts":{ts},"event":"click"}}',  # no user
        f'{{"ad":"{ad}","user":"u1","ts":{ts},"event":"view"}}',  # not a click
        f'{{"ad":"{ad}","user":"u1","ts":{ts}',  # truncated JSON
    ]
    return kinds[n % len(kinds)].encode()


def bar(share: float, width: int = 40) -> str:
    return "#" * round(share * width)


def main():
    a = parse_args()
    window_ms = a.window_ms or window_ms_from_manifest()
    rng = random.Random(a.seed)
    producer = Producer({
        "bootstrap.servers": a.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        # Kafka's (Java) default partitioner unless told otherwise; librdkafka's default
        # (consistent_random) is CRC32-based.
        "partitioner": a.partitioner or "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": 10,
        "batch.num.messages": 5000,
        "queue.buffering.max.messages": 1_000_000,
        # Ride through a broker restart: reconnect fast, retry for up to 5 minutes.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.max.ms": 500,
        "message.timeout.ms": 300_000,
    })
    try:
        md = producer.list_topics(a.topic, timeout=15)
    except KafkaException as e:
        sys.exit(f"generate.py: cannot reach {a.bootstrap}: {e}")
    t = md.topics.get(a.topic)
    if t is None or t.error is not None or not t.partitions:
        sys.exit(f"generate.py: topic {a.topic} not found (create it: sluice topic create {a.topic} --partitions 6)")
    partitions = len(t.partitions)

    ads = [f"ad{i}" for i in range(a.ads)]
    if a.no_salt:
        keys = {ad: [ad] for ad in ads}
    else:
        keys = {ad: [f"{ad}#{s}" for s in range(a.salts)] for ad in ads}
    keys_b = {ad: [k.encode() for k in ks] for ad, ks in keys.items()}
    by_client = a.no_salt or a.blind_salts or a.partitioner is not None
    if a.partitioner is not None and a.partitioner != "murmur2_random":
        predicted = {}  # whatever the client's partitioner decides
    elif a.no_salt or a.blind_salts or a.partitioner is not None:
        # Kafka's default partitioner (murmur2 of the key).
        predicted = {k: murmur2_partition(k, partitions) for ks in keys_b.values() for k in ks}
    else:
        predicted = {
            f"{ad}#{s}".encode(): salted_partition(ad, s, partitions)
            for ad in ads for s in range(a.salts)
        }
    hot = ads[0]
    hot_keys = set(keys_b[hot])
    # Cumulative weights of ad1.. (Zipf-like: rank r weighs 1 / r^zipf).
    cold = ads[1:]
    cum, total = [], 0.0
    for r in range(1, len(cold) + 1):
        total += 1.0 / r ** a.zipf
        cum.append(total)
    hot_share = a.hot_share if cold else 1.0

    per_partition = [0] * partitions
    hot_per_partition = [0] * partitions
    failed = []
    misplaced = [0]
    acked = [0]

    def delivered(err, msg):
        if err is not None:
            failed.append(str(err))
            return
        acked[0] += 1
        p = msg.partition()
        per_partition[p] += 1
        k = msg.key()
        if k in hot_keys:
            hot_per_partition[p] += 1
        if predicted.get(k, p) != p:
            misplaced[0] += 1

    invalid_acked = [0]

    def delivered_invalid(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            invalid_acked[0] += 1

    def produce(key, value, ts, cb):
        while True:
            try:
                if by_client:
                    producer.produce(a.topic, value=value, key=key, timestamp=ts, on_delivery=cb)
                else:
                    producer.produce(a.topic, value=value, key=key, timestamp=ts,
                                     partition=predicted[key], on_delivery=cb)
                return
            except BufferError:
                producer.poll(0.05)

    start = a.start_ms
    if start is None:
        start = ((int(time.time() * 1000) + a.offset_ms) // window_ms + 1) * window_ms
    # Click i goes out when the wall clock reaches wall0 + (ts - start) / speed.
    wall0 = (start - a.offset_ms) / 1000
    late_every = a.clicks // (2 * a.late) if a.late else 0
    late_sent = 0
    late_acked = [0]

    def delivered_late(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            late_acked[0] += 1

    truth = {}  # ad -> {window_start: count}
    next_salt = dict.fromkeys(ads, 0)
    invalid_every = a.clicks // a.invalid if a.invalid else 0
    invalid_sent = 0
    t0 = time.time()
    last_report = t0
    print(f"producing {a.clicks} clicks for {a.ads} ads ({hot} takes {hot_share:.0%}) to "
          f"{a.topic} ({partitions} partitions), "
          + ("unsalted" if a.no_salt else f"{a.salts} salts per ad" + (" (blind)" if a.blind_salts else ""))
          + f", {a.rate:g} clicks/s of event time from {start}", flush=True)
    for i in range(a.clicks):
        ts = start + int(i * 1000 // a.rate)
        if i % 64 == 0:
            ahead = wall0 + (ts - start) / 1000 / a.speed - time.time()
            if ahead > 0:
                time.sleep(ahead)
            producer.poll(0)
            now = time.time()
            if now - last_report >= 2:
                last_report = now
                print(f"  {i} produced, {acked[0]} acknowledged, {i / (now - t0):.0f}/s", flush=True)
        ad = hot if (not cold or rng.random() < hot_share) else cold[bisect.bisect_left(cum, rng.random() * total)]
        ks = keys_b[ad]
        j = next_salt[ad]
        next_salt[ad] = j + 1
        key = ks[j % len(ks)]
        user = rng.randrange(1, a.users + 1)
        value = f'{{"ad":"{ad}","user":"u{user}","ts":{ts},"event":"click"}}'.encode()
        produce(key, value, ts, delivered)
        w = truth.setdefault(ad, {})
        ws = ts - ts % window_ms
        w[ws] = w.get(ws, 0) + 1
        if late_every and i >= a.clicks // 2 and i % late_every == 0 and late_sent < a.late:
            # Same key, same producer, so the same partition, right after a click 5 s newer:
            # late in its own partition's order whatever the pipeline's speed.
            lv = f'{{"ad":"{ad}","user":"u{user}","ts":{ts - 5000},"event":"click"}}'.encode()
            produce(key, lv, ts - 5000, delivered_late)
            late_sent += 1
        if invalid_every and i % invalid_every == invalid_every // 2 and invalid_sent < a.invalid:
            produce(key, invalid_value(invalid_sent, ad, ts), ts, delivered_invalid)
            invalid_sent += 1
    end = start + int((a.clicks - 1) * 1000 // a.rate) + 1
    produced_s = time.time() - t0
    deadline = time.time() + 300
    left = producer.flush(10)
    while left and time.time() < deadline:
        print(f"  waiting for {left} acknowledgements", flush=True)
        left = producer.flush(10)
    elapsed = time.time() - t0

    n = acked[0]
    hot_n = sum(hot_per_partition)
    hot_max = max(hot_per_partition) if hot_n else 0
    print(f"acknowledged {n} of {a.clicks} clicks and {invalid_acked[0]} of {invalid_sent} invalid "
          f"records in {elapsed:.1f} s ({a.clicks / produced_s:.0f} clicks/s produced)"
          + (f"; {len(failed)} FAILED, first: {failed[0]}" if failed else "")
          + (f"; {left} never acknowledged" if left else ""))
    label = "unsalted" if a.no_salt else f"{a.salts} salts"
    print(f"clicks per partition of {a.topic} ({label}):")
    for p, c in enumerate(per_partition):
        share = c / max(1, n)
        print(f"  p{p}  {c:7d}  {share:6.1%}  {bar(share)}")
    print(f"{hot}'s clicks per partition ({label}; keys {', '.join(keys[hot])}):")
    for p, c in enumerate(hot_per_partition):
        share = c / max(1, hot_n)
        print(f"  p{p}  {c:7d}  {share:6.1%}  {bar(share)}")
    print(f"the busiest partition has {hot_max / max(1, hot_n):.1%} of {hot}'s {hot_n} clicks "
          f"(fair share {1 / partitions:.1%})")
    if misplaced[0]:
        print(f"warning: {misplaced[0]} clicks landed on another partition than murmur2 predicts "
              "(is the topic's partition count changing?)")

    if a.stats:
        write_json(a.stats, {
            "topic": a.topic,
            "partitions": partitions,
            "salted": not a.no_salt,
            "salts": 1 if a.no_salt else a.salts,
            "blind_salts": a.blind_salts,
            "clicks": n,
            "per_partition": per_partition,
            "hot_ad": hot,
            "hot_keys": keys[hot],
            "hot_clicks": hot_n,
            "hot_per_partition": hot_per_partition,
            "hot_max_share": hot_max / max(1, hot_n),
            "produce_seconds": round(produced_s, 3),
        })
    if late_sent:
        print(f"acknowledged {late_acked[0]} of {late_sent} late clicks (5 s behind their partition)")
    ok = (not failed and not left and n == a.clicks and invalid_acked[0] == invalid_sent
          and late_acked[0] == late_sent)
    if a.truth and not ok:
        print("not writing the ground truth: some records were not acknowledged", file=sys.stderr)
    elif a.truth:
        write_json(a.truth, {
            "topic": a.topic,
            "window_ms": window_ms,
            "start_ms": start,
            "end_ms": end,
            "clicks": a.clicks,
            "invalid": invalid_sent,
            "late": late_sent,
            "ads": a.ads,
            "windows": sum(len(w) for w in truth.values()),
            "counts": {ad: {str(ws): c for ws, c in sorted(w.items())} for ad, w in truth.items()},
        })
    sys.exit(0 if ok else 1)


def write_json(path, obj):
    """Atomically: a reader waiting for the file never sees half of it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
