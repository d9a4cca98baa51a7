//! The SDK's promises to plugin authors, checked natively.

use serde::{Deserialize, Serialize};
use sluice_plugin::testing::Harness;
use sluice_plugin::{Config, IntoOutcome, Outcome, Output, Plugin, Record};

struct Stateless;

impl Plugin for Stateless {
    type State = ();
    fn init(_: &Config) -> Result<Self, String> {
        Ok(Stateless)
    }
    fn process(&mut self, _: &mut (), _: &Record) -> Outcome {
        Outcome::Keep
    }
}

#[test]
fn unit_state_snapshots_to_something_restorable() {
    let h = Harness::<Stateless>::new("{}").unwrap();
    let snap = h.snapshot();
    assert!(!snap.is_empty());
    let mut h2 = Harness::<Stateless>::new("{}").unwrap();
    h2.restore(&snap).unwrap();
    h2.restore(&[]).unwrap();
}

#[derive(Default, Serialize, Deserialize)]
struct V1 {
    count: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct V2 {
    count: u64,
    #[serde(default)]
    last_key: Option<String>,
}

struct Old;
struct New;

impl Plugin for Old {
    type State = V1;
    fn init(_: &Config) -> Result<Self, String> {
        Ok(Old)
    }
    fn process(&mut self, s: &mut V1, _: &Record) -> Outcome {
        s.count += 1;
        Outcome::Keep
    }
}

impl Plugin for New {
    type State = V2;
    fn init(_: &Config) -> Result<Self, String> {
        Ok(New)
    }
    fn process(&mut self, s: &mut V2, r: &Record) -> Outcome {
        s.count += 1;
        s.last_key = r.key_str().map(String::from);
        Outcome::Keep
    }
}

#[test]
fn a_new_version_with_a_defaulted_field_reads_the_old_state() {
    let mut old = Harness::<Old>::new("{}").unwrap();
    old.process_all([Record::new("a"), Record::new("b")]);
    let mut new = Harness::<New>::new("{}").unwrap();
    new.restore(&old.snapshot()).unwrap();
    assert_eq!(new.state().count, 2);
    assert_eq!(new.state().last_key, None);
}

#[test]
fn undecodable_state_is_refused_with_a_message() {
    let mut h = Harness::<Old>::new("{}").unwrap();
    let e = h.restore(b"\xc1\xc1").unwrap_err();
    assert!(e.contains("cannot restore plugin state"), "{e}");
    // A string where a struct was expected: valid MessagePack, wrong shape.
    let e = h.restore(b"\xa3abc").unwrap_err();
    assert!(e.contains("cannot restore plugin state"), "{e}");
}

#[test]
fn record_accessors() {
    let r = Record::new(&b"\xff\xfe"[..])
        .with_key("k")
        .with_header("h", "1")
        .with_header("h", "2")
        .with_topic("clicks", 3)
        .with_offset(42)
        .with_timestamp(1000);
    assert_eq!(r.key_str(), Some("k"));
    assert_eq!(r.value_str(), None, "not UTF-8");
    assert_eq!(r.value(), Some(&b"\xff\xfe"[..]));
    assert_eq!(
        r.header_str("h"),
        Some("1"),
        "the first of repeated headers"
    );
    assert_eq!(r.headers().len(), 2);
    assert_eq!(r.header("missing"), None);
    assert_eq!(
        (r.topic(), r.partition(), r.offset(), r.timestamp()),
        ("clicks", 3, 42, 1000)
    );
    assert!(r.json::<serde_json::Value>().is_err());
    assert!(Record::new("x")
        .without_value()
        .json::<u32>()
        .unwrap_err()
        .contains("no value"));
    assert_eq!(Record::new("[1,2]").json::<Vec<u8>>().unwrap(), vec![1, 2]);
}

#[test]
fn outputs_copy_the_record_and_build_up() {
    let r = Record::new("v").with_key("k").with_header("h", "x");
    let o = r.to_output().with_value("w").to_topic("t").timestamp(5);
    assert_eq!(
        o,
        Output {
            topic: Some("t".into()),
            key: Some(b"k".to_vec()),
            value: Some(b"w".to_vec()),
            headers: vec![("h".into(), b"x".to_vec())],
            timestamp: Some(5),
        }
    );
    assert_eq!(Output::tombstone("k").value, None);
}

#[test]
fn what_a_map_closure_may_return() {
    assert_eq!(
        Output::value("a").into_outcome(),
        Outcome::emit(Output::value("a"))
    );
    assert_eq!(None::<Output>.into_outcome(), Outcome::Drop);
    assert_eq!(Vec::<Output>::new().into_outcome(), Outcome::Emit(vec![]));
    assert_eq!(true.into_outcome(), Outcome::Keep);
    assert_eq!(
        Err::<Output, _>("bad").into_outcome(),
        Outcome::Fail("bad".into())
    );
    assert_eq!(Ok::<_, String>(false).into_outcome(), Outcome::Drop);
}

#[test]
fn config_parses_json_and_treats_empty_as_no_table() {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct C {
        n: u32,
    }
    assert_eq!(Config::new(r#"{"n": 3}"#).parse::<C>().unwrap().n, 3);
    assert_eq!(Config::new("").parse::<C>().unwrap().n, 0);
    let e = Config::new(r#"{"n": "x"}"#).parse::<C>().err().unwrap();
    assert!(e.starts_with("invalid config:"), "{e}");
}

/// Counts records per 10 ms window and closes windows on the watermark.
struct Windowed;

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Open {
    counts: std::collections::BTreeMap<i64, u64>,
}

impl Plugin for Windowed {
    type State = Open;
    fn init(_: &Config) -> Result<Self, String> {
        Ok(Windowed)
    }
    fn process(&mut self, s: &mut Open, r: &Record) -> Outcome {
        *s.counts.entry(r.timestamp() / 10 * 10).or_default() += 1;
        Outcome::Drop
    }
    fn on_watermark(&mut self, s: &mut Open, wm: i64) -> Vec<Output> {
        let closed: Vec<i64> = s.counts.keys().copied().filter(|w| w + 10 <= wm).collect();
        closed
            .into_iter()
            .map(|w| Output::value(format!("{w}:{}", s.counts.remove(&w).unwrap_or(0))))
            .collect()
    }
}

#[test]
fn on_watermark_reaches_the_plugin_and_plain_plugins_ignore_it() {
    let mut h = Harness::<Windowed>::new("").unwrap();
    for ts in [1, 5, 12, 25] {
        h.process(Record::new("x").with_timestamp(ts));
    }
    assert!(h.watermark(9).is_empty());
    let vals = |o: Vec<Output>| -> Vec<String> {
        o.into_iter()
            .map(|o| String::from_utf8(o.value.unwrap()).unwrap())
            .collect()
    };
    assert_eq!(vals(h.watermark(20)), ["0:2", "10:1"]);
    assert_eq!(vals(h.watermark(30)), ["20:1"]);
    // The default does nothing.
    let mut s = Harness::<Stateless>::new("").unwrap();
    assert!(s.watermark(1_000).is_empty());
}

/// Ticks only while a window is open: pauses them once it has closed it.
struct ProcessingTime;

impl Plugin for ProcessingTime {
    type State = Option<i64>;
    fn init(_: &Config) -> Result<Self, String> {
        Ok(ProcessingTime)
    }
    fn process(&mut self, open: &mut Option<i64>, r: &Record) -> Outcome {
        open.get_or_insert(r.timestamp());
        Outcome::Drop
    }
    fn tick(&mut self, open: &mut Option<i64>, now_ms: i64) -> Vec<Output> {
        match *open {
            Some(since) if now_ms - since >= 1000 => {
                *open = None;
                vec![Output::value("closed")]
            }
            Some(_) => Vec::new(),
            None => {
                sluice_plugin::pause_ticks();
                Vec::new()
            }
        }
    }
}

#[test]
fn a_plugin_without_tick_pauses_its_ticks_and_one_with_tick_decides() {
    let mut plain = Harness::<Stateless>::new("{}").unwrap();
    assert!(plain.tick(1).is_empty());
    assert!(plain.ticks_paused(), "the default tick pauses");
    plain.process(Record::new("x"));
    assert!(!plain.ticks_paused(), "a record ends the pause");

    let mut w = Harness::<ProcessingTime>::new("{}").unwrap();
    w.process(Record::new("x").with_timestamp(5_000));
    assert!(w.tick(5_500).is_empty());
    assert!(!w.ticks_paused(), "a window is open");
    assert_eq!(w.tick(6_000).len(), 1);
    assert!(!w.ticks_paused());
    assert!(w.tick(7_000).is_empty());
    assert!(w.ticks_paused(), "nothing open: paused");
}
