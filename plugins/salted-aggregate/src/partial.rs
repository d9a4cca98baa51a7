//! Stage 2, `mode = "partial"`: per source (input partition), aggregates per unsalted key and
//! event-time window; closes the windows the host's watermark has passed into partials.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_plugin::json::{self, Fields, Kind, RawValue};
use sluice_plugin::{Outcome, Output, Record};

use crate::agg::{Agg, Num, Wanted};
use crate::MAX_TIME;

pub struct Settings {
    pub window_ms: i64,
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
}

/// One window of one source: its end and the aggregate per unsalted key.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub end: i64,
    pub keys: BTreeMap<String, Agg>,
}

/// Snapshots of versions before host watermarks had more fields (records, max_event,
/// watermark); they are ignored on restore.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialState {
    /// `<topic>/<partition>` of the input, learnt from the first record.
    #[serde(default)]
    pub source: Option<String>,
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
        if st.source.is_none() {
            st.source = Some(format!("{}/{}", record.topic(), record.partition()));
        }
        let ev = match self.event(record) {
            Ok(ev) => ev,
            Err(why) => return Outcome::Fail(why),
        };
        let start = self.align(ev.time);
        // The host sets apart records behind its watermark before they get here; this only
        // catches event times read from the value (time_field) that disagree with the
        // record's timestamp.
        if let Some(closed) = st.closed_before.filter(|&c| ev.time < c) {
            return Outcome::Fail(format!(
                "late record: event time {} is before the watermark {closed} (window [{start},{}) closed)",
                ev.time,
                start + self.s.window_ms
            ));
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
        Outcome::Drop
    }

    /// Emits the windows ending at or before the watermark, by window then key.
    pub fn on_watermark(&mut self, st: &mut PartialState, wm: i64) -> Vec<Output> {
        let closed = self.align(wm.clamp(0, MAX_TIME));
        if st.closed_before.is_some_and(|c| closed <= c) {
            return Vec::new();
        }
        st.closed_before = Some(closed);
        if st.source.is_none() {
            let t = sluice_plugin::task();
            if t.partition >= 0 {
                st.source = Some(t.source());
            }
        }
        let source = st.source.as_deref().unwrap_or_default();
        let done: Vec<i64> = st
            .windows
            .iter()
            .filter(|(_, w)| w.end <= closed)
            .map(|(&start, _)| start)
            .collect();
        let mut outs = Vec::new();
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
