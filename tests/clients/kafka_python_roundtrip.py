#!/usr/bin/env python3
"""kafka-python 3.x (pure Python, negotiates high protocol versions): admin + codecs round trip.

Admin: create_topics (incl. an unknown config key, which must be refused with INVALID_CONFIG),
describe_configs (what is reported as modified vs default), alter_configs through both
IncrementalAlterConfigs and the legacy AlterConfigs, delete_topics.
Data: per codec, produce to a 2-partition topic (acks=all), read back by assign +
seek_to_beginning and compare exactly; beginning_offsets / end_offsets / offsets_for_times.
"""

import random
import time

import kafka.codec
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource

from common import args, check, check_eq, fail, main, unique

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
CODEC_AVAILABLE = {
    "snappy": kafka.codec.has_snappy,
    "lz4": kafka.codec.has_lz4,
    "zstd": kafka.codec.has_zstd,
}
PARTITIONS = 2
COUNT = 600
INVALID_CONFIG = 40


def topic_configs(admin, topic, config_filter="all"):
    return admin.describe_configs([ConfigResource("TOPIC", topic)],
                                  config_filter=config_filter)["topic"][topic]


def admin_scenario(admin):
    topic = unique("kp-admin")
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1,
                                 "configs": {"retention.ms": "86400000"}}})
    check(topic in admin.list_topics(), f"{topic} missing from list_topics after create")

    bad = unique("kp-badcfg")
    res = admin.create_topics({bad: {"num_partitions": 1, "replication_factor": 1,
                                     "configs": {"no.such.config": "1"}}}, raise_errors=False)
    check_eq(res["topics"][0]["error_code"], INVALID_CONFIG, "create with unknown config key")
    check(bad not in admin.list_topics(), f"{bad} exists although its create was refused")

    cfg = topic_configs(admin, topic)
    check_eq(cfg.get("retention.ms", {}).get("value"), "86400000", "retention.ms after create")
    check_eq(cfg["retention.ms"]["config_source"], "DYNAMIC_TOPIC_CONFIG", "retention.ms source")
    check_eq(cfg.get("cleanup.policy", {}).get("value"), "delete", "default cleanup.policy")
    check_eq(cfg["cleanup.policy"]["config_source"], "DEFAULT_CONFIG", "cleanup.policy source")
    # The client's default filter keeps only keys the broker reports as set on the topic.
    check_eq(sorted(topic_configs(admin, topic, "modified")), ["retention.ms"], "modified keys")

    # IncrementalAlterConfigs (kafka-python picks it when the broker lists it).
    res = admin.alter_configs([ConfigResource("TOPIC", topic, configs={"retention.ms": "3600000"})],
                              incremental=True)
    check_eq(res, {"topic": {topic: "OK"}}, "incremental alter retention.ms")
    check_eq(topic_configs(admin, topic)["retention.ms"]["value"], "3600000", "retention.ms after alter")

    # Legacy AlterConfigs replaces the whole set; the client re-sends retention.ms itself.
    res = admin.alter_configs([ConfigResource("TOPIC", topic, configs={"segment.ms": "7200000"})],
                              incremental=False)
    check_eq(res, {"topic": {topic: "OK"}}, "legacy alter segment.ms")
    cfg = topic_configs(admin, topic)
    check_eq((cfg["retention.ms"]["value"], cfg["segment.ms"]["value"]), ("3600000", "7200000"),
             "retention.ms, segment.ms after legacy alter")

    res = admin.alter_configs([ConfigResource("TOPIC", topic, configs={"segment.ms": ("DELETE", None)})],
                              incremental=True)
    check_eq(res, {"topic": {topic: "OK"}}, "incremental delete segment.ms")
    cfg = topic_configs(admin, topic)
    check_eq((cfg["segment.ms"]["value"], cfg["segment.ms"]["config_source"]),
             ("604800000", "DEFAULT_CONFIG"), "segment.ms after delete")

    for configs in ({"retention.ms": "not-a-number"}, {"no.such.config": "1"}):
        res = admin.alter_configs([ConfigResource("TOPIC", topic, configs=configs)],
                                  incremental=True, raise_on_unknown=False)
        check("InvalidConfigurationError" in res["topic"][topic],
              f"alter {configs} should fail with INVALID_CONFIG, got {res}")
    check_eq(topic_configs(admin, topic)["retention.ms"]["value"], "3600000",
             "retention.ms after refused alters")
    return topic


def make_records(rnd, base_ts):
    records = []
    for i in range(COUNT):
        value = [b"", rnd.randbytes(40), f"value {i} ".encode() * (1 + i % 30)][i % 3]
        key = None if i % 5 == 1 else f"k{i}".encode()
        if i % 17 == 0 and key is not None:
            value = None  # kafka-python allows a null value only with a key
        records.append({
            "partition": i % PARTITIONS,
            "key": key,
            "value": value,
            "headers": [[], [("dup", b"1"), ("dup", b"2")], [("bin", rnd.randbytes(3))]][i % 3],
            "ts": base_ts + (i // 4) * 7,
        })
    return records


def codec_scenario(admin, bootstrap, codec, records):
    name = codec or "none"
    if codec in CODEC_AVAILABLE and not CODEC_AVAILABLE[codec]():
        fail(f"kafka-python cannot use {codec}: pip install -r tests/clients/requirements.txt")
    topic = unique(f"kp-{name}")
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec,
                             enable_idempotence=False, linger_ms=10)
    futures = [producer.send(topic, key=r["key"], value=r["value"], headers=r["headers"],
                             partition=r["partition"], timestamp_ms=r["ts"]) for r in records]
    producer.flush(timeout=60)
    stored = {}
    for i, f in enumerate(futures):
        md = f.get(timeout=30)
        stored[(md.partition, md.offset)] = i
    producer.close()
    check_eq(len(stored), len(records), f"[{name}] distinct (partition, offset) acknowledged")

    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    expected = {tp: sum(1 for r in records if r["partition"] == tp.partition) for tp in tps}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign(tps)
    consumer.seek_to_beginning()
    got = {tp: [] for tp in tps}
    deadline = time.time() + 60
    while any(len(got[tp]) < expected[tp] for tp in tps):
        check(time.time() < deadline, f"[{name}] consumed only {({tp.partition: len(v) for tp, v in got.items()})}")
        for tp, recs in consumer.poll(timeout_ms=500).items():
            got[tp].extend(recs)

    for tp in tps:
        check_eq([r.offset for r in got[tp]], list(range(expected[tp])), f"[{name}] offsets of {tp}")
        for rec in got[tp]:
            where = f"[{name}] {topic}[{tp.partition}]@{rec.offset}"
            r = records[stored[(tp.partition, rec.offset)]]
            check_eq(rec.key, r["key"], f"{where} key")
            check_eq(rec.value, r["value"], f"{where} value")
            check_eq(list(rec.headers), r["headers"], f"{where} headers")
            check_eq((rec.timestamp_type, rec.timestamp), (0, r["ts"]), f"{where} (timestamp type, timestamp)")

    check_eq(consumer.beginning_offsets(tps, timeout_ms=10000), {tp: 0 for tp in tps}, f"[{name}] beginning_offsets")
    check_eq(consumer.end_offsets(tps, timeout_ms=10000), expected, f"[{name}] end_offsets")
    for tp in tps:
        ts = [records[stored[(tp.partition, o)]]["ts"] for o in range(expected[tp])]
        for t in [ts[0] - 5000, ts[0], ts[len(ts) // 3], ts[len(ts) // 3] + 1, ts[-1], ts[-1] + 1]:
            want = next((o for o, x in enumerate(ts) if x >= t), None)
            res = consumer.offsets_for_times({tp: t}, timeout_ms=10000)[tp]
            got_off = None if res is None else (res.offset, res.timestamp)
            check_eq(got_off, None if want is None else (want, ts[want]), f"[{name}] offsets_for_times {tp} t={t}")
    consumer.close()
    return topic


def run():
    a = args(__doc__)
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    topics = [admin_scenario(admin)]
    records = make_records(random.Random(7), int(time.time() * 1000) - 600_000)
    for codec in CODECS:
        topics.append(codec_scenario(admin, a.bootstrap, codec, records))
    admin.delete_topics(topics)
    deadline = time.time() + 10
    while set(topics) & set(admin.list_topics()):
        check(time.time() < deadline, f"deleted topics still listed: {set(topics) & set(admin.list_topics())}")
        time.sleep(0.2)
    admin.close()
    return f"admin/config checks passed; {COUNT} records x {len(CODECS)} codecs round-tripped"


if __name__ == "__main__":
    main(run)
