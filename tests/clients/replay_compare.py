"""Reprocess the click example's aggregation from the start and compare with the live run.

Reads every final count in ad-counts (the live run's), then rewinds the aggregation in one
step, as a user would with `sluice plugin reset click-partials --to earliest --downstream`:
click-partials to the earliest offset of clicks-valid and click-merge to the end of
clicks-partials (so it sees only what the replay emits), both with their state emptied. Waits
for the replay's finals and checks that they are the live run's exactly: same ads, windows
and counts, each once. On a mismatch, prints what went to the late topics.

usage: replay_compare.py BOOTSTRAP ADMIN SLUICE_BINARY
"""

import collections
import json
import subprocess
import sys
import time

from confluent_kafka import Consumer, TopicPartition

bootstrap, admin, sluice = sys.argv[1:4]


def finals(start=0):
    """(offset end, [(ad, window_start, count)]) of ad-counts from offset `start`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "replay-compare",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition("ad-counts", 0), timeout=10)
        out = []
        if hi > start:
            c.assign([TopicPartition("ad-counts", 0, start)])
            done = False
            while not done:
                for m in c.consume(1000, 1.0):
                    if m.error():
                        # The partition's end: control records may follow the last final.
                        done = True
                        continue
                    v = json.loads(m.value())
                    out.append((v["key"], v["window_start"], v["count"]))
        return hi, out
    finally:
        c.close()


def count(topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "replay-compare"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return hi - lo
    finally:
        c.close()


end, live = finals()
if not live:
    sys.exit("replay_compare: no final counts in ad-counts")
print(f"live run: {len(live)} final counts in ad-counts (offsets below {end})", flush=True)
late_before = {t: count(t) for t in ("clicks-late", "ad-counts-late")}
subprocess.run([sluice, "plugin", "reset", "click-partials", "--to", "earliest", "--downstream",
                "--admin", admin], check=True)
t0 = time.time()
replay = []
while time.time() - t0 < 180:
    _, replay = finals(end)
    if len(replay) >= len(live):
        time.sleep(3)  # a duplicate would show up now or never
        _, replay = finals(end)
        break
    time.sleep(1)
print(f"replay: {len(replay)} final counts in {time.time() - t0:.1f} s", flush=True)
a, b = collections.Counter(live), collections.Counter(replay)
if a != b:
    only_live = sorted((a - b).elements())[:10]
    only_replay = sorted((b - a).elements())[:10]
    late = {t: count(t) - n for t, n in late_before.items()}
    sys.exit(f"replay_compare: FAIL: only live: {only_live}; only in the replay: {only_replay}; "
             f"records (or control records) added to the late topics during the replay: {late}")
dups = [k for k, n in b.items() if n > 1]
if dups:
    sys.exit(f"replay_compare: FAIL: doubled in both: {dups[:10]}")
print(f"OK: the replay's {len(replay)} final counts equal the live run's")
