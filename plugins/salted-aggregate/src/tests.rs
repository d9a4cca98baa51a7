use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};
use sluice_plugin::testing::Harness;
use sluice_plugin::{Outcome, Output, Record};

use super::partial::unsalted;
use super::SaltedAggregate;

type H = Harness<SaltedAggregate>;

fn start(config: Value) -> H {
    H::new(&config.to_string()).unwrap()
}

fn refused(config: Value) -> String {
    match H::new(&config.to_string()) {
        Ok(_) => panic!("config accepted: {config}"),
        Err(e) => e,
    }
}

fn outs(o: Outcome) -> Vec<Output> {
    match o {
        Outcome::Emit(v) => v,
        Outcome::Drop => Vec::new(),
        other => panic!("{other:?}"),
    }
}

fn fail(o: Outcome) -> String {
    match o {
        Outcome::Fail(why) => why,
        other => panic!("{other:?}"),
    }
}

fn values(outs: &[Output]) -> Vec<Value> {
    outs.iter()
        .map(|o| serde_json::from_slice(o.value.as_deref().unwrap()).unwrap())
        .collect()
}

fn rec(key: &str, ts: i64) -> Record {
    Record::new("{}")
        .with_key(key)
        .with_timestamp(ts)
        .with_topic("clicks", 3)
}

fn partial_cfg() -> Value {
    json!({"mode": "partial", "window_ms": 1000, "lateness_ms": 0})
}

#[test]
fn salt_is_the_digits_after_the_last_separator() {
    assert_eq!(unsalted("ad42#7", "#"), "ad42");
    assert_eq!(unsalted("ad42#", "#"), "ad42#");
    assert_eq!(unsalted("ad42", "#"), "ad42");
    assert_eq!(unsalted("a#b#12", "#"), "a#b");
    assert_eq!(unsalted("user#name", "#"), "user#name");
    assert_eq!(unsalted("ad42::3", "::"), "ad42");
    assert_eq!(unsalted("é#3", "#"), "é");
}

#[test]
fn salted_keys_count_under_the_unsalted_key() {
    let mut h = start(partial_cfg());
    // The first record announces the source with a marker; no window is closed yet.
    assert_eq!(
        values(&outs(h.process(rec("ad42#7", 100)))),
        vec![json!({"type": "watermark", "source": "clicks/3", "closed_before": 0})]
    );
    for r in [
        rec("ad42#1", 200),
        rec("ad42", 300),
        rec("a#b", 400),
        rec("ad42#12", 999),
    ] {
        assert_eq!(h.process(r), Outcome::Drop);
    }
    let o = outs(h.process(rec("x", 1000)));
    assert_eq!(
        values(&o),
        vec![
            json!({"type": "partial", "source": "clicks/3", "key": "a#b", "window_start": 0, "window_end": 1000, "count": 1}),
            json!({"type": "partial", "source": "clicks/3", "key": "ad42", "window_start": 0, "window_end": 1000, "count": 4}),
            json!({"type": "watermark", "source": "clicks/3", "closed_before": 1000}),
        ]
    );
    // Key-less, to the default output, stamped with the window end.
    assert!(o.iter().all(|o| o.key.is_none() && o.topic.is_none()));
    assert_eq!(o[0].timestamp, Some(1000));
    assert_eq!(h.state().partial.windows.len(), 1);
}

#[test]
fn windows_close_when_the_watermark_passes_their_end_and_late_records_fail() {
    let mut h = start(json!({"mode": "partial", "window_ms": 1000, "lateness_ms": 500}));
    outs(h.process(rec("a", 900)));
    // Out of order but within the lateness: still counted.
    assert_eq!(h.process(rec("a", 1400)), Outcome::Drop);
    assert_eq!(h.process(rec("a", 100)), Outcome::Drop);
    // Watermark 999: window [0,1000) stays open.
    assert_eq!(h.process(rec("b", 1499)), Outcome::Drop);
    assert_eq!(h.process(rec("a", 999)), Outcome::Drop);
    // Watermark 1000: closes [0,1000).
    let o = values(&outs(h.process(rec("b", 1500))));
    assert_eq!(o.len(), 2);
    assert_eq!(o[0]["count"], 3);
    assert_eq!(
        o[1],
        json!({"type": "watermark", "source": "clicks/3", "closed_before": 1000})
    );
    // Window [1000,2000) is still open: 1000 is on time, 999 is late.
    assert_eq!(h.process(rec("a", 1000)), Outcome::Drop);
    assert_eq!(
        fail(h.process(rec("a", 999))),
        "late record: event time 999 is before the watermark 1000 (window [0,1000) closed)"
    );
    // Closing several windows at once: in window order, keys sorted within a window.
    assert_eq!(h.process(rec("z", 2400)), Outcome::Drop);
    assert_eq!(h.process(rec("c", 2450)), Outcome::Drop);
    let o = values(&outs(h.process(rec("q", 5600))));
    let got: Vec<(i64, &str)> = o
        .iter()
        .filter(|v| v["type"] == "partial")
        .map(|v| {
            (
                v["window_start"].as_i64().unwrap(),
                v["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(1000, "a"), (1000, "b"), (2000, "c"), (2000, "z")]
    );
    assert_eq!(o.last().unwrap()["closed_before"], 5000);
    assert_eq!(h.state().partial.windows.len(), 1);
}

#[test]
fn keys_times_and_values_from_the_json_value() {
    let mut h = start(json!({
        "mode": "partial", "window_ms": 10, "key_field": "ad.id", "time_field": "ts",
        "value_field": "price", "aggregates": ["count", "sum", "min", "max"],
    }));
    let r = |v: &str| Record::new(v).with_topic("t", 0).with_timestamp(999_999);
    outs(h.process(r(r#"{"ad":{"id":"ad1#3"},"ts":1,"price":5}"#)));
    h.process(r(r#"{"ad":{"id":"ad1#3"},"ts":2,"price":-2.5}"#));
    h.process(r(r#"{"ad":{"id":7},"ts":3.9,"price":1}"#));
    assert_eq!(
        fail(h.process(r(r#"{"ad":{"id":"x"},"ts":4}"#))),
        "field 'price' is missing"
    );
    assert_eq!(
        fail(h.process(r(r#"{"ad":{"id":"x"},"ts":4,"price":"3"}"#))),
        "field 'price' is a string, expected a number"
    );
    assert_eq!(
        fail(h.process(r(r#"{"ad":{"id":"x"},"ts":"4","price":3}"#))),
        "field 'ts' is a string, expected a number (ms since the epoch)"
    );
    assert_eq!(
        fail(h.process(r(r#"{"ad":{"id":["x"]},"ts":4,"price":3}"#))),
        "field 'ad.id' is an array, expected a string or a number"
    );
    assert_eq!(
        fail(h.process(r(r#"{"ad":{"id":"x"},"ts":-1,"price":3}"#))),
        "event time -1 is out of range (0 to 9007199254740992 ms)"
    );
    assert!(fail(h.process(r("not json"))).starts_with("not JSON: "));
    // Float and integer aggregates survive a snapshot.
    let state = h.state().clone();
    let snap = h.snapshot();
    h.restore(&[]).unwrap();
    h.restore(&snap).unwrap();
    assert_eq!(h.state(), &state);
    let o = values(&outs(
        h.process(r(r#"{"ad":{"id":"y"},"ts":10,"price":1}"#)),
    ));
    assert_eq!(
        o[..2],
        [
            // key_field values are taken as they are: no salt stripped.
            json!({"type": "partial", "source": "t/0", "key": "7", "window_start": 0, "window_end": 10, "count": 1, "sum": 1, "min": 1, "max": 1}),
            json!({"type": "partial", "source": "t/0", "key": "ad1#3", "window_start": 0, "window_end": 10, "count": 2, "sum": 2.5, "min": -2.5, "max": 5}),
        ]
    );
    // Without key_field, the record key is needed.
    let mut h = start(partial_cfg());
    assert_eq!(
        fail(h.process(Record::new("{}"))),
        "record has no key (the aggregation key is the record key; key_field reads it from the value)"
    );
    assert_eq!(
        fail(h.process(Record::new("{}").with_key(b"\xff".to_vec()))),
        "the record key is not UTF-8"
    );
    assert_eq!(
        fail(h.process(Record::new("{}").with_key("k").with_timestamp(-1))),
        "event time -1 is out of range (0 to 9007199254740992 ms)"
    );
}

#[test]
fn an_idle_source_closes_its_windows_by_the_wall_clock() {
    let mut h = start(
        json!({"mode": "partial", "window_ms": 1000, "lateness_ms": 2000, "idle_ms": 10_000}),
    );
    let now = 1_700_000_000_000;
    outs(h.process(rec("a", now - 500)));
    // The first tick only notes the activity; then idle_ms of silence must pass.
    assert!(h.tick(now).is_empty());
    assert!(h.tick(now + 9_999).is_empty());
    // Watermark now - lateness: the record's window [now-1000, now) is not closed yet.
    assert_eq!(
        values(&h.tick(now + 10_000)),
        vec![json!({"type": "watermark", "source": "clicks/3", "closed_before": now - 2000})]
    );
    // Still idle: the watermark follows the wall clock, a marker per window passed.
    let o = values(&h.tick(now + 13_000));
    assert_eq!(o[0]["type"], "partial");
    assert_eq!(
        o[1],
        json!({"type": "watermark", "source": "clicks/3", "closed_before": now + 1000})
    );
    assert!(h.tick(now + 13_500).is_empty());
    assert_eq!(
        values(&h.tick(now + 14_000))[0]["closed_before"],
        now + 2000
    );
    // A record in a closed window is late; input wakes the source up.
    assert!(fail(h.process(rec("a", now + 1999))).starts_with("late record: event time"));
    assert!(h.tick(now + 30_000).is_empty());
}

#[test]
fn a_short_pause_does_not_close_windows() {
    let mut h = start(
        json!({"mode": "partial", "window_ms": 1000, "lateness_ms": 1000, "idle_ms": 10_000}),
    );
    let now = 1_700_000_000_000;
    let mut t = now;
    // Producers stop for 8 s (a broker restart) with ticks running, then catch up with
    // records stamped during the pause.
    for i in 0..20 {
        h.process(rec("a", t));
        t += 100;
        if i % 10 == 0 {
            assert!(h.tick(t).is_empty());
        }
    }
    for s in 1..=8 {
        assert!(h.tick(t + s * 1000).is_empty(), "tick {s}");
    }
    for _ in 0..80 {
        assert!(!matches!(h.process(rec("a", t)), Outcome::Fail(_)));
        t += 100;
    }
    // A restarted instance (fresh from its snapshot) starts a fresh idle period too.
    let mut r = start(
        json!({"mode": "partial", "window_ms": 1000, "lateness_ms": 1000, "idle_ms": 10_000}),
    );
    r.restore(&h.snapshot()).unwrap();
    assert!(r.tick(t + 60_000).is_empty());
    assert!(r.tick(t + 65_000).is_empty());
    assert!(!r.tick(t + 70_000).is_empty());
}

#[test]
fn a_source_without_records_announces_itself_once_idle() {
    sluice_plugin::set_native_task(sluice_plugin::Task {
        pipeline: "p".into(),
        topic: "clicks".into(),
        partition: 4,
        retry: false,
    });
    let mut h = start(partial_cfg());
    let mut said = Vec::new();
    for s in 0..10 {
        said.extend(h.tick(s * 60_000));
    }
    assert!(!said.is_empty(), "an empty partition reports its watermark");
    for o in &said {
        let v: serde_json::Value = serde_json::from_slice(o.value.as_deref().unwrap()).unwrap();
        assert_eq!(v["type"], "watermark");
        assert_eq!(v["source"], "clicks/4");
    }
}

#[test]
fn the_retry_instance_is_no_source() {
    sluice_plugin::set_native_task(sluice_plugin::Task {
        pipeline: "p".into(),
        topic: "p.retry".into(),
        partition: 0,
        retry: true,
    });
    let mut h = start(partial_cfg());
    for s in 0..100 {
        assert!(h.tick(s * 60_000).is_empty());
    }
}

fn partial_rec(source: &str, key: &str, start: i64, count: u64) -> Record {
    Record::new(
        json!({"type": "partial", "source": source, "key": key, "window_start": start,
               "window_end": start + 1000, "count": count, "sum": count * 2})
        .to_string(),
    )
    .with_topic("partials", 0)
}

fn marker(source: &str, closed_before: i64) -> Record {
    Record::new(
        json!({"type": "watermark", "source": source, "closed_before": closed_before}).to_string(),
    )
    .with_topic("partials", 0)
}

#[test]
fn merge_waits_for_every_source_then_emits_once() {
    let mut h = start(json!({"mode": "merge", "sources": 2}));
    assert_eq!(h.process(marker("c/0", 0)), Outcome::Drop);
    assert_eq!(h.process(partial_rec("c/0", "ad42", 0, 3)), Outcome::Drop);
    assert_eq!(h.process(partial_rec("c/0", "ad7", 0, 1)), Outcome::Drop);
    assert_eq!(h.process(marker("c/0", 1000)), Outcome::Drop);
    assert_eq!(h.process(partial_rec("c/1", "ad42", 0, 2)), Outcome::Drop);
    assert_eq!(
        h.process(partial_rec("c/1", "ad42", 1000, 5)),
        Outcome::Drop
    );
    let o = outs(h.process(marker("c/1", 2000)));
    assert_eq!(
        values(&o),
        vec![
            json!({"key": "ad42", "window_start": 0, "window_end": 1000, "count": 5}),
            json!({"key": "ad7", "window_start": 0, "window_end": 1000, "count": 1}),
        ]
    );
    assert_eq!(o[0].key.as_deref(), Some(&b"ad42"[..]));
    assert_eq!(o[0].timestamp, Some(1000));
    assert_eq!(o[0].topic, None);
    // A partial for a final window is late: dead-lettered, never a second final.
    assert_eq!(
        fail(h.process(partial_rec("c/0", "ad42", 0, 1))),
        "late partial: window [0,1000) of key 'ad42' is already final (windows ending at or before 1000 are)"
    );
    let o = values(&outs(h.process(marker("c/0", 3000))));
    assert_eq!(
        o,
        vec![json!({"key": "ad42", "window_start": 1000, "window_end": 2000, "count": 5})]
    );
    assert!(h.state().merge.windows.is_empty());
    // Sums when configured, in the documented field order.
    let mut h = start(json!({"mode": "merge", "sources": 1, "aggregates": ["sum", "count"]}));
    h.process(partial_rec("c/0", "k", 0, 4));
    let o = outs(h.process(marker("c/0", 1000)));
    assert_eq!(
        std::str::from_utf8(o[0].value.as_deref().unwrap()).unwrap(),
        r#"{"key":"k","window_start":0,"window_end":1000,"count":4,"sum":8}"#
    );
    assert!(fail(h.process(Record::new(r#"{"type":"partial","source":"c/0","key":"k","window_start":1000,"window_end":2000,"count":1}"#)))
        .starts_with("partial of key 'k' has no 'sum'"));
    assert!(fail(h.process(Record::new("{}"))).starts_with("not a partial or watermark record"));
}

#[test]
fn merge_stands_in_for_sources_that_never_speak() {
    let mut h =
        start(json!({"mode": "merge", "sources": 3, "idle_ms": 10_000, "lateness_ms": 1000}));
    let now = 1_700_000_000_000;
    h.process(partial_rec("c/0", "a", now - 20_000, 1));
    h.process(marker("c/0", now + 10_000));
    h.process(partial_rec("c/1", "a", now - 20_000, 2));
    h.process(partial_rec("c/1", "a", now + 2_000, 2));
    assert_eq!(h.process(marker("c/1", now + 10_000)), Outcome::Drop);
    // Known sources must stay the same for idle_ms before the third is taken as idle.
    assert!(h.tick(now).is_empty());
    assert!(h.tick(now + 9_999).is_empty());
    // The missing source counts as closed before now + 10000 - idle - lateness = now - 1000.
    let o = values(&h.tick(now + 10_000));
    assert_eq!(
        o,
        vec![
            json!({"key": "a", "window_start": now - 20_000, "window_end": now - 19_000, "count": 3})
        ]
    );
    assert_eq!(h.state().merge.windows.len(), 1);
    let o = values(&h.tick(now + 15_000));
    assert_eq!(
        o,
        vec![
            json!({"key": "a", "window_start": now + 2_000, "window_end": now + 3_000, "count": 2})
        ]
    );
    assert!(h.state().merge.windows.is_empty());
    // A source announcing itself late restarts the wait; its partials for final windows are
    // late.
    assert!(fail(h.process(partial_rec("c/2", "a", now - 20_000, 1))).starts_with("late partial"));
    h.process(partial_rec("c/2", "a", now + 20_000, 1));
    assert!(h.tick(now + 100_000).is_empty());
    assert!(h.tick(now + 109_999).is_empty());
    // Now all three are known: only the exact path finalises.
    assert!(h.tick(now + 200_000).is_empty());
    h.process(marker("c/0", now + 30_000));
    h.process(marker("c/1", now + 30_000));
    assert_eq!(
        values(&outs(h.process(marker("c/2", now + 30_000))))[0]["count"],
        1
    );
}

#[test]
fn merge_times_out_a_silent_source_when_asked() {
    let cfg = json!({"mode": "merge", "sources": 2, "source_timeout_ms": 60_000});
    let mut h = start(cfg);
    let now = 1_700_000_000_000;
    h.process(marker("c/0", 0));
    h.process(marker("c/1", 0));
    h.process(partial_rec("c/0", "a", now - 100_000, 1));
    h.process(marker("c/0", now));
    assert!(h.tick(now).is_empty());
    assert!(h.tick(now + 59_999).is_empty());
    assert_eq!(values(&h.tick(now + 60_000))[0]["count"], 1);
    // Without the option, a known source holds everything back.
    let mut h = start(json!({"mode": "merge", "sources": 2}));
    h.process(marker("c/0", 0));
    h.process(marker("c/1", 0));
    h.process(partial_rec("c/0", "a", now - 100_000, 1));
    h.process(marker("c/0", now));
    assert!(h.tick(now).is_empty());
    assert!(h.tick(now + 10_000_000).is_empty());
}

/// xorshift64*: a fixed-seed random source for the simulations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

const SOURCES: usize = 3;
const WINDOW: i64 = 1000;
const LATENESS: i64 = 300;
const IDLE: i64 = 10_000;

struct Input {
    partition: usize,
    record: Record,
    /// The unsalted key, event time and value, for the ground truth.
    truth: (String, i64, i64),
}

/// A skewed input: a few hot keys (salted over 8 salts) take most records; event times run
/// with the wall clock, each up to LATENESS - 1 ms behind it (so none is late).
fn skewed_input(seed: u64, n: usize) -> Vec<Input> {
    let mut rng = Rng(seed);
    let mut clock = 1_700_000_000_000i64;
    let mut offsets = [0i64; SOURCES];
    (0..n)
        .map(|_| {
            clock += rng.below(7) as i64;
            let k = (40.0 * rng.unit().powi(4)) as u64;
            let key = format!("ad{k}");
            let salted = if k < 3 {
                format!("{key}#{}", rng.below(8))
            } else if rng.below(2) == 0 {
                format!("{key}#0")
            } else {
                key.clone()
            };
            let partition = (fnv(&salted) % SOURCES as u64) as usize;
            let t = clock - rng.below(LATENESS as u64) as i64;
            let v = rng.below(2000) as i64 - 500;
            offsets[partition] += 1;
            let record = Record::new(format!(r#"{{"v":{v},"other":"x"}}"#))
                .with_key(salted)
                .with_timestamp(t)
                .with_topic("clicks", partition as i32)
                .with_offset(offsets[partition]);
            Input {
                partition,
                record,
                truth: (key, t, v),
            }
        })
        .collect()
}

fn partial_config() -> String {
    json!({"mode": "partial", "window_ms": WINDOW, "lateness_ms": LATENESS, "idle_ms": IDLE,
           "value_field": "v", "aggregates": ["count", "sum", "min", "max"]})
    .to_string()
}

fn merge_config() -> String {
    json!({"mode": "merge", "sources": SOURCES, "lateness_ms": LATENESS, "idle_ms": IDLE,
           "aggregates": ["count", "sum", "min", "max"]})
    .to_string()
}

/// Replaces a harness by a new instance restored from its snapshot, as after a crash at a
/// checkpoint or a hot reload.
fn restart(h: &mut H, config: &str) {
    let snap = h.snapshot();
    let mut fresh = H::new(config).unwrap();
    fresh.restore(&snap).unwrap();
    *h = fresh;
}

struct Run {
    /// Every output of each partial instance, in order.
    partials: Vec<Vec<Output>>,
    /// The merge stage's final records, in order.
    finals: Vec<Output>,
    /// How many finals were out before the input ended and the sources went idle.
    finals_before_idle: usize,
}

/// Partial stage per partition, its outputs interleaved at random (each source's order
/// kept, as in the one-partition topic) into the merge stage.
fn run(input: &[Input], seed: u64, restarts: bool) -> Run {
    let mut rng = Rng(seed);
    let mut restart_rng = Rng(seed ^ 0x5eed);
    let (pc, mc) = (partial_config(), merge_config());
    let mut partials: Vec<H> = (0..SOURCES).map(|_| H::new(&pc).unwrap()).collect();
    let mut merge = H::new(&mc).unwrap();
    let mut queues: Vec<VecDeque<Output>> = vec![VecDeque::new(); SOURCES];
    let mut all: Vec<Vec<Output>> = vec![Vec::new(); SOURCES];
    let mut finals = Vec::new();

    let mut deliver =
        |merge: &mut H, queues: &mut Vec<VecDeque<Output>>, rng: &mut Rng, n: usize| {
            for _ in 0..n {
                let ready: Vec<usize> = (0..SOURCES).filter(|&s| !queues[s].is_empty()).collect();
                if ready.is_empty() {
                    return;
                }
                let s = ready[rng.below(ready.len() as u64) as usize];
                let o = queues[s].pop_front().unwrap();
                let r = Record::new(o.value.unwrap()).with_topic("partials", 0);
                finals.extend(outs(merge.process(r)));
            }
        };

    for inp in input {
        let out = outs(partials[inp.partition].process(inp.record.clone()));
        all[inp.partition].extend(out.iter().cloned());
        queues[inp.partition].extend(out);
        let n = rng.below(3) as usize;
        deliver(&mut merge, &mut queues, &mut rng, n);
        if restarts && restart_rng.below(500) == 0 {
            let p = restart_rng.below(SOURCES as u64 + 1) as usize;
            if p == SOURCES {
                restart(&mut merge, &mc);
            } else {
                restart(&mut partials[p], &pc);
            }
        }
    }
    deliver(&mut merge, &mut queues, &mut rng, usize::MAX);
    let finals_before_idle = finals.len();

    // Input stops: the sources go idle and close everything by the wall clock.
    let now = input.last().unwrap().truth.1 + 60_000;
    for (p, h) in partials.iter_mut().enumerate() {
        assert!(h.tick(now).is_empty());
        let out = h.tick(now + IDLE);
        assert!(!out.is_empty());
        all[p].extend(out.iter().cloned());
        queues[p].extend(out);
    }
    let mut rest = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        let ready: Vec<usize> = (0..SOURCES).filter(|&s| !queues[s].is_empty()).collect();
        let s = ready[rng.below(ready.len() as u64) as usize];
        let o = queues[s].pop_front().unwrap();
        rest.extend(outs(
            merge.process(Record::new(o.value.unwrap()).with_topic("partials", 0)),
        ));
    }
    finals.extend(rest);
    assert!(merge.state().merge.windows.is_empty(), "every window final");
    for h in &partials {
        assert!(h.state().partial.windows.is_empty());
    }
    Run {
        partials: all,
        finals,
        finals_before_idle,
    }
}

type Truth = BTreeMap<(String, i64), (u64, i64, i64, i64)>;

fn ground_truth(input: &[Input]) -> Truth {
    let mut truth = Truth::new();
    for inp in input {
        let (key, t, v) = &inp.truth;
        let e = truth
            .entry((key.clone(), t.div_euclid(WINDOW) * WINDOW))
            .or_insert((0, 0, i64::MAX, i64::MIN));
        e.0 += 1;
        e.1 += v;
        e.2 = e.2.min(*v);
        e.3 = e.3.max(*v);
    }
    truth
}

fn finals_table(finals: &[Output]) -> Truth {
    let mut got = Truth::new();
    for o in finals {
        let v: Value = serde_json::from_slice(o.value.as_deref().unwrap()).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        assert_eq!(o.key.as_deref(), Some(key.as_bytes()));
        let start = v["window_start"].as_i64().unwrap();
        assert_eq!(v["window_end"].as_i64().unwrap(), start + WINDOW);
        assert_eq!(o.timestamp, Some(start + WINDOW));
        let row = (
            v["count"].as_u64().unwrap(),
            v["sum"].as_i64().unwrap(),
            v["min"].as_i64().unwrap(),
            v["max"].as_i64().unwrap(),
        );
        assert!(
            got.insert((key, start), row).is_none(),
            "a second final: {v}"
        );
    }
    got
}

#[test]
fn partial_then_merge_is_exact_on_skewed_input() {
    for seed in [1, 2, 3] {
        let mut input = skewed_input(seed, 30_000);
        if seed == 3 {
            // One source lags: it starts reading only after the others have closed many
            // windows. The merge must wait for it all the same.
            let mut order: Vec<(usize, Input)> = input
                .into_iter()
                .enumerate()
                .map(|(i, inp)| (if inp.partition == 2 { i.max(5_000) } else { i }, inp))
                .collect();
            order.sort_by_key(|(at, _)| *at);
            input = order.into_iter().map(|(_, inp)| inp).collect();
        }
        let counts: Vec<usize> = (0..SOURCES)
            .map(|p| input.iter().filter(|i| i.partition == p).count())
            .collect();
        assert!(
            counts.iter().all(|&c| c > 1000),
            "every source busy: {counts:?}"
        );
        let r = run(&input, seed * 77, false);
        let truth = ground_truth(&input);
        assert_eq!(finals_table(&r.finals), truth, "seed {seed}");
        // Windows became final as the input went, not only at the end.
        assert!(r.finals_before_idle > truth.len() / 2, "seed {seed}");
    }
}

#[test]
fn restarts_from_snapshots_change_nothing() {
    let input = skewed_input(9, 20_000);
    let a = run(&input, 5, false);
    let b = run(&input, 5, true);
    assert_eq!(a.partials, b.partials);
    assert_eq!(a.finals, b.finals);
    assert_eq!(finals_table(&b.finals), ground_truth(&input));
}

#[test]
fn late_records_are_dead_lettered_and_left_out() {
    // One source, records far behind the watermark now and then.
    let mut rng = Rng(42);
    let mut p = H::new(&partial_config()).unwrap();
    let mut m = H::new(
        &json!({"mode": "merge", "sources": 1, "aggregates": ["count", "sum", "min", "max"]})
            .to_string(),
    )
    .unwrap();
    let mut truth = Truth::new();
    let mut late = 0;
    let mut clock = 1_000_000i64;
    let mut finals = Vec::new();
    for i in 0..5000 {
        clock += rng.below(10) as i64;
        let t = if rng.below(20) == 0 {
            clock - 5000
        } else {
            clock
        };
        let v = i % 7;
        let r = Record::new(format!(r#"{{"v":{v}}}"#))
            .with_key(format!("k{}#{}", i % 3, i % 5))
            .with_timestamp(t);
        match p.process(r) {
            Outcome::Fail(why) => {
                assert!(why.starts_with("late record: event time"), "{why}");
                late += 1;
            }
            o => {
                let e = truth
                    .entry((format!("k{}", i % 3), t.div_euclid(WINDOW) * WINDOW))
                    .or_insert((0, 0, i64::MAX, i64::MIN));
                e.0 += 1;
                e.1 += v;
                e.2 = e.2.min(v);
                e.3 = e.3.max(v);
                for o in outs(o) {
                    finals.extend(outs(m.process(Record::new(o.value.unwrap()))));
                }
            }
        }
    }
    assert!(late > 100);
    p.tick(0);
    for o in p.tick(IDLE + clock + 60_000) {
        finals.extend(outs(m.process(Record::new(o.value.unwrap()))));
    }
    assert_eq!(finals_table(&finals), truth);
}

#[test]
fn config_errors_are_clear() {
    assert_eq!(
        refused(json!({})),
        "'mode' is required: \"partial\" or \"merge\""
    );
    assert_eq!(
        refused(json!({"mode": "split"})),
        "'mode' must be \"partial\" or \"merge\", got \"split\""
    );
    assert_eq!(
        refused(json!({"mode": "partial"})),
        "'window_ms' is required for mode = \"partial\""
    );
    assert_eq!(
        refused(json!({"mode": "partial", "window_ms": 0})),
        "'window_ms' must be between 1 and 9007199254740992, got 0"
    );
    assert_eq!(
        refused(json!({"mode": "partial", "window_ms": 10, "aggregates": ["sum"]})),
        "'aggregates' has sum, min or max: 'value_field' must name the number to aggregate"
    );
    assert_eq!(
        refused(json!({"mode": "partial", "window_ms": 10, "aggregates": ["avg"]})),
        "'aggregates': unknown aggregate 'avg' (expected count, sum, min, max)"
    );
    assert_eq!(
        refused(json!({"mode": "partial", "window_ms": 10, "sources": 3})),
        "'sources' does not apply to mode = \"partial\""
    );
    assert_eq!(
        refused(json!({"mode": "partial", "window_ms": 10, "separator": ""})),
        "'separator' must not be empty"
    );
    assert_eq!(
        refused(json!({"mode": "partial", "window_ms": 10, "lateness_ms": -1})),
        "'lateness_ms' must be between 0 and 9007199254740992, got -1"
    );
    assert!(
        refused(json!({"mode": "partial", "window_ms": 10, "key_field": "a..b"}))
            .starts_with("'key_field': 'a..b' is not a field path")
    );
    assert!(
        refused(json!({"mode": "partial", "window_ms": 10, "windowms": 3}))
            .starts_with("invalid config: unknown field `windowms`")
    );
    assert_eq!(
        refused(json!({"mode": "merge"})),
        "'sources' is required for mode = \"merge\": how many partial-stage partitions to wait for (at least 1)"
    );
    assert_eq!(
        refused(json!({"mode": "merge", "sources": 2, "window_ms": 10})),
        "'window_ms' does not apply to mode = \"merge\""
    );
}

/// Throughput of the partial stage, natively: `cargo test --release -p salted-aggregate --
/// --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput_of_the_partial_stage() {
    let n = 2_000_000;
    let mut rng = Rng(7);
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let k = (1000.0 * rng.unit().powi(3)) as u64;
            Record::new(format!(
                r#"{{"ad":"ad{k}","price":{},"ts":{i},"country":"DE"}}"#,
                i % 100
            ))
            .with_key(format!("ad{k}#{}", i % 8))
            .with_timestamp(1_700_000_000_000 + i as i64 / 2)
        })
        .collect();
    // 1000 keys (a few hot ones), 2000 records per second of event time.
    for (name, config) in [
        (
            "count; key and time from the record; 1 s windows (~350 partials per window)",
            json!({"mode": "partial", "window_ms": 1000, "lateness_ms": 100}),
        ),
        (
            "count; key and time from the record; 10 s windows",
            json!({"mode": "partial", "window_ms": 10_000, "lateness_ms": 100}),
        ),
        (
            "count, sum, min, max of a JSON field; 10 s windows",
            json!({"mode": "partial", "window_ms": 10_000, "lateness_ms": 100,
                   "value_field": "price", "aggregates": ["count", "sum", "min", "max"]}),
        ),
        (
            "key and value from the JSON value; 10 s windows",
            json!({"mode": "partial", "window_ms": 10_000, "lateness_ms": 100,
                   "key_field": "ad", "value_field": "price", "aggregates": ["count", "sum"]}),
        ),
    ] {
        let mut h = start(config);
        let t = std::time::Instant::now();
        let mut emitted = 0;
        for r in &records {
            if let Outcome::Emit(v) = h.process(r.clone()) {
                emitted += v.len();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: {:.2} M records/s ({emitted} outputs)",
            n as f64 / secs / 1e6
        );
    }
    // What cloning the records costs the loop above.
    let t = std::time::Instant::now();
    let mut sum = 0;
    for r in &records {
        sum += std::hint::black_box(r.clone()).offset();
    }
    println!(
        "(cloning a record alone: {:.2} M/s, {sum})",
        n as f64 / t.elapsed().as_secs_f64() / 1e6
    );
}
