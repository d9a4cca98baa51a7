#!/usr/bin/env python3
"""Compare the final counts in ad-counts with the generator's ground truth, exactly.

Follows ad-counts from the beginning (key = ad, value
{"key":"ad7","window_start":...,"window_end":...,"count":17}). Once the ground truth file
exists (it may be started before the generator, to time each window live), reads until
every window of the truth has its final count, or --timeout seconds pass, then reports:

- missing windows (an ad and window of the truth with no final count),
- wrong counts,
- duplicate finals (the same ad and window emitted twice, even with the same count),
- unexpected windows (a final count for an ad and window the truth has none for),
- malformed records,

and checks the dead-letter topics: clicks-invalid holds exactly the run's malformed
records, clicks-late exactly the clicks sent late (--late). Only windows of this run (the truth's time range)
are compared: earlier runs' results in the same topics are left aside. Exits 1 on any
difference.

With the checker started before the generator, it also reports the latency of each window:
when its last final count arrived here, minus window_end (the pipeline waits lateness_ms
past window_end by design; the last windows close only after idle_timeout_ms without input).

    python3 check.py --bootstrap 127.0.0.1:9092 --truth out/truth.json
"""

import argparse
import json
import os
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default=os.environ.get("SLUICE_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--truth", required=True, help="the generator's ground truth (waited for)")
    ap.add_argument("--topic", default="ad-counts")
    ap.add_argument("--invalid-topic", default="clicks-invalid")
    ap.add_argument("--late-topic", default="clicks-late")
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds to wait for the results once the truth is there")
    ap.add_argument("--truth-timeout", type=float, default=3600,
                    help="seconds to wait for the truth file to appear")
    ap.add_argument("--report", help="write the figures (latencies, counts) to this JSON file")
    return ap.parse_args()


def consumer(bootstrap):
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"click-check-{os.getpid()}",  # never committed: assign() below
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "reconnect.backoff.max.ms": 500,
    })


def assign_all(c, topic):
    md = c.list_topics(topic, timeout=15)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        sys.exit(f"check.py: topic {topic} not found")
    parts = sorted(t.partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    return parts


def load_truth(path):
    with open(path) as f:
        t = json.load(f)
    want = {}
    for ad, ws in t["counts"].items():
        for w, n in ws.items():
            want[(ad, int(w))] = n
    return t, want


def count_in_range(bootstrap, topic, lo, hi):
    """Records of topic with a timestamp in [lo, hi), reading up to the current end."""
    c = consumer(bootstrap)
    try:
        md = c.list_topics(topic, timeout=15)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            return 0
        ends = {}
        for p in t.partitions:
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            if high > 0:
                ends[p] = high
        if not ends:
            return 0
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        n = 0
        deadline = time.time() + 60
        while ends and time.time() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                if lo <= m.timestamp()[1] < hi:
                    n += 1
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    ends.pop(m.partition(), None)
        return n
    finally:
        c.close()


def lateness_ms():
    import tomllib
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "pipeline", "click-validate.toml"), "rb") as f:
        return int(tomllib.load(f).get("event_time", {}).get("lateness_ms", 0))


def main():
    a = parse_args()
    c = consumer(a.bootstrap)
    try:
        assign_all(c, a.topic)
    except KafkaException as e:
        sys.exit(f"check.py: cannot reach {a.bootstrap}: {e}")
    finals = {}  # (ad, window_start) -> [counts]
    arrived = {}  # (ad, window_start) -> wall ms of the first arrival
    malformed = []
    truth = want = None
    # Latencies mean something only if the results are read as they are made.
    live = not os.path.exists(a.truth)
    truth_wait_until = time.time() + a.truth_timeout
    deadline = None
    complete_at = None

    def take(m):
        now_ms = int(time.time() * 1000)
        try:
            v = json.loads(m.value())
            ad, ws, we, n = v["key"], int(v["window_start"]), int(v["window_end"]), int(v["count"])
        except (TypeError, ValueError, KeyError) as e:
            malformed.append(f"p{m.partition()}@{m.offset()}: {e}: {m.value()!r:.80}")
            return
        if m.key() != ad.encode():
            malformed.append(f"p{m.partition()}@{m.offset()}: key {m.key()!r} but value key {ad!r}")
        finals.setdefault((ad, ws), []).append((n, we))
        arrived.setdefault((ad, ws), now_ms)

    while True:
        for m in c.consume(1000, 0.2):
            if m.error():
                print(f"check.py: {m.error()}", file=sys.stderr)
                continue
            take(m)
        now = time.time()
        if truth is None:
            if os.path.exists(a.truth):
                truth, want = load_truth(a.truth)
                deadline = now + a.timeout
                print(f"check.py: waiting for {len(want)} final counts ({truth['ads']} ads, "
                      f"{truth['clicks']} clicks) in {a.topic}", flush=True)
            elif now > truth_wait_until:
                sys.exit(f"check.py: {a.truth} did not appear")
            continue
        if complete_at is None and all(k in finals for k in want):
            complete_at = now
        # Once complete, read on briefly: a duplicate would show up now or never.
        if complete_at is not None and now - complete_at > 2:
            break
        if now > deadline:
            print(f"check.py: timed out after {a.timeout:g} s", flush=True)
            break
    c.close()

    lo, hi, wms = truth["start_ms"], truth["end_ms"], truth["window_ms"]
    mine = {k: v for k, v in finals.items() if lo - wms < k[1] < hi}
    earlier = len(finals) - len(mine)
    missing = sorted(k for k in want if k not in mine)
    wrong = sorted((k, want[k], v[0][0]) for k, v in mine.items() if k in want and v[0][0] != want[k])
    dups = sorted((k, [n for n, _ in v]) for k, v in mine.items() if len(v) > 1)
    unexpected = sorted((k, v[0][0]) for k, v in mine.items() if k not in want)
    bad_window = sorted(k for k, v in mine.items() if any(we - k[1] != wms for _, we in v))

    invalid = count_in_range(a.bootstrap, a.invalid_topic, lo, hi)
    # Stage 1 may still be draining: give the dead letters a moment to reach the count.
    wait_dlq = time.time() + 15
    while invalid < truth["invalid"] and time.time() < wait_dlq:
        time.sleep(1)
        invalid = count_in_range(a.bootstrap, a.invalid_topic, lo, hi)
    late = count_in_range(a.bootstrap, a.late_topic, lo, hi)
    want_late = truth.get("late", 0)
    while late < want_late and time.time() < wait_dlq:
        time.sleep(1)
        late = count_in_range(a.bootstrap, a.late_topic, lo, hi)

    # Latency per window: the arrival of its last final count minus window_end.
    per_window = {}
    for (ad, ws), t in arrived.items():
        if (ad, ws) in want:
            per_window[ws] = max(per_window.get(ws, 0), t)
    lat = sorted((t - (ws + wms), ws) for ws, t in per_window.items())
    # Windows ending lateness_ms before the last click close while clicks flow; the last
    # ones only once the partitions have been silent for idle_timeout_ms.
    lateness = lateness_ms()
    flowing = [x for x, ws in lat if ws + wms + lateness < hi]
    tail = [x for x, ws in lat if ws + wms + lateness >= hi]

    def show(items, what, fmt):
        if items:
            print(f"  {len(items)} {what}:")
            for x in items[:10]:
                print("    " + fmt(x))
            if len(items) > 10:
                print(f"    ... and {len(items) - 10} more")

    def win(k):
        return f"{k[0]} [{k[1]}, {k[1] + wms})"

    summed = sum(want.values())
    got = sum(v[0][0] for k, v in mine.items() if k in want)
    print(f"check.py: {len(mine)} final counts of this run in {a.topic} "
          f"({len(want)} expected, {len({k[1] for k in want})} windows of {wms} ms x "
          f"{len({k[0] for k in want})} ads); clicks counted {got} of {summed}"
          + (f"; {earlier} of earlier runs left aside" if earlier else ""))
    show(missing, "missing", win)
    show(wrong, "wrong counts", lambda x: f"{win(x[0])}: expected {x[1]}, got {x[2]}")
    show(dups, "duplicate finals", lambda x: f"{win(x[0])}: counts {x[1]}")
    show(unexpected, "unexpected windows", lambda x: f"{win(x[0])}: count {x[1]}")
    show(bad_window, "finals with a window_end other than window_start + window_ms", win)
    show(malformed, "malformed records", str)
    print(f"  dead letters: {invalid} in {a.invalid_topic} (expected {truth['invalid']}), "
          f"{late} in {a.late_topic} (expected {want_late})")
    if live and complete_at is not None:
        print(f"  all {len(want)} final counts here {complete_at - lo / 1000:.1f} s after the first "
              f"click's event time (the clicks span {(hi - lo) / 1000:.1f} s of event time)")
    if live and flowing:
        flowing.sort()
        print(f"  latency from a window's end to its last final count arriving here: median "
              f"{flowing[len(flowing) // 2]} ms, max {flowing[-1]} ms over {len(flowing)} windows "
              f"closed while clicks flowed"
              + (f"; {max(tail)} ms for the last {len(tail)} (closed after idle_timeout_ms)" if tail else ""))
    ok = not (missing or wrong or dups or unexpected or bad_window or malformed) \
        and invalid == truth["invalid"] and late == want_late
    if a.report:
        with open(a.report, "w") as f:
            json.dump({
                "ok": ok, "expected": len(want), "finals": len(mine), "missing": len(missing),
                "wrong": len(wrong), "duplicates": len(dups), "unexpected": len(unexpected),
                "malformed": len(malformed), "invalid": invalid, "late": late,
                "latency_ms_by_window": {str(ws): x for x, ws in lat} if live else None,
            }, f, indent=1)
    if ok:
        print(f"OK: every final count equals the ground truth ({len(want)} ad-windows, "
              f"{summed} clicks), none missing, doubled or unexpected")
    else:
        print("FAIL: the final counts differ from the ground truth")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
