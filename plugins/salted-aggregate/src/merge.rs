//! Stage 3, `mode = "merge"`: one instance reads every source's partials, adds them up per
//! key and window, and emits a window's final records once, when the host's watermark passes
//! its end.
//!
//! Why that is exact: the host computes the merge's watermark as the smallest of the
//! watermarks the partial-stage tasks announced, and each of them announces a watermark only
//! after emitting every partial it closed with it. So when the merge's watermark passes a
//! window's end, every partial of that window is already here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_plugin::{Outcome, Output, Record};

use crate::agg::{Agg, Num, Wanted};
use crate::MAX_TIME;

pub struct Settings {
    pub wanted: Wanted,
}

pub struct Merge {
    s: Settings,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub end: i64,
    pub keys: BTreeMap<String, Agg>,
}

/// Snapshots of versions before host watermarks also had `sources`; it is ignored on restore.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeState {
    /// Windows not final yet, by start.
    #[serde(default)]
    pub windows: BTreeMap<i64, Window>,
    /// Every window ending at or before this is final: a partial for one is late. One number
    /// is all the memory of finalised windows needed, because windows are finalised in order
    /// of their end.
    #[serde(default)]
    pub final_before: Option<i64>,
}

/// A record of the partials topic: a partial (`type` "partial"), or a watermark marker that
/// versions before host watermarks wrote ("watermark"; skipped).
/// Flat rather than an internally tagged enum, which buffers every value (and weighs on the
/// wasm size).
#[derive(Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    #[allow(dead_code)]
    source: Option<String>,
    key: Option<String>,
    window_start: Option<i64>,
    window_end: Option<i64>,
    count: Option<u64>,
    sum: Option<Num>,
    min: Option<Num>,
    max: Option<Num>,
}

/// The final record's value. Dashboards read these fields: keep them as they are.
#[derive(Serialize)]
struct FinalOut<'a> {
    key: &'a str,
    window_start: i64,
    window_end: i64,
    #[serde(flatten)]
    agg: &'a Agg,
}

impl Merge {
    pub fn new(s: Settings) -> Merge {
        Merge { s }
    }

    pub fn process(&mut self, st: &mut MergeState, record: &Record) -> Outcome {
        let msg: Message = match record.value().map(serde_json::from_slice) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Outcome::Fail(format!("not a partial record of the partial stage: {e}"))
            }
            None => return Outcome::fail("record has no value"),
        };
        match msg.kind.as_str() {
            "partial" => {
                let (Some(key), Some(window_start), Some(window_end), Some(count)) =
                    (msg.key, msg.window_start, msg.window_end, msg.count)
                else {
                    return Outcome::fail(
                        "a partial needs key, window_start, window_end and count",
                    );
                };
                let (sum, min, max) = (msg.sum, msg.min, msg.max);
                if window_end <= window_start || !(0..=MAX_TIME + MAX_TIME).contains(&window_end) {
                    return Outcome::Fail(format!(
                        "invalid window [{window_start},{window_end}) of key '{key}'"
                    ));
                }
                if let Some(f) = st.final_before.filter(|&f| window_end <= f) {
                    return Outcome::Fail(format!(
                        "late partial: window [{window_start},{window_end}) of key '{key}' is already final (windows ending at or before {f} are)"
                    ));
                }
                let w = self.s.wanted;
                for (name, wanted, v) in [
                    ("sum", w.sum, sum),
                    ("min", w.min, min),
                    ("max", w.max, max),
                ] {
                    if wanted && v.is_none() {
                        return Outcome::Fail(format!(
                            "partial of key '{key}' has no '{name}': aggregate it in the partial stage too"
                        ));
                    }
                }
                let window = st.windows.entry(window_start).or_insert_with(|| Window {
                    end: window_end,
                    keys: BTreeMap::new(),
                });
                if window.end != window_end {
                    return Outcome::Fail(format!(
                        "partial for window [{window_start},{window_end}) but another has [{window_start},{}): was window_ms changed?",
                        window.end
                    ));
                }
                let agg = Agg {
                    count,
                    sum: sum.filter(|_| w.sum),
                    min: min.filter(|_| w.min),
                    max: max.filter(|_| w.max),
                };
                window.keys.entry(key).or_default().merge(&agg);
                Outcome::Drop
            }
            // Written by versions that tracked watermarks themselves; the host does now.
            "watermark" => Outcome::Drop,
            other => Outcome::Fail(format!(
                "not a partial record of the partial stage: type '{other}'"
            )),
        }
    }

    /// Finalises the windows ending at or before the watermark.
    pub fn on_watermark(&mut self, st: &mut MergeState, wm: i64) -> Vec<Output> {
        if st.final_before.is_some_and(|f| wm <= f) {
            return Vec::new();
        }
        st.final_before = Some(wm);
        finalize(st, wm)
    }
}

/// Emits and forgets the windows ending at or before `horizon`, by window then key.
fn finalize(st: &mut MergeState, horizon: i64) -> Vec<Output> {
    let done: Vec<i64> = st
        .windows
        .iter()
        .filter(|(_, w)| w.end <= horizon)
        .map(|(&start, _)| start)
        .collect();
    let mut outs = Vec::new();
    for start in done {
        let Some(w) = st.windows.remove(&start) else {
            continue;
        };
        for (key, agg) in &w.keys {
            let value = serde_json::to_vec(&FinalOut {
                key,
                window_start: start,
                window_end: w.end,
                agg,
            })
            .expect("serialisable");
            outs.push(Output::value(value).key(key.as_bytes()).timestamp(w.end));
        }
    }
    outs
}
