//! Stage 2, `mode = "partial"`: per source (input partition), aggregates per unsalted key and
//! event-time window; closes windows behind the watermark into partials and markers.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_plugin::json::{self, Fields, Kind, RawValue};
use sluice_plugin::{Outcome, Output, Record};

use crate::agg::{Agg, Num, Wanted};
use crate::{emit_or_drop, MAX_TIME};

pub struct Settings {
    pub window_ms: i64,
    pub lateness_ms: i64,
    pub idle_ms: i64,
    pub separator: String,
    pub key_field: Option<String>,
    pub time_field: Option<String>,
    pub value_field: Option<String>,
    pub wanted: Wanted,
}

pub struct Partial {
    s: Settings,
    /// The paths read from the value (none: the value is never parsed).
    fields: Fields,
    key_at: Option<usize>,
    time_at: Option<usize>,
    value_at: Option<usize>,
    /// Wall-clock activity tracking for `tick`: deliberately not in the state, so that a
    /// restarted instance starts a fresh idle period (its producers may be catching up).
    /// `state.records` when the last tick looked, and that tick's time.
    seen_records: Option<u64>,
    active_at: i64,
}

/// One window of one source: its end and the aggregate per unsalted key.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub end: i64,
    pub keys: BTreeMap<String, Agg>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialState {
    /// `<topic>/<partition>` of the input, learnt from the first record.
    #[serde(default)]
    pub source: Option<String>,
    /// Records processed, for the idle detection of `tick`.
    #[serde(default)]
    pub records: u64,
    /// The largest event time accepted.
    #[serde(default)]
    pub max_event: Option<i64>,
    /// max_event - lateness_ms, or the idle watermark from `tick` if higher.
    #[serde(default)]
    pub watermark: Option<i64>,
    /// Every window ending at or before this has been emitted (a multiple of window_ms).
    #[serde(default)]
    pub closed_before: Option<i64>,
    /// Open windows by start.
    #[serde(default)]
    pub windows: BTreeMap<i64, Window>,
}

/// The partial record of one key in one window, as JSON.
#[derive(Serialize)]
struct PartialOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'a str,
    key: &'a str,
    window_start: i64,
    window_end: i64,
    #[serde(flatten)]
    agg: &'a Agg,
}

#[derive(Serialize)]
struct MarkerOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'a str,
    closed_before: i64,
}

/// What one record contributes.
struct Event<'a> {
    key: Cow<'a, str>,
    time: i64,
    value: Option<Num>,
}

/// `ad42#7` → `ad42` (with separator `#`): the part after the last separator is a salt if it
/// is all digits; anything else is part of the key.
pub fn unsalted<'a>(key: &'a str, separator: &str) -> &'a str {
    match key.rfind(separator) {
        Some(i) => {
            let salt = &key[i + separator.len()..];
            if !salt.is_empty() && salt.bytes().all(|b| b.is_ascii_digit()) {
                &key[..i]
            } else {
                key
            }
        }
        None => key,
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_vec(v).expect("serialisable")
}

impl Partial {
    pub fn new(s: Settings) -> Result<Partial, String> {
        let mut fields = Fields::new();
        let mut add = |key: &str, path: &Option<String>| {
            path.as_deref()
                .map(|p| fields.add(p).map_err(|e| format!("'{key}': {e}")))
                .transpose()
        };
        let key_at = add("key_field", &s.key_field)?;
        let time_at = add("time_field", &s.time_field)?;
        let value_at = if s.wanted.any_value() {
            add("value_field", &s.value_field)?
        } else {
            None
        };
        Ok(Partial {
            s,
            fields,
            key_at,
            time_at,
            value_at,
            seen_records: None,
            active_at: 0,
        })
    }

    fn align(&self, t: i64) -> i64 {
        t.div_euclid(self.s.window_ms) * self.s.window_ms
    }

    fn event<'a>(&self, record: &'a Record) -> Result<Event<'a>, String> {
        let found = if self.fields.is_empty() {
            Vec::new()
        } else {
            self.fields
                .read(record.value())
                .map_err(|e| e.to_string())?
        };
        let field = |at, name| pick(&found, at, name);
        let key = match field(self.key_at, &self.s.key_field)? {
            Some((path, raw)) => match json::kind(raw) {
                Kind::String => json::as_str(raw).unwrap_or_default(),
                Kind::Number => Cow::Borrowed(raw.get().trim()),
                k => {
                    return Err(format!(
                        "field '{path}' is {}, expected a string or a number",
                        k.name()
                    ))
                }
            },
            None => {
                let key = record.key().ok_or(
                    "record has no key (the aggregation key is the record key; key_field reads it from the value)",
                )?;
                let key = std::str::from_utf8(key).map_err(|_| "the record key is not UTF-8")?;
                Cow::Borrowed(unsalted(key, &self.s.separator))
            }
        };
        let time = match field(self.time_at, &self.s.time_field)? {
            Some((path, raw)) => match json::as_number(raw) {
                Some(json::Number::Int(t)) => t,
                Some(json::Number::Float(f)) if f.is_finite() => f.floor() as i64,
                _ => {
                    return Err(format!(
                        "field '{path}' is {}, expected a number (ms since the epoch)",
                        json::kind(raw).name()
                    ))
                }
            },
            None => record.timestamp(),
        };
        if !(0..=MAX_TIME).contains(&time) {
            return Err(format!(
                "event time {time} is out of range (0 to {MAX_TIME} ms)"
            ));
        }
        let value = match field(self.value_at, &self.s.value_field)? {
            Some((path, raw)) => Some(json::as_number(raw).map(num).ok_or_else(|| {
                format!(
                    "field '{path}' is {}, expected a number",
                    json::kind(raw).name()
                )
            })?),
            None => None,
        };
        Ok(Event { key, time, value })
    }

    pub fn process(&mut self, st: &mut PartialState, record: &Record) -> Outcome {
        st.records += 1;
        if st.source.is_none() {
            st.source = Some(format!("{}/{}", record.topic(), record.partition()));
        }
        let ev = match self.event(record) {
            Ok(ev) => ev,
            Err(why) => return Outcome::Fail(why),
        };
        let start = self.align(ev.time);
        if let Some(closed) = st.closed_before {
            if ev.time < closed {
                return Outcome::Fail(format!(
                    "late record: event time {} is before the watermark {} (window [{start},{}) closed)",
                    ev.time,
                    st.watermark.unwrap_or(closed),
                    start + self.s.window_ms
                ));
            }
        }
        let window = st.windows.entry(start).or_insert_with(|| Window {
            end: start + self.s.window_ms,
            keys: BTreeMap::new(),
        });
        match window.keys.get_mut(ev.key.as_ref()) {
            Some(agg) => agg.add(self.s.wanted, ev.value),
            None => {
                let mut agg = Agg::default();
                agg.add(self.s.wanted, ev.value);
                window.keys.insert(ev.key.into_owned(), agg);
            }
        }
        let max = st.max_event.map_or(ev.time, |m| m.max(ev.time));
        st.max_event = Some(max);
        let mut outs = Vec::new();
        self.advance(st, max - self.s.lateness_ms, &mut outs);
        emit_or_drop(outs)
    }

    /// Raises the watermark to `wm` if higher and emits the windows it closes and a marker.
    /// Emits nothing and changes nothing unless the closed-up-to time advances.
    fn advance(&self, st: &mut PartialState, wm: i64, outs: &mut Vec<Output>) {
        let wm = st.watermark.map_or(wm, |w| w.max(wm));
        let closed = self.align(wm);
        if st.closed_before.is_some_and(|c| closed <= c) {
            // Still remember the watermark: it only ever grows with the input.
            st.watermark = Some(wm);
            return;
        }
        st.watermark = Some(wm);
        st.closed_before = Some(closed);
        let source = st.source.as_deref().unwrap_or_default();
        let done: Vec<i64> = st
            .windows
            .iter()
            .filter(|(_, w)| w.end <= closed)
            .map(|(&start, _)| start)
            .collect();
        for start in done {
            let Some(w) = st.windows.remove(&start) else {
                continue;
            };
            for (key, agg) in &w.keys {
                let value = to_json(&PartialOut {
                    kind: "partial",
                    source,
                    key,
                    window_start: start,
                    window_end: w.end,
                    agg,
                });
                outs.push(Output::value(value).timestamp(w.end));
            }
        }
        let marker = to_json(&MarkerOut {
            kind: "watermark",
            source,
            closed_before: closed,
        });
        outs.push(Output::value(marker).timestamp(closed.max(0)));
    }

    /// After `idle_ms` of wall time without input, the watermark follows the wall clock:
    /// now - idle_ms - lateness_ms.
    pub fn tick(&mut self, st: &mut PartialState, now_ms: i64) -> Vec<Output> {
        if self.seen_records != Some(st.records) {
            self.seen_records = Some(st.records);
            self.active_at = now_ms;
            return Vec::new();
        }
        // A source that has had no record yet learns its name from the host, so an empty
        // partition still reports its watermark and never holds the merge back. (The retry
        // topic's instance is no source.) Setting it here is safe for replays: it is the
        // same name the first record would give.
        if st.source.is_none() {
            let t = sluice_plugin::task();
            if !t.retry && t.partition >= 0 {
                st.source = Some(t.source());
            }
        }
        if st.source.is_none() || now_ms.saturating_sub(self.active_at) < self.s.idle_ms {
            return Vec::new();
        }
        let wm = now_ms
            .saturating_sub(self.s.idle_ms)
            .saturating_sub(self.s.lateness_ms)
            .clamp(0, MAX_TIME);
        let mut outs = Vec::new();
        // The watermark must only move here together with output: the host checkpoints the
        // state after a tick's output, not after a silent tick, and a replay must see what
        // process() saw. advance() changes nothing unless it emits a marker.
        if st.closed_before.is_none_or(|c| self.align(wm) > c) {
            self.advance(st, wm, &mut outs);
        }
        outs
    }
}

/// The field at index `at` of `found` (if one is configured), with its path.
fn pick<'v, 'p>(
    found: &[Option<&'v RawValue>],
    at: Option<usize>,
    path: &'p Option<String>,
) -> Result<Option<(&'p str, &'v RawValue)>, String> {
    let path = path.as_deref().unwrap_or_default();
    match at {
        None => Ok(None),
        Some(i) => match found[i] {
            Some(raw) => Ok(Some((path, raw))),
            None => Err(format!("field '{path}' is missing")),
        },
    }
}

fn num(n: json::Number) -> Num {
    match n {
        json::Number::Int(i) => Num::Int(i),
        json::Number::Float(f) => Num::Float(f),
    }
}
