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
    json!({"mode": "partial", "window_ms": 1000})
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
    for r in [
        rec("ad42#7", 100),
        rec("ad42#1", 200),
        rec("ad42", 300),
        rec("a#b", 400),
        rec("ad42#12", 999),
        rec("x", 1000),
    ] {
        assert_eq!(h.process(r), Outcome::Drop);
    }
    // Nothing closes before the watermark passes the window's end.
    assert!(h.watermark(999).is_empty());
    let o = h.watermark(1000);
    assert_eq!(
        values(&o),
        vec![
            json!({"type": "partial", "source": "clicks/3", "key": "a#b", "window_start": 0, "window_end": 1000, "count": 1}),
            json!({"type": "partial", "source": "clicks/3", "key": "ad42", "window_start": 0, "window_end": 1000, "count": 4}),
        ]
    );
    // Key-less, to the default output, stamped with the window end.
    assert!(o.iter().all(|o| o.key.is_none() && o.topic.is_none()));
    assert_eq!(o[0].timestamp, Some(1000));
    assert_eq!(h.state().partial.windows.len(), 1);
}

#[test]
fn windows_close_on_the_watermark_in_order_and_late_records_fail() {
    let mut h = start(partial_cfg());
    for t in [900, 1400, 100, 1499, 999] {
        assert_eq!(h.process(rec("a", t)), Outcome::Drop);
    }
    let o = values(&h.watermark(1000));
    assert_eq!(o.len(), 1);
    assert_eq!(o[0]["count"], 3);
    // A watermark that does not move, or moves back, changes nothing.
    assert!(h.watermark(1000).is_empty());
    assert!(h.watermark(500).is_empty());
    // Window [1000,2000) is still open: 1000 is on time, 999 is late.
    assert_eq!(h.process(rec("a", 1000)), Outcome::Drop);
    assert_eq!(
        fail(h.process(rec("a", 999))),
        "late record: event time 999 is before the watermark 1000 (window [0,1000) closed)"
    );
    // Closing several windows at once: in window order, keys sorted within a window.
    assert_eq!(h.process(rec("z", 2400)), Outcome::Drop);
    assert_eq!(h.process(rec("c", 2450)), Outcome::Drop);
    assert_eq!(h.process(rec("q", 5600)), Outcome::Drop);
    let o = values(&h.watermark(5500));
    let got: Vec<(i64, &str)> = o
        .iter()
        .map(|v| {
            (
                v["window_start"].as_i64().unwrap(),
                v["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![(1000, "a"), (2000, "c"), (2000, "z")]);
    assert_eq!(h.state().partial.closed_before, Some(5000));
    assert_eq!(h.state().partial.windows.len(), 1);
    // No wall-clock logic is left: ticks never emit.
    assert!(h.tick(i64::MAX / 4).is_empty());
}

#[test]
fn a_source_without_records_learns_its_name_from_the_host() {
    let mut h = start(partial_cfg());
    assert!(h.watermark(5000).is_empty());
    assert_eq!(h.state().partial.source.as_deref(), Some("test/0"));
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
    let o = values(&h.watermark(10));
    assert_eq!(
        o[..],
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

fn partial_rec(source: &str, key: &str, start: i64, count: u64) -> Record {
    Record::new(
        json!({"type": "partial", "source": source, "key": key,
               "window_start": start, "window_end": start + 1000, "count": count})
        .to_string(),
    )
    .with_topic("partials", 0)
}

#[test]
fn merge_emits_each_window_once_when_the_watermark_passes_it() {
    let mut h = start(json!({"mode": "merge"}));
    for r in [
        partial_rec("c/0", "ad1", 0, 3),
        partial_rec("c/1", "ad1", 0, 4),
        partial_rec("c/1", "ad2", 0, 1),
        partial_rec("c/0", "ad1", 1000, 5),
    ] {
        assert_eq!(h.process(r), Outcome::Drop);
    }
    assert!(h.watermark(999).is_empty());
    let o = h.watermark(1000);
    assert_eq!(
        values(&o),
        vec![
            json!({"key": "ad1", "window_start": 0, "window_end": 1000, "count": 7}),
            json!({"key": "ad2", "window_start": 0, "window_end": 1000, "count": 1}),
        ]
    );
    assert_eq!(o[0].key.as_deref(), Some(&b"ad1"[..]));
    assert_eq!(o[0].timestamp, Some(1000));
    assert!(h.watermark(1000).is_empty(), "once");
    // A partial for a final window is late; one for an open window is not.
    assert!(fail(h.process(partial_rec("c/2", "ad1", 0, 1))).starts_with("late partial: "));
    assert_eq!(h.process(partial_rec("c/2", "ad1", 1000, 1)), Outcome::Drop);
    // Markers of older versions are skipped.
    let marker = Record::new(r#"{"type":"watermark","source":"c/0","closed_before":5000}"#)
        .with_topic("partials", 0);
    assert_eq!(h.process(marker), Outcome::Drop);
    assert_eq!(values(&h.watermark(2000))[0]["count"], 6);
    assert!(h.state().merge.windows.is_empty());
    assert!(fail(h.process(Record::new("{}"))).starts_with("not a partial record"));
}

#[test]
fn merge_sums_min_and_max() {
    let mut h = start(json!({"mode": "merge", "aggregates": ["sum", "count", "min", "max"]}));
    let p = |v: Value| Record::new(v.to_string());
    h.process(p(
        json!({"type": "partial", "source": "s", "key": "k", "window_start": 0,
                       "window_end": 10, "count": 2, "sum": 5, "min": 1, "max": 4}),
    ));
    h.process(p(
        json!({"type": "partial", "source": "s", "key": "k", "window_start": 0,
                       "window_end": 10, "count": 1, "sum": 2.5, "min": -1, "max": 2.5}),
    ));
    assert_eq!(
        values(&h.watermark(10)),
        vec![
            json!({"key": "k", "window_start": 0, "window_end": 10, "count": 3, "sum": 7.5, "min": -1, "max": 4})
        ]
    );
}

#[test]
fn snapshots_of_the_version_before_host_watermarks_restore() {
    // Field names as that version wrote them, with the fields it no longer has.
    #[derive(serde::Serialize)]
    struct OldPartial {
        source: Option<String>,
        records: u64,
        max_event: Option<i64>,
        watermark: Option<i64>,
        closed_before: Option<i64>,
        windows: BTreeMap<i64, super::partial::Window>,
    }
    #[derive(serde::Serialize)]
    struct OldSource {
        closed_before: Option<i64>,
        messages: u64,
    }
    #[derive(serde::Serialize)]
    struct OldMerge {
        sources: BTreeMap<String, OldSource>,
        windows: BTreeMap<i64, super::merge::Window>,
        final_before: Option<i64>,
    }
    #[derive(serde::Serialize)]
    struct Old {
        partial: OldPartial,
        merge: OldMerge,
    }
    let mut keys = BTreeMap::new();
    keys.insert(
        "ad1".to_string(),
        super::Agg {
            count: 4,
            ..Default::default()
        },
    );
    let old = Old {
        partial: OldPartial {
            source: Some("clicks/2".into()),
            records: 10,
            max_event: Some(2500),
            watermark: Some(1500),
            closed_before: Some(1000),
            windows: BTreeMap::from([(1000, super::partial::Window { end: 2000, keys })]),
        },
        merge: OldMerge {
            sources: BTreeMap::from([(
                "clicks/2".into(),
                OldSource {
                    closed_before: Some(1000),
                    messages: 3,
                },
            )]),
            windows: BTreeMap::new(),
            final_before: Some(1000),
        },
    };
    let bytes = rmp_serde::to_vec_named(&old).unwrap();
    let mut h = start(partial_cfg());
    h.restore(&bytes).unwrap();
    assert_eq!(h.state().partial.closed_before, Some(1000));
    assert_eq!(values(&h.watermark(2000))[0]["count"], 4);
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
/// How far behind its source's newest record an input record may be (the host's
/// `[event_time] lateness_ms`).
const LATENESS: i64 = 300;

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
    json!({"mode": "partial", "window_ms": WINDOW,
           "value_field": "v", "aggregates": ["count", "sum", "min", "max"]})
    .to_string()
}

fn merge_config() -> String {
    json!({"mode": "merge", "aggregates": ["count", "sum", "min", "max"]}).to_string()
}

/// Replaces a harness by a new instance restored from its snapshot, as after a crash at a
/// checkpoint or a hot reload.
fn restart(h: &mut H, config: &str) {
    let snap = h.snapshot();
    let mut fresh = H::new(config).unwrap();
    fresh.restore(&snap).unwrap();
    *h = fresh;
}

/// What travels from a partial instance to the merge, in order: its output, and the host's
/// announcement of the watermark it handed over (after the output that watermark closed).
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Out(Output),
    Announce(i64),
}

struct Run {
    /// Everything each partial instance sent on, in order.
    partials: Vec<Vec<Item>>,
    /// The merge stage's final records, in order.
    finals: Vec<Output>,
    /// How many finals were out before the input ended.
    finals_before_end: usize,
}

/// The host, simulated: per partition, a partial instance handed its source's watermark
/// (newest event time - LATENESS) at random points; its output and announcements
/// interleaved at random (each source's order kept) into the merge, whose watermark is the
/// smallest announced.
fn run(input: &[Input], seed: u64, restarts: bool) -> Run {
    let mut rng = Rng(seed);
    let mut restart_rng = Rng(seed ^ 0x5eed);
    let (pc, mc) = (partial_config(), merge_config());
    let mut partials: Vec<H> = (0..SOURCES).map(|_| H::new(&pc).unwrap()).collect();
    let mut m = Merging {
        merge: H::new(&mc).unwrap(),
        announced: [i64::MIN; SOURCES],
        wm: i64::MIN,
        finals: Vec::new(),
    };
    let mut queues: Vec<VecDeque<Item>> = vec![VecDeque::new(); SOURCES];
    let mut all: Vec<Vec<Item>> = vec![Vec::new(); SOURCES];
    let mut newest = [i64::MIN; SOURCES];
    let mut handed = [i64::MIN; SOURCES];

    /// The merge's side of the simulation: what it has been told so far.
    struct Merging {
        merge: H,
        announced: [i64; SOURCES],
        wm: i64,
        finals: Vec<Output>,
    }
    impl Merging {
        /// Delivers up to `n` items, from sources picked at random.
        fn deliver(&mut self, queues: &mut [VecDeque<Item>], rng: &mut Rng, n: usize) {
            for _ in 0..n {
                let ready: Vec<usize> = (0..SOURCES).filter(|&s| !queues[s].is_empty()).collect();
                if ready.is_empty() {
                    return;
                }
                let s = ready[rng.below(ready.len() as u64) as usize];
                match queues[s].pop_front().unwrap() {
                    Item::Out(o) => {
                        let r = Record::new(o.value.unwrap()).with_topic("partials", 0);
                        assert_eq!(self.merge.process(r), Outcome::Drop);
                    }
                    Item::Announce(wm) => {
                        self.announced[s] = self.announced[s].max(wm);
                        let min = *self.announced.iter().min().unwrap();
                        if min > self.wm {
                            self.wm = min;
                            self.finals.extend(self.merge.watermark(min));
                        }
                    }
                }
            }
        }
    }
    fn hand(p: usize, h: &mut H, wm: i64, queues: &mut [VecDeque<Item>], all: &mut [Vec<Item>]) {
        let out: Vec<Item> = h
            .watermark(wm)
            .into_iter()
            .map(Item::Out)
            .chain([Item::Announce(wm)])
            .collect();
        all[p].extend(out.iter().cloned());
        queues[p].extend(out);
    }

    for inp in input {
        let p = inp.partition;
        assert_eq!(partials[p].process(inp.record.clone()), Outcome::Drop);
        newest[p] = newest[p].max(inp.record.timestamp());
        let wm = newest[p] - LATENESS;
        if wm > handed[p] && rng.below(4) == 0 {
            handed[p] = wm;
            hand(p, &mut partials[p], wm, &mut queues, &mut all);
        }
        let n = rng.below(3) as usize;
        m.deliver(&mut queues, &mut rng, n);
        if restarts && restart_rng.below(500) == 0 {
            let q = restart_rng.below(SOURCES as u64 + 1) as usize;
            if q == SOURCES {
                restart(&mut m.merge, &mc);
            } else {
                restart(&mut partials[q], &pc);
            }
        }
    }
    m.deliver(&mut queues, &mut rng, usize::MAX);
    let finals_before_end = m.finals.len();
    // The sources fall silent: their watermarks move past everything (the host's idle
    // timeout), which closes the last windows.
    let end = input.iter().map(|i| i.truth.1).max().unwrap() + 60_000;
    for (p, h) in partials.iter_mut().enumerate() {
        hand(p, h, end, &mut queues, &mut all);
    }
    m.deliver(&mut queues, &mut rng, usize::MAX);
    assert!(
        m.merge.state().merge.windows.is_empty(),
        "every window final"
    );
    for h in &partials {
        assert!(h.state().partial.windows.is_empty());
    }
    Run {
        partials: all,
        finals: m.finals,
        finals_before_end,
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
            // One source lags: it starts reading only after the others have moved far on.
            // The merge must wait for it all the same.
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
        assert!(r.finals_before_end > truth.len() / 2, "seed {seed}");
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
fn results_do_not_depend_on_when_the_watermark_is_handed_over() {
    // Different seeds hand the watermark over at different records and interleave the
    // sources differently; the final counts are the same.
    let input = skewed_input(11, 20_000);
    let truth = ground_truth(&input);
    for seed in [1, 2, 3, 4] {
        assert_eq!(
            finals_table(&run(&input, seed, false).finals),
            truth,
            "seed {seed}"
        );
    }
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
        refused(json!({"mode": "partial", "window_ms": 10, "separator": ""})),
        "'separator' must not be empty"
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
        refused(json!({"mode": "merge", "window_ms": 10})),
        "'window_ms' does not apply to mode = \"merge\""
    );
    // The keys of the version that tracked watermarks itself point to their replacement.
    assert!(
        refused(json!({"mode": "partial", "window_ms": 10, "lateness_ms": 1000}))
            .starts_with("'lateness_ms' moved to the pipeline manifest: [event_time] lateness_ms")
    );
    assert!(
        refused(json!({"mode": "partial", "window_ms": 10, "idle_ms": 5000}))
            .contains("[event_time] idle_timeout_ms")
    );
    assert!(refused(json!({"mode": "merge", "sources": 6}))
        .starts_with("'sources' is no longer needed"));
    assert!(refused(json!({"mode": "merge", "source_timeout_ms": 6}))
        .starts_with("'source_timeout_ms' is no longer needed"));
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
            json!({"mode": "partial", "window_ms": 1000}),
        ),
        (
            "count; key and time from the record; 10 s windows",
            json!({"mode": "partial", "window_ms": 10_000}),
        ),
        (
            "count, sum, min, max of a JSON field; 10 s windows",
            json!({"mode": "partial", "window_ms": 10_000,
                   "value_field": "price", "aggregates": ["count", "sum", "min", "max"]}),
        ),
        (
            "key and value from the JSON value; 10 s windows",
            json!({"mode": "partial", "window_ms": 10_000,
                   "key_field": "ad", "value_field": "price", "aggregates": ["count", "sum"]}),
        ),
    ] {
        let mut h = start(config);
        let t = std::time::Instant::now();
        let mut emitted = 0;
        for (i, r) in records.iter().enumerate() {
            h.process(r.clone());
            // The host hands the watermark over every 100 ms of event time.
            if i % 200 == 199 {
                emitted += h.watermark(r.timestamp() - 100).len();
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
